//! Streams, consumers and buckets of fleet mode (`docs/fleet.md`, "Names"), created with
//! `get_or_create_*` and then read back: nats-server 2.9 silently treats a create as an
//! update or ignores fields it does not know, so an existing object with another config is
//! refused here rather than discovered in production.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType, Stream};
use async_nats::jetstream::{self, kv};
use porthawk_core::{
    pool_consumer as pool_consumer_name, work_filter, FleetName, AGENTS_BUCKET,
    COORDINATOR_CONSUMER, RESULTS_STREAM, RESULTS_SUBJECTS, SPECS_BUCKET, WORK_STREAM,
    WORK_SUBJECTS,
};

use super::{boxed, nats_err, CoordConfig, CoordError};

/// The work stream's bound on queued slices (publication is lazy, so this is never near).
const WORK_MAX_MSGS: i64 = 1_000_000;
/// How long a repeated work publish is recognised (a coordinator restarted mid-publish).
const WORK_DUP_WINDOW: Duration = Duration::from_secs(120);
/// How long a repeated frame publish is recognised (an agent retrying after a lost PubAck).
const RESULTS_DUP_WINDOW: Duration = Duration::from_secs(600);
/// Frames delivered to the coordinator and not yet acked, at most.
const RESULTS_MAX_ACK_PENDING: i64 = 4096;
/// How long the coordinator may hold a frame before it is delivered again.
///
/// Short rather than the design's first 60 s, because recovery waits on it: frames
/// delivered to a coordinator that crashed (up to a fetch batch), or whose ack was lost with
/// a nats-server restart, come back after this long, and until then they hold back the
/// slices they complete and keep the janitor paused (it waits while frames are pending). A
/// batch that takes longer to apply than this is not lost or counted twice: the ingest loop
/// pulls again only after acking the whole batch, nats-server 2.9 takes a late ack, and a
/// frame delivered twice is a duplicate in the ledger. (Measured, `docs/benchmarks.md`:
/// with `store = "all"` batches of ~50 s, 129 to 194 of 1,024 frames came twice, harmlessly;
/// keeping the batch alive with `+WPI` did not change that, so ack_wait expiry is not the
/// whole cause.) An existing consumer with another value is updated at start (`consumer`).
const RESULTS_ACK_WAIT: Duration = Duration::from_secs(15);
/// Slices of a pool handed out and not acked, at most.
const POOL_MAX_ACK_PENDING: i64 = 1000;
/// The spec bucket's safety net: specs of sweeps that never ended go after a week.
const SPEC_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

pub(super) struct Objects {
    pub(super) work: Stream,
    pub(super) results: PullConsumer,
    pub(super) specs: kv::Store,
    pub(super) agents: kv::Store,
}

fn work_config() -> Config {
    Config {
        name: WORK_STREAM.into(),
        subjects: vec![WORK_SUBJECTS.into()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: WORK_DUP_WINDOW,
        max_messages: WORK_MAX_MSGS,
        discard: DiscardPolicy::New,
        ..unlimited()
    }
}

fn results_config(c: &CoordConfig) -> Config {
    Config {
        name: RESULTS_STREAM.into(),
        subjects: vec![RESULTS_SUBJECTS.into()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: RESULTS_DUP_WINDOW,
        max_bytes: c.results_max_bytes,
        discard: DiscardPolicy::New,
        ..unlimited()
    }
}

/// A KV bucket's stream, as `create_key_value` would make it (history 1).
fn bucket_config(bucket: &str, max_age: Duration) -> Config {
    Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        ..unlimited()
    }
}

/// A stream config with every limit off, written as the server writes it back (`-1`), so
/// that the comparison of what was asked and what exists is exact.
fn unlimited() -> Config {
    Config {
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        ..Config::default()
    }
}

pub(super) async fn create(
    js: &jetstream::Context,
    c: &CoordConfig,
) -> Result<Objects, CoordError> {
    let work = stream(js, work_config()).await?;
    let results_stream = stream(js, results_config(c)).await?;
    stream(js, bucket_config(SPECS_BUCKET, SPEC_MAX_AGE)).await?;
    stream(js, bucket_config(AGENTS_BUCKET, c.agent_ttl)).await?;
    let wanted = pull::Config {
        durable_name: Some(COORDINATOR_CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: RESULTS_ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: RESULTS_MAX_ACK_PENDING,
        ..pull::Config::default()
    };
    let results = consumer(&results_stream, COORDINATOR_CONSUMER, wanted).await?;
    let specs = js
        .get_key_value(SPECS_BUCKET)
        .await
        .map_err(|e| nats_err("bind the sweep spec bucket")(boxed(e)))?;
    let agents = js
        .get_key_value(AGENTS_BUCKET)
        .await
        .map_err(|e| nats_err("bind the agent registry bucket")(boxed(e)))?;
    Ok(Objects {
        work,
        results,
        specs,
        agents,
    })
}

/// The pool's consumer, shared by its agents.
pub(super) async fn pool_consumer(
    work: &Stream,
    pool: &FleetName,
    c: &CoordConfig,
) -> Result<(), CoordError> {
    let name = pool_consumer_name(pool);
    let wanted = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: work_filter(pool),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: c.ack_wait,
        max_deliver: c.max_deliver,
        max_ack_pending: POOL_MAX_ACK_PENDING,
        ..pull::Config::default()
    };
    consumer(work, &name, wanted).await.map(drop)
}

async fn stream(js: &jetstream::Context, wanted: Config) -> Result<Stream, CoordError> {
    let name = wanted.name.clone();
    let mut stream = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| nats_err(format!("create or bind stream {name}"))(boxed(e)))?;
    let found = stream
        .info()
        .await
        .map_err(|e| nats_err(format!("read stream {name}"))(boxed(e)))?
        .config
        .clone();
    let what = format!("stream {name}");
    same(&what, "subjects", &found.subjects, &wanted.subjects)?;
    same(&what, "retention", &found.retention, &wanted.retention)?;
    same(&what, "storage", &found.storage, &wanted.storage)?;
    same(&what, "discard", &found.discard, &wanted.discard)?;
    // Zero asks for the server's default (2 min, or max_age if shorter).
    if !wanted.duplicate_window.is_zero() {
        same(
            &what,
            "duplicate_window",
            &found.duplicate_window,
            &wanted.duplicate_window,
        )?;
    }
    same(&what, "max_bytes", &found.max_bytes, &wanted.max_bytes)?;
    same(&what, "max_msgs", &found.max_messages, &wanted.max_messages)?;
    same(&what, "max_age", &found.max_age, &wanted.max_age)?;
    same(
        &what,
        "max_msgs_per_subject",
        &found.max_messages_per_subject,
        &wanted.max_messages_per_subject,
    )?;
    Ok(stream)
}

