//! The layout's rule, checked on the source itself: no two files import each other, directly
//! or around a loop, in the library, the binary or the simulator crate. A piece that two files
//! share lives in a file below both.
//!
//! A file imports another when it names an item of that file's module through a path (`use`
//! or an inline `crate::`/`super::` path). A re-export (`pub use`, `pub(crate) use`) is not an import (it makes a
//! module's public face, it does not depend on it), and test code is left out (`#[cfg(test)]
//! mod tests` and `*tests.rs` files may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's source directory and its root file.
const CRATES: &[(&str, &str)] = &[
    ("src", "src/lib.rs"),
    ("src/bin/trustgate", "src/bin/trustgate/main.rs"),
    ("crates/se-simulator/src", "crates/se-simulator/src/lib.rs"),
];

type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;

#[test]
fn no_file_imports_another_that_imports_it_back() {
    let mut found = Vec::new();
    for (dir, root) in CRATES {
        let graph = import_graph(&repo().join(dir), &repo().join(root));
        for cycle in cycles(&graph) {
            let names: Vec<String> = cycle.iter().map(|p| rel(p)).collect();
            found.push(names.join(" ↔ "));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The README's module map names every module of the library and the binary, and only paths
/// that exist, so a newcomer finds any component in one hop.
#[test]
fn the_readme_module_map_matches_the_tree() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let listed = module_map(&readme);
    assert!(!listed.is_empty(), "README has no \"### Module map\" table");
    for path in &listed {
        assert!(
            repo().join(path).exists(),
            "README's module map names {path}, which does not exist"
        );
    }
    let mut missing = Vec::new();
    for dir in ["src", "src/bin/trustgate"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let path = format!("{dir}/{name}");
            let is_module = name.ends_with(".rs") || repo().join(&path).join("mod.rs").exists();
            if is_module
                && name != "lib.rs"
                && !listed.iter().any(|l| l.trim_end_matches('/') == path)
            {
                missing.push(path);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README's module map leaves out {missing:?}"
    );
}

/// The paths in the first column of the README's "Module map" table. A cell may list several
/// files; names without a `/` are in the directory of the cell's first path.
fn module_map(readme: &str) -> Vec<String> {
    let Some(start) = readme.find("### Module map") else {
        return Vec::new();
    };
    let table = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2);
    let mut paths = Vec::new();
    for row in table {
        let cell = row.split('|').nth(1).unwrap_or("");
        let names: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
        let dir = names
            .first()
            .and_then(|n| n.rfind('/').map(|i| &n[..=i]))
            .unwrap_or("");
        for name in names {
            paths.push(if name.contains('/') {
                name.to_owned()
            } else {
                format!("{dir}{name}")
            });
        }
    }
    paths
}

#[test]
fn the_checker_sees_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(super::a::A);\n").unwrap();
    let graph = import_graph(src, &src.join("lib.rs"));
    assert_eq!(cycles(&graph).len(), 1, "{graph:?}");
    std::fs::write(src.join("b.rs"), "pub struct B;\n").unwrap();
    assert!(cycles(&import_graph(src, &src.join("lib.rs"))).is_empty());
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(repo()).unwrap_or(p).display().to_string()
}

fn import_graph(dir: &Path, root: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(dir) {
        let is_other_root = file != root
            && matches!(
                file.file_name().and_then(|n| n.to_str()),
                Some("main.rs" | "lib.rs")
            );
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if is_other_root || name == "tests" || name.ends_with("_tests") {
            continue;
        }
        let me = module_path(dir, root, &file);
        let text = without_tests(&std::fs::read_to_string(&file).unwrap());
        for path in paths(&text) {
            if let Some(target) = resolve(dir, root, &file, &me, &path) {
                if target != file {
                    graph.entry(file.clone()).or_default().insert(target);
                }
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The module path of a file (`src/store/keys.rs` → `["store", "keys"]`).
fn module_path(dir: &Path, root: &Path, file: &Path) -> Vec<String> {
    if file == root {
        return Vec::new();
    }
    let rel = file.strip_prefix(dir).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file that holds the deepest existing module of `parts`.
fn module_file(dir: &Path, root: &Path, parts: &[String]) -> Option<PathBuf> {
    (1..=parts.len())
        .rev()
        .find_map(|n| {
            let base: PathBuf = parts[..n].iter().collect();
            [
                dir.join(&base).with_extension("rs"),
                dir.join(&base).join("mod.rs"),
            ]
            .into_iter()
            .find(|p| p.exists())
        })
        .or_else(|| (!parts.is_empty()).then(|| root.to_path_buf()))
}

/// Source without line comments and without the inline `#[cfg(test)] mod tests` block.
fn without_tests(text: &str) -> String {
    let body = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    body.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a file names: each `use` tree flattened (re-exports left out), and every inline
/// path that starts at `crate` or `super`.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = find_use(rest) {
        let (is_reexport, start) = i;
        let end = rest[start..].find(';').map_or(rest.len(), |e| start + e);
        if !is_reexport {
            out.extend(flatten(Vec::new(), rest[start..end].trim()));
        }
        rest = &rest[end.min(rest.len())..];
        if !rest.is_empty() {
            rest = &rest[1..];
        }
    }
    let bytes = text.as_bytes();
    for anchor in ["crate::", "super::"] {
        for (i, _) in text.match_indices(anchor) {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let len = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(text.len() - i);
            let path: Vec<String> = text[i..i + len]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            out.push(path);
        }
    }
    out
}

/// The next `use` item: (whether it is a `pub use` re-export, where its tree starts).
fn find_use(text: &str) -> Option<(bool, usize)> {
    let mut from = 0;
    while let Some(i) = text[from..].find("use ") {
        let at = from + i;
        let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let prefix = text[line_start..at].trim();
        if prefix.is_empty() || prefix.starts_with("pub") {
            return Some((prefix.starts_with("pub"), at + 4));
        }
        from = at + 4;
    }
    None
}

/// `a::{b, c::{d, e}}` → `[a, b]`, `[a, c, d]`, `[a, c, e]`.
fn flatten(prefix: Vec<String>, tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base: Vec<String> = prefix.into_iter().chain(head).collect();
        return split_top(inner)
            .into_iter()
            .flat_map(|part| flatten(base.clone(), part))
            .collect();
    }
    let tree = tree.split(" as ").next().unwrap_or(tree);
    let mut path = prefix;
    path.extend(
        tree.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
            .map(str::to_owned),
    );
    vec![path]
}

fn split_top(inner: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&inner[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The file a path lands in, if it is one of this crate's modules.
fn resolve(
    dir: &Path,
    root: &Path,
    file: &Path,
    me: &[String],
    path: &[String],
) -> Option<PathBuf> {
    let (mut base, mut rest): (Vec<String>, &[String]) = match path.first()?.as_str() {
        "crate" => (Vec::new(), &path[1..]),
        "self" => (me.to_vec(), &path[1..]),
        "super" => (me.to_vec(), path),
        first => {
            // A path relative to this module: only a child module of this file counts.
            let mut child = me.to_vec();
            child.push(first.to_owned());
            let target = module_file(dir, root, &child)?;
            if module_path(dir, root, &target) != child || target == file {
                return None;
            }
            (me.to_vec(), path)
        }
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    module_file(dir, root, &base)
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<PathBuf>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g PathBuf) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}
