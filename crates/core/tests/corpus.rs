//! Replays every committed fuzz input through the code the fuzz targets run, so that stable
//! `cargo test` catches a regression that fuzzing found once, without nightly or cargo-fuzz.
//!
//! Inputs live in `fuzz/corpus/<target>/` (the seed corpus) and `fuzz/regressions/<target>/`
//! (minimized reproducers of fixed crashes). The seeds are generated from the samples in
//! `porthawk_core::fuzzing`; after changing those, rewrite them with
//! `PORTHAWK_BLESS_CORPUS=1 cargo test -p porthawk-core --test corpus`.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use porthawk_core::fuzzing;

/// A fuzz target's name and the function it runs.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("identify", fuzzing::identify_target),
    ("dialog", fuzzing::dialog_target),
    ("escapes", fuzzing::escapes_target),
    ("frame", fuzzing::frame_target),
    ("cert", fuzzing::cert_target),
    ("ports", fuzzing::ports_target),
    ("targets", fuzzing::targets_target),
    ("duration", fuzzing::duration_target),
    ("wire", fuzzing::wire_target),
    ("fleet_wire", fuzzing::fleet_wire_target),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly under `dir` (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_committed_fuzz_input_replays_cleanly() {
    let mut failures = Vec::new();
    for &(target, run) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "no seed corpus for fuzz target {target}");
        let regressions = files(&fuzz_dir().join("regressions").join(target));
        for path in seeds.iter().chain(&regressions) {
            let data = fs::read(path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
}

/// The seed files each target should have: file name → bytes.
fn seeds() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut all = BTreeMap::new();
    all.insert(
        "identify",
        fuzzing::SAMPLES
            .iter()
            .map(|s| (format!("seed-{}", s.name), s.reply.to_vec()))
            .collect(),
    );
    all.insert(
        "dialog",
        fuzzing::dialog_seeds()
            .into_iter()
            .chain(fuzzing::user_dialog_seeds())
            .chain(fuzzing::identify_dialog_seeds())
            .map(|(name, data)| (format!("seed-{name}"), data))
            .collect(),
    );
    all.insert(
        "escapes",
        fuzzing::ESCAPE_SEEDS
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("seed-{i:02}"), s.to_vec()))
            .collect(),
    );
    all.insert(
        "frame",
        fuzzing::sample_frames()
            .into_iter()
            .enumerate()
            .map(|(i, f)| (format!("seed-frame-{i}"), f))
            .collect(),
    );
    all.insert(
        "wire",
        fuzzing::WIRE_SEEDS
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("seed-{i:02}"), s.to_vec()))
            .collect(),
    );
    all.insert(
        "fleet_wire",
        fuzzing::fleet_wire_seeds()
            .into_iter()
            .map(|(name, data)| (format!("seed-{name}"), data))
            .collect(),
    );
    for (target, texts) in [
        ("ports", fuzzing::PORTS_SEEDS),
        ("targets", fuzzing::TARGET_SEEDS),
        ("duration", fuzzing::DURATION_SEEDS),
    ] {
        all.insert(
            target,
            texts
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("seed-{i:02}"), s.as_bytes().to_vec()))
                .collect(),
        );
    }
    all
}

/// The seed corpus is what the samples say it is, so that the samples in the code and the
/// seeds the fuzzer starts from cannot drift apart.
#[test]
fn seed_corpus_matches_the_samples() {
    let bless = std::env::var_os("PORTHAWK_BLESS_CORPUS").is_some();
    let mut stale = Vec::new();
    for (target, want) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        if bless {
            fs::create_dir_all(&dir).unwrap();
            for old in files(&dir) {
                let name = old.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("seed-") && !want.contains_key(name) {
                    fs::remove_file(&old).unwrap();
                }
            }
        }
        for (name, data) in &want {
            let path = dir.join(name);
            if fs::read(&path).ok().as_ref() != Some(data) {
                if bless {
                    fs::write(&path, data).unwrap();
                } else {
                    stale.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "seed files missing or stale (rewrite them with PORTHAWK_BLESS_CORPUS=1): {stale:#?}"
    );
}
