//! Result batch frames: encode and decode speed in records per second.
//!
//! Run with `cargo bench -p porthawk-bench --bench frames`.

use std::net::{IpAddr, Ipv4Addr};

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use porthawk_core::{decode_frame, encode_frame, JobId, PortState, ProbeRecord, ResultBatch};

fn main() {
    divan::main();
}

/// A batch like a shard sends: mostly closed, some open, a few filtered and errors.
fn batch(records: usize) -> ResultBatch {
    let records = (0..records)
        .map(|i| {
            let state = match i % 100 {
                0..=2 => PortState::Open,
                3 => PortState::Filtered,
                4 => PortState::Error,
                _ => PortState::Closed,
            };
            ProbeRecord {
                errno: (state == PortState::Error).then_some(111),
                banner: (state == PortState::Open).then(|| b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
                ..ProbeRecord::new(
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32)),
                    (i % 1000) as u16 + 1,
                    state,
                    (i * 37 % 5000) as u32,
                    1,
                )
            }
        })
        .collect();
    ResultBatch {
        job: JobId(7),
        shard: 1,
        records,
        shard_done: false,
        job_done: false,
        cancelled: false,
    }
}

const SIZES: [usize; 3] = [64, 1024, 4096];

#[divan::bench(args = SIZES)]
fn encode(bencher: Bencher, records: usize) {
    let b = batch(records);
    let mut out = Vec::with_capacity(records * 16);
    bencher.counter(ItemsCount::new(records)).bench_local(|| {
        out.clear();
        encode_frame(black_box(&b), &mut out);
        black_box(out.len());
    });
}

#[divan::bench(args = SIZES)]
fn decode(bencher: Bencher, records: usize) {
    let mut frame = Vec::new();
    encode_frame(&batch(records), &mut frame);
    bencher
        .counter(ItemsCount::new(records))
        .bench(|| black_box(decode_frame(black_box(&frame))).is_ok());
}
