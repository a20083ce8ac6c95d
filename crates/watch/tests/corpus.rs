//! Replays every committed input of the `config` fuzz target (`fuzz/corpus/config/`, and
//! `fuzz/regressions/config/` once it has any) through the code the target runs, so that
//! stable `cargo test` catches a regression that fuzzing found once.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use porthawk_watch::fuzzing::config_target;

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
fn every_committed_config_fuzz_input_replays_cleanly() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let seeds = files(&fuzz.join("corpus/config"));
    assert!(
        seeds.len() >= 10,
        "the config seed corpus is missing: {}",
        fuzz.display()
    );
    let mut failures = Vec::new();
    for path in seeds.iter().chain(&files(&fuzz.join("regressions/config"))) {
        let data = fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| config_target(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
}

/// The README's example is among the seeds, and it is a valid config.
#[test]
fn the_readme_example_is_a_seed_and_parses() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let text = fs::read_to_string(fuzz.join("corpus/config/seed-readme-0")).unwrap();
    let readme = fs::read_to_string(fuzz.join("../README.md")).unwrap();
    assert!(
        readme.contains(&text),
        "seed-readme-0 is not the README's example any more"
    );
    let c = porthawk_watch::config::parse("README.md", &text).unwrap();
    assert!(!c.monitors.is_empty());
}
