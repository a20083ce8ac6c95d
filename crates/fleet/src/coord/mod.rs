//! The coordinator's side of NATS: the small interface `porthawk serve` calls to run fleet
//! sweeps (and, for the monitors, rounds from other vantage points). It only speaks NATS;
//! what a frame means for the store (the ledger, "first complete attempt wins") is the
//! store's SQL, driven by the server's fleet task.
//!
//! - [`Coord::connect`]: connects (nkey, mTLS), creates or binds the streams, the
//!   coordinator's consumer and both KV buckets (as plain streams: `create_key_value` fails on
//!   nats-server 2.9), reads their configs back and refuses to start if they differ.
//! - Work: [`Coord::ensure_pool`], [`Coord::put_spec`], [`Coord::publish_work`],
//!   [`Coord::work_exists`], [`Coord::pool_progress`] (which work ran out of deliveries,
//!   for the janitor, when the advisory was missed), [`Coord::delete_work`],
//!   [`Coord::cancel_job`].
//! - Results: [`Coord::results`], long pull requests one at a time ([`Results`]): frames
//!   are handed over as soon as they arrive, in batches of what has arrived (every request
//!   bounded in bytes; idle, it wakes once per [`RESULTS_PULL_EXPIRES`]); each [`Incoming`]
//!   acked by the caller once its store transaction committed.
//! - [`Coord::max_deliveries`]: the advisories of work that ran out of deliveries.
//! - [`Coord::agents`]: the live agents of the registry bucket; [`Coord::registry_updates`]:
//!   each heartbeat (put) and removal of a key as it happens, without a timer.

mod setup;

use std::path::PathBuf;
use std::task::Poll;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::PullConsumer, kv, stream::Stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use porthawk_core::{
    decode_frame, parse_results_subject, parse_u32_header, spec_key, work_job_filter, work_msg_id,
    work_subject, AgentStatus, Attempt, EndReason, FleetJob, FleetName, LastFrame, ResultBatch,
    SweepSpec, WireMessage, WorkItem, AGENTS_BUCKET, HEADER_ATTEMPT, HEADER_END, HEADER_FRAME,
    HEADER_LAST, HEADER_SLICE, HEADER_SWEEP, MAX_DELIVERIES_ADVISORY,
};

/// How long a results pull request waits at the server: the only wake of an idle results
/// pull (one 408 status and one new request per period). Not an idle heartbeat: a request
/// lost with a reconnect is made again on the reconnect ([`Results`]), and one lost
/// otherwise after this plus 5 s (async-nats' own bound on a request).
pub const RESULTS_PULL_EXPIRES: Duration = Duration::from_secs(60);

/// The header a KV delete or purge carries (`DEL`, `PURGE`); a put has none.
const KV_OPERATION: &str = "KV-Operation";

