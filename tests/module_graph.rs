//! The import graph of `src/` has no cycle: each module can be read and changed knowing only
//! the modules it names. Paths through `crate::`, `super::` and `self::` are the edges; a
//! module's own `#[cfg(test)] mod tests` block is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_name(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a path names: the longest prefix of it that is a module.
fn resolve(modules: &BTreeSet<String>, current: &str, path: &str) -> Option<String> {
    let mut parts = path.split("::").peekable();
    let mut base: Vec<&str> = match *parts.peek()? {
        "crate" => Vec::new(),
        "self" | "super" => current.split("::").filter(|s| !s.is_empty()).collect(),
        _ => return None,
    };
    if parts.peek() == Some(&"crate") || parts.peek() == Some(&"self") {
        parts.next();
    }
    while parts.peek() == Some(&"super") {
        parts.next();
        base.pop();
    }
    let rest: Vec<&str> = parts.collect();
    (0..=rest.len())
        .rev()
        .map(|i| {
            base.iter()
                .chain(&rest[..i])
                .copied()
                .collect::<Vec<_>>()
                .join("::")
        })
        .find(|m| modules.contains(m))
}

/// Every `crate::a::b`, `super::x` and `self::y` path in the text.
fn paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut previous: Option<char> = None;
    let mut skip_to = 0;
    for (i, c) in text.char_indices() {
        let word_start = !previous.is_some_and(|p| p.is_alphanumeric() || p == '_');
        previous = Some(c);
        if i < skip_to || !word_start {
            continue;
        }
        let rest = &text[i..];
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            found.push(rest[..end].trim_end_matches(':').to_string());
            skip_to = i + end;
        }
    }
    found
}

fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    sources(root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_name(root, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let name = module_name(root, file);
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let text = match text.find("#[cfg(test)]\nmod tests {") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let edges = graph.entry(name.clone()).or_default();
        for path in paths(text) {
            let Some(target) = resolve(&modules, &name, &path) else {
                continue;
            };
            let nested = |a: &str, b: &str| b.is_empty() || a.starts_with(&format!("{b}::"));
            if target != name && !nested(&name, &target) && !nested(&target, &name) {
                edges.insert(target);
            }
        }
    }
    graph
}

/// One cycle in the graph, if there is any (depth-first search for a back edge).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Mark::New => {
                    if let Some(found) = visit(graph, next, marks, stack) {
                        return Some(found);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(found) = visit(graph, node, &mut marks, &mut Vec::new()) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn the_import_graph_of_src_has_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&root);
    assert!(
        graph.len() > 40,
        "too few modules found: {:?}",
        graph.keys()
    );
    assert!(
        graph["runtime::media::event_loop"].contains("runtime::media::shard"),
        "edges are not read: {:?}",
        graph["runtime::media::event_loop"]
    );
    if let Some(found) = cycle(&graph) {
        panic!("import cycle: {}", found.join(" -> "));
    }
}

#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").map(|e| e.remove("a"));
    assert_eq!(cycle(&graph), None);
}
