//! The layer rule of `src/` (ARCHITECTURE.md, "Layers"): each top-level module imports
//! only from modules listed before it in [`LAYERS`], and within any folder the files
//! (a sub-folder counting as one) import each other without a circle. This test reads the sources and fails
//! naming the file and the import that breaks either rule, so the layout cannot decay
//! one convenient import at a time. (The sans-IO core is another crate, whose
//! manifest has no runtime: Cargo keeps that one.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. `lib.rs` and `main.rs` sit above all of them.
const LAYERS: &[&str] = &[
    "proto",
    "rt",
    "tls",
    "client",
    "auth",
    "metrics",
    "config",
    "admission",
    "registry",
    "session",
    "push",
    "upstream",
    "shard",
    "edge",
    "admin",
    "server",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` without comments (line comments, doc comments) and string
/// literals, so a path mentioned in prose or a message is not taken for an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => in_str = true,
            // A char literal such as '"' must not open a string.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\\") || rest.chars().nth(1) == Some('\'') {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path a file names from a root: `crate::a::b` gives `["a", "b"]`, and
/// `crate::{a::b, c}` gives `["a", "b"]` and `["c"]`. Only the first two segments
/// matter here.
fn crate_paths(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let pat = format!("{root}::");
    let mut at = 0;
    while let Some(i) = code[at..].find(&pat) {
        let start = at + i;
        at = start + pat.len();
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        let rest = &code[at..];
        if rest.starts_with('{') {
            let mut depth = 0;
            let mut end = 0;
            for (j, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &rest[1..end];
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars().chain(std::iter::once(',')) {
                match c {
                    '{' => {
                        depth += 1;
                        item.push(c);
                    }
                    '}' => {
                        depth -= 1;
                        item.push(c);
                    }
                    ',' if depth == 0 => {
                        let segs = segments(item.trim());
                        if !segs.is_empty() {
                            found.push(segs);
                        }
                        item.clear();
                    }
                    _ => item.push(c),
                }
            }
        } else {
            let segs = segments(rest);
            if !segs.is_empty() {
                found.push(segs);
            }
        }
    }
    found
}

fn segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        match rest.strip_prefix("::") {
            Some(r) if !r.starts_with('{') => rest = r,
            _ => break,
        }
    }
    segs
}

/// The top-level module a path under `src/` belongs to.
fn top_module(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().iter().next().unwrap();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut broken = Vec::new();
    for file in &files {
        let module = top_module(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            broken.push(format!(
                "{}: module `{module}` is in no layer (add it to LAYERS and ARCHITECTURE.md)",
                file.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for path in crate_paths(&code, "crate") {
            let target = &path[0];
            if *target == module {
                continue;
            }
            match rank(target) {
                Some(r) if r < own => {}
                Some(_) => broken.push(format!(
                    "{}: `{module}` imports `crate::{}` from a layer above it",
                    file.display(),
                    path.join("::")
                )),
                None => broken.push(format!(
                    "{}: `crate::{target}` is in no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_files_of_a_folder_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // folder (path components under src/) -> file -> names it imports from its folder
    let mut graph: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let rel: Vec<String> = file
            .strip_prefix(&src)
            .unwrap()
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        let (name, folder) = rel.split_last().unwrap();
        if folder.is_empty() {
            continue; // a top-level file: the layer rule covers it
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        for path in crate_paths(&code, "crate") {
            if path.len() > folder.len() && path[..folder.len()] == *folder {
                deps.insert(path[folder.len()].clone());
            }
        }
        if name != "mod" {
            for path in crate_paths(&code, "super") {
                deps.insert(path[0].clone());
            }
        }
        graph
            .entry(folder.to_vec())
            .or_default()
            .entry(name.clone())
            .or_default()
            .extend(deps);
    }
    let mut circles = Vec::new();
    for (folder, g) in &graph {
        // An item the folder's mod.rs re-exports (`pub use file::Item`) counts as an
        // import of the file it comes from; a sub-folder counts as one file.
        let reexports = reexports(&src.join(folder.join("/")));
        let resolve = |d: &String| reexports.get(d).cloned().unwrap_or_else(|| d.clone());
        let known: BTreeSet<String> = g
            .keys()
            .cloned()
            .chain(
                graph
                    .keys()
                    .filter(|k| k.len() == folder.len() + 1 && k[..folder.len()] == *folder)
                    .map(|k| k[folder.len()].clone()),
            )
            .collect();
        let g: BTreeMap<String, Vec<String>> = g
            .iter()
            .filter(|(f, _)| *f != "mod")
            .map(|(f, deps)| {
                let deps: BTreeSet<String> = deps
                    .iter()
                    .map(resolve)
                    .filter(|d| d != f && d != "mod" && known.contains(d))
                    .collect();
                (f.clone(), deps.into_iter().collect())
            })
            .collect();
        let g: BTreeMap<&String, Vec<&String>> =
            g.iter().map(|(f, d)| (f, d.iter().collect())).collect();
        // Depth-first search for a back edge.
        fn visit<'a>(
            n: &'a String,
            g: &BTreeMap<&'a String, Vec<&'a String>>,
            state: &mut BTreeMap<&'a String, u8>,
            stack: &mut Vec<&'a String>,
            found: &mut Vec<String>,
        ) {
            state.insert(n, 1);
            stack.push(n);
            for d in g.get(n).into_iter().flatten() {
                match state.get(d) {
                    Some(1) => {
                        let from = stack.iter().position(|s| s == d).unwrap();
                        let cycle: Vec<&str> = stack[from..].iter().map(|s| s.as_str()).collect();
                        found.push(format!("{} -> {}", cycle.join(" -> "), d));
                    }
                    Some(_) => {}
                    None => visit(d, g, state, stack, found),
                }
            }
            stack.pop();
            state.insert(n, 2);
        }
        let mut state = BTreeMap::new();
        let mut found = Vec::new();
        for n in g.keys() {
            if !state.contains_key(n) {
                visit(n, &g, &mut state, &mut Vec::new(), &mut found);
            }
        }
        for f in found {
            circles.push(format!("src/{}/: {f}", folder.join("/")));
        }
    }
    assert!(
        circles.is_empty(),
        "files in a circle:\n{}",
        circles.join("\n")
    );
}

/// Item name -> file, for the items `{folder}/mod.rs` re-exports.
fn reexports(folder: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(folder.join("mod.rs")) else {
        return map;
    };
    let code = code_only(&text);
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        for path in crate_paths(&format!("self::{rest}"), "self") {
            if path.len() == 2 {
                map.insert(path[1].clone(), path[0].clone());
            }
        }
    }
    map
}

#[test]
fn the_checker_sees_grouped_and_nested_imports_and_ignores_prose() {
    let code = code_only(
        "use crate::{a::b, c::{d, e}};\n// crate::comment::x\nlet s = \"crate::string\";\nlet q = '\"'; crate::f::g();\nmycrate::h::i();",
    );
    let paths = crate_paths(&code, "crate");
    let firsts: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(firsts, ["a", "c", "f"]);
    assert_eq!(paths[0], ["a", "b"]);
}