/// What the coordinator needs to reach NATS and how it sets up the streams.
#[derive(Debug, Clone)]
pub struct CoordConfig {
    /// The NATS URL.
    pub nats: String,
    /// The coordinator's nkey seed file.
    pub nkey: Option<PathBuf>,
    /// CA certificates of the NATS server (PEM).
    pub tls_ca: Option<PathBuf>,
    /// The client certificate and key (PEM).
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// The pool consumers' `ack_wait`.
    pub ack_wait: Duration,
    /// The pool consumers' `max_deliver`.
    pub max_deliver: i64,
    /// The results stream's `max_bytes` (`discard=new`: a full stream makes agents wait).
    pub results_max_bytes: i64,
    /// The registry bucket's `max_age`: how long an agent stays listed after its last put.
    pub agent_ttl: Duration,
}

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// A NATS call failed.
    #[error("NATS: {context}")]
    Nats {
        /// What was being done.
        context: String,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stream, consumer or bucket exists with another config than this coordinator's.
    #[error(
        "{what} exists with {field} = {found}, this coordinator wants {wanted}: remove it \
         (it holds no state the store lacks once the sweeps on it have ended) or change [fleet]"
    )]
    ConfigDiffers {
        /// The stream, consumer or bucket.
        what: String,
        /// The setting.
        field: &'static str,
        /// What the server has.
        found: String,
        /// What this coordinator sets.
        wanted: String,
    },
    /// A credential file could not be read.
    #[error("cannot read {what} '{}'", path.display())]
    Read {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

pub(crate) fn nats_err(
    context: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> CoordError {
    let context = context.into();
    move |source| CoordError::Nats { context, source }
}

/// Boxes any error for [`CoordError::Nats`].
pub(crate) fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// The coordinator's connection and the JetStream objects it uses.
pub struct Coord {
    client: async_nats::Client,
    js: jetstream::Context,
    work: Stream,
    results: PullConsumer,
    specs: kv::Store,
    agents: kv::Store,
    config: CoordConfig,
    /// Counts the connections made (the first and each reconnect).
    connects: tokio::sync::watch::Receiver<u64>,
}

/// A message of the results stream, as the coordinator reads it.
pub struct Incoming {
    /// What it holds: a frame, or why it is not one.
    pub frame: Result<ResultFrame, String>,
    message: jetstream::Message,
}

impl Incoming {
    /// Acks it: call once the store has committed what it carried (or has refused it for good).
    pub async fn ack(&self) -> Result<(), CoordError> {
        self.message
            .ack()
            .await
            .map_err(|e| nats_err("ack a result frame")(e))
    }

    /// Bytes of the message (payload and headers), for metrics.
    pub fn size(&self) -> usize {
        self.message.payload.len()
    }

    /// Result messages the server still held for the coordinator when it delivered this one
    /// (not yet delivered; `None` if its reply subject is not a JetStream ack subject).
    pub fn pending(&self) -> Option<u64> {
        self.message.info().ok().map(|i| i.pending)
    }
}

/// The coordinator's pull on its results consumer ([`Coord::results`]): one pull request at
/// a time, of at most `max` messages and `max_bytes`, waiting [`RESULTS_PULL_EXPIRES`] at the
/// server; its messages are handed over as they arrive.
///
/// One request at a time, not async-nats' pull stream: the stream asks for the next batch as
/// soon as half of one has arrived, so while a large batch is applied (tens of seconds with
/// `store = "all"`) a whole further batch would wait unacked in memory and come again after
/// the consumer's ack_wait. Here a new request goes out only once the last one is over, as
/// with the short fetches before, and a request that a reconnect may have lost (nats-server
/// restarted) is replaced at once.
pub struct Results {
    consumer: PullConsumer,
    max: usize,
    max_bytes: usize,
    /// The connections made so far: a new one may have lost the request under way.
    connects: tokio::sync::watch::Receiver<u64>,
    /// Cleared if the client's connection events end (the client is gone).
    watch_connects: bool,
    /// The request under way: its messages, when it was made, and how many it delivered.
    fetch: Option<(pull::Batch, tokio::time::Instant, usize)>,
}

/// How one wait on a pull request ended.
enum Taken {
    /// Messages arrived (the request may go on).
    Messages,
    /// The request is over (its batch complete, expired, or ended by a status).
    Over(Option<String>),
    /// The connection was made again: the request may be lost.
    Reconnected,
}

impl Results {
    /// Waits (without a timer) for the next result messages: the first one to arrive, and
    /// every other one already there, within the request's bounds. A lone frame is handed
    /// over at once; frames that pile up while the caller applies a batch come next time.
    /// A request that fails, or ends empty long before its expiry, is returned as an error
    /// (the caller pauses before the next call); one that ends after delivering is followed
    /// by the next at once.
    pub async fn next_batch(&mut self) -> Result<Vec<Incoming>, CoordError> {
        let (max, max_bytes) = (self.max, self.max_bytes);
        loop {
            if self.fetch.is_none() {
                let batch = self
                    .consumer
                    .fetch()
                    .max_messages(max)
                    .max_bytes(max_bytes)
                    .expires(RESULTS_PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(|e| nats_err("pull result frames")(boxed(e)))?;
                self.fetch = Some((batch, tokio::time::Instant::now(), 0));
            }
            let Some((batch, started, delivered)) = self.fetch.as_mut() else {
                continue;
            };
            let started = *started;
            let mut out: Vec<Incoming> = Vec::new();
            let mut bytes = 0;
            let taken = tokio::select! {
                biased;
                taken = std::future::poll_fn(|cx| loop {
                    if out.len() >= max || bytes >= max_bytes {
                        return Poll::Ready(Taken::Messages);
                    }
                    match batch.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(message))) => {
                            bytes += message.payload.len();
                            out.push(Incoming {
                                frame: parse_frame(&message),
                                message,
                            });
                        }
                        // 409 (message size exceeds max_bytes) and other statuses end
                        // the request, as 408 (expired) does.
                        Poll::Ready(Some(Err(e))) => {
                            return Poll::Ready(Taken::Over(Some(e.to_string())))
                        }
                        Poll::Ready(None) => return Poll::Ready(Taken::Over(None)),
                        Poll::Pending if out.is_empty() => return Poll::Pending,
                        Poll::Pending => return Poll::Ready(Taken::Messages),
                    }
                }) => taken,
                changed = self.connects.changed(), if self.watch_connects => match changed {
                    Ok(()) => Taken::Reconnected,
                    Err(_) => {
                        self.watch_connects = false;
                        Taken::Messages
                    }
                },
            };
            *delivered += out.len();
            let delivered = *delivered;
            match taken {
                Taken::Messages if out.is_empty() => {}
                Taken::Messages => return Ok(out),
                Taken::Over(why) => {
                    self.fetch = None;
                    if !out.is_empty() {
                        return Ok(out);
                    }
                    // A request whose messages were taken before its end (a full batch, or
                    // the 409 of its byte bound, read after them) is followed at once.
                    if delivered > 0 {
                        continue;
                    }
                    if let Some(why) = why {
                        return Err(nats_err("pull result frames")(why.into()));
                    }
                    if started.elapsed() < RESULTS_PULL_EXPIRES / 2 {
                        return Err(nats_err("pull result frames")(
                            "the pull request ended early, empty".into(),
                        ));
                    }
                }
                Taken::Reconnected => {
                    tracing::debug!("reconnected to NATS: pulling result frames again");
                    self.fetch = None;
                }
            }
        }
    }
}

