#!/usr/bin/env python3
"""The module dependency picture of a crate: every `use crate::a::…` / `crate::a::…` path in
`src/<m>/…` is an edge m → a between top-level modules (a file's own module and `testutil`
excepted, and test code too: `tests.rs` files and a trailing `#[cfg(test)] mod tests`). Prints
the edges, then every cycle
(strongly connected component of two or more modules); exits 1 when there is one.

  tools/ci/module_deps.py crates/engine/src
"""
import pathlib
import re
import sys


def edges(src):
    out = {}
    for f in sorted(pathlib.Path(src).rglob("*.rs")):
        rel = f.relative_to(src)
        if rel.name in ("lib.rs", "main.rs") and len(rel.parts) == 1:
            continue
        mod = rel.parts[0].removesuffix(".rs")
        if mod == "testutil" or rel.name == "tests.rs":
            continue
        text = f.read_text()
        cut = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
        if cut:
            text = text[: cut.start()]
        # `use crate::{a, b::c}` groups and plain `crate::a` paths.
        targets = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\buse crate::\{([^}]*)\}", text, re.S):
            targets |= set(re.findall(r"(?:^|[,{\s])(\w+)(?=::|\s*[,}]|$)", group))
        # `super::x` from a top-level module's own file reaches a sibling.
        if len(rel.parts) == 1 or rel.name == "mod.rs" and len(rel.parts) == 2:
            targets |= set(re.findall(r"\bsuper::(\w+)", text))
        for t in targets:
            if t not in (mod, "testutil", "self", "Error", "Result") and t[0].islower():
                out.setdefault(mod, set()).add(t)
    return out


def cycles(g):
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        if v not in index:
            visit(v)
    return comps


def main():
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crates/engine/src")
    known = {p.name.removesuffix(".rs") for p in src.iterdir()}
    g = {m: {t for t in ts if t in known} for m, ts in edges(src).items()}
    for m in sorted(g):
        print(f"{m} -> {', '.join(sorted(g[m]))}")
    found = cycles(g)
    for c in found:
        print("cycle:", " <-> ".join(c))
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
