#!/usr/bin/env python3
"""The crate's module layering, checked from its imports (`make lint`). Python stdlib only.

A module is a file: src/a/b.rs or src/a/b/mod.rs is `a::b`, src/lib.rs is the root `crate`.
src/main.rs (the CLI, which may import anything) is left out, and so is test code: files named
tests.rs or under a tests/ folder, `mod tests { .. }` blocks and other `#[cfg(test)]` items
(`--tests` takes them in, for information).

An edge a -> b is a path in a's code that names b: a `use` (braced groups expanded, `pub use`
included, also a mod.rs's `pub use child::X`), or a path inline in code (`crate::failpoint::hit()`,
`super::X`, `child::f()` from a parent). A path names the longest prefix of it that is a file
module: `crate::a::b::C` is `a::b` if src/a/b.rs or src/a/b/mod.rs exists, else `a`, else the root.
`super::`/`self::` resolve from the module the path is in (inline `mod x { .. }` counted).
Comments, doc comments and string literals are ignored. `mod x;` is no edge; self loops are ignored.

Checks, each violation one line `file:line: message`, exit status 1 if any:
1. No import circle between modules. Every edge that lies on a circle is shown in one, with
   the first file:line of each of the circle's edges.
2. A module imports only modules of its own layer or below (LAYERS, top to bottom). A module's
   layer is its first path component (`ops::verify::kafka` is `ops`; lib.rs is `crate`).
   Exceptions are module edges in ALLOW, each with its reason. Within a layer only 1. applies.
`--report` also prints the edges between top-level modules, with counts, and every circle.
`--layers 'ops>load>...'` checks against another order (planning a move).
`--src DIR` checks another tree; `--self-test` checks that a circle and an upward import in a
small made-up tree are both found (`make lint` runs it before checking src/).
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

LAYERS = [  # top to bottom; the names on one line share a layer
    "ops",
    "load",
    "crate",  # src/lib.rs itself: open_manifest, schema_def, open_delta (job -> table glue)
    "config",  # job files into the domain types `table` and `record` own
    "table",
    "record",
    "error failpoint",
]
ALLOW = {  # upward module edges allowed until refactored, each with its reason, e.g.
    # ("load::flush", "ops::compact"): "compaction runs inside the loader until #NN",
}

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# Comments and literals, blanked before anything else (a char literal is not a lifetime).
LEXEMES = re.compile(r"""//[^\n]* | /\*.*?\*/ | (?<!\w)b?r(\#*)".*?"\1 | (?<!\w)b?"(?:\\.|[^"\\])*"
    | (?<!\w)b?'(?:\\u\{\w+\}|\\.|[^'\\\n])'""", re.S | re.X)
TEST_ITEM = re.compile(r"""\#\[cfg\(test\)\]\s* (?:\#\[[^\]]*\]\s*)* (?:pub(?:\([^)]*\))?\s+)?
    (?:mod|fn|use|impl|const|static|struct|enum|type)\b | (?<!\w)mod\s+tests\b""", re.X)
INLINE_MOD = re.compile(r"(?<![\w:])mod\s+(\w+)\s*\{")
USE = re.compile(r"(?<![\w:])use\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])\$?\w+(?:\s*::\s*\w+)+")


def blank(text, start, end):
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