/// A change of the registry bucket, as it is published ([`Coord::registry_updates`]).
#[derive(Debug, Clone)]
pub enum RegistryUpdate {
    /// An agent put its key (a heartbeat): what it said, or why it could not be read.
    Put {
        /// The key: the agent's name.
        name: String,
        /// Its status.
        status: Result<AgentStatus, String>,
    },
    /// An agent's key was deleted or purged (an agent that stopped).
    Gone {
        /// The key: the agent's name.
        name: String,
    },
}

/// A result frame and its envelope, parsed and bounded.
#[derive(Debug, Clone)]
pub struct ResultFrame {
    /// The agent that published it (the subject's token, which the server authenticates).
    pub agent: FleetName,
    /// The job (`s<sweep>` or `m<monitor>`).
    pub job: FleetJob,
    /// The slice (for a monitor round: the round).
    pub slice: u32,
    /// The attempt.
    pub attempt: Attempt,
    /// Its number in the attempt.
    pub frame: u32,
    /// Set on the attempt's last frame.
    pub last: Option<LastFrame>,
    /// Why the attempt ended early, if it did.
    pub end: Option<EndReason>,
    /// The records.
    pub batch: ResultBatch,
}

/// A pool consumer's progress through the work stream (`CONSUMER.INFO`), read to tell work
/// that ran out of deliveries from work still in play when the server's max-deliveries
/// advisory was missed (a core NATS message: it is lost while the coordinator is down).
///
/// What nats-server 2.9.10 shows for a message that ran out of deliveries (checked by
/// running it; `docs/fleet.md`): the message stays in the work stream; once an agent's next
/// pull has found its last ack_wait over, it leaves the consumer's pending set
/// (`num_ack_pending` drops), while `delivered.stream_seq` stays at or past it; the ack
/// floor passes it only when the pending set becomes empty at some ack. So a message still
/// in the stream is exhausted when the floor is past it, or when it was delivered and
/// nothing at all is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolProgress {
    /// The stream sequence of the last message delivered (every message of the pool up to
    /// it was delivered at least once).
    pub delivered_seq: u64,
    /// The stream sequence of the ack floor: nothing at or below it is pending.
    pub ack_floor_seq: u64,
    /// Messages delivered and neither acked nor given up on.
    pub ack_pending: u64,
}

impl PoolProgress {
    /// Whether the work message `seq` of this pool, known to be still in the work stream,
    /// is out of play: delivered and no longer pending, so no agent will ever get it again.
    pub fn exhausted(&self, seq: u64) -> bool {
        seq <= self.ack_floor_seq || (self.ack_pending == 0 && seq <= self.delivered_seq)
    }
}

