//! The house rules of `src/`, checked from the source text:
//! - no import cycle between library files (an edge is a `crate::…`, `super::…` or child-module
//!   path in code, comments excluded);
//! - the layers only import downward: `error` ← `checkpoint` ← `nn` ← `models` ← `train`, `serve`
//!   (`train` and `serve` never import each other; `device`, `json` and `rng` sit beside `error`);
//! - the library never names clap, anyhow or the binary's `cli` module;
//! - the files the fuzz crate compiles (`fuzz/src/lib.rs`'s `#[path]`s: checkpoint parsing and
//!   the error type) never name tch;
//! - no source file is longer than 800 lines.
//!
//! A failure lists every offending file, edge or cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// `src/nn/rnn/mod.rs` → `nn::rnn`; `src/nn/rnn/config.rs` → `nn::rnn::config`; `src/lib.rs` → ``.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The code of a file without comments (line comments, doc comments and block comments) and
/// without string literals' contents, so that neither docs nor messages count as imports.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // a char literal such as '"' or '{'
            out.push_str("' '");
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Inside an inline `mod x { … }` block, `super::` names the file's own module, not its
/// parent: drop it there so the path reads as a local one.
fn without_inline_super(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut depth_of_inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let b = code.as_bytes();
    while i < b.len() {
        let rest = &code[i..];
        let at_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if at_word && rest.starts_with("mod ") {
            // `mod name {` opens an inline module; `mod name;` is a file module.
            let after = &rest[4..];
            let name_end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if after[name_end..].trim_start().starts_with('{') {
                depth_of_inline.push(depth + 1);
            }
        }
        if !depth_of_inline.is_empty() && at_word && rest.starts_with("super::") {
            i += "super::".len();
            continue;
        }
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                if depth_of_inline.last() == Some(&depth) {
                    depth_of_inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Module paths (`a::b::c`, lower-case segments only) that follow `prefix` in `code`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
            continue;
        }
        let mut segs = Vec::new();
        let mut s = rest;
        loop {
            let n = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            let seg = &s[..n];
            if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
                break;
            }
            segs.push(seg.to_string());
            s = &s[n..];
            if let Some(t) = s.strip_prefix("::") {
                s = t;
            } else {
                break;
            }
        }
        if !segs.is_empty() {
            found.push(segs.join("::"));
        }
        // `crate::{a, b::c}`: each item of the group.
        if s.starts_with('{') && prefix.ends_with("::") {
            let end = s.find('}').unwrap_or(s.len());
            let base = if segs.is_empty() {
                String::new()
            } else {
                format!("{}::", segs.join("::"))
            };
            for item in s[1..end].split(',') {
                let item = item.trim();
                let head: String = item
                    .split("::")
                    .take_while(|seg| seg.starts_with(|c: char| c.is_ascii_lowercase()))
                    .collect::<Vec<_>>()
                    .join("::");
                if !head.is_empty() && head != "self" {
                    found.push(format!("{base}{head}"));
                }
            }
        }
    }
    found
}

struct Source {
    rel: PathBuf,
    module: String,
    code: String,
    lines: usize,
}

fn library_sources() -> Vec<Source> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_path_buf();
            // The binary: main.rs and cli/ are not part of the library.
            if rel == Path::new("main.rs") || rel.starts_with("cli") {
                return None;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            Some(Source {
                module: module_of(&rel),
                code: without_inline_super(&code_of(&text)),
                lines: text.lines().count(),
                rel,
            })
        })
        .collect()
}

/// The file that owns `path`: the longest module prefix that is a file.
fn resolve<'a>(path: &str, modules: &'a BTreeMap<String, PathBuf>) -> Option<&'a PathBuf> {
    let mut segs: Vec<&str> = path.split("::").collect();
    while !segs.is_empty() {
        if let Some(f) = modules.get(&segs.join("::")) {
            return Some(f);
        }
        segs.pop();
    }
    None
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

