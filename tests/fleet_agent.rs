//! `porthawk agent` against a real nats-server, under exactly the permissions that
//! `porthawk fleet add-agent` prints. The test plays the coordinator with async-nats directly:
//! it creates the streams, consumers and buckets of the fleet design, publishes work items and
//! reads the result frames.
// The helpers here are test code too: a failed set-up step should stop the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, Context};
use futures_util::StreamExt;
use porthawk_core::{
    decode_frame, frame_msg_id, pool_consumer, work_filter, work_msg_id, work_subject, AgentStatus,
    Attempt, FleetJob, FleetName, LastFrame, PortState, ProbeOptions, SpecRef, SweepProbe,
    SweepSpec, WireMessage, WorkItem, AGENTS_BUCKET, COORDINATOR_CONSUMER, HEADER_ATTEMPT,
    HEADER_END, HEADER_FRAME, HEADER_LAST, HEADER_SLICE, HEADER_SWEEP, RESULTS_STREAM,
    RESULTS_SUBJECTS, SPECS_BUCKET, WORK_STREAM, WORK_SUBJECTS,
};

use crate::nats_util::NatsServer;
use crate::util::{run_for, stderr, stdout, test_net, BIN};

/// An agent process, killed by pid if the test ends before it stops.
struct AgentProc {
    child: Child,
    log: PathBuf,
}