/// An agent in the registry bucket.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    /// Its name.
    pub name: String,
    /// The bucket revision of its last heartbeat.
    pub revision: u64,
    /// What it said, or why it could not be read.
    pub status: Result<AgentStatus, String>,
}

impl Coord {
    /// Connects, creates or binds the streams, the results consumer and both buckets, and
    /// checks their configs.
    pub async fn connect(config: CoordConfig) -> Result<Coord, CoordError> {
        let (connected, connects) = tokio::sync::watch::channel(0u64);
        let mut options = async_nats::ConnectOptions::new()
            .name("porthawk-coordinator")
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            });
        if let Some(path) = &config.nkey {
            let seed = std::fs::read_to_string(path).map_err(|source| CoordError::Read {
                what: "nkey seed file",
                path: path.clone(),
                source,
            })?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.tls_client {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(&config.nats))
            .await
            .map_err(|e| nats_err(format!("connect to {}", config.nats))(boxed(e)))?
            .map_err(|e| nats_err(format!("connect to {}", config.nats))(boxed(e)))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client.clone());
        let objects = setup::create(&js, &config).await?;
        Ok(Coord {
            client,
            js,
            work: objects.work,
            results: objects.results,
            specs: objects.specs,
            agents: objects.agents,
            config,
            connects,
        })
    }

    /// Creates the pool's consumer if it does not exist, and checks its config.
    pub async fn ensure_pool(&self, pool: &FleetName) -> Result<(), CoordError> {
        setup::pool_consumer(&self.work, pool, &self.config).await
    }

    /// Stores a sweep's spec under its job's key; the revision agents fetch. A spec already
    /// stored under the key (a coordinator restarted) is kept and its revision returned.
    pub async fn put_spec(&self, job: FleetJob, spec: &SweepSpec) -> Result<u64, CoordError> {
        let key = spec_key(job);
        if let Some(entry) = self
            .specs
            .entry(key.clone())
            .await
            .map_err(|e| nats_err("read a sweep spec")(boxed(e)))?
        {
            if entry.operation == kv::Operation::Put {
                return Ok(entry.revision);
            }
        }
        self.specs
            .put(key, spec.encode().into())
            .await
            .map_err(|e| nats_err("store a sweep spec")(boxed(e)))
    }

    /// Publishes a work item to its pool; the work stream's sequence of it. The message id
    /// `w.<job>.<slice>.<epoch>` makes a repeat within the dedup window a no-op, in which
    /// case the sequence is that of the first publish.
    pub async fn publish_work(&self, pool: &FleetName, item: &WorkItem) -> Result<u64, CoordError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            work_msg_id(item.job, item.slice, item.epoch).as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(work_subject(pool, item.job), headers, item.encode().into())
            .await
            .map_err(|e| nats_err("publish a work item")(boxed(e)))?
            .await
            .map_err(|e| nats_err("publish a work item")(boxed(e)))?;
        Ok(ack.sequence)
    }

    /// Whether the work message `seq` is still in the work stream (taken or queued).
    pub async fn work_exists(&self, seq: u64) -> Result<bool, CoordError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.work.get_raw_message(seq).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(nats_err("look up a work message")(boxed(e))),
        }
    }

    /// The pool consumer's progress (see [`PoolProgress`]). Read it **before** asking
    /// [`Coord::work_exists`]: a message acked in between is then gone, never "exhausted".
    pub async fn pool_progress(&self, pool: &FleetName) -> Result<PoolProgress, CoordError> {
        let info = self
            .work
            .consumer_info(porthawk_core::pool_consumer(pool))
            .await
            .map_err(|e| nats_err("read a pool consumer")(boxed(e)))?;
        Ok(PoolProgress {
            delivered_seq: info.delivered.stream_sequence,
            ack_floor_seq: info.ack_floor.stream_sequence,
            ack_pending: info.num_ack_pending as u64,
        })
    }

    /// Deletes the work message `seq` (one that ran out of deliveries); false if it was gone.
    pub async fn delete_work(&self, seq: u64) -> Result<bool, CoordError> {
        match self.work.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => {
                // Already gone is what the caller wanted.
                let text = e.to_string();
                if text.contains("no message found") || text.contains("not found") {
                    Ok(false)
                } else {
                    Err(nats_err("delete a work message")(boxed(e)))
                }
            }
        }
    }

    /// Cancels a job: purges its queued work from every pool ([`Coord::purge_job`]) and
    /// deletes its spec key ([`Coord::drop_spec`]), which tells the agents running its slices
    /// to stop.
    pub async fn cancel_job(&self, job: FleetJob) -> Result<(), CoordError> {
        self.purge_job(job).await?;
        self.drop_spec(job).await
    }

    /// Purges a job's queued work from every pool; slices already taken run on.
    pub async fn purge_job(&self, job: FleetJob) -> Result<(), CoordError> {
        self.work
            .purge()
            .filter(work_job_filter(job))
            .await
            .map(drop)
            .map_err(|e| nats_err("purge a job's work")(boxed(e)))
    }

    /// Deletes a job's spec key: agents stop its running slices and drop their cached copy.
    pub async fn drop_spec(&self, job: FleetJob) -> Result<(), CoordError> {
        self.specs
            .delete(spec_key(job))
            .await
            .map_err(|e| nats_err("delete a sweep spec")(boxed(e)))
    }

    /// The pull on the results consumer ([`Results`]): requests of at most `max` messages
    /// and `max_bytes` (a pull without a byte bound can exceed the server's per-connection
    /// pending limit and get the consumer dropped; a byte-limited request ends with a 409,
    /// which is the end of that request, not an error), each waiting
    /// [`RESULTS_PULL_EXPIRES`] at the server. No idle heartbeat: it would only wake the
    /// coordinator more often (see the constant).
    pub fn results(&self, max: usize, max_bytes: usize) -> Results {
        let mut connects = self.connects.clone();
        connects.mark_unchanged();
        Results {
            consumer: self.results.clone(),
            max,
            max_bytes,
            connects,
            watch_connects: true,
            fetch: None,
        }
    }

    /// Result messages waiting for the coordinator: not yet delivered plus delivered and not
    /// acked (the results stream's lag).
    pub async fn results_lag(&self) -> Result<u64, CoordError> {
        let mut consumer = self.results.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| nats_err("read the results consumer")(boxed(e)))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// The work stream's sequences of the messages that ran out of deliveries, as the
    /// server's advisories report them.
    pub async fn max_deliveries(
        &self,
    ) -> Result<impl futures_util::Stream<Item = u64> + Send + 'static, CoordError> {
        let sub = self
            .client
            .subscribe(MAX_DELIVERIES_ADVISORY)
            .await
            .map_err(|e| nats_err("subscribe to max-deliveries advisories")(boxed(e)))?;
        Ok(sub.filter_map(|m| async move {
            #[derive(serde::Deserialize)]
            struct Advisory {
                stream_seq: u64,
            }
            match serde_json::from_slice::<Advisory>(&m.payload) {
                Ok(a) => Some(a.stream_seq),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable max-deliveries advisory");
                    None
                }
            }
        }))
    }

    /// Every agent listed in the registry bucket (a key expires `agent_ttl` after its last put).
    pub async fn agents(&self) -> Result<Vec<RegistryEntry>, CoordError> {
        let mut keys = self
            .agents
            .keys()
            .await
            .map_err(|e| nats_err("list the agents")(boxed(e)))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            match key {
                Ok(k) => names.push(k),
                Err(e) => return Err(nats_err("list the agents")(boxed(e))),
            }
            if names.len() >= 10_000 {
                break;
            }
        }
        let mut out = Vec::new();
        for name in names {
            let entry = self
                .agents
                .entry(name.clone())
                .await
                .map_err(|e| nats_err("read an agent's status")(boxed(e)))?;
            let Some(entry) = entry else { continue };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            out.push(RegistryEntry {
                name,
                revision: entry.revision,
                status: AgentStatus::decode(&entry.value).map_err(|e| e.to_string()),
            });
        }
        Ok(out)
    }

    /// Every put, delete and purge of the registry bucket's keys, as agents publish them: a
    /// core subscription to the bucket's subjects (the bucket's stream stores the same
    /// messages), so it costs no consumer and no timer. Expiry (`max_age`) publishes
    /// nothing on nats-server 2.9: a silent agent is noticed by its last put's age, and
    /// [`Coord::agents`] tells whether its key is gone. Puts made while the coordinator is
    /// disconnected are missed; the agent's next heartbeat is not.
    pub async fn registry_updates(
        &self,
    ) -> Result<impl futures_util::Stream<Item = RegistryUpdate> + Send + 'static, CoordError> {
        let prefix = format!("$KV.{AGENTS_BUCKET}.");
        let sub = self
            .client
            .subscribe(format!("{prefix}>"))
            .await
            .map_err(|e| nats_err("subscribe to the agent registry")(boxed(e)))?;
        Ok(sub.filter_map(move |m| {
            let name = m
                .subject
                .as_str()
                .strip_prefix(prefix.as_str())
                .map(str::to_string);
            let removed = m
                .headers
                .as_ref()
                .and_then(|h| h.get(KV_OPERATION))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            async move {
                let name = name.filter(|n| !n.is_empty())?;
                Some(if removed {
                    RegistryUpdate::Gone { name }
                } else {
                    RegistryUpdate::Put {
                        name,
                        status: AgentStatus::decode(&m.payload).map_err(|e| e.to_string()),
                    }
                })
            }
        }))
    }

    /// The underlying client, for the monitors' rounds and tests.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Parses a results message: subject, headers (bounded integers), payload (one frame).
