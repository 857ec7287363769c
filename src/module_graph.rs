//! Keeps the module graph acyclic and layered: each top-level module's
//! edges are the top-level modules its sources name through `crate::`.
//! A test rather than a lint (rustc has none for this); it reads the files,
//! so it sees what a reader sees, test code included.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Imports that must never appear, each with the reason.
const FORBIDDEN: [(&str, &str, &str); 5] = [
    ("auth", "api", "session logic lives in auth; api calls it"),
    (
        "auth",
        "error",
        "auth returns its own errors; error.rs maps them",
    ),
    ("proxy", "api", "the cookie names proxy strips live in auth"),
    ("store", "auth", "the store sits below auth"),
    ("store", "api", "the store sits below the endpoints"),
];

#[test]
fn layers_never_import_upwards() {
    let graph = graph();
    // The scan must see something, or the checks below prove nothing.
    assert!(imports(&graph, "gateway", "api"), "{graph:?}");
    assert!(imports(&graph, "api", "auth"), "{graph:?}");
    for (from, to, why) in FORBIDDEN {
        assert!(graph.contains_key(from), "no module {from}");
        assert!(
            !imports(&graph, from, to),
            "{from} imports {to}, but must not: {why}"
        );
    }
}

#[test]
fn no_module_joins_a_cycle() {
    let graph = graph();
    let in_cycles: Vec<&str> = graph
        .keys()
        .filter(|module| reachable(&graph, module).contains(module.as_str()))
        .map(String::as_str)
        .collect();
    assert!(
        in_cycles.is_empty(),
        "in a cycle: {in_cycles:?} ({graph:?})"
    );
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::auth::jwt;\n\
                // crate::api in a comment\n\
                use crate::{config::Config, store::{Store, User}};\n\
                let x = $crate::path::decide;\n\
                fn f() -> crate::error::GatewayError {}\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["auth", "config", "error", "store"]);
}

/// Top-level module → the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        // The crate root and the binary are not modules of the graph; this
        // file names modules in its own tests.
        if ["lib", "main", "module_graph"].contains(&name.as_str()) {
            continue;
        }
        let deps = graph.entry(name.clone()).or_default();
        for file in rust_files(&path) {
            deps.extend(crate_paths(&std::fs::read_to_string(file).unwrap()));
        }
        deps.remove(&name);
    }
    graph
}

/// `path` itself when it is a `.rs` file; every `.rs` file below it when it
/// is a directory.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).unwrap() {
            files.extend(rust_files(&entry.unwrap().path()));
        }
        files
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        vec![path.to_owned()]
    } else {
        Vec::new()
    }
}

/// The first segment of every `crate::` path in `text`, groups included
/// (`crate::{a::x, b}` names `a` and `b`); comment lines are skipped.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let (head, tail) = rest.split_at(at);
        let before = head.chars().next_back();
        let after = tail.trim_start_matches("crate::");
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            found.insert(identifier(after).to_owned());
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// The first identifier of each item of a `{...}` group, up to its close.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut at_item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item_start = true,
            c if at_item_start && !c.is_whitespace() => {
                heads.push(identifier(group.split_at(i).1).to_owned());
                at_item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end).0
}

fn imports(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    graph.get(from).is_some_and(|deps| deps.contains(to))
}

/// Every module reachable from `start` over one edge or more.
fn reachable<'a>(graph: &'a BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = graph
        .get(start)
        .map(|deps| deps.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(module) = stack.pop() {
        if let Some((name, deps)) = graph.get_key_value(module) {
            if seen.insert(name.as_str()) {
                stack.extend(deps.iter().map(String::as_str));
            }
        }
    }
    seen
}
