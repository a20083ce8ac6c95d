//! One slice on this agent, from its work message to its ack (fleet.md §3.4, §3.5): the spec
//! (cached by revision), the engine job over the slice's positions, `+WPI` while it runs,
//! its frames published with the contract's headers and message ids (re-chunked to fit a
//! NATS message, retried with the same id), `double_ack` after every PubAck; or an end
//! frame without probing (expired, cancelled, a bad spec), or a NAK when given back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::Operation;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{AckKind, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use porthawk_core::{
    encode_frame, frame_msg_id, parse_work_subject, results_subject, spec_key, Attempt, EndReason,
    LastFrame, ResultBatch, SpecRef, SweepSpec, WireMessage, WorkItem, HEADER_ATTEMPT, HEADER_END,
    HEADER_FRAME, HEADER_LAST, HEADER_SLICE, HEADER_SWEEP,
};
use porthawk_engine::{result_channel, Job};
use rustls::time_provider::DefaultTimeProvider;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::agent::{Ctx, Running};

/// Frames one slice may have waiting for their PubAck before it stops reading the engine.
const SLICE_PUBLISH_WINDOW: usize = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a slice's spec came from.
enum SpecOutcome {
    Spec(Arc<SweepSpec>),
    /// The key is gone: the job was cancelled.
    Cancelled,
    /// The spec is bad: report it in an `error:` end frame.
    Invalid(String),
    /// NATS did not answer: give the slice back, this is about us, not the slice.
    Local(String),
}

async fn resolve_spec(ctx: &Ctx, item: &WorkItem) -> SpecOutcome {
    let revision = match &item.spec {
        SpecRef::Inline(spec) => return SpecOutcome::Spec(Arc::new(spec.as_ref().clone())),
        SpecRef::Ref(revision) => *revision,
    };
    let key = spec_key(item.job);
    if let Some(spec) = ctx
        .spec_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&(key.clone(), revision)).cloned())
    {
        return SpecOutcome::Spec(spec);
    }
    let entry = match ctx.specs.entry(key.clone()).await {
        Ok(entry) => entry,
        Err(e) => {
            return SpecOutcome::Local(format!(
                "cannot read spec {key}: {e}{}",
                ctx.errors.explain()
            ))
        }
    };
    let Some(entry) = entry else {
        return SpecOutcome::Cancelled;
    };
    if entry.operation != Operation::Put {
        return SpecOutcome::Cancelled;
    }
    if entry.revision != revision {
        return SpecOutcome::Invalid(format!(
            "spec {key} is at revision {}, the work item names {revision}",
            entry.revision
        ));
    }
    match SweepSpec::decode(&entry.value) {
        Ok(spec) => {
            let spec = Arc::new(spec);
            if let Ok(mut cache) = ctx.spec_cache.lock() {
                // Specs are small and few; a bound keeps a long-lived agent's cache small.
                if cache.len() >= 64 {
                    cache.clear();
                }
                cache.insert((key, revision), Arc::clone(&spec));
            }
            SpecOutcome::Spec(spec)
        }
        Err(e) => SpecOutcome::Invalid(e.to_string()),
    }
}

