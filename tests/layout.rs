//! The shape of the source tree, checked on every test run (issue 18): no two
//! modules of `src/` import each other, directly or through others; no function
//! longer than 120 lines and no file longer than 700 (the benchmark binary aside).
//!
//! The import graph is read from the source text: every `crate::` path (use
//! trees included) and `super::` path, and in a `mod.rs` every path through one of
//! its own child modules, resolved to the module that defines the item. A
//! `pub use` re-export is a facade, not an import: a path through it is resolved
//! to the module the item comes from. Test modules (`#[cfg(test)]` to the end of
//! a file) and comments are left out.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 120;
const MAX_FILE_LINES: usize = 700;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a library file (`src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`),
/// or None for the crate roots and the binaries.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts[0] == "bin" || parts == ["lib"] || parts == ["main"] {
        return None;
    }
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    Some(parts.join("::"))
}

fn at(c: &[char], i: usize, k: usize) -> char {
    c.get(i + k).copied().unwrap_or('\0')
}

/// The text with comments, string and character literals blanked (lines kept).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        if c[i] == '/' && at(&c, i, 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && at(&c, i, 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(&c, i, 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(&c, i, 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if (c[i] == 'r' || (c[i] == 'b' && at(&c, i, 1) == 'r'))
            && !(i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
            && {
                let s = if c[i] == 'b' { 2 } else { 1 };
                let mut k = s;
                while at(&c, i, k) == '#' {
                    k += 1;
                }
                at(&c, i, k) == '"'
            }
        {
            let s = if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(&c, i, s + hashes) == '#' {
                hashes += 1;
            }
            i += s + hashes + 1;
            out.push('"');
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
            out.push('"');
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\''
            && (at(&c, i, 2) == '\'' || (at(&c, i, 1) == '\\' && at(&c, i, 3) == '\''))
        {
            let len = if at(&c, i, 1) == '\\' { 4 } else { 3 };
            out.push_str("' '");
            i += len;
        } else if c[i] == '\'' && at(&c, i, 1) == '\\' {
            // '\u{..}' and the like
            out.push('\'');
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The library part of a file: everything before its test module.
fn without_tests(code: &str) -> String {
    match code.find("#[cfg(test)]") {
        Some(i) => code[..i].to_string(),
        None => code.to_string(),
    }
}

/// The leaf paths of a use tree starting at `s` (just after `crate::`), e.g.
/// `a::{b::C, d}` → `a::b::C`, `a::d`; the tree ends at `;` or a non-path char.
fn use_tree(s: &[char], i: &mut usize, prefix: &str, out: &mut Vec<String>) {
    let mut path = prefix.to_string();
    loop {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
        if *i < s.len() && s[*i] == '{' {
            *i += 1;
            loop {
                use_tree(s, i, &path, out);
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                match s.get(*i) {
                    Some(',') => {
                        *i += 1;
                        while *i < s.len() && s[*i].is_whitespace() {
                            *i += 1;
                        }
                        if s.get(*i) == Some(&'}') {
                            *i += 1;
                            return;
                        }
                    }
                    Some('}') => {
                        *i += 1;
                        return;
                    }
                    _ => return,
                }
            }
        }
        let start = *i;
        while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_' || s[*i] == '*') {
            *i += 1;
        }
        let seg: String = s[start..*i].iter().collect();
        if seg.is_empty() {
            if !path.is_empty() {
                out.push(path);
            }
            return;
        }
        if !path.is_empty() {
            path.push_str("::");
        }
        path.push_str(&seg);
        if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
            *i += 2;
        } else {
            out.push(path);
            return;
        }
    }
}

/// Every path a text names after `marker` (e.g. "crate::"), as written.
fn paths_after(code: &str, marker: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let m: Vec<char> = marker.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + m.len() <= chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if boundary && chars[i..i + m.len()] == m[..] {
            let mut j = i + m.len();
            use_tree(&chars, &mut j, "", &mut out);
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

struct Module {
    code: String,
    /// Child modules declared in this file (`mod x;`).
    children: BTreeSet<String>,
    /// Re-exported names: item → the path it comes from (relative to this module).
    reexports: BTreeMap<String, String>,
}

fn parse_modules() -> BTreeMap<String, Module> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut mods = BTreeMap::new();
    for f in files {
        let Some(name) = module_of(&f) else { continue };
        let code = without_tests(&code_only(&std::fs::read_to_string(&f).unwrap()));
        let mut children = BTreeSet::new();
        let mut reexports = BTreeMap::new();
        for line in code.lines() {
            let t = line.trim();
            let t = t.strip_prefix("pub(crate) ").unwrap_or(t);
            let t = t.strip_prefix("pub ").unwrap_or(t);
            if let Some(m) = t.strip_prefix("mod ") {
                children.insert(m.trim_end_matches(';').trim().to_string());
            }
        }
        for stmt in code.split(';') {
            let t = stmt.trim();
            let body = t
                .strip_prefix("pub use ")
                .or_else(|| t.strip_prefix("pub(crate) use "));
            if let Some(body) = body {
                let chars: Vec<char> = body.chars().collect();
                let mut leaves = Vec::new();
                use_tree(&chars, &mut 0, "", &mut leaves);
                for l in leaves {
                    let item = l.rsplit("::").next().unwrap_or(&l).to_string();
                    reexports.insert(item, l);
                }
            }
        }
        mods.insert(
            name,
            Module {
                code,
                children,
                reexports,
            },
        );
    }
    mods
}

/// The module a path (from the crate root) names, through re-exports.
fn resolve(mods: &BTreeMap<String, Module>, path: &str, depth: usize) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    for n in (1..=parts.len()).rev() {
        let m = parts[..n].join("::");
        if let Some(module) = mods.get(&m) {
            if n < parts.len() && depth < 8 {
                if let Some(src) = module.reexports.get(parts[n]) {
                    let from = src.strip_prefix("crate::").map_or_else(
                        || {
                            let rel = src.strip_prefix("self::").unwrap_or(src);
                            let rel =
                                rel.strip_prefix("super::")
                                    .map_or(format!("{m}::{rel}"), |r| {
                                        let parent = m.rsplit_once("::").map_or("", |p| p.0);
                                        format!("{parent}::{r}").trim_start_matches("::").into()
                                    });
                            rel
                        },
                        String::from,
                    );
                    if from != path {
                        return resolve(mods, &from, depth + 1).or(Some(m));
                    }
                }
            }
            return Some(m);
        }
    }
    None
}

fn import_graph(mods: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (name, m) in mods {
        let mut targets: Vec<String> = paths_after(&m.code, "crate::");
        let parent = name.rsplit_once("::").map_or("", |p| p.0);
        for p in paths_after(&m.code, "super::") {
            targets.push(
                format!("{parent}::{p}")
                    .trim_start_matches("::")
                    .to_string(),
            );
        }
        for p in paths_after(&m.code, "self::") {
            targets.push(format!("{name}::{p}"));
        }
        // A mod.rs naming its own children (outside `mod` and `pub use` lines).
        for line in m.code.split(';') {
            let t = line.trim();
            if t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ")
                || t.starts_with("mod ")
                || t.starts_with("pub mod ")
                || t.starts_with("pub(crate) mod ")
            {
                continue;
            }
            for child in &m.children {
                for p in paths_after(line, &format!("{child}::")) {
                    targets.push(format!("{name}::{child}::{p}"));
                }
                if t.starts_with("use ") && paths_after(t, "use ").iter().any(|p| p == child) {
                    targets.push(format!("{name}::{child}"));
                }
            }
        }
        let deps: BTreeSet<String> = targets
            .iter()
            .filter_map(|t| resolve(mods, t, 0))
            .filter(|d| d != name)
            .collect();
        graph.insert(name.clone(), deps);
    }
    graph
}

/// The cycles of a graph: its strongly connected components of more than one node.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on the reversed graph.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        v: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(v.to_string()) {
            return;
        }
        for w in g.get(v).into_iter().flatten() {
            visit(g, w, seen, out);
        }
        out.push(v.to_string());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for v in graph.keys() {
        visit(graph, v, &mut seen, &mut order);
    }
    let mut rev: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (v, ws) in graph {
        for w in ws {
            rev.entry(w.clone()).or_default().insert(v.clone());
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for v in order.iter().rev() {
        let mut comp = Vec::new();
        visit(&rev, v, &mut seen, &mut comp);
        if comp.len() > 1 {
            comp.sort();
            out.push(comp);
        }
    }
    out
}

#[test]
fn no_two_modules_import_each_other() {
    let mods = parse_modules();
    let graph = import_graph(&mods);
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|v| {
                    graph[v]
                        .iter()
                        .filter(|w| c.contains(w))
                        .map(move |w| format!("{v} → {w}"))
                })
                .collect();
            format!("cycle {{{}}}: {}", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles:\n{}", explain.join("\n"));
}

/// The graph between the sub-folders (and files) of each folder: an edge a → b where
/// anything under `P::a` imports anything under `P::b`.
fn folder_graphs(
    graph: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<BTreeMap<String, BTreeSet<String>>> {
    let mut prefixes: BTreeSet<String> = BTreeSet::from([String::new()]);
    for m in graph.keys() {
        let parts: Vec<&str> = m.split("::").collect();
        for n in 1..parts.len() {
            prefixes.insert(parts[..n].join("::"));
        }
    }
    let child = |prefix: &str, m: &str| -> Option<String> {
        let rest = if prefix.is_empty() {
            m
        } else {
            m.strip_prefix(prefix)?.strip_prefix("::")?
        };
        let first = rest.split("::").next()?;
        Some(if prefix.is_empty() {
            first.to_string()
        } else {
            format!("{prefix}::{first}")
        })
    };
    prefixes
        .iter()
        .map(|p| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (u, vs) in graph {
                let Some(cu) = child(p, u) else { continue };
                for v in vs {
                    match child(p, v) {
                        Some(cv) if cv != cu => {
                            g.entry(cu.clone()).or_default().insert(cv);
                        }
                        _ => {}
                    }
                }
            }
            g
        })
        .collect()
}

#[test]
fn no_two_folders_import_each_other() {
    let graph = import_graph(&parse_modules());
    let mut found = Vec::new();
    for g in folder_graphs(&graph) {
        for c in cycles(&g) {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|v| {
                    g[v].iter()
                        .filter(|w| c.contains(w))
                        .map(move |w| format!("{v} → {w}"))
                })
                .collect();
            found.push(format!("{{{}}}: {}", c.join(", "), edges.join("; ")));
        }
    }
    assert!(
        found.is_empty(),
        "folders that import each other:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The checker itself: two made-up modules that name each other are found,
    // through a use tree, a super:: path and a re-export.
    let mut mods = BTreeMap::new();
    let module = |code: &str, children: &[&str], re: &[(&str, &str)]| Module {
        code: code.to_string(),
        children: children.iter().map(|s| s.to_string()).collect(),
        reexports: re
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    mods.insert("a".into(), module("", &["x"], &[("Thing", "x::Thing")]));
    mods.insert(
        "a::x".into(),
        module("use crate::{b::{Other, c}};", &[], &[]),
    );
    mods.insert(
        "b".into(),
        module("fn f() { crate::a::Thing::new() }", &[], &[]),
    );
    mods.insert("c".into(), module("use super::b::Other;", &[], &[]));
    let graph = import_graph(&mods);
    assert_eq!(
        cycles(&graph),
        vec![vec!["a::x".to_string(), "b".to_string()]]
    );
    let top: Vec<Vec<Vec<String>>> = folder_graphs(&graph).iter().map(cycles).collect();
    assert!(
        top.contains(&vec![vec!["a".to_string(), "b".to_string()]]),
        "{top:?}"
    );
}

/// (first line, length in lines, name) of every function body in `code`.
fn functions(code: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(pos) = t.find("fn ") else { continue };
        let head = &t[..pos];
        let qualifiers_only = head.split_whitespace().all(|w| {
            ["pub", "const", "async", "unsafe", "extern", "\"C\""].contains(&w)
                || w.starts_with("pub(")
        });
        if !qualifiers_only {
            continue;
        }
        let name: String = t[pos + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // From the signature to the brace that closes the body.
        let mut depth = 0i32;
        let mut opened = false;
        'lines: for (j, l) in lines.iter().enumerate().skip(i) {
            for ch in l.chars() {
                match ch {
                    ';' if !opened && depth == 0 => break 'lines,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth -= 1;
                        if opened && depth == 0 {
                            out.push((i + 1, j - i + 1, name.clone()));
                            break 'lines;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[test]
fn functions_and_files_fit_their_limits() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut over = Vec::new();
    for f in &files {
        if f.starts_with(src().join("bin")) {
            continue; // the benchmark binary
        }
        let text = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(src()).unwrap().display().to_string();
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            over.push(format!(
                "src/{rel}: {n} lines (file limit {MAX_FILE_LINES})"
            ));
        }
        for (line, len, name) in functions(&code_only(&text)) {
            if len > MAX_FN_LINES {
                over.push(format!(
                    "src/{rel}:{line} fn {name}: {len} lines (limit {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(over.is_empty(), "too long:\n{}", over.join("\n"));
}

#[test]
fn the_length_check_measures_bodies() {
    let code = "fn a() {}\npub(crate) fn b(\n    x: u8,\n) -> u8 {\n    let s = \"}\";\n    x\n}\ntrait T { fn c(&self); }\n";
    let f = functions(&code_only(code));
    assert_eq!(f, vec![(1, 1, "a".into()), (2, 6, "b".into())]);
}

/// The edges, where errors are given their context for the user (`anyhow`): the
/// command line, the benchmark, and the runners of `prepare`, the stages, `eval`
/// and `gradcheck`. Every other module returns typed errors (`thiserror`).
const ANYHOW_EDGES: [&str; 10] = [
    "main.rs",
    "bin/",
    "data/prepare.rs",
    "train/stages.rs",
    "train/trainer",
    "train/jtvae_stage.rs",
    "train/mpnn_stage.rs",
    "train/zo_stage/objective.rs",
    "train/evaluate.rs",
    "train/gradcheck.rs",
];

#[test]
fn library_modules_return_typed_errors() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap().display().to_string();
        if ANYHOW_EDGES.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        let code = without_tests(&code_only(&std::fs::read_to_string(f).unwrap()));
        for (i, line) in code.lines().enumerate() {
            if line.contains("anyhow") {
                found.push(format!("src/{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "anyhow below the edges (use a thiserror enum):\n{}",
        found.join("\n")
    );
}
