//! What the `config` fuzz target runs, shared with the stable test that replays its corpus
//! (`crates/watch/tests/corpus.rs`). Not a stable API.

use crate::config::{parse, parse_file, ConfigError, WatchConfig, MAX_MONITOR_SIZE};

/// The file name the target's errors carry.
const FILE: &str = "fuzz.toml";

/// Reads `data` as a `porthawk.toml` text (the one file type, then the monitors' checks;
/// host names are kept as names, no DNS) and checks what comes out: an error names the file,
/// a line inside the text and a field, on one line; an accepted config keeps its own rules.
/// Panics when an invariant breaks.
pub fn config_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(FILE, text) {
        Ok(config) => accepted(text, &config),
        Err(e) => refused(text, &e),
    }
    // The file type alone agrees with the whole parse about syntax and shape.
    if let Err(e) = parse_file(FILE, text) {
        refused(text, &e);
        assert!(parse(FILE, text).is_err(), "{text:?}");
    }
}

fn refused(text: &str, e: &ConfigError) {
    let shown = e.to_string();
    assert_eq!(e.file, FILE, "{shown}");
    assert!(!e.field.is_empty(), "{text:?}: {shown}");
    let lines = text.split('\n').count();
    assert!(
        e.line <= lines,
        "{text:?}: line {} of {lines}: {shown}",
        e.line
    );
    assert!(
        !e.field.contains('\n') && !e.message.contains('\n'),
        "{shown:?}"
    );
    assert!(
        shown.starts_with(&format!("{FILE}:{}: {}: ", e.line, e.field)),
        "{shown}"
    );
}

fn accepted(text: &str, c: &WatchConfig) {
    let mut names = std::collections::BTreeSet::new();
    for m in &c.monitors {
        assert!(names.insert(m.name.clone()), "{text:?}: {} twice", m.name);
        assert!(m.size() >= 1 && m.size() <= MAX_MONITOR_SIZE, "{text:?}");
        assert!(m.spec.connect_timeout <= m.interval, "{text:?}");
        for a in m.down_actions().chain(m.up_actions()) {
            assert!(c.actions.contains_key(a), "{text:?}: action {a}");
        }
        assert!(!m.from.is_empty(), "{text:?}");
        let needed = m.quorum.needed(m.from.len());
        assert!(needed >= 1 && needed <= m.from.len(), "{text:?}");
        for n in m.on_partial.iter().map(String::as_str) {
            assert!(c.notifiers.contains_key(n), "{text:?}: notifier {n}");
        }
        for n in m.down_notifiers().chain(m.up_notifiers()) {
            assert!(c.notifiers.contains_key(n), "{text:?}: notifier {n}");
        }
    }
}