/// file → files it imports.
fn edges(sources: &[Source]) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let modules: BTreeMap<String, PathBuf> = sources
        .iter()
        .map(|s| (s.module.clone(), s.rel.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for s in sources {
        let mut targets = BTreeSet::new();
        let mut paths: Vec<String> = paths_after(&s.code, "crate::");
        // `super::x` from module `a::b` names `a::x`.
        let sup = parent(&s.module);
        for p in paths_after(&s.code, "super::") {
            paths.push(if sup.is_empty() {
                p
            } else {
                format!("{sup}::{p}")
            });
        }
        // `child::x` and `self::child::x` name a child module of this file's module.
        for (m, _) in modules.range(format!("{}::", s.module)..) {
            let Some(rest) = m.strip_prefix(&format!("{}::", s.module)) else {
                break;
            };
            if s.module.is_empty() || rest.contains("::") {
                continue;
            }
            if !paths_after(&s.code, &format!("{rest}::")).is_empty()
                || s.code.contains(&format!("{rest}::{{"))
            {
                paths.push(m.clone());
            }
        }
        for p in paths {
            if let Some(f) = resolve(&p, &modules) {
                if f != &s.rel {
                    targets.insert(f.clone());
                }
            }
        }
        graph.insert(s.rel.clone(), targets);
    }
    graph
}

/// The layer of a top-level module; `None` for the crate root and the prelude (re-exports).
fn layer(module: &str) -> Option<u8> {
    let top = module.split("::").next().unwrap_or("");
    Some(match top {
        "error" => 0,
        "device" | "json" | "rng" => 1,
        "checkpoint" => 2,
        "nn" => 3,
        "models" => 4,
        "train" | "serve" => 5,
        _ => return None,
    })
}

#[test]
fn imports_only_point_down_the_layers() {
    let sources = library_sources();
    let module_of_file: BTreeMap<&PathBuf, &str> = sources
        .iter()
        .map(|s| (&s.rel, s.module.as_str()))
        .collect();
    let graph = edges(&sources);
    let mut bad = Vec::new();
    for (from, targets) in &graph {
        let fm = module_of_file[from];
        let Some(fl) = layer(fm) else { continue };
        for to in targets {
            let tm = module_of_file[to];
            let Some(tl) = layer(tm) else {
                bad.push(format!(
                    "{} -> {} (the crate root or prelude)",
                    from.display(),
                    to.display()
                ));
                continue;
            };
            let (ft, tt) = (fm.split("::").next(), tm.split("::").next());
            let sideways = fl == tl && ft != tt;
            if tl > fl || sideways {
                bad.push(format!(
                    "{} ({fm}) -> {} ({tm})",
                    from.display(),
                    to.display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports that point up or sideways:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_import_cycles_between_files() {
    let graph = edges(&library_sources());
    // Depth-first search with colours; each back edge closes a cycle.
    fn visit(
        n: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                0 => visit(m, graph, state, stack, cycles),
                1 => {
                    let at = stack.iter().position(|x| x == m).unwrap();
                    let mut c: Vec<String> = stack[at..]
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect();
                    c.push(m.display().to_string());
                    cycles.push(c.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for n in graph.keys() {
        if !state.contains_key(n) {
            visit(n, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_library_never_names_the_command_line() {
    let mut bad = Vec::new();
    for s in library_sources() {
        for word in ["clap::", "anyhow", "crate::cli", "indicatif::"] {
            let allowed = word == "indicatif::" && s.module.starts_with("train");
            if s.code.contains(word) && !allowed {
                bad.push(format!("{} names {word}", s.rel.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn checkpoint_parsing_compiles_without_libtorch() {
    let fuzz_lib = std::fs::read_to_string(root().join("fuzz/src/lib.rs")).unwrap();
    let mut included = Vec::new();
    for line in fuzz_lib.lines() {
        if let Some(rest) = line.trim().strip_prefix("#[path = \"") {
            let rel = rest.split('"').next().unwrap();
            included.push(root().join("fuzz/src").join(rel));
        }
    }
    assert!(
        included.len() >= 5,
        "fuzz/src/lib.rs includes only {included:?}"
    );
    let mut bad = Vec::new();
    for p in &included {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let code = code_of(&text);
        if code.contains("tch::") || code.contains("use tch") {
            bad.push(p.display().to_string());
        }
        let layer_ok = code.match_indices("crate::").all(|(i, _)| {
            code[i..].starts_with("crate::error") || code[i..].starts_with("crate::checkpoint")
        });
        if !layer_ok {
            bad.push(format!("{} imports outside error/checkpoint", p.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "checkpoint parsing files that need libtorch:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_source_file_is_too_long_to_hold_in_ones_head() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_a_planted_cycle_and_an_upward_import() {
    // The rules above must be able to fail: a fake tree with nn -> models and a -> b -> a.
    let mk = |rel: &str, text: &str| Source {
        rel: PathBuf::from(rel),
        module: module_of(Path::new(rel)),
        code: without_inline_super(&code_of(text)),
        lines: 1,
    };
    let fake = vec![
        mk("nn/a.rs", "use crate::nn::b::X; use crate::models::Y;"),
        mk(
            "nn/b.rs",
            "use super::a::Z; // crate::serve::ignored\nmod t { use super::W; }",
        ),
        mk("models/mod.rs", "pub struct Y;"),
    ];
    let g = edges(&fake);
    assert!(g[&PathBuf::from("nn/a.rs")].contains(&PathBuf::from("models/mod.rs")));
    assert!(g[&PathBuf::from("nn/b.rs")].contains(&PathBuf::from("nn/a.rs")));
    assert_eq!(
        g[&PathBuf::from("nn/b.rs")].len(),
        1,
        "comments are not imports"
    );
    assert!(fake.iter().all(|s| s.lines == 1));
}
