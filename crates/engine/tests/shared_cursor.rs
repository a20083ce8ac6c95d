//! Issue 15 item 1: shards take a job's positions in chunks from a shared cursor. With two
//! (and more) shards, on both backends, every target of a small farm is reported exactly
//! once, with the state the farm's ground truth says, and the work is really shared.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porthawk_core::{AddrRange, HostSetBuilder, PortSet, PortState, ProbeSpec, TargetSpace};
use porthawk_engine::{result_channel, Backend, BackendChoice, Engine, EngineConfig, Job};

/// Every port with a listener on any address of this network namespace.
fn listening_ports() -> HashSet<u16> {
    let mut ports = HashSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Field 1 is local address:port, field 3 the state; 0A is LISTEN.
            if fields.get(3) == Some(&"0A") {
                if let Some((_, port)) = fields.get(1).and_then(|l| l.split_once(':')) {
                    if let Ok(p) = u16::from_str_radix(port, 16) {
                        ports.insert(p);
                    }
                }
            }
        }
    }
    ports
}

/// A farm on four loopback addresses: a listener on every 16th port of each host, nothing
/// on the rest. Ports that anything else listens on (on any address) are left out.
struct Farm {
    _listeners: Vec<TcpListener>,
    hosts: Vec<Ipv4Addr>,
    ports: Vec<u16>,
    open: HashSet<SocketAddr>,
}

impl Farm {
    fn start() -> Farm {
        let hosts: Vec<Ipv4Addr> = (1..=4).map(|h| Ipv4Addr::new(127, 61, 7, h)).collect();
        let busy = listening_ports();
        // Below the ephemeral range, so no probe can meet a socket the kernel opened itself.
        let ports: Vec<u16> = (23_000u16..23_400).filter(|p| !busy.contains(p)).collect();
        assert!(ports.len() > 300, "too many ports in use here");
        let mut listeners = Vec::new();
        let mut open = HashSet::new();
        for &h in &hosts {
            for &p in ports.iter().step_by(16) {
                let addr = SocketAddr::new(IpAddr::V4(h), p);
                let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                listeners.push(l);
                open.insert(addr);
            }
        }
        Farm {
            _listeners: listeners,
            hosts,
            ports,
            open,
        }
    }

    fn space(&self, seed: u64) -> Arc<TargetSpace> {
        let mut b = HostSetBuilder::default();
        for &h in &self.hosts {
            b.include(AddrRange::single(IpAddr::V4(h)));
        }
        Arc::new(
            TargetSpace::new(b.build(), PortSet::from_ports(self.ports.clone()), seed)
                .expect("space"),
        )
    }

    fn truth(&self, target: SocketAddr) -> PortState {
        if self.open.contains(&target) {
            PortState::Open
        } else {
            PortState::Closed
        }
    }
}

/// Runs `positions` of `space` as one job; returns every record's target and state, and how
/// many records each shard sent.
fn run_job(
    engine: &Engine,
    space: &Arc<TargetSpace>,
    positions: std::ops::Range<u64>,
) -> (Vec<(SocketAddr, PortState)>, HashMap<u16, usize>) {
    let (sink, results) = result_channel(64);
    engine.submit(Job {
        id: engine.next_job_id(),
        space: Arc::clone(space),
        spec: ProbeSpec {
            connect_timeout: Duration::from_secs(2),
            ..ProbeSpec::default()
        },
        rate: None,
        positions,
        sink,
    });
    let mut records = Vec::new();
    let mut per_shard: HashMap<u16, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = results
            .recv_timeout(left)
            .expect("the job ends within 60 s");
        *per_shard.entry(batch.shard).or_default() += batch.records.len();
        records.extend(
            batch
                .records
                .iter()
                .map(|r| (SocketAddr::new(r.ip, r.port), r.state)),
        );
        if batch.job_done {
            return (records, per_shard);
        }
    }
}

fn backends() -> Vec<BackendChoice> {
    let mut backends = vec![BackendChoice::Epoll];
    let uring = Engine::start(&EngineConfig {
        shards: 1,
        inflight: 16,
        backend: BackendChoice::Uring,
        ..EngineConfig::default()
    });
    match uring {
        Ok(e) => {
            assert_eq!(e.backend(), Backend::Uring);
            backends.push(BackendChoice::Uring);
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("io_uring is needed under CI: {e}")
        }
        Err(e) => eprintln!("io_uring unavailable, epoll only: {e}"),
    }
    backends
}

#[test]
fn two_shards_sharing_a_cursor_report_every_target_once_as_the_farm_says() {
    let farm = Farm::start();
    // io_uring with each descriptor path (where the kernel has direct descriptors: under CI
    // `None` must have chosen them), epoll with its one.
    let mut runs = Vec::new();
    for backend in backends() {
        if backend == BackendChoice::Uring {
            runs.push((backend, Some(false)));
        }
        runs.push((backend, None));
    }
    for (backend, direct_fds) in runs {
        for (shards, inflight) in [(2, 64), (2, 1024), (3, 48)] {
            let engine = Engine::start(&EngineConfig {
                shards,
                inflight,
                backend,
                batch_records: 64,
                flush_interval: Duration::from_millis(5),
                direct_fds,
            })
            .expect("engine");
            let space = farm.space(shards as u64 * 7 + inflight as u64);
            let len = space.len();
            // The whole space, fleet-like slices of it (ends included and excluded), and a
            // range reaching past the end (those positions are dropped).
            for positions in [0..len, 37..len - 41, 0..1, len - 1..len, 100..len + 50] {
                let want: Vec<SocketAddr> = positions
                    .clone()
                    .filter(|&p| p < len)
                    .map(|p| space.get(p).expect("a position of the space"))
                    .collect();
                let (records, per_shard) = run_job(&engine, &space, positions.clone());
                let what = format!(
                    "{backend:?} ({:?} fds), {shards} shards, {inflight} in flight, {positions:?}",
                    engine.fd_path()
                );
                let mut seen = HashSet::new();
                for (target, state) in &records {
                    assert!(seen.insert(*target), "{target} reported twice ({what})");
                    assert_eq!(*state, farm.truth(*target), "{target} ({what})");
                }
                let want: HashSet<SocketAddr> = want.into_iter().collect();
                assert_eq!(seen, want, "targets differ from the positions ({what})");
                if positions.end - positions.start >= 1000 {
                    // Shared, not split by one shard: every shard probed a part.
                    assert_eq!(per_shard.len(), shards, "{per_shard:?} ({what})");
                    assert!(per_shard.values().all(|&n| n > 0), "{per_shard:?} ({what})");
                }
            }
        }
    }
}
