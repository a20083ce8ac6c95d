//! Target permutation: how fast sweep positions map to (address, port) pairs.
//!
//! Run with `cargo bench -p porthawk-bench --bench permutation`.

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use porthawk_core::{parse_target, HostSetBuilder, PortSet, TargetSpace, TargetToken};

fn main() {
    divan::main();
}

fn space(target: &str, ports: &str) -> TargetSpace {
    let mut b = HostSetBuilder::default();
    match parse_target(target) {
        Ok(TargetToken::Range(r)) => {
            b.include(r);
        }
        other => panic!("bad bench target {target}: {other:?}"),
    }
    let ports = PortSet::parse(ports).unwrap_or_else(|e| panic!("bad bench ports: {e}"));
    TargetSpace::new(b.build(), ports, 42).unwrap_or_else(|e| panic!("bad bench space: {e}"))
}

const INDICES: u64 = 4096;

/// `TargetSpace::get` over consecutive positions, as a shard walks its slice.
#[divan::bench(args = ["10.0.0.0/24 × 100", "10.0.0.0/16 × 1000", "10.0.0.0/8 × all"])]
fn target_space_get(bencher: Bencher, case: &str) {
    let s = match case {
        "10.0.0.0/24 × 100" => space("10.0.0.0/24", "1-100"),
        "10.0.0.0/16 × 1000" => space("10.0.0.0/16", "1-1000"),
        _ => space("10.0.0.0/8", "all"),
    };
    let start = s.len() / 3;
    bencher.counter(ItemsCount::new(INDICES)).bench(|| {
        for i in start..start + INDICES {
            black_box(s.get(black_box(i)));
        }
    });
}
