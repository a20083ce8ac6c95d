//! Service identification: nanoseconds per banner over the table of real banners the tests
//! use, and for the common services one by one.
//!
//! Run with `cargo bench -p porthawk-bench --bench identify`.

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use porthawk_core::fuzzing::SAMPLES;
use porthawk_core::identify;

fn main() {
    divan::main();
}

/// Every sample banner once per iteration.
#[divan::bench]
fn all_samples(bencher: Bencher) {
    bencher.counter(ItemsCount::new(SAMPLES.len())).bench(|| {
        for s in SAMPLES {
            black_box(identify(black_box(s.reply)));
        }
    });
}

/// One banner per common service.
#[divan::bench(args = ["openssh-9.2", "postfix", "nginx-1.22.1", "redis-7.0.15-info", "mariadb-10.11.6", "dovecot-imap"])]
fn common(bencher: Bencher, name: &str) {
    let reply = SAMPLES
        .iter()
        .find(|s| s.name.starts_with(name))
        .or_else(|| SAMPLES.first())
        .map_or(&b""[..], |s| s.reply);
    bencher.bench(|| black_box(identify(black_box(reply))));
}

/// Bytes that are no known service: the cost of saying "unknown".
#[divan::bench]
fn garbage(bencher: Bencher) {
    let reply: Vec<u8> = (0..200u8).map(|b| b.wrapping_mul(37)).collect();
    bencher.bench(|| black_box(identify(black_box(&reply))));
}
