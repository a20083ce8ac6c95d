//! The probe state machines: `Probe` (connect verdicts) and `Conversation` (dialogs),
//! transitions per second. (Identification has its own benchmark,
//! `benches/identify.rs`.)
//!
//! Run with `cargo bench -p porthawk-bench --bench probe`.

use std::net::SocketAddr;
use std::time::Duration;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use porthawk_core::{ConnectEvent, Probe, ProbeSpec, Step};

fn main() {
    divan::main();
}

const ECONNREFUSED: i32 = 111;
const PROBES: usize = 1024;

fn spec() -> ProbeSpec {
    ProbeSpec {
        connect_timeout: Duration::from_millis(200),
        tries: 2,
        ..ProbeSpec::default()
    }
}

fn connected() -> ConnectEvent {
    let local: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let peer: SocketAddr = ([127, 0, 0, 1], 80).into();
    ConnectEvent::Connected { local, peer }
}

/// One transition per probe: a refusal (the common case of a sweep) or a handshake.
#[divan::bench(args = ["refused", "connected"])]
fn on_connect(bencher: Bencher, event: &str) {
    let spec = spec();
    let event = match event {
        "refused" => ConnectEvent::Failed(ECONNREFUSED),
        _ => connected(),
    };
    bencher.counter(ItemsCount::new(PROBES)).bench(|| {
        for _ in 0..PROBES {
            let mut p = Probe::new();
            black_box(p.on_connect(black_box(&spec), black_box(event)));
        }
    });
}

/// Two transitions per probe: a timeout that is retried, then a verdict.
#[divan::bench]
fn timeout_then_retry(bencher: Bencher) {
    let spec = spec();
    bencher.counter(ItemsCount::new(2 * PROBES)).bench(|| {
        for _ in 0..PROBES {
            let mut p = Probe::new();
            let first = p.on_connect(&spec, black_box(ConnectEvent::TimedOut));
            debug_assert!(matches!(first, Step::Reconnect));
            black_box(p.on_connect(&spec, black_box(ConnectEvent::TimedOut)));
        }
    });
}

/// A whole SMTP dialog through the `Conversation` machine (the `smtp` preset against a scripted
/// server): six transitions per probe, from the handshake to the verdict.
#[divan::bench]
fn smtp_dialog(bencher: Bencher) {
    let dialog = porthawk_core::preset("smtp")
        .ok()
        .and_then(|p| p.dialog().ok())
        .map(std::sync::Arc::new);
    let spec = ProbeSpec { dialog, ..spec() };
    let mut conv = porthawk_core::Conversation::default();
    let t = Duration::from_millis(1);
    bencher
        .counter(ItemsCount::new(6 * PROBES))
        .bench_local(|| {
            for _ in 0..PROBES {
                conv.reset();
                black_box(conv.on_connect(&spec, connected()));
                let step = conv.on_recv(&spec, black_box(b"220 mx.example ESMTP Postfix\r\n"), t);
                let n = conv.pending_send().len();
                black_box(match step {
                    Step::Send { .. } => conv.on_sent(&spec, n, t),
                    other => other,
                });
                let step = conv.on_recv(&spec, black_box(b"250-mx.example\r\n250 OK\r\n"), t);
                let n = conv.pending_send().len();
                let step = match step {
                    Step::Send { .. } => conv.on_sent(&spec, n, t),
                    other => other,
                };
                debug_assert!(matches!(step, Step::Done { .. }));
                black_box(step);
                black_box(conv.matched());
            }
        });
}
