#!/usr/bin/env python3
"""Build every Rust block of the docs as a user who copies it would.

For each page (README.md and every docs/*.md, so a new page is checked without being listed here), each Rust block
is pasted as the `src/main.rs` of a new crate OUTSIDE this workspace, whose Cargo.toml holds the page's dependency
block (the nearest ```toml block above the Rust block with a `[dependencies]` or `[dev-dependencies]` table) with
`refcache` pointed at this checkout by path. The crate is built, and the program is run unless its block is
`rust,no_run`. Blocks under a `[dev-dependencies]`-only block are built as integration tests (`cargo test --no-run`).

What a page must follow (the tool fails, naming the page and line, otherwise):
- A Rust block is a whole program, with its `fn main`, and no rustdoc hidden lines (`# ...`): on the page those
  show as written, so a reader who copies them gets `# #[tokio::main]` in their code.
- A block that is not a whole program is ```rust,ignore, with a line `<!-- fragment: why -->` right above its fence.
- A ``` fence without a language is a Rust doctest to rustdoc: label it (```text, ```sh, ```rust).
- A Rust block has a dependency block above it on its page.

Blocks with the same dependency block share one scratch crate (one bin per block), and all crates share one
CARGO_TARGET_DIR (default: target/doc-snippets in this workspace; $DOC_SNIPPETS_TARGET to change it), so a second
run builds only what changed. Each scratch crate gets this workspace's Cargo.lock, so it builds the versions CI
tests. Dependency versions in the blocks are checked by cargo against that lock as a user's `cargo build` would.

Usage: .ci/doc-snippets.py [--no-run] [--keep] [PAGE.md ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[^`]*)$")
FRAGMENT = re.compile(r"^\s*<!--\s*fragment:\s*(?P<reason>\S.*?)\s*-->\s*$")
RUST_ATTRS = {"rust", "no_run", "ignore", "should_panic", "compile_fail", "edition2021", "edition2024"}
RUN_TIMEOUT_SECONDS = 120


class PageError(Exception):
    """A page breaks one of the rules in the module docs."""


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    info: list[str]
    code: str
    fragment: str | None = None  # the reason of a `<!-- fragment: why -->` line right above the fence


@dataclass
class Snippet:
    page: Path
    line: int
    code: str
    run: bool
    deps: dict
    as_test: bool

    @property
    def name(self) -> str:
        stem = re.sub(r"[^a-z0-9]+", "_", self.page.stem.lower()).strip("_")
        return f"{stem}_l{self.line}"

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Group:
    deps: dict
    snippets: list[Snippet] = field(default_factory=list)


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of a page, with their info strings, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, info = m.group("indent"), m.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise PageError(f"{page.relative_to(ROOT)}:{start + 1}: the block opened here is never closed")
        i += 1
        tags = [t.strip() for t in info.split(",") if t.strip()]
        if not tags:
            raise PageError(
                f"{page.relative_to(ROOT)}:{start + 1}: a ``` fence without a language is a Rust doctest to "
                "rustdoc; label it (```text, ```sh, ```rust)"
            )
        fragment = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (fm := FRAGMENT.match(lines[j])):
            fragment = fm.group("reason")
        blocks.append(Block(page, start + 1, tags, "\n".join(body) + "\n", fragment))
    return blocks


def dependency_tables(block: Block) -> dict | None:
    """The dependency tables of a ```toml block, or None when it is not a dependency block."""
    try:
        parsed = tomllib.loads(block.code)
    except tomllib.TOMLDecodeError as e:
        raise PageError(f"{block.page.relative_to(ROOT)}:{block.line}: this TOML block does not parse: {e}") from e
    tables = {k: parsed[k] for k in ("dependencies", "dev-dependencies") if k in parsed}
    return tables or None


def snippets_of(page: Path) -> tuple[list[Snippet], int]:
    """The page's Rust programs, each with its dependency block; and how many fragments it marks."""
    snippets: list[Snippet] = []
    fragments = 0
    deps: dict | None = None
    rel = page.relative_to(ROOT)
    for block in blocks_of(page):
        lang = block.info[0]
        if lang == "toml":
            tables = dependency_tables(block)
            if tables is not None:
                deps = tables
            continue
        if lang != "rust" and not set(block.info) <= RUST_ATTRS - {"rust"}:
            continue  # sh, json, text, ...: not compiled by anyone
        unknown = set(block.info) - RUST_ATTRS
        if unknown:
            raise PageError(f"{rel}:{block.line}: unknown attribute(s) {sorted(unknown)} on a Rust block")
        if "ignore" in block.info:
            if not block.fragment:
                raise PageError(
                    f"{rel}:{block.line}: a rust,ignore block needs a line `<!-- fragment: why -->` right above "
                    "its fence, saying why it is not a whole program (or make it one)"
                )
            fragments += 1
            continue
        if "compile_fail" in block.info:
            continue  # rustdoc checks that it fails; a user does not copy it to build it
        for n, text in enumerate(block.code.splitlines()):
            stripped = text.strip()
            if stripped == "#" or stripped.startswith("# "):
                raise PageError(
                    f"{rel}:{block.line + 1 + n}: a rustdoc hidden line (`{stripped[:40]}`) shows on the page as "
                    "written, so the block does not build as a reader copies it; write it out as code"
                )
        if not re.search(r"\bfn\s+main\s*\(", block.code):
            raise PageError(
                f"{rel}:{block.line}: this Rust block has no `fn main`: make it a whole program, or mark it "
                "```rust,ignore with `<!-- fragment: why -->` above it"
            )
        if deps is None:
            raise PageError(
                f"{rel}:{block.line}: no dependency block (```toml with [dependencies]) above this Rust block on "
                "its page: a reader cannot tell what to put in Cargo.toml"
            )
        as_test = "dependencies" not in deps
        snippets.append(Snippet(page, block.line, block.code, "no_run" not in block.info, deps, as_test))
    return snippets, fragments


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def localize(name: str, spec, where: str):
    """`refcache` from the registry becomes this checkout by path; every other dependency is left as written."""
    if name != "refcache":
        return spec
    if isinstance(spec, str):
        spec = {"version": spec}
    if not isinstance(spec, dict):
        raise PageError(f"{where}: cannot read the refcache dependency {spec!r}")
    spec = dict(spec)
    spec.pop("version", None)
    spec["path"] = str(ROOT)
    return spec