impl AgentProc {
    fn start(
        server: &NatsServer,
        name: &str,
        key_name: &str,
        pools: &[&str],
        extra: &[&str],
    ) -> AgentProc {
        let log = server
            .dir()
            .join(format!("agent-{name}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "agent",
            "--nats",
            server.url(),
            "--name",
            name,
            "--heartbeat",
            "500ms",
        ])
        .arg("--nkey")
        .arg(server.dir().join(format!("{key_name}.nk")));
        for p in pools {
            cmd.args(["--pool", p]);
        }
        cmd.args(extra)
            .env("RUST_LOG", "porthawk=debug,porthawk_fleet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let child = cmd.spawn().unwrap();
        AgentProc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {limit:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `porthawk fleet add-agent` / `coordinator-user` output: the users entry (the seed file is
/// written into the server's directory).
fn add_user(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["fleet"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", dir.to_str().unwrap()]);
    let out = run_for(&all, Duration::from_secs(30));
    assert!(out.status.success(), "{all:?}: {}", stderr(&out));
    stdout(&out)
}

/// A server whose users are agents `eu-1` (pool eu) and `us-1` (pool us), made by
/// `porthawk fleet add-agent`, and the coordinator.
fn server_with_users() -> Option<NatsServer> {
    // The users need the server's directory for their seed files, and the config needs the
    // users: make the keys in a directory of their own and move them in.
    let keys = crate::util::TempDir::new("fleet-keys");
    let eu = add_user(keys.path(), &["add-agent", "eu-1", "--pool", "eu"]);
    let us = add_user(keys.path(), &["add-agent", "us-1", "--pool", "us"]);
    let coord = add_user(keys.path(), &["coordinator-user"]);
    let conf = format!("authorization {{ users = [\n{eu}\n{us}\n{coord}\n] }}\n");
    let server = NatsServer::start(&conf).ok()?;
    for name in ["eu-1", "us-1", "coordinator"] {
        let file = format!("{name}.nk");
        std::fs::copy(keys.path().join(&file), server.dir().join(&file)).unwrap();
    }
    Some(server)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The coordinator's side, as fleet.md §3.2 lays it out (with a test `ack_wait`).
struct Coord {
    js: Context,
    specs: Store,
    agents: Store,
    results: PullConsumer,
}

async fn kv_stream(js: &Context, bucket: &str, max_age: Duration) -> Store {
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        discard: DiscardPolicy::New,
        allow_direct: true,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_key_value(bucket).await.unwrap()
}

async fn coordinator(server: &NatsServer, ack_wait: Duration) -> Coord {
    coordinator_with(server, ack_wait, None).await
}

async fn coordinator_tls(server: &NatsServer, certs: &Path) -> Coord {
    coordinator_with(server, Duration::from_secs(30), Some(certs)).await
}

async fn coordinator_with(server: &NatsServer, ack_wait: Duration, certs: Option<&Path>) -> Coord {
    let seed = std::fs::read_to_string(server.dir().join("coordinator.nk")).unwrap();
    let mut options = async_nats::ConnectOptions::new().nkey(seed.trim().to_string());
    if let Some(certs) = certs {
        options = options
            .add_root_certificates(certs.join("ca.pem"))
            .add_client_certificate(certs.join("client.pem"), certs.join("client.key"))
            .require_tls(true);
    }
    let client = options.connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let work = js
        .get_or_create_stream(stream::Config {
            name: WORK_STREAM.into(),
            subjects: vec![WORK_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    for pool in ["eu", "us"] {
        let pool = FleetName::new("pool", pool).unwrap();
        work.get_or_create_consumer(
            &pool_consumer(&pool),
            pull::Config {
                durable_name: Some(pool_consumer(&pool)),
                filter_subject: work_filter(&pool),
                ack_policy: AckPolicy::Explicit,
                ack_wait,
                max_deliver: 5,
                max_ack_pending: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let results = js
        .get_or_create_stream(stream::Config {
            name: RESULTS_STREAM.into(),
            subjects: vec![RESULTS_SUBJECTS.into()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(600),
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let results: PullConsumer = results
        .get_or_create_consumer(
            COORDINATOR_CONSUMER,
            pull::Config {
                durable_name: Some(COORDINATOR_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: 4096,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let agents = kv_stream(&js, AGENTS_BUCKET, Duration::from_secs(30)).await;
    let specs = kv_stream(&js, SPECS_BUCKET, Duration::from_secs(3600)).await;
    Coord {
        js,
        specs,
        agents,
        results,
    }
}

/// One result frame as the coordinator sees it.
#[derive(Debug)]
struct Frame {
    job: String,
    slice: u32,
    attempt: Attempt,
    n: u32,
    last: Option<LastFrame>,
    end: Option<String>,
    msg_id: String,
    records: Vec<(IpAddr, u16, PortState)>,
}

impl Coord {
    async fn publish_spec(&self, job: FleetJob, spec: &SweepSpec) -> u64 {
        self.specs
            .put(porthawk_core::spec_key(job), spec.encode().into())
            .await
            .unwrap()
    }

    async fn publish_work(&self, pool: &str, item: &WorkItem) {
        let pool = FleetName::new("pool", pool).unwrap();
        let message = PublishMessage::build()
            .payload(item.encode().into())
            .message_id(work_msg_id(item.job, item.slice, item.epoch));
        self.js
            .send_publish(work_subject(&pool, item.job), message)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Reads result frames until the attempt's frames are all in (the one with
    /// `Porthawk-Last` says how many), for up to `limit`.
    async fn frames_until_last(&self, limit: Duration) -> Result<Vec<Frame>, String> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            let mut batch = self
                .results
                .fetch()
                .max_messages(64)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .unwrap();
            while let Some(msg) = batch.next().await {
                let Ok(msg) = msg else { continue };
                let h = msg.headers.clone().expect("result frames carry headers");
                let get = |name: &str| h.get(name).map(|v| v.as_str().to_string());
                let (batch, used) = decode_frame(&msg.payload).expect("a valid frame");
                assert_eq!(used, msg.payload.len(), "exactly one frame per message");
                frames.push(Frame {
                    job: get(HEADER_SWEEP).unwrap(),
                    slice: get(HEADER_SLICE).unwrap().parse().unwrap(),
                    attempt: get(HEADER_ATTEMPT).unwrap().parse().unwrap(),
                    n: get(HEADER_FRAME).unwrap().parse().unwrap(),
                    last: get(HEADER_LAST).map(|v| v.parse().unwrap()),
                    end: get(HEADER_END),
                    msg_id: get("Nats-Msg-Id").unwrap(),
                    records: batch
                        .records
                        .iter()
                        .map(|r| (r.ip, r.port, r.state))
                        .collect(),
                });
                msg.ack().await.unwrap();
            }
            // Frames may arrive in any order (they are published concurrently): done when
            // the last one has come and as many frames as it announces.
            let announced = frames
                .iter()
                .find_map(|f| f.last)
                .map(|l| l.frames as usize);
            if announced.is_some_and(|n| frames.len() >= n) {
                return Ok(frames);
            }
        }
        Err(format!(
            "no last frame within {limit:?}; frames so far: {frames:?}"
        ))
    }

    async fn work_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(WORK_STREAM).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// Listeners on two addresses of a private loopback block, and a spec of that block's first
/// eight addresses × ten ports around them.
struct Farm {
    _listeners: Vec<TcpListener>,
    open: BTreeSet<(IpAddr, u16)>,
    spec: SweepSpec,
}

fn farm(name: &str) -> Farm {
    let [a, b] = test_net(name);
    let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(127, a, b, d));
    let first = TcpListener::bind(SocketAddr::new(ip(2), 0)).unwrap();
    let port = first.local_addr().unwrap().port();
    let second = TcpListener::bind(SocketAddr::new(ip(7), port.saturating_add(3))).unwrap();
    let open = [(ip(2), port), (ip(7), port + 3)].into_iter().collect();
    let lo = port.saturating_sub(4).max(1);
    let probe = SweepProbe::new(
        &ProbeOptions::default(),
        Duration::from_millis(500),
        1,
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
    let spec = SweepSpec {
        total: 8 * 10,
        seed: 11,
        hosts: vec![(ip(1), ip(8))],
        ports: vec![(lo, lo + 9)],
        probe,
    };
    assert!(spec.ports[0].0 <= port && port + 3 <= spec.ports[0].1);
    Farm {
        _listeners: vec![first, second],
        open,
        spec,
    }
}

fn item(job: FleetJob, slice: u32, start: u64, end: u64, spec: SpecRef) -> WorkItem {
    WorkItem {
        job,
        slice,
        start,
        end,
        spec,
        deadline_ms: None,
        rate: None,
        epoch: 0,
    }
}

/// No request of the agent was refused: the printed permissions are exactly enough.
fn assert_no_violation(server: &NatsServer) {
    let log = server.log();
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(bad.is_empty(), "permission violations:\n{}", bad.join("\n"));
}

/// An agent under exactly the printed permissions runs a slice: its frames hold exactly the
/// slice's positions, once each, with the headers and message ids of the contract; it acks
/// the item, heartbeats its registry key, and on SIGTERM exits 0 and removes the key.
#[test]
fn agent_runs_a_slice_under_exactly_the_printed_permissions() {
    let Some(server) = server_with_users() else {
        return;
    };
    let farm = farm("fleet_agent_slice");
    let rt = runtime();
    let coord = rt.block_on(coordinator(&server, Duration::from_secs(30)));
    let job = FleetJob::Sweep(1);
    let revision = rt.block_on(coord.publish_spec(job, &farm.spec));
    let work = item(job, 3, 10, 70, SpecRef::Ref(revision));
    rt.block_on(coord.publish_work("eu", &work));
    let mut agent = AgentProc::start(&server, "eu-1", "eu-1", &["eu"], &["--shards", "2"]);
    let frames = rt
        .block_on(coord.frames_until_last(Duration::from_secs(60)))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nagent log:\n{}\nserver log:\n{}",
                agent.log(),
                server.log()
            )
        });

    let space = farm.spec.space().unwrap();
    let want: BTreeSet<(IpAddr, u16)> = (10..70)
        .map(|p| space.get(p).map(|a| (a.ip(), a.port())).unwrap())
        .collect();
    let mut seen = Vec::new();
    for f in &frames {
        seen.extend(f.records.iter().map(|&(ip, port, _)| (ip, port)));
    }
    assert_eq!(seen.len(), 60, "every position once: {frames:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), want);
    for f in &frames {
        for &(ip, port, state) in &f.records {
            if farm.open.contains(&(ip, port)) {
                assert_eq!(state, PortState::Open, "{ip}:{port}");
            }
        }
    }
    // Headers: one attempt (the first delivery), frames numbered 0..n once each, the last
    // one saying how many frames and records there were, no end reason, and message ids of
    // the contract.
    let attempt = frames[0].attempt;
    assert_eq!(attempt.delivered, 1);
    let mut numbers: Vec<u32> = frames.iter().map(|f| f.n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..frames.len() as u32).collect::<Vec<_>>());
    for f in &frames {
        assert_eq!((f.job.as_str(), f.slice, f.attempt), ("s1", 3, attempt));
        assert_eq!(f.msg_id, frame_msg_id(job, 3, attempt, f.n));
        assert_eq!(f.end, None);
    }
    let lasts: Vec<&Frame> = frames.iter().filter(|f| f.last.is_some()).collect();
    assert_eq!(lasts.len(), 1);
    assert_eq!(
        lasts[0].last,
        Some(LastFrame {
            frames: frames.len() as u32,
            records: 60
        })
    );
    // The item was acked (the work queue empties) and the agent is in the registry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(coord.work_messages()) != 0 {
        assert!(Instant::now() < deadline, "the work item was not acked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = rt
        .block_on(coord.agents.get("eu-1"))
        .unwrap()
        .expect("the agent's registry key");
    let status = AgentStatus::decode(&status).unwrap();
    assert_eq!(status.pools, vec![FleetName::new("pool", "eu").unwrap()]);
    assert_eq!(status.shards, 2);
    // Declared addresses identify the host for `agent = "{target}"`: loopback, which every
    // host has, is left out of the detected ones.
    assert!(!status.addresses.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));

    agent.sigterm();
    assert_eq!(
        agent.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.log()
    );
    assert_eq!(
        rt.block_on(coord.agents.get("eu-1")).unwrap(),
        None,
        "the key outlived the agent: {}",
        agent.log()
    );
    assert_no_violation(&server);
}

/// The server enforces the identity: `eu-1`'s key cannot act as `us-1` (its inbox and
/// registry key are not allowed), publish results under `us-1`'s name, nor pull pool `us`;
/// the agent says so and exits 1.
#[test]
fn agent_with_another_name_or_pool_is_refused_by_the_server() {
    let Some(server) = server_with_users() else {
        return;
    };
    let rt = runtime();
    let coord = rt.block_on(coordinator(&server, Duration::from_secs(30)));
    let mut other_name = AgentProc::start(&server, "us-1", "eu-1", &["eu"], &[]);
    assert_eq!(other_name.wait(Duration::from_secs(60)), Some(1));
    let log = other_name.log();
    assert!(log.contains("porthawk: agent: cannot"), "{log}");
    let mut other_pool = AgentProc::start(&server, "eu-1", "eu-1", &["us"], &[]);
    assert_eq!(other_pool.wait(Duration::from_secs(60)), Some(1));
    let log = other_pool.log();
    assert!(log.contains("pool-us"), "{log}");
    // Publishing a frame under another agent's name, with eu-1's own key and inbox: the
    // server refuses it and nothing reaches the results stream.
    rt.block_on(async {
        let seed = std::fs::read_to_string(server.dir().join("eu-1.nk")).unwrap();
        let client = async_nats::ConnectOptions::new()
            .nkey(seed.trim().to_string())
            .custom_inbox_prefix("_INBOX_eu-1")
            .connect(server.url())
            .await
            .unwrap();
        let js = jetstream::new(client);
        let forged = js
            .send_publish(
                "porthawk.v1.results.us-1.s1",
                PublishMessage::build().payload("x".into()),
            )
            .await
            .unwrap()
            .await;
        assert!(
            forged.is_err(),
            "a frame published as us-1 was stored: {forged:?}"
        );
        let mut results = coord.js.get_stream(RESULTS_STREAM).await.unwrap();
        assert_eq!(results.info().await.unwrap().state.messages, 0);
    });
    let server_log = server.log();
    assert!(
        server_log.contains("Publish Violation")
            && server_log.contains("porthawk.v1.results.us-1.s1"),
        "{server_log}"
    );
    assert!(
        server_log.contains("Subscription Violation") && server_log.contains("_INBOX_us-1."),
        "{server_log}"
    );
    assert!(
        server_log.contains("$JS.API.CONSUMER.INFO.PORTHAWK_WORK.pool-us"),
        "{server_log}"
    );
}

/// SIGTERM with a short grace gives a running slice back at once (NAK): it is delivered
/// again long before its 60 s ack_wait, and the agent exits 0.
#[test]
fn sigterm_gives_back_a_running_slice_when_grace_is_short() {
    let Some(server) = server_with_users() else {
        return;
    };
    let farm = farm("fleet_agent_sigterm");
    let rt = runtime();
    let coord = rt.block_on(coordinator(&server, Duration::from_secs(60)));
    let job = FleetJob::Sweep(2);
    let revision = rt.block_on(coord.publish_spec(job, &farm.spec));
    // 80 positions at 4 probes/s: 20 s, far longer than the test waits.
    let mut work = item(job, 0, 0, 80, SpecRef::Ref(revision));
    work.rate = Some(4);
    rt.block_on(coord.publish_work("eu", &work));
    let mut agent = AgentProc::start(&server, "eu-1", "eu-1", &["eu"], &["--grace", "200ms"]);
    // Running: the registry shows the slice.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = rt
            .block_on(coord.agents.get("eu-1"))
            .unwrap()
            .map(|v| AgentStatus::decode(&v).unwrap().running)
            .unwrap_or_default();
        if running.iter().any(|r| r.job == job) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slice never showed as running; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.sigterm();
    assert_eq!(
        agent.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains("slice given back (NAK)"),
        "{}",
        agent.log()
    );
    // The coordinator user pulls from the pool: the item is there again, delivered twice.
    let redelivered = rt.block_on(async {
        let work = coord.js.get_stream(WORK_STREAM).await.unwrap();
        let pool: PullConsumer = work.get_consumer("pool-eu").await.unwrap();
        let mut batch = pool
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(10))
            .messages()
            .await
            .unwrap();
        let msg = batch.next().await.expect("the slice is back").unwrap();
        let delivered = msg.info().unwrap().delivered;
        msg.ack_with(AckKind::Term).await.unwrap();
        (WorkItem::decode(&msg.payload).unwrap(), delivered)
    });
    assert_eq!(redelivered, (work, 2));
    assert_no_violation(&server);
}

/// A NATS server off this host without credentials is refused before any connection, with
/// a message that says what to do; usage errors exit 2.
#[test]
fn remote_nats_without_credentials_is_refused_before_connecting() {
    let out = run_for(
        &[
            "agent",
            "--nats",
            "nats://10.1.2.3:4222",
            "--pool",
            "eu",
            "--name",
            "eu-1",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("refusing to talk to NATS at nats://10.1.2.3:4222 without credentials"),
        "{text}"
    );
    assert!(text.contains("--allow-insecure"), "{text}");
    assert!(!text.contains("connect"), "{text}");
}

/// `add-agent` writes a 0600 seed and never overwrites one.
#[test]
fn add_agent_writes_a_private_seed_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::util::TempDir::new("fleet-add-agent");
    let entry = add_user(
        dir.path(),
        &["add-agent", "eu-1", "--pool", "eu", "--pool", "dc2"],
    );
    assert!(entry.contains("nkey: U"), "{entry}");
    assert!(
        entry.contains("$JS.API.CONSUMER.MSG.NEXT.PORTHAWK_WORK.pool-dc2"),
        "{entry}"
    );
    let seed = dir.path().join("eu-1.nk");
    let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&seed).unwrap().starts_with("SU"));
    let again = run_for(
        &[
            "fleet",
            "add-agent",
            "eu-1",
            "--pool",
            "eu",
            "--out",
            dir.path().to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("never overwritten"),
        "{}",
        stderr(&again)
    );
    let bad = run_for(
        &["fleet", "add-agent", "eu.1", "--pool", "eu"],
        Duration::from_secs(30),
    );
    assert_eq!(bad.status.code(), Some(2));
}

/// A monitor item past its deadline is not probed: one empty frame, `Porthawk-End:
/// expired`, and the item is acked. A sweep whose spec key is deleted mid-slice is cancelled:
/// its last frame says `cancelled`, it holds fewer records than the slice, and it is acked.
#[test]
fn expired_and_cancelled_slices_end_with_their_reason() {
    let Some(server) = server_with_users() else {
        return;
    };
    let farm = farm("fleet_agent_cancel");
    let rt = runtime();
    let coord = rt.block_on(coordinator(&server, Duration::from_secs(30)));
    let mut agent = AgentProc::start(&server, "eu-1", "eu-1", &["eu"], &[]);
    let fail = |e: String| -> Vec<Frame> {
        panic!(
            "{e}\nagent log:\n{}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        )
    };

    let monitor = FleetJob::Monitor(4);
    let mut expired = item(
        monitor,
        0,
        0,
        80,
        SpecRef::Inline(Box::new(farm.spec.clone())),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    expired.deadline_ms = Some(now_ms - 1000);
    rt.block_on(coord.publish_work("eu", &expired));
    let frames = rt
        .block_on(coord.frames_until_last(Duration::from_secs(60)))
        .unwrap_or_else(fail);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].job, "m4");
    assert_eq!(frames[0].end.as_deref(), Some("expired"));
    assert_eq!(
        frames[0].last,
        Some(LastFrame {
            frames: 1,
            records: 0
        })
    );

    let sweep = FleetJob::Sweep(3);
    let revision = rt.block_on(coord.publish_spec(sweep, &farm.spec));
    let mut slow = item(sweep, 0, 0, 80, SpecRef::Ref(revision));
    slow.rate = Some(4);
    rt.block_on(coord.publish_work("eu", &slow));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = rt
            .block_on(coord.agents.get("eu-1"))
            .unwrap()
            .map(|v| AgentStatus::decode(&v).unwrap().running)
            .unwrap_or_default();
        if running.iter().any(|r| r.job == sweep) {
            break;
        }
        assert!(Instant::now() < deadline, "never running:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(coord.specs.delete("s3")).unwrap();
    let frames = rt
        .block_on(coord.frames_until_last(Duration::from_secs(60)))
        .unwrap_or_else(fail);
    let last = frames.iter().find(|f| f.last.is_some()).unwrap();
    assert_eq!(last.end.as_deref(), Some("cancelled"), "{frames:?}");
    let records: usize = frames.iter().map(|f| f.records.len()).sum();
    assert!(records < 80, "{records} records: not cancelled");
    assert_eq!(last.last.map(|l| l.records), Some(records as u64));
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.block_on(coord.work_messages()) != 0 {
        assert!(Instant::now() < deadline, "the items were not acked");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.sigterm();
    assert_eq!(
        agent.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.log()
    );
    assert_no_violation(&server);
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=porthawk test CA",
    ];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:eu-1\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut req = vec!["req", "-subj", "/CN=porthawk test"];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        let pem = format!("{name}.pem");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

/// With mutual TLS on the server (`verify: true`), the agent connects with --tls-ca,
/// --tls-cert and --tls-key (rustls, ring) plus its nkey, and runs a slice.
#[test]
fn agent_runs_a_slice_over_mutual_tls() {
    if crate::util::require(
        "openssl",
        crate::util::which("openssl")
            .is_none()
            .then(|| "not installed".to_string()),
    )
    .is_err()
    {
        return;
    }
    let certs = crate::util::TempDir::new("fleet-tls");
    make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let keys = crate::util::TempDir::new("fleet-tls-keys");
    let eu = add_user(keys.path(), &["add-agent", "eu-1", "--pool", "eu"]);
    let coord_user = add_user(keys.path(), &["coordinator-user"]);
    let conf = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}\n\
         authorization {{ users = [\n{eu}\n{coord_user}\n] }}\n",
        c("server.pem"),
        c("server.key"),
        c("ca.pem")
    );
    let Ok(server) = NatsServer::start(&conf) else {
        return;
    };
    for name in ["eu-1", "coordinator"] {
        let file = format!("{name}.nk");
        std::fs::copy(keys.path().join(&file), server.dir().join(&file)).unwrap();
    }
    let farm = farm("fleet_agent_tls");
    let rt = runtime();
    let coord = rt.block_on(async {
        // The test's coordinator connects over the same mutual TLS.
        coordinator_tls(&server, certs.path()).await
    });
    let job = FleetJob::Sweep(5);
    let revision = rt.block_on(coord.publish_spec(job, &farm.spec));
    rt.block_on(coord.publish_work("eu", &item(job, 0, 0, 80, SpecRef::Ref(revision))));
    let (ca, cert, key) = (c("ca.pem"), c("client.pem"), c("client.key"));
    let mut agent = AgentProc::start(
        &server,
        "eu-1",
        "eu-1",
        &["eu"],
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
    );
    let frames = rt
        .block_on(coord.frames_until_last(Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    let records: usize = frames.iter().map(|f| f.records.len()).sum();
    assert_eq!(records, 80);
    agent.sigterm();
    assert_eq!(
        agent.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        agent.log()
    );
    assert_no_violation(&server);
}

/// Each way of failing at start says what failed and exits 1: no server listening, a key
/// the server does not know, and a server whose coordinator never created the consumers.
#[test]
fn agent_start_errors_name_what_failed() {
    let Some(server) = server_with_users() else {
        return;
    };
    let run_agent = |url: &str, key: &Path| {
        let out = run_for(
            &[
                "agent",
                "--nats",
                url,
                "--pool",
                "eu",
                "--name",
                "eu-1",
                "--nkey",
                key.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        (out.status.code(), stderr(&out))
    };
    let key = server.dir().join("eu-1.nk");
    // Nothing listens on a port just released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, text) = run_agent(&format!("nats://{closed}"), &key);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect to NATS at"), "{text}");
    assert!(text.contains("is nats-server running"), "{text}");
    // A key that is not in the server's users.
    let ghost = crate::util::TempDir::new("fleet-ghost");
    add_user(ghost.path(), &["add-agent", "ghost", "--pool", "eu"]);
    let (code, text) = run_agent(server.url(), &ghost.path().join("ghost.nk"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("refused the credentials"), "{text}");
    // The right key, but no coordinator has run: no stream, no consumer.
    let (code, text) = run_agent(server.url(), &key);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot bind the work consumer pool-eu"),
        "{text}"
    );
    assert!(text.contains("the coordinator creates it"), "{text}");
}
