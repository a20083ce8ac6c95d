//! Load for the coordinator's ingest benchmark (`benches/fleet.sh ingest`): publishes the
//! result frames of every slice of a fleet sweep straight into the results stream, as
//! agents would, without probing anything.
//!
//! The sweep must exist on the coordinator (posted with `"from"`, slices claimed) and its
//! spec be in the spec bucket: the records are the sweep's own positions (so the coordinator
//! accepts them as inside the sweep), one attempt per slice, frames of 4,096 records, every
//! `open_every`-th record `open` and the rest `closed`.
//!
//! Usage: `ingest_load NATS_URL SWEEP_ID SLICE_LEN [OPEN_EVERY]`; prints one JSON line with
//! the frames, records and bytes published and the seconds it took.
// A benchmark tool: it stops at the first problem, loudly.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::time::Instant;

use async_nats::HeaderMap;
use porthawk_core::{
    encode_frame, frame_msg_id, results_subject, spec_key, Attempt, FleetJob, FleetName, JobId,
    LastFrame, PortState, ProbeRecord, ResultBatch, SweepSpec, WireMessage, HEADER_ATTEMPT,
    HEADER_FRAME, HEADER_LAST, HEADER_SLICE, HEADER_SWEEP, SPECS_BUCKET,
};

/// Records per frame, as an engine shard fills a batch.
const FRAME_RECORDS: u64 = 4096;
/// PubAcks awaited at most at once.
const IN_FLIGHT: usize = 256;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: ingest_load NATS_URL SWEEP_ID SLICE_LEN [OPEN_EVERY]"
    );
    let (url, sweep, slice_len) = (&args[1], args[2].parse::<u64>()?, args[3].parse::<u64>()?);
    let open_every: u64 = args.get(4).map_or(Ok(100), |a| a.parse())?;
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let job = FleetJob::Sweep(sweep);
    let specs = js.get_key_value(SPECS_BUCKET).await?;
    let spec = specs
        .get(spec_key(job))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no spec for {job}"))?;
    let space = SweepSpec::decode(&spec)?.space()?;
    let total = space.len();
    let agent = FleetName::new("agent", "bench")?;
    let subject = results_subject(&agent, job);
    let started = Instant::now();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut acks = VecDeque::new();
    let mut slice = 0u32;
    while u64::from(slice) * slice_len < total {
        let start = u64::from(slice) * slice_len;
        let end = (start + slice_len).min(total);
        let attempt = Attempt {
            work_seq: 1_000_000_000 + u64::from(slice),
            delivered: 1,
        };
        let count = (end - start).div_ceil(FRAME_RECORDS) as u32;
        for n in 0..count {
            let first = start + u64::from(n) * FRAME_RECORDS;
            let last = (first + FRAME_RECORDS).min(end);
            let records = (first..last)
                .map(|p| {
                    let addr = space.get(p).unwrap();
                    let state = if p % open_every == 0 {
                        PortState::Open
                    } else {
                        PortState::Closed
                    };
                    ProbeRecord::new(addr.ip(), addr.port(), state, 250, 1)
                })
                .collect();
            let batch = ResultBatch {
                job: JobId(sweep),
                shard: 0,
                records,
                shard_done: n + 1 == count,
                job_done: n + 1 == count,
                cancelled: false,
            };
            let mut payload = Vec::new();
            encode_frame(&batch, &mut payload);
            bytes += payload.len() as u64;
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_SWEEP, job.to_string().as_str());
            headers.insert(HEADER_SLICE, slice.to_string().as_str());
            headers.insert(HEADER_ATTEMPT, attempt.to_string().as_str());
            headers.insert(HEADER_FRAME, n.to_string().as_str());
            if n + 1 == count {
                let summary = LastFrame {
                    frames: count,
                    records: end - start,
                };
                headers.insert(HEADER_LAST, summary.to_string().as_str());
            }
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                frame_msg_id(job, slice, attempt, n).as_str(),
            );
            acks.push_back(
                js.publish_with_headers(subject.clone(), headers, payload.into())
                    .await?,
            );
            if acks.len() >= IN_FLIGHT {
                acks.pop_front().unwrap().await?;
            }
            frames += 1;
        }
        slice += 1;
    }
    while let Some(ack) = acks.pop_front() {
        ack.await?;
    }
    println!(
        "{{\"frames\":{frames},\"records\":{total},\"bytes\":{bytes},\"slices\":{slice},\"publish_s\":{:.3}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