def manifest(group: Group, crate: str) -> str:
    out = [
        "[package]",
        f'name = "{crate}"',
        'version = "0.0.0"',
        'edition = "2024"',
        "publish = false",
        "",
        "[workspace]  # a root of its own: nothing of refcache's workspace applies",
        "",
    ]
    where = group.snippets[0].where
    for table in ("dependencies", "dev-dependencies"):
        if table in group.deps:
            out.append(f"[{table}]")
            for name, spec in group.deps[table].items():
                out.append(f"{name} = {toml_value(localize(name, spec, where))}")
            out.append("")
    # Speed only: no debug info, as refcache's own dev profile does for dependencies. It changes no compile error.
    out += ["[profile.dev]", "debug = false", ""]
    return "\n".join(out)


def build_group(group: Group, index: int, scratch: Path, target: Path, run: bool) -> list[str]:
    """Builds (and runs) one scratch crate; answers the failures, each naming its page and line."""
    crate = f"doc-snippets-{index}"
    d = scratch / crate
    (d / "src" / "bin").mkdir(parents=True)
    (d / "tests").mkdir()
    (d / "Cargo.toml").write_text(manifest(group, crate))
    shutil.copy(ROOT / "Cargo.lock", d / "Cargo.lock")
    as_test = group.snippets[0].as_test
    for s in group.snippets:
        (d / ("tests" if as_test else "src/bin") / f"{s.name}.rs").write_text(s.code)
    env = dict(os.environ, CARGO_TARGET_DIR=str(target), CARGO_TERM_COLOR="never")
    env = {k: v for k, v in env.items() if not k.startswith("REFCACHE_")}
    pages = ", ".join(s.where for s in group.snippets)
    print(f"-- crate {index}: {len(group.snippets)} block(s): {pages}", flush=True)
    cmd = ["cargo", "test", "--no-run", "--tests"] if as_test else ["cargo", "build", "--bins"]
    proc = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        log = proc.stderr
        for s in group.snippets:  # name the page's lines, not the scratch files
            log = log.replace(f"src/bin/{s.name}.rs", f"{s.where} (block)").replace(
                f"tests/{s.name}.rs", f"{s.where} (block)"
            )
        return [f"{pages}: `{' '.join(cmd)}` failed:\n{log}"]
    failures = []
    if run and not as_test:
        for s in group.snippets:
            if not s.run:
                continue
            exe = target / "debug" / s.name
            try:
                r = subprocess.run([str(exe)], cwd=d, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                failures.append(f"{s.where}: the program did not end within {RUN_TIMEOUT_SECONDS} s")
                continue
            if r.returncode != 0:
                failures.append(
                    f"{s.where}: the program exited with {r.returncode}:\n{r.stdout}{r.stderr}"
                )
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, help="pages to check (default: README.md and docs/*.md)")
    parser.add_argument("--no-run", action="store_true", help="build the programs, do not run them")
    parser.add_argument("--keep", action="store_true", help="keep the scratch crates (their path is printed)")
    args = parser.parse_args()

    pages = [p.resolve() for p in args.pages] or [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    groups: dict[str, Group] = {}
    errors: list[str] = []
    fragments = 0
    for page in pages:
        try:
            snippets, n = snippets_of(page)
        except PageError as e:
            errors.append(str(e))
            continue
        fragments += n
        for s in snippets:
            key = json.dumps(s.deps, sort_keys=True)
            groups.setdefault(key, Group(s.deps)).snippets.append(s)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1

    target = Path(os.environ.get("DOC_SNIPPETS_TARGET", ROOT / "target" / "doc-snippets"))
    scratch = Path(tempfile.mkdtemp(prefix="refcache-doc-snippets-"))
    failures: list[str] = []
    try:
        for index, group in enumerate(groups.values()):
            failures += build_group(group, index, scratch, target, not args.no_run)
    finally:
        if args.keep:
            print(f"scratch crates kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    total = sum(len(g.snippets) for g in groups.values())
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
        print(f"doc snippets: {len(failures)} failure(s) in {total} block(s)", file=sys.stderr)
        return 1
    ran = sum(1 for g in groups.values() for s in g.snippets if s.run and not s.as_test)
    print(
        f"doc snippets: {total} block(s) from {len(pages)} page(s) built in {len(groups)} crate(s)"
        f"{'' if args.no_run else f', {ran} run'}; {fragments} fragment(s) skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
