//! The layer checker: reads a crate's `src/` as text, builds its module tree and the file-to-file import graph, and
//! reports import cycles (between files, and between folders), imports from a lower layer to a higher one, and
//! `mod.rs` files. No dependencies: a small lexer, not a Rust parser.
//!
//! What makes an arrow from file A to file B: a `use` in A, or a path in A's code, that names an item or module
//! defined in B. Paths start with `crate::` (or `$crate::`, or the crate's own name), `self::`, `super::`, or the
//! name of a child module; `use` trees are expanded (`use crate::{a::{B, C}, d}`). Re-exports are followed to the
//! file that defines the item: `crate::Actor` goes through `lib.rs`'s `pub use` to `model/actor.rs`. Not arrows:
//! `mod` declarations, `lib.rs` itself (the crate's face), and a module file's `pub use` of its own descendants
//! (`mcp.rs` re-exporting `mcp/owner.rs`: a face, not a dependency). Comments, strings and doc links are skipped.
//!
//! Known limits: method calls (`self.show(..)`, defined in another file's `impl`) are not seen, nor are names
//! brought in by a glob (`use x::*`, which counts as an arrow to `x` itself).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::Path;

/// A module path from the crate root: `["cache", "call"]` for `crate::cache::call`.
type ModPath = Vec<String>;

/// What the checker found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// Files (or folders) that import one another in a circle.
    Cycle {
        /// `files` or `folders`.
        level: &'static str,
        /// The circle, first node repeated at the end.
        path: Vec<String>,
        /// For each arrow of the circle: what ties it (names, with the file and line of their first use).
        ties: Vec<String>,
        /// Every node of the tangle the circle is part of (a strongly connected component), when it has more.
        tangle: Vec<String>,
    },
    /// An import from a lower layer to a higher one.
    Upward {
        /// `file:line` of the import.
        at: String,
        /// The name imported.
        name: String,
        /// The file that defines it.
        target: String,
        /// The importing file's layer.
        from: String,
        /// The imported file's layer.
        to: String,
    },
    /// A top-level module that the layer table does not name.
    NoLayer {
        /// The file.
        file: String,
        /// Its top-level module.
        module: String,
    },
    /// A `mod.rs`: the crates use `foo.rs` beside `foo/`.
    ModRs {
        /// The file.
        file: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cycle {
                level,
                path,
                ties,
                tangle,
            } => {
                writeln!(f, "import cycle between {level}: {}", path.join(" -> "))?;
                for tie in ties {
                    writeln!(f, "    {tie}")?;
                }
                if tangle.len() + 1 > path.len() {
                    writeln!(
                        f,
                        "  the circle is one of many among these {} {level}, which all reach one another: {}",
                        tangle.len(),
                        tangle.join(", ")
                    )?;
                }
                write!(
                    f,
                    "  break it: move the shared item down into a file both can import, or give the lower file a \
                     small trait that the higher one implements"
                )
            }
            Self::Upward {
                at,
                name,
                target,
                from,
                to,
            } => write!(
                f,
                "upward import at {at}: `{name}` from {target}; {from} may import only from its own layer or a lower \
                 one, not from {to}. Move `{name}` down, or move the importing code up"
            ),
            Self::NoLayer { file, module } => write!(
                f,
                "{file}: module `{module}` has no layer; add it to the layer table in refcache-core/tests/layers.rs \
                 and to the layer comment in lib.rs"
            ),
            Self::ModRs { file } => write!(
                f,
                "{file}: a mod.rs; rename it after its module (`foo/mod.rs` -> `foo.rs` beside `foo/`)"
            ),
        }
    }
}

/// One arrow's evidence: a name used at a line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    name: String,
    line: usize,
}

/// What [`check`] measured, beside the problems.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Everything wrong.
    pub(crate) problems: Vec<Problem>,
    /// Source files read (`lib.rs` included).
    pub(crate) files: usize,
    /// File-to-file arrows.
    pub(crate) arrows: usize,
}

