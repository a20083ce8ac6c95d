//! The layout rules of docs/ARCHITECTURE.md that the compiler does not check: no two modules
//! of a crate import each other (directly or through others), and SQL lives in one crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's crates, by their folder under `crates/`.
const CRATES: [&str; 8] = [
    "core", "engine", "watch", "store", "server", "cli", "bench", "agent",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `monitor/api.rs` → `["monitor", "api"]`,
/// `monitor/mod.rs` → `["monitor"]`, `lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file before its first `#[cfg(test)]`: test modules may import anything.
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The module paths a file's code names, as written after `crate::` or `super::` (and in
/// `use crate::{a::X, b::Y}` groups), resolved to absolute paths within the crate.
fn referenced_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            // `porthawk_core::` or `my_crate::` are not ours: the prefix must start a path.
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    found.push(join(&base, path_segments(item.trim())));
                }
            } else {
                found.push(join(&base, path_segments(rest)));
            }
        }
    }
    found
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

fn join(base: &[String], tail: Vec<String>) -> Vec<String> {
    base.iter().cloned().chain(tail).collect()
}

/// The leading `a::b::c` segments of a path (identifiers only).
fn path_segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The deepest module of `modules` that `path` names, if any other than the root.
fn target_module(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// The import graph between the modules (files) of one crate, test code left out.
fn import_graph(krate: &str) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = workspace().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = fs::read_to_string(file).expect("read a source file");
        let mut edges = BTreeSet::new();
        for path in referenced_paths(non_test_code(&text), &module) {
            if let Some(target) = target_module(&path, &modules) {
                // A module may name its own submodules and itself.
                if !target.starts_with(&module) && !module.starts_with(&target) {
                    edges.insert(target);
                }
            }
        }
        graph.insert(module, edges);
    }
    graph
}

/// A cycle of the graph, if it has one.
fn find_cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|m| m.join("::")).collect();
            cycle.push(node.join("::"));
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut checked = 0;
    for krate in CRATES {
        if !workspace().join("crates").join(krate).exists() {
            continue;
        }
        let graph = import_graph(krate);
        assert!(
            graph.len() > 1 || krate == "agent",
            "no modules found in {krate}"
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "crates/{krate}: modules import each other: {}",
                cycle.join(" → ")
            );
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} crates checked");
}

/// The checker itself sees a cycle made through a `use crate::{..}` group, and ignores other
/// crates' paths and a child's use of its parent.
#[test]
fn the_cycle_checker_sees_a_cycle() {
    let module = |m: &str| m.split("::").map(String::from).collect::<Vec<_>>();
    let modules: BTreeSet<Vec<String>> =
        ["a", "b", "m", "m::c"].iter().map(|m| module(m)).collect();
    let graph_of = |sources: &[(&str, &str)]| {
        let mut graph = BTreeMap::new();
        for (name, code) in sources {
            let me = module(name);
            let edges: BTreeSet<Vec<String>> = referenced_paths(code, &me)
                .iter()
                .filter_map(|p| target_module(p, &modules))
                .filter(|t| !t.starts_with(&me) && !me.starts_with(t))
                .collect();
            graph.insert(me, edges);
        }
        graph
    };
    let acyclic = [
        ("a", "use crate::{b::Thing, m::c};"),
        ("b", "fn f() { crate::m::Other::new(); }"),
        ("m", ""),
        (
            "m::c",
            "use super::Y; use porthawk_core::crate_like::Z; use my_crate::b::W;",
        ),
    ];
    assert_eq!(find_cycle(&graph_of(&acyclic)), None);
    let mut cyclic = acyclic;
    cyclic[3] = (
        "m::c",
        "use super::Y; fn g() -> crate::a::X { X::default() }",
    );
    let cycle = find_cycle(&graph_of(&cyclic)).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
    assert!(cycle.contains(&"m::c".to_string()), "{cycle:?}");
}

#[test]
fn only_the_store_speaks_sql() {
    for krate in CRATES {
        let manifest = workspace().join("crates").join(krate).join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        assert_eq!(
            text.contains("rusqlite"),
            krate == "store",
            "crates/{krate}/Cargo.toml and rusqlite"
        );
    }
}