/// One slice, from its message to its ack (or NAK).
pub(crate) async fn run_slice(ctx: Arc<Ctx>, msg: Message, _permit: OwnedSemaphorePermit) {
    let attempt = match msg.info() {
        Ok(info) => Attempt {
            work_seq: info.stream_sequence,
            delivered: info.delivered.max(0) as u64,
        },
        Err(e) => {
            tracing::warn!(error = %e, "a work message without JetStream metadata; ignored");
            return;
        }
    };
    let item = match WorkItem::decode(&msg.payload) {
        Ok(item) => item,
        Err(e) => {
            // Nobody can run it: terminate rather than let it bounce between agents.
            let subject = parse_work_subject(msg.subject.as_str());
            tracing::warn!(subject = %msg.subject, ?subject, error = %e, "undecodable work item: terminated");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let mut slice = SliceRun {
        subject: results_subject(&ctx.name, item.job),
        ctx,
        msg,
        item,
        attempt,
        frames: 0,
        records: 0,
        pubs: FuturesUnordered::new(),
    };
    slice.run().await;
}

struct SliceRun {
    ctx: Arc<Ctx>,
    msg: Message,
    item: WorkItem,
    attempt: Attempt,
    subject: String,
    frames: u32,
    records: u64,
    pubs: FuturesUnordered<tokio::task::JoinHandle<()>>,
}

impl SliceRun {
    async fn run(&mut self) {
        let (job, slice, attempt) = (self.item.job, self.item.slice, self.attempt);
        tracing::info!(%job, slice, %attempt, start = self.item.start, end = self.item.end, "slice taken");
        if self.item.expired(now_ms()) {
            self.end_without_probing(EndReason::Expired).await;
            return;
        }
        let spec = match resolve_spec(&self.ctx, &self.item).await {
            SpecOutcome::Spec(spec) => spec,
            SpecOutcome::Cancelled => {
                self.end_without_probing(EndReason::Cancelled).await;
                return;
            }
            SpecOutcome::Invalid(reason) => {
                self.end_without_probing(EndReason::error(&reason)).await;
                return;
            }
            SpecOutcome::Local(reason) => {
                tracing::warn!(%job, slice, %reason, "giving the slice back");
                let _ = self
                    .msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
                return;
            }
        };
        let prepared = spec.space().map_err(|e| e.to_string()).and_then(|space| {
            let positions = self
                .item
                .positions(space.len())
                .map_err(|e| e.to_string())?;
            let probe = spec
                .probe
                .spec(Arc::new(DefaultTimeProvider))
                .map_err(|e| format!("probe.{}: {e}", e.field))?;
            Ok((space, positions, probe))
        });
        let (space, positions, probe) = match prepared {
            Ok(p) => p,
            Err(reason) => {
                self.end_without_probing(EndReason::error(&reason)).await;
                return;
            }
        };
        let (cancel_tx, mut cancel) = watch::channel(false);
        if let Ok(mut running) = self.ctx.running.lock() {
            running.insert(
                attempt,
                Running {
                    job,
                    slice,
                    cancel: cancel_tx,
                },
            );
        }
        let (sink, results) = result_channel(16);
        let rate = match (self.item.rate, self.ctx.rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let handle = self.ctx.engine.submit(Job {
            id: self.ctx.engine.next_job_id(),
            space: Arc::new(space),
            spec: probe,
            rate,
            positions,
            sink,
        });
        // The engine's channel blocks; a thread hands its batches to this task.
        let (tx, mut batches) = mpsc::channel::<ResultBatch>(4);
        tokio::task::spawn_blocking(move || {
            while let Ok(batch) = results.recv() {
                if tx.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        let mut give_back = self.ctx.give_back.clone();
        let mut progress = tokio::time::interval(self.ctx.progress_every);
        progress.tick().await;
        let mut cancelled = false;
        let mut done = false;
        let mut gave_back = *give_back.borrow();
        while !(gave_back || (done && self.pubs.is_empty())) {
            let read_more = !done && self.pubs.len() < SLICE_PUBLISH_WINDOW;
            tokio::select! {
                batch = batches.recv(), if read_more => match batch {
                    Some(batch) => {
                        let last = batch.job_done;
                        self.publish_batch(batch, cancelled);
                        done = last;
                    }
                    None => {
                        // The engine dropped the job without a job_done batch: it is
                        // stopping. Not a fact about the slice: give it back.
                        gave_back = true;
                    }
                },
                Some(_) = self.pubs.next(), if !self.pubs.is_empty() => {}
                _ = progress.tick() => {
                    if let Err(e) = self.msg.ack_with(AckKind::Progress).await {
                        tracing::warn!(%job, slice, error = %e, "in-progress ack failed");
                    }
                }
                changed = cancel.changed(), if !cancelled => {
                    cancelled = true;
                    if changed.is_ok() {
                        handle.cancel();
                    }
                }
                changed = give_back.changed() => {
                    gave_back = changed.is_err() || *give_back.borrow();
                }
            }
        }
        if let Ok(mut running) = self.ctx.running.lock() {
            running.remove(&attempt);
        }
        if gave_back {
            handle.cancel();
            for p in self.pubs.iter() {
                p.abort();
            }
            match self.msg.ack_with(AckKind::Nak(None)).await {
                Ok(()) => tracing::info!(%job, slice, %attempt, "slice given back (NAK)"),
                Err(e) => {
                    tracing::warn!(%job, slice, error = %e, "NAK failed; the slice comes back after ack_wait")
                }
            }
            return;
        }
        self.ack().await;
    }

    /// Acks after every frame has its PubAck. The server answers even when another
    /// attempt's ack already removed the item (fleet.md #12): completion is the
    /// coordinator's call, from the frames.
    async fn ack(&self) {
        let (job, slice) = (self.item.job, self.item.slice);
        match self.msg.double_ack().await {
            Ok(()) => {
                tracing::info!(%job, slice, attempt = %self.attempt, frames = self.frames, records = self.records, "slice done")
            }
            Err(e) => {
                tracing::warn!(%job, slice, error = %e, "ack failed; the coordinator decides from the frames")
            }
        }
    }

    /// Publishes one empty last frame with `end`, waits for its PubAck, and acks.
    async fn end_without_probing(&mut self, end: EndReason) {
        tracing::info!(job = %self.item.job, slice = self.item.slice, %end, "slice ends without probing");
        let batch = ResultBatch {
            job: porthawk_core::JobId(0),
            shard: 0,
            records: Vec::new(),
            shard_done: true,
            job_done: true,
            cancelled: end == EndReason::Cancelled,
        };
        self.publish_frame(&batch, Some(end), true);
        let mut progress = tokio::time::interval(self.ctx.progress_every);
        progress.tick().await;
        while !self.pubs.is_empty() {
            tokio::select! {
                _ = self.pubs.next() => {}
                _ = progress.tick() => { let _ = self.msg.ack_with(AckKind::Progress).await; }
            }
        }
        self.ack().await;
    }

    /// Publishes the frames of one engine batch, split so each fits in a NATS message.
    fn publish_batch(&mut self, batch: ResultBatch, cancelled: bool) {
        let last = batch.job_done;
        let end = (last && (batch.cancelled || cancelled)).then_some(EndReason::Cancelled);
        if !last && batch.records.is_empty() {
            return;
        }
        for part in split_batch(batch, self.ctx.max_frame) {
            let is_last = last && part.job_done;
            self.publish_frame(&part, if is_last { end.clone() } else { None }, is_last);
        }
    }

    fn publish_frame(&mut self, batch: &ResultBatch, end: Option<EndReason>, last: bool) {
        let n = self.frames;
        self.frames += 1;
        self.records += batch.records.len() as u64;
        let mut payload = Vec::new();
        encode_frame(batch, &mut payload);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_SWEEP, self.item.job.to_string().as_str());
        headers.insert(HEADER_SLICE, self.item.slice.to_string().as_str());
        headers.insert(HEADER_ATTEMPT, self.attempt.to_string().as_str());
        headers.insert(HEADER_FRAME, n.to_string().as_str());
        if last {
            let summary = LastFrame {
                frames: self.frames,
                records: self.records,
            };
            headers.insert(HEADER_LAST, summary.to_string().as_str());
            if let Some(end) = end {
                headers.insert(HEADER_END, end.to_string().as_str());
            }
        }
        let id = frame_msg_id(self.item.job, self.item.slice, self.attempt, n);
        let ctx = Arc::clone(&self.ctx);
        let subject = self.subject.clone();
        let records = batch.records.len() as u64;
        ctx.pending.fetch_add(1, Ordering::Relaxed);
        let pending = Pending(Arc::clone(&ctx));
        self.pubs.push(tokio::spawn(async move {
            // Dropped at the end or when the task is aborted (a slice given back).
            let _pending = pending;
            publish_until_acked(&ctx, subject, Bytes::from(payload), headers, id).await;
            ctx.records.fetch_add(records, Ordering::Relaxed);
        }));
    }
}

/// One frame counted in `Ctx::pending` until it is dropped.
struct Pending(Arc<Ctx>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Publishes until a PubAck arrives, retrying with the same `Nats-Msg-Id` (deduplicated by
/// the stream within its window), with a growing pause. Ends only with a PubAck or when the
/// task is aborted (the slice given back).
async fn publish_until_acked(
    ctx: &Ctx,
    subject: String,
    payload: Bytes,
    headers: HeaderMap,
    id: String,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(&id);
            ctx.js.send_publish(subject.clone(), message).await?.await
        };
        match attempt.await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(%id, "frame was already stored (retried publish)");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(%subject, %id, error = %e, "publishing a frame failed; retrying with the same id{}", ctx.errors.explain());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Splits `batch` into batches whose frames are at most `max` bytes (a single record that
/// is larger still goes alone). Only the last part keeps the shard/job end flags.
fn split_batch(batch: ResultBatch, max: usize) -> Vec<ResultBatch> {
    let mut buf = Vec::new();
    encode_frame(&batch, &mut buf);
    if buf.len() <= max || batch.records.len() <= 1 {
        return vec![batch];
    }
    let mut first = batch.clone();
    let mut second = batch;
    let tail = first.records.split_off(first.records.len() / 2);
    second.records = tail;
    first.shard_done = false;
    first.job_done = false;
    first.cancelled = false;
    let mut parts = split_batch(first, max);
    parts.extend(split_batch(second, max));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthawk_core::{decode_frame, PortState, ProbeRecord};

    #[test]
    fn oversized_batches_split_into_frames_that_fit() {
        let mut records = Vec::new();
        for i in 0..100u16 {
            let mut r =
                ProbeRecord::new("10.0.0.1".parse().unwrap(), i + 1, PortState::Open, 10, 1);
            r.banner = Some(vec![b'x'; 1000]);
            records.push(r);
        }
        let batch = ResultBatch {
            job: porthawk_core::JobId(1),
            shard: 0,
            records,
            shard_done: true,
            job_done: true,
            cancelled: false,
        };
        let parts = split_batch(batch.clone(), 16 << 10);
        assert!(parts.len() >= 7, "{}", parts.len());
        let mut all = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let mut buf = Vec::new();
            encode_frame(p, &mut buf);
            assert!(buf.len() <= 16 << 10);
            assert_eq!(decode_frame(&buf).unwrap().0, *p);
            assert_eq!(p.job_done, i + 1 == parts.len());
            all.extend(p.records.clone());
        }
        assert_eq!(all, batch.records);
        assert_eq!(split_batch(batch.clone(), 1 << 20), vec![batch]);
    }
}
