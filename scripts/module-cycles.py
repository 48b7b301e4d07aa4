#!/usr/bin/env python3
"""Lists the modules of perfkit/src that import each other (directly or around a loop).

A module is one file (`foo.rs` or `foo/mod.rs`). It imports another when it names it in
code, outside comments and tests: `use crate::a::b`, `crate::a::b::f()`, `super::x`,
`self::x` (a child declared with `mod x;` is not an import: declaring is not depending).
Paths are resolved to the deepest module that exists, and through a parent's re-export
(`pub use child::Item`) to the child that defines the item. Prints every strongly connected
component of more than one module and exits 1 if there is one, 0 otherwise.

    python3 scripts/module-cycles.py            # perfkit/src
    python3 scripts/module-cycles.py --edges    # also every import edge
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "perfkit", "src")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)


def strip(text):
    # Drop #[cfg(test)] mod tests { ... } (to the end of the file, where they live here),
    # comments and string literals.
    m = re.search(r"#\[cfg\([^\]]*\btest\b[^\]]*\)\]\s*mod \w+\s*\{", text)
    if m:
        text = text[: m.start()]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def main():
    files = {}
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs") and not (d == ROOT and n != "lib.rs" and False):
                p = os.path.join(d, n)
                if os.sep + "bin" + os.sep in p:
                    continue
                files[module_of(p)] = p
    modules = set(files)

    # Names a module re-exports from one of its children (`pub use child::{A, B as C}`):
    # a path through the re-export leads to the child that defines the item.
    reexports = {}
    reexport_re = re.compile(r"\bpub(?:\([a-z]+\))?\s+use\s+([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(?:::\{([^;]*)\}|::([A-Za-z_][A-Za-z0-9_]*)(?:\s+as\s+([A-Za-z_][A-Za-z0-9_]*))?)\s*;", re.S)
    for m, p in files.items():
        text = strip(open(p).read())
        for r in reexport_re.finditer(text):
            child = m + (r.group(1),) + tuple(x for x in r.group(2).split("::") if x)
            if child not in modules:
                continue
            if r.group(3) is not None:
                for item in r.group(3).split(","):
                    item = item.strip()
                    if not item:
                        continue
                    name, _, alias = item.partition(" as ")
                    reexports[(m, (alias or name).strip())] = child
            else:
                reexports[(m, (r.group(5) or r.group(4)).strip())] = child

    def resolve(base, parts):
        best = None
        for i in range(len(parts), -1, -1):
            cand = tuple(base) + tuple(parts[:i])
            if cand in modules:
                best = cand
                if i < len(parts) and (cand, parts[i]) in reexports:
                    best = reexports[(cand, parts[i])]
                break
        return best

    edges = {m: set() for m in modules}
    path_re = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
    group_re = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}\s*;", re.S)
    for m, p in files.items():
        text = strip(open(p).read())
        is_mod_rs = p.endswith("mod.rs") or p.endswith("lib.rs")
        here = list(m) if is_mod_rs else list(m[:-1])  # the directory `super`/`self` start from

        def base_of(kw, count_super=1):
            if kw == "crate":
                return []
            if kw == "self":
                return list(m)
            return list(m[:-1]) if count_super == 1 else list(m[: -count_super])

        refs = []
        for g in group_re.finditer(text):
            kw, prefix, inner = g.group(1), g.group(2), g.group(3)
            base = base_of(kw)
            pre = [x for x in prefix.split("::") if x]
            for item in re.split(r"[,{}]", inner):
                item = item.strip().split(" as ")[0].strip()
                if not item or item == "self":
                    refs.append((base, pre))
                    continue
                refs.append((base, pre + item.split("::")))
        for r in path_re.finditer(text):
            kw, rest = r.group(1), [x for x in r.group(2).split("::") if x]
            supers = 1
            while kw == "super" and rest and rest[0] == "super":
                rest, supers = rest[1:], supers + 1
            refs.append((base_of(kw, supers), rest))
        for base, parts in refs:
            target = resolve(base, parts)
            if target is None or target == m or target == ():
                continue
            edges[m].add(target)

    # Tarjan's strongly connected components.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    name = lambda t: "crate" if not t else "::".join(t)
    if "--edges" in sys.argv:
        for v in sorted(modules):
            for w in sorted(edges[v]):
                print(f"{name(v)} -> {name(w)}")
    cycles = [sorted(c) for c in out if len(c) > 1]
    for c in cycles:
        print("cycle: " + ", ".join(name(x) for x in c))
        for v in c:
            for w in sorted(edges[v]):
                if w in c:
                    print(f"    {name(v)} -> {name(w)}")
    if cycles:
        print(f"{len(cycles)} cycle(s) among {len(modules)} modules")
        return 1
    print(f"no cycles among {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
