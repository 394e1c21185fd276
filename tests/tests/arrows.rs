//! The house has arrows one way (ARCHITECTURE.md): no module of `cpmstore-server` or
//! `cpmstore-storage` imports one that imports it back.
//!
//! Read from the sources, at module granularity (one file, one module): every
//! `crate::`, `super::` and `self::` path, every path through a module imported by
//! `use` or declared by `mod`, resolved to the module that defines the item (following
//! `pub use` re-exports, which are a facade, not a dependency). A module's use of its
//! own ancestors (`super::Error`, `crate::Error`) is not an arrow: a module lives in
//! its parent. Comments and the `#[cfg(test)]` module at the end of a file are left out.
//!
//! A cheap text scan, not a Rust parser: it relies on rustfmt's layout (one `use` per
//! statement start, `mod tests` last).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles tolerated for now, by the prefix every module in them shares: none since the
/// IMAP rebuild (issue 12) ended the `session` <-> `command/*` cycle.
const TOLERATED: &[&str] = &[];

type ModPath = Vec<String>;

/// One source file read as a module.
struct Module {
    /// The code without comments and without the trailing test module.
    code: String,
    /// `pub use` re-exports: the name they export -> the full path they point to.
    reexports: BTreeMap<String, ModPath>,
}

/// Every module of the crate whose sources are under `src` (the binary's `main.rs` and
/// `bin/` excluded: nothing imports them).
fn modules(src: &Path) -> BTreeMap<ModPath, Module> {
    let mut files = Vec::new();
    collect(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut path: ModPath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match path.last().map(String::as_str) {
            Some("main") if path.len() == 1 => continue,
            Some("lib") if path.len() == 1 => path.clear(),
            Some("mod") => {
                path.pop();
            }
            _ => {}
        }
        if path.first().map(String::as_str) == Some("bin") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_only(&text);
        let mut reexports = BTreeMap::new();
        for (public, tree) in use_statements(&code) {
            if !public {
                continue;
            }
            for segs in expand(&tree) {
                let Some(name) = segs.last().cloned() else {
                    continue;
                };
                let full = absolute(&path, &segs).unwrap_or_else(|| {
                    let mut p = path.clone();
                    p.extend(segs.iter().cloned());
                    p
                });
                reexports.insert(name, full);
            }
        }
        out.insert(path, Module { code, reexports });
    }
    out
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The text without `//` comments (whole lines and trailing ones) and without the
/// `#[cfg(test)]` module that ends the file.
fn code_only(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines[i + 1..]
                .iter()
                .map(|l| l.trim_start())
                .find(|l| !l.starts_with("#["))
                .is_some_and(|l| l.starts_with("mod ") || l.starts_with("pub mod "))
            && !line.starts_with(' ')
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find(" //") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every `use` statement: whether it is a re-export, and its tree without whitespace.
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let (public, rest) = if let Some(rest) = trimmed.strip_prefix("use ") {
            (false, rest)
        } else if let Some(at) = trimmed.find(" use ").filter(|_| trimmed.starts_with("pub")) {
            (true, &trimmed[at + 5..])
        } else {
            continue;
        };
        let mut statement = rest.to_owned();
        while !statement.contains(';') {
            match lines.next() {
                Some(next) => statement.push_str(next),
                None => break,
            }
        }
        // `x as y` becomes `x@y` before whitespace goes, so `expand` can drop the rename.
        let statement = statement.replace(" as ", "@");
        let tree: String = statement
            .split(';')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        out.push((public, tree));
    }
    out
}

/// `a::{b, c::{self, d}}` -> `a::b`, `a::c`, `a::c::d`; `x@y` (`x as y`) keeps `x`.
fn expand(tree: &str) -> Vec<ModPath> {
    fn rec(prefix: &[String], tree: &str, out: &mut Vec<ModPath>) {
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in tree.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&tree[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&tree[start..]);
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if let Some(open) = part.find('{') {
                let mut p = prefix.to_vec();
                p.extend(segments(&part[..open]));
                rec(&p, &part[open + 1..part.len() - 1], out);
            } else {
                let part = part.split('@').next().unwrap_or(part);
                let mut p = prefix.to_vec();
                p.extend(segments(part));
                if p.last().map(String::as_str) == Some("self") {
                    p.pop();
                }
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    rec(&[], tree, &mut out);
    out
}

fn segments(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The crate-absolute form of a path written in module `at`; `None` if it does not
/// start with `crate`, `super` or `self` (an external crate or a local name).
fn absolute(at: &[String], segs: &[String]) -> Option<ModPath> {
    let first = segs.first()?;
    match first.as_str() {
        "crate" => Some(segs[1..].to_vec()),
        "self" => Some(at.iter().chain(&segs[1..]).cloned().collect()),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            let base = &at[..at.len().saturating_sub(ups)];
            Some(base.iter().chain(&segs[ups..]).cloned().collect())
        }
        _ => None,
    }
}

/// The module that defines what `path` names: the longest prefix that is a module,
/// through that module's re-exports.
fn resolve(mods: &BTreeMap<ModPath, Module>, path: &[String], depth: usize) -> Option<ModPath> {
    for k in (0..=path.len()).rev() {
        let Some(module) = mods.get(&path[..k]) else {
            continue;
        };
        if depth < 8
            && let Some(target) = path.get(k).and_then(|next| module.reexports.get(next))
        {
            let mut full = target.clone();
            full.extend(path[k + 1..].iter().cloned());
            if let Some(found) = resolve(mods, &full, depth + 1) {
                return Some(found);
            }
        }
        return Some(path[..k].to_vec());
    }
    None
}

/// `ident(::ident)*` paths that start with `head` at a word boundary in `code`.
fn paths_from<'a>(code: &'a str, head: &'a str) -> impl Iterator<Item = ModPath> + 'a {
    code.match_indices(head).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            return None;
        }
        let rest = &code[at..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let path: ModPath = segments(&rest[..end]).collect();
        (path.len() > 1).then_some(path)
    })
}