/// Creates or binds a consumer and checks its config. An existing consumer that differs
/// only in `ack_wait` (a new version's default, or `[fleet] ack_wait` changed) is updated
/// in place: a create of an existing consumer is an update on nats-server 2.9 (fact #21 of
/// the design), `ack_wait` is one of the fields an update may change, and a running slice
/// or frame only gets the new value at its next delivery. Any other difference is refused.
async fn consumer(
    stream: &Stream,
    name: &str,
    wanted: pull::Config,
) -> Result<PullConsumer, CoordError> {
    let mut consumer: PullConsumer = stream
        .get_or_create_consumer(name, wanted.clone())
        .await
        .map_err(|e| nats_err(format!("create or bind consumer {name}"))(boxed(e)))?;
    let mut found = consumer
        .info()
        .await
        .map_err(|e| nats_err(format!("read consumer {name}"))(boxed(e)))?
        .config
        .clone();
    let what = format!("consumer {name}");
    if found.ack_wait != wanted.ack_wait && same_but_ack_wait(&found, &wanted) {
        tracing::warn!(
            consumer = name,
            from = ?found.ack_wait,
            to = ?wanted.ack_wait,
            "updating the consumer's ack_wait"
        );
        consumer = stream
            .create_consumer(wanted.clone())
            .await
            .map_err(|e| nats_err(format!("update consumer {name}"))(boxed(e)))?;
        found = consumer
            .info()
            .await
            .map_err(|e| nats_err(format!("read consumer {name}"))(boxed(e)))?
            .config
            .clone();
    }
    same(
        &what,
        "filter_subject",
        &found.filter_subject,
        &wanted.filter_subject,
    )?;
    same(&what, "ack_policy", &found.ack_policy, &wanted.ack_policy)?;
    same(&what, "ack_wait", &found.ack_wait, &wanted.ack_wait)?;
    same(
        &what,
        "max_deliver",
        &found.max_deliver,
        &wanted.max_deliver,
    )?;
    same(
        &what,
        "max_ack_pending",
        &found.max_ack_pending,
        &wanted.max_ack_pending,
    )?;
    Ok(consumer)
}

/// Whether the fields the coordinator checks, other than `ack_wait`, agree.
fn same_but_ack_wait(
    found: &async_nats::jetstream::consumer::Config,
    wanted: &pull::Config,
) -> bool {
    found.filter_subject == wanted.filter_subject
        && found.ack_policy == wanted.ack_policy
        && found.max_deliver == wanted.max_deliver
        && found.max_ack_pending == wanted.max_ack_pending
}

fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    field: &'static str,
    found: &T,
    wanted: &T,
) -> Result<(), CoordError> {
    if found == wanted {
        return Ok(());
    }
    Err(CoordError::ConfigDiffers {
        what: what.to_string(),
        field,
        found: format!("{found:?}"),
        wanted: format!("{wanted:?}"),
    })
}