/// The layer table: each top-level module's layer number and name. A module not named fails the check.
pub(crate) type Layers<'a> = &'a [(&'a str, u32, &'a str)];

/// Reads every `.rs` file under `src` into `relative path -> text`.
pub(crate) fn read_tree(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.insert(rel, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Lexing.

/// The source with comments, strings and character literals blanked out (newlines kept, so lines still count).
fn blank(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep = |c: char| if c == '\n' { '\n' } else { ' ' };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && (i == 0 || !ident(chars[i - 1]))
            && raw_string_hashes(&chars, i).is_some()
        {
            let (start, hashes) = raw_string_hashes(&chars, i).expect("checked");
            for &ch in &chars[i..start] {
                out.push(keep(ch));
            }
            i = start;
            // Find `"` followed by `hashes` `#`.
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(keep(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' {
                    out.push(' ');
                    if let Some(&e) = chars.get(i + 1) {
                        out.push(keep(e));
                    }
                    i += 2;
                } else if chars[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}'), or a lifetime ('a), which stays.
            let close = if next == Some('\\') {
                (i + 3..chars.len()).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    for &ch in &chars[i..=end] {
                        out.push(keep(ch));
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i`, a raw string's opening (`r"`, `r#"`, `br##"`): where its text starts, and how many `#` close it.
fn raw_string_hashes(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut k = i;
    if chars.get(k) == Some(&'b') {
        k += 1;
    }
    if chars.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    let mut hashes = 0;
    while chars.get(k) == Some(&'#') {
        hashes += 1;
        k += 1;
    }
    (chars.get(k) == Some(&'"')).then_some((k + 1, hashes))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    line: usize,
}

/// Identifiers (with `$crate`), `::`, and single punctuation characters.
fn tokens(blanked: &str) -> Vec<Token> {
    let chars: Vec<char> = blanked.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' || (c == '$' && chars.get(i + 1) == Some(&'c')) {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c.is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Reading one file: its module declarations, `use` statements and inline paths.

/// A path as written, relative to the module it appears in.
#[derive(Debug, Clone)]
struct Written {
    /// The module (file module plus inline modules) it appears in.
    module: ModPath,
    /// Its segments (`crate`, `super`, `self`, `$crate`, names).
    segs: Vec<String>,
    /// The name it binds (`use`), if any: the last segment, its alias, or the module of a `self` leaf.
    binds: Option<String>,
    /// A glob (`use x::*`).
    glob: bool,
    /// From a `use` with `pub` (any `pub(..)` included).
    public: bool,
    /// From a `use` statement (else an inline path).
    is_use: bool,
    line: usize,
}

#[derive(Debug, Default)]
struct FileSyntax {
    /// `mod name;` declarations at the file's top level: name -> `#[path]`, if any.
    mods: Vec<(String, Option<String>)>,
    /// Inline modules (`mod tests { .. }`), as paths relative to the file's module.
    inline: Vec<Vec<String>>,
    /// Every path the file writes.
    paths: Vec<Written>,
}

/// `#[path = "x.rs"] mod name;`: the path attributes, by module name (read before blanking strings). Only
/// attributes and a visibility may stand between the attribute and its `mod`.
fn path_attributes(src: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[path") {
        rest = &rest[at + 6..];
        let Some(q1) = rest.find('"') else { break };
        let Some(q2) = rest[q1 + 1..].find('"') else {
            break;
        };
        let path = rest[q1 + 1..q1 + 1 + q2].to_owned();
        let mut tail = rest[q1 + 2 + q2..]
            .trim_start()
            .trim_start_matches(']')
            .trim_start();
        while tail.starts_with("#[") {
            tail = tail.split_once(']').map_or("", |(_, t)| t).trim_start();
        }
        if let Some(t) = tail.strip_prefix("pub") {
            tail = t.trim_start();
            if tail.starts_with('(') {
                tail = tail.split_once(')').map_or("", |(_, t)| t).trim_start();
            }
        }
        if let Some(t) = tail.strip_prefix("mod ") {
            let name: String = t
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name, path);
        }
    }
    out
}

fn is_ident(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
}

/// Expands a `use` tree (the tokens between `use` and `;`) into leaves: segments, alias, glob.
fn use_leaves(toks: &[Token]) -> Vec<(Vec<String>, Option<String>, bool, usize)> {
    fn list(
        toks: &[Token],
        pos: &mut usize,
        prefix: &[String],
        out: &mut Vec<(Vec<String>, Option<String>, bool, usize)>,
    ) {
        loop {
            item(toks, pos, prefix, out);
            if toks.get(*pos).is_some_and(|t| t.text == ",") {
                *pos += 1;
                if toks.get(*pos).is_none_or(|t| t.text == "}") {
                    return;
                }
                continue;
            }
            return;
        }
    }
    fn item(
        toks: &[Token],
        pos: &mut usize,
        prefix: &[String],
        out: &mut Vec<(Vec<String>, Option<String>, bool, usize)>,
    ) {
        let mut segs = prefix.to_vec();
        if toks.get(*pos).is_some_and(|t| t.text == "::") {
            // A leading `::`: an extern crate path.
            segs.push("::".into());
            *pos += 1;
        }
        while let Some(t) = toks.get(*pos) {
            let line = t.line;
            match t.text.as_str() {
                "{" => {
                    *pos += 1;
                    if toks.get(*pos).is_some_and(|t| t.text != "}") {
                        list(toks, pos, &segs, out);
                    }
                    *pos += 1; // `}`
                    return;
                }
                "*" => {
                    *pos += 1;
                    out.push((segs, None, true, line));
                    return;
                }
                text if is_ident(text) => {
                    segs.push(text.to_owned());
                    *pos += 1;
                    if toks.get(*pos).is_some_and(|t| t.text == "::") {
                        *pos += 1;
                        continue;
                    }
                    let mut alias = None;
                    if toks.get(*pos).is_some_and(|t| t.text == "as") {
                        alias = toks.get(*pos + 1).map(|t| t.text.clone());
                        *pos += 2;
                    }
                    out.push((segs, alias, false, line));
                    return;
                }
                _ => return,
            }
        }
    }
    let mut out = Vec::new();
    let mut pos = 0;
    list(toks, &mut pos, &[], &mut out);
    out
}

/// Reads one file's syntax. `children` is filled in two passes by the caller: first the `mod` lines are read, then
/// the paths (a bare `name::` path counts only when `name` is a child module).
fn read_file(src: &str, own: &ModPath, crate_names: &[&str]) -> FileSyntax {
    let attrs = path_attributes(src);
    let toks = tokens(&blank(src));
    let mut syntax = FileSyntax::default();
    // Pass 1: module declarations and inline modules, with the module at each token.
    let mut depth = 0usize;
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut module_at: Vec<Vec<String>> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = stack.iter().map(|(n, _)| n.clone()).collect();
        module_at.push(here.clone());
        let t = &toks[i].text;
        if t == "mod"
            && toks.get(i + 1).is_some_and(|n| is_ident(&n.text))
            && (i == 0 || toks[i - 1].text != "::")
        {
            let name = toks[i + 1].text.clone();
            match toks.get(i + 2).map(|t| t.text.as_str()) {
                Some(";") if stack.is_empty() => {
                    syntax.mods.push((name.clone(), attrs.get(&name).cloned()));
                }
                Some("{") => {
                    let mut inline = here.clone();
                    inline.push(name.clone());
                    syntax.inline.push(inline);
                    module_at.push(here.clone());
                    module_at.push(here.clone());
                    depth += 1;
                    stack.push((name, depth));
                    i += 3;
                    continue;
                }
                _ => {}
            }
        } else if t == "{" {
            depth += 1;
        } else if t == "}" {
            if stack.last().is_some_and(|(_, d)| *d == depth) {
                stack.pop();
            }
            depth = depth.saturating_sub(1);
        }
        i += 1;
    }
    let children: BTreeSet<String> = syntax
        .mods
        .iter()
        .map(|(n, _)| n.clone())
        .chain(
            syntax
                .inline
                .iter()
                .filter(|p| p.len() == 1)
                .map(|p| p[0].clone()),
        )
        .collect();
    // Pass 2: `use` statements and inline paths.
    let mut i = 0;
    while i < toks.len() {
        let module: ModPath = own
            .iter()
            .cloned()
            .chain(module_at[i].iter().cloned())
            .collect();
        let t = toks[i].text.as_str();
        if t == "use" && (i == 0 || toks[i - 1].text != "::") {
            let public = i > 0
                && (toks[i - 1].text == "pub"
                    || (toks[i - 1].text == ")"
                        && (1..i)
                            .rev()
                            .find(|&k| toks[k].text == "(")
                            .is_some_and(|k| k > 0 && toks[k - 1].text == "pub")));
            let end = (i..toks.len())
                .find(|&k| toks[k].text == ";")
                .unwrap_or(toks.len());
            for (segs, alias, glob, line) in use_leaves(&toks[i + 1..end]) {
                if segs.is_empty() {
                    continue;
                }
                let binds = if glob {
                    None
                } else if segs.last().is_some_and(|s| s == "self") {
                    segs.len()
                        .checked_sub(2)
                        .map(|k| alias.clone().unwrap_or(segs[k].clone()))
                } else {
                    Some(
                        alias
                            .clone()
                            .unwrap_or(segs.last().cloned().unwrap_or_default()),
                    )
                };
                syntax.paths.push(Written {
                    module: module.clone(),
                    segs,
                    binds,
                    glob,
                    public,
                    is_use: true,
                    line,
                });
            }
            i = end + 1;
            continue;
        }
        let starts_path = matches!(t, "crate" | "$crate" | "super" | "self")
            || crate_names.contains(&t)
            || (module_at[i].is_empty() && children.contains(t));
        if starts_path
            && toks.get(i + 1).is_some_and(|n| n.text == "::")
            && (i == 0 || (toks[i - 1].text != "::" && toks[i - 1].text != "."))
        {
            let line = toks[i].line;
            let mut segs = vec![t.to_owned()];
            let mut k = i + 1;
            while toks.get(k).is_some_and(|n| n.text == "::")
                && toks.get(k + 1).is_some_and(|n| is_ident(&n.text))
            {
                segs.push(toks[k + 1].text.clone());
                k += 2;
            }
            syntax.paths.push(Written {
                module,
                segs,
                binds: None,
                glob: false,
                public: false,
                is_use: false,
                line,
            });
            i = k;
            continue;
        }
        i += 1;
    }
    syntax
}

// ---------------------------------------------------------------------------------------------------------------
// The module tree and name resolution.

#[derive(Debug, Default)]
struct Module {
    /// The file that holds it (an inline module's is its parent's).
    file: String,
    /// Child modules by name.
    children: BTreeMap<String, ModPath>,
    /// Names bound by `use` (re-exports included): name -> absolute target path.
    bindings: BTreeMap<String, ModPath>,
}

struct Tree {
    modules: BTreeMap<ModPath, Module>,
    /// File -> its (non-inline) module.
    file_module: BTreeMap<String, ModPath>,
    crate_names: Vec<String>,
}

/// The file of child module `name` declared in `file` (`#[path]` relative to `file`'s directory).
fn child_file(
    file: &str,
    name: &str,
    path_attr: Option<&str>,
    files: &BTreeMap<String, String>,
) -> Option<String> {
    let dir = match file.rfind('/') {
        Some(k) => &file[..k + 1],
        None => "",
    };
    if let Some(p) = path_attr {
        return Some(format!("{dir}{p}"));
    }
    let stem = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".rs");
    let base = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_owned()
    } else {
        format!("{dir}{stem}/")
    };
    [format!("{base}{name}.rs"), format!("{base}{name}/mod.rs")]
        .into_iter()
        .find(|f| files.contains_key(f))
}

impl Tree {
    /// An absolute module path for `segs` as written in `module`, or `None` for an extern path.
    fn absolute(&self, module: &ModPath, segs: &[String]) -> Option<ModPath> {
        let first = segs.first()?;
        let mut base: ModPath;
        let mut rest = &segs[1..];
        match first.as_str() {
            "crate" | "$crate" => base = Vec::new(),
            name if self.crate_names.iter().any(|c| c == name) => base = Vec::new(),
            "self" => base = module.clone(),
            "super" => {
                base = module.clone();
                base.pop();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            name => {
                let m = self.modules.get(module)?;
                if m.children.contains_key(name) {
                    base = module.clone();
                    rest = segs;
                } else {
                    return None;
                }
            }
        }
        base.extend(rest.iter().filter(|s| *s != "self").cloned());
        Some(base)
    }

    /// The file that defines what `path` (absolute) names, and the name. Follows child modules and bindings.
    fn resolve(&self, path: &[String], hops: usize) -> Option<(String, String)> {
        if hops > 32 {
            return None;
        }
        let mut cur: ModPath = Vec::new();
        for (i, seg) in path.iter().enumerate() {
            let module = self.modules.get(&cur)?;
            if let Some(child) = module.children.get(seg) {
                cur = child.clone();
                continue;
            }
            if let Some(target) = module.bindings.get(seg)
                && target.as_slice() != &path[..=i]
            {
                let mut next = target.clone();
                next.extend(path[i + 1..].iter().cloned());
                return self.resolve(&next, hops + 1);
            }
            return Some((module.file.clone(), seg.clone()));
        }
        let module = self.modules.get(&cur)?;
        Some((
            module.file.clone(),
            cur.last().cloned().unwrap_or_else(|| "crate".into()),
        ))
    }
}

/// Builds the module tree from `lib.rs` down.
fn build_tree(
    files: &BTreeMap<String, String>,
    crate_names: &[&str],
) -> (Tree, BTreeMap<String, FileSyntax>) {
    let mut tree = Tree {
        modules: BTreeMap::new(),
        file_module: BTreeMap::new(),
        crate_names: crate_names.iter().map(|s| s.to_string()).collect(),
    };
    let mut syntax = BTreeMap::new();
    let mut queue: VecDeque<(String, ModPath)> =
        VecDeque::from([("lib.rs".to_owned(), Vec::new())]);
    while let Some((file, module)) = queue.pop_front() {
        let Some(src) = files.get(&file) else {
            continue;
        };
        if tree.file_module.contains_key(&file) {
            continue;
        }
        let syn = read_file(src, &module, crate_names);
        tree.file_module.insert(file.clone(), module.clone());
        let entry = tree.modules.entry(module.clone()).or_default();
        entry.file = file.clone();
        for (name, attr) in &syn.mods {
            let mut child = module.clone();
            child.push(name.clone());
            entry.children.insert(name.clone(), child.clone());
            if let Some(f) = child_file(&file, name, attr.as_deref(), files) {
                queue.push_back((f, child));
            }
        }
        for inline in &syn.inline {
            let mut parent = module.clone();
            parent.extend(inline[..inline.len() - 1].iter().cloned());
            let mut path = module.clone();
            path.extend(inline.iter().cloned());
            tree.modules
                .entry(parent)
                .or_default()
                .children
                .insert(inline[inline.len() - 1].clone(), path.clone());
            tree.modules.entry(path).or_default().file = file.clone();
        }
        syntax.insert(file, syn);
    }
    // Bindings, now that every module is known.
    let mut bindings: Vec<(ModPath, String, ModPath)> = Vec::new();
    for syn in syntax.values() {
        for w in syn.paths.iter().filter(|w| w.is_use && !w.glob) {
            if let (Some(name), Some(target)) = (&w.binds, tree.absolute(&w.module, &w.segs)) {
                bindings.push((w.module.clone(), name.clone(), target));
            }
        }
    }
    for (module, name, target) in bindings {
        if let Some(m) = tree.modules.get_mut(&module) {
            m.bindings.insert(name, target);
        }
    }
    (tree, syntax)
}

// ---------------------------------------------------------------------------------------------------------------
// The graph and the checks.

/// Every file-to-file arrow, with what ties it.
fn arrows(
    tree: &Tree,
    syntax: &BTreeMap<String, FileSyntax>,
) -> BTreeMap<(String, String), BTreeSet<Use>> {
    let mut out: BTreeMap<(String, String), BTreeSet<Use>> = BTreeMap::new();
    for (file, syn) in syntax {
        if file == "lib.rs" {
            continue;
        }
        let own = &tree.file_module[file];
        for w in &syn.paths {
            let Some(abs) = tree.absolute(&w.module, &w.segs) else {
                continue;
            };
            // A face: a module file re-exporting its own descendants.
            if w.is_use && w.public && abs.len() > own.len() && abs.starts_with(own) {
                continue;
            }
            let Some((target, name)) = tree.resolve(&abs, 0) else {
                continue;
            };
            if target != *file && target != "lib.rs" {
                out.entry((file.clone(), target))
                    .or_default()
                    .insert(Use { name, line: w.line });
            }
        }
    }
    out
}

/// Strongly connected components with more than one node (Tarjan).
fn circles(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State<'_>, v: &str) {
        s.index.insert(v.to_owned(), s.next);
        s.low.insert(v.to_owned(), s.next);
        s.next += 1;
        s.stack.push(v.to_owned());
        s.on.insert(v.to_owned());
        for w in s.edges.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let low = s.low[v].min(s.low[&w]);
                s.low.insert(v.to_owned(), low);
            } else if s.on.contains(&w) {
                let low = s.low[v].min(s.index[&w]);
                s.low.insert(v.to_owned(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().expect("on the stack");
                s.on.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// The shortest circle through `start` inside `comp`, `start` first and last.
fn shortest_circle(
    start: &str,
    comp: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([start.to_owned()]);
    while let Some(v) = queue.pop_front() {
        for w in edges
            .get(&v)
            .into_iter()
            .flatten()
            .filter(|w| comp.contains(*w))
        {
            if w == start {
                let mut path = vec![v.clone()];
                let mut at = v.clone();
                while at != start {
                    at = prev[&at].clone();
                    path.push(at.clone());
                }
                path.reverse();
                path.push(start.to_owned());
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    vec![start.to_owned()]
}

fn describe(uses: &BTreeSet<Use>, file: &str, prefix: &str) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut by_line: Vec<&Use> = uses.iter().collect();
    by_line.sort_by_key(|u| u.line);
    for u in by_line {
        if seen.insert(u.name.clone()) {
            names.push(format!("{} ({prefix}{file}:{})", u.name, u.line));
        }
    }
    names.join(", ")
}

/// Checks the crate whose `src/` is `files` against `layers`. `prefix` is prepended to file names in messages
/// (`refcache-core/src/`); `crate_names` are the crate's own names usable in paths (`refcache_core`).
pub(crate) fn check(
    files: &BTreeMap<String, String>,
    layers: Option<Layers<'_>>,
    prefix: &str,
    crate_names: &[&str],
) -> Report {
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    for file in files
        .keys()
        .filter(|f| f == &"mod.rs" || f.ends_with("/mod.rs"))
    {
        report.problems.push(Problem::ModRs {
            file: format!("{prefix}{file}"),
        });
    }
    let (tree, syntax) = build_tree(files, crate_names);
    let arrows = arrows(&tree, &syntax);
    report.arrows = arrows.len();

    // Layers.
    if let Some(layers) = layers {
        let layer_of = |file: &str| -> Option<(u32, String)> {
            let module = tree.file_module.get(file)?;
            let top = module.first()?;
            layers
                .iter()
                .find(|(m, _, _)| m == top)
                .map(|(m, n, name)| (*n, format!("layer {n} ({name}: {m})")))
        };
        for (file, module) in &tree.file_module {
            if let Some(top) = module.first()
                && !layers.iter().any(|(m, _, _)| m == top)
                && module.len() == 1
            {
                report.problems.push(Problem::NoLayer {
                    file: format!("{prefix}{file}"),
                    module: top.clone(),
                });
            }
        }
        for ((from, to), uses) in &arrows {
            if let (Some((a, from_name)), Some((b, to_name))) = (layer_of(from), layer_of(to))
                && a < b
            {
                for u in uses {
                    report.problems.push(Problem::Upward {
                        at: format!("{prefix}{from}:{}", u.line),
                        name: u.name.clone(),
                        target: format!("{prefix}{to}"),
                        from: from_name.clone(),
                        to: to_name.clone(),
                    });
                }
            }
        }
    }

    // Circles between files, then between folders at each depth: at depth 1, `cache.rs` and everything under
    // `cache/` are one node, `cache/`.
    let depth = tree.file_module.values().map(Vec::len).max().unwrap_or(0);
    for d in std::iter::once(None).chain((1..depth).map(Some)) {
        let key = |file: &str| -> Vec<String> {
            let module = &tree.file_module[file];
            match d {
                Some(d) if module.len() > d => module[..d].to_vec(),
                Some(_) => module.clone(),
                None => vec![file.to_owned()],
            }
        };
        let mut members: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for file in tree.file_module.keys() {
            *members.entry(key(file)).or_default() += 1;
        }
        let label = |file: &str| -> String {
            let k = key(file);
            if d.is_some() && members[&k] > 1 {
                k.join("/") + "/"
            } else {
                file.to_owned()
            }
        };
        let mut nodes = BTreeSet::new();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut ties: BTreeMap<(String, String), (String, BTreeSet<Use>)> = BTreeMap::new();
        for ((from, to), uses) in &arrows {
            let (a, b) = (label(from), label(to));
            nodes.insert(a.clone());
            nodes.insert(b.clone());
            if a != b {
                edges.entry(a.clone()).or_default().insert(b.clone());
                let tie = ties
                    .entry((a, b))
                    .or_insert_with(|| (from.clone(), BTreeSet::new()));
                if tie.0 == *from {
                    tie.1.extend(uses.iter().cloned());
                }
            }
        }
        for comp in circles(&nodes, &edges) {
            // A circle of single files between folders is the file-level one, reported once.
            if d.is_some() && comp.iter().all(|n| !n.ends_with('/')) {
                continue;
            }
            let set: BTreeSet<String> = comp.iter().cloned().collect();
            let path = shortest_circle(&comp[0], &set, &edges);
            let ties = path
                .windows(2)
                .map(|w| {
                    let (file, uses) = &ties[&(w[0].clone(), w[1].clone())];
                    format!(
                        "{prefix}{} -> {prefix}{}: {}",
                        w[0],
                        w[1],
                        describe(uses, file, prefix)
                    )
                })
                .collect();
            report.problems.push(Problem::Cycle {
                level: if d.is_some() { "folders" } else { "files" },
                path: path.iter().map(|n| format!("{prefix}{n}")).collect(),
                ties,
                tangle: comp.iter().map(|n| format!("{prefix}{n}")).collect(),
            });
        }
    }
    report
}