def item_end(text, i):
    """The end of the item starting at i: its `;`, or the brace closing its body."""
    m = re.compile(r"[;{]").search(text, i)
    if not m or m.group() == ";":
        return m.end() if m else len(text)
    depth = 0
    for k in range(m.start(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return k + 1
    return len(text)


def expand(tree, off):
    """Each leaf of a use tree with its offset: `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e."""
    i = tree.find("{")
    if i < 0:
        leaf = re.sub(r"\s", "", re.sub(r"\s+as\s+\w+\s*$", "", tree))
        yield leaf, off + len(tree) - len(tree.lstrip())
        return
    prefix, depth, start = re.sub(r"\s", "", tree[:i]), 0, i + 1
    for k in range(i + 1, len(tree)):
        ch = tree[k]
        if depth == 0 and ch in ",}":
            if tree[start:k].strip():
                yield from ((prefix + p, o) for p, o in expand(tree[start:k], off + start))
            start = k + 1
        depth += {"{": 1, "}": -1}.get(ch, 0)


def resolve(segs, here, modules):
    """The file module a path names from module `here` (inline modules included), or None."""
    head, rest = segs[0], segs[1:]
    if head in ("crate", "$crate"):
        base = ()
    elif head == "self":
        base = here
    elif head == "super":
        base = here[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    elif here + (head,) in modules:  # a child module, named relative to its parent
        base, rest = here, segs
    else:
        return None  # another crate, or an item in scope
    path = base + tuple(rest)
    while path not in modules:
        path = path[:-1]
    return path


def module_of(rel):
    parts = list(rel.with_suffix("").parts)
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib") else parts)


def edges(with_tests):
    """(from, to, file, line) for every import site, from src/**/*.rs."""
    files = {}
    for f in sorted(SRC.rglob("*.rs")):
        rel = f.relative_to(SRC)
        is_test = rel.name == "tests.rs" or "tests" in rel.parts[:-1]
        if rel.as_posix() != "main.rs" and (with_tests or not is_test):
            files[module_of(rel)] = f
    sites = []
    for mod, f in files.items():
        text = LEXEMES.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), f.read_text())
        while not with_tests and (m := TEST_ITEM.search(text)):
            text = blank(text, m.start(), item_end(text, m.start()))
        inline = [(m.start(), item_end(text, m.start()), m[1]) for m in INLINE_MOD.finditer(text)]
        line = lambda off: text.count("\n", 0, off) + 1
        scope = lambda off: mod + tuple(n for s, e, n in inline if s < off < e)

        def add(path, off):
            to = resolve(re.split(r"\s*::\s*", path), scope(off), files)
            if to is not None and to != mod:
                sites.append((mod, to, ("src" / f.relative_to(SRC)).as_posix(), line(off)))

        for m in list(USE.finditer(text)):
            for path, off in expand(m.group(1), m.start(1)):
                add(path, off)
            text = blank(text, m.start(), m.end())
        for m in PATH.finditer(text):
            add(m.group(), m.start())
    return sorted(sites, key=lambda s: (s[2], s[3]))


def circles(sites):
    """A circle for every edge a -> b that lies on one (b leads back to a): a, b, then b's
    shortest way back to a. Each a list of modules, first == last."""
    graph = defaultdict(set)
    for a, b, *_ in sites:
        graph[a].add(b)
    found = {}
    for a, b in sorted((a, b) for a in graph for b in graph[a]):
        back, todo = {b: None}, [b]
        for v in todo:  # breadth first from b
            for w in sorted(graph[v] - back.keys()):
                back[w] = v
                todo.append(w)
        if a in back:
            way = [a]
            while way[-1] != b:
                way.append(back[way[-1]])
            cyc = [a] + way[::-1]
            i = cyc.index(min(cyc[:-1]))  # the same circle found from another edge: once
            found.setdefault(tuple(cyc[i:-1] + cyc[:i + 1]), None)
    return list(found)


def self_test():
    """A made-up crate with one circle (table::a <-> table::b) and one upward import
    (record -> load): both must be reported, and nothing else."""
    import io
    import tempfile
    from contextlib import redirect_stdout
    global SRC
    with tempfile.TemporaryDirectory() as d:
        src = Path(d)
        files = {
            "lib.rs": "pub mod load;\npub mod record;\npub mod table;\n",
            "load.rs": "use crate::table::a::A;\npub struct L;\n",
            "record.rs": "use crate::load::L;\n",
            "table/mod.rs": "pub mod a;\npub mod b;\n",
            "table/a.rs": "use crate::table::b::B;\npub struct A;\n",
            "table/b.rs": "use crate::table::a::A;\npub struct B;\n",
        }
        for rel, text in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        saved, SRC = SRC, src
        out = io.StringIO()
        try:
            with redirect_stdout(out):
                status = main([])
        finally:
            SRC = saved
    lines = out.getvalue().splitlines()
    ok = (status == 1 and len(lines) == 2
          and any("import circle table::a -> table::b -> table::a" in l for l in lines)
          and any("upward import record (record) -> load (load)" in l for l in lines))
    if not ok:
        print("layers.py --self-test: the made-up circle and upward import were not both found:")
        print("\n".join(lines))
        return 1
    return 0


def main(argv):
    global SRC
    if "--self-test" in argv:
        return self_test()
    if "--src" in argv:
        SRC = Path(argv[argv.index("--src") + 1])
    layers = LAYERS
    if "--layers" in argv:
        layers = argv[argv.index("--layers") + 1].split(">")
    rank = {name: r for r, group in enumerate(layers) for name in group.replace(",", " ").split()}
    sites = edges("--tests" in argv)
    first = {}
    for a, b, f, n in sites:
        first.setdefault((a, b), f"{f}:{n}")
    show = lambda m: "::".join(m) or "crate"
    top = lambda m: m[0] if m else "crate"
    problems, cycs = [], circles(sites)
    for cyc in cycs:
        hops = "; ".join(f"{show(a)} -> {show(b)} at {first[a, b]}" for a, b in zip(cyc, cyc[1:]))
        problems.append(f"{first[cyc[0], cyc[1]]}: import circle {' -> '.join(map(show, cyc))}: {hops}")
    for a, b, f, n in sites:
        la, lb = top(a), top(b)
        for name in {la, lb} - rank.keys():
            problems.append(f"{f}:{n}: `{name}` is in no layer of LAYERS")
        if la in rank and lb in rank and rank[lb] < rank[la] and (show(a), show(b)) not in ALLOW:
            problems.append(f"{f}:{n}: upward import {show(a)} ({la}) -> {show(b)} ({lb})")
    if "--report" in argv:
        print("layers, top to bottom: " + " > ".join(layers))
        between = defaultdict(list)  # (top-level from, top-level to): [(from, to)] per path
        for a, b, *_ in sites:
            if top(a) != top(b):
                between[top(a), top(b)].append((a, b))
        order = lambda l: (rank.get(l, -1), l)
        for la in sorted({k[0] for k in between}, key=order):
            print(f"{la}:")
            for lb in sorted({k[1] for k in between if k[0] == la}, key=order):
                edges_ = between[la, lb]
                up = "  UPWARD" if rank.get(lb, -1) < rank.get(la, -1) else ""
                print(f"  -> {lb}: {len(set(edges_))} module edges, {len(edges_)} paths{up}")
        print(f"circles: {len(cycs) or 'none'}")
        for cyc in cycs:
            print("  " + " -> ".join(map(show, cyc)))
    for p in dict.fromkeys(problems):
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