fn parse_frame(message: &jetstream::Message) -> Result<ResultFrame, String> {
    let (agent, job) = parse_results_subject(&message.subject).map_err(|e| e.to_string())?;
    let headers = message
        .headers
        .as_ref()
        .ok_or_else(|| "a result frame without headers".to_string())?;
    let header = |name: &'static str| -> Result<Option<&str>, String> {
        Ok(headers.get(name).map(|v| v.as_str()))
    };
    let need = |name: &'static str| -> Result<&str, String> {
        header(name)?.ok_or_else(|| format!("a result frame without {name}"))
    };
    let sweep = need(HEADER_SWEEP)?;
    let slice = parse_u32_header(HEADER_SLICE, need(HEADER_SLICE)?).map_err(|e| e.to_string())?;
    let attempt: Attempt = need(HEADER_ATTEMPT)?
        .parse()
        .map_err(|e: porthawk_core::WireError| e.to_string())?;
    let frame = parse_u32_header(HEADER_FRAME, need(HEADER_FRAME)?).map_err(|e| e.to_string())?;
    let last = header(HEADER_LAST)?
        .map(|v| v.parse::<LastFrame>())
        .transpose()
        .map_err(|e| e.to_string())?;
    let end = header(HEADER_END)?
        .map(|v| v.parse::<EndReason>())
        .transpose()
        .map_err(|e| e.to_string())?;
    let id = match job {
        FleetJob::Sweep(id) | FleetJob::Monitor(id) => id,
    };
    // The job as the subject names it (`s7`), or its bare id.
    if sweep != job.to_string() && sweep != id.to_string() {
        return Err(format!(
            "{HEADER_SWEEP} {sweep:?} does not match the subject's job {job}"
        ));
    }
    let (batch, used) = decode_frame(&message.payload).map_err(|e| e.to_string())?;
    if used != message.payload.len() {
        return Err(format!(
            "{} bytes after the frame",
            message.payload.len() - used
        ));
    }
    Ok(ResultFrame {
        agent,
        job,
        slice,
        attempt,
        frame,
        last,
        end,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use super::PoolProgress;

    /// The consumer states nats-server 2.9.10 showed (max_deliver 2, ack_wait 1 s; message 1
    /// never acked) read as the janitor reads them.
    #[test]
    fn exhausted_work_is_told_from_work_in_play() {
        // Delivered twice, its last ack_wait running: pending, in play.
        let second = PoolProgress {
            delivered_seq: 1,
            ack_floor_seq: 0,
            ack_pending: 1,
        };
        assert!(!second.exhausted(1));
        // The last delivery's ack_wait over, found so by the next pull: nothing pending,
        // message 1 delivered and still in the stream.
        let out = PoolProgress {
            delivered_seq: 1,
            ack_floor_seq: 0,
            ack_pending: 0,
        };
        assert!(out.exhausted(1));
        assert!(!out.exhausted(2), "never delivered: queued, not exhausted");
        // Message 2 taken after it: pending, and 1 is not told apart by pending alone...
        let busy = PoolProgress {
            delivered_seq: 2,
            ack_floor_seq: 0,
            ack_pending: 1,
        };
        assert!(!busy.exhausted(1));
        // ...until an ack empties the pending set: the floor jumps past message 1.
        let acked = PoolProgress {
            delivered_seq: 4,
            ack_floor_seq: 2,
            ack_pending: 2,
        };
        assert!(acked.exhausted(1));
        assert!(!acked.exhausted(3));
    }
}