/// Module -> the modules it depends on (ancestors left out).
fn arrows(mods: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut out = BTreeMap::new();
    for (at, module) in mods {
        let mut wanted: Vec<ModPath> = Vec::new();
        // Local names for modules: those imported by `use` and declared by `mod`.
        let mut aliases: BTreeMap<String, ModPath> = BTreeMap::new();
        for (public, tree) in use_statements(&module.code) {
            for segs in expand(&tree) {
                let Some(full) = absolute(at, &segs) else {
                    continue;
                };
                if mods.contains_key(&full)
                    && let Some(name) = full.last()
                {
                    aliases.insert(name.clone(), full.clone());
                }
                if !public {
                    wanted.push(full);
                }
            }
        }
        for line in module.code.lines() {
            let line = line.trim_start();
            let line = line
                .strip_prefix("pub(crate) ")
                .or_else(|| line.strip_prefix("pub "))
                .unwrap_or(line);
            if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) {
                let mut full = at.clone();
                full.push(name.trim().to_owned());
                aliases.insert(name.trim().to_owned(), full);
            }
        }
        for head in ["crate::", "super::", "self::"] {
            wanted.extend(paths_from(&module.code, head).filter_map(|p| absolute(at, &p)));
        }
        for (name, full) in &aliases {
            let head = format!("{name}::");
            for path in paths_from(&module.code, &head) {
                let mut p = full.clone();
                p.extend(path[1..].iter().cloned());
                wanted.push(p);
            }
        }
        let targets: BTreeSet<ModPath> = wanted
            .iter()
            .filter_map(|p| resolve(mods, p, 0))
            .filter(|target| !at.starts_with(target))
            .collect();
        out.insert(at.clone(), targets);
    }
    out
}

/// Every cycle, as the path from a module back to itself (each found once per module).
fn cycles(arrows: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    let mut out = Vec::new();
    for start in arrows.keys() {
        // Breadth-first, shortest way back to `start`.
        let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        'search: while let Some(node) = queue.pop_front() {
            for next in arrows.get(node).into_iter().flatten() {
                if next == start {
                    let mut path = vec![start.clone(), node.clone()];
                    let mut at = node;
                    while at != start {
                        at = came_from[at];
                        path.push(at.clone());
                    }
                    path.reverse();
                    path.dedup();
                    out.push(path);
                    break 'search;
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
    }
    out
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

fn check(crate_dir: &str) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mods = modules(&src);
    assert!(mods.len() > 3, "no modules found under {}", src.display());
    cycles(&arrows(&mods))
        .into_iter()
        .filter(|cycle| {
            !TOLERATED.iter().any(|prefix| {
                cycle
                    .iter()
                    .all(|m| m.first().map(String::as_str) == Some(*prefix))
            })
        })
        .map(|cycle| {
            let names: Vec<String> = cycle.iter().map(|m| name(m)).collect();
            format!("{crate_dir}: {}", names.join(" -> "))
        })
        .collect()
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut found = check("server");
    found.extend(check("storage"));
    assert!(
        found.is_empty(),
        "import cycles (move what both sides need into a module both use):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_a_cycle() {
    let mut mods = BTreeMap::new();
    let module = |code: &str| Module {
        code: code_only(code),
        reexports: BTreeMap::new(),
    };
    let path = |p: &str| -> ModPath { segments(p).collect() };
    mods.insert(path(""), module("pub mod a;\npub mod b;\n"));
    mods.insert(path("a"), module("use crate::b::{self, Thing};\n"));
    mods.insert(path("b"), module("pub fn f() { crate::a::g() }\n"));
    mods.insert(
        path("c"),
        module("use super::a;\nfn h() { a::g() } // crate::b\n"),
    );
    let found = cycles(&arrows(&mods));
    assert_eq!(
        found,
        vec![
            vec![path("a"), path("b"), path("a")],
            vec![path("b"), path("a"), path("b")]
        ]
    );
}
