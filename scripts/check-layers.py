#!/usr/bin/env python3
"""Checks that imports between the crate's modules go one way.

Every `crate::a::b` path (in `use` lines, grouped `use crate::{..}` trees and
inline paths) and every `super::` path is resolved to the module it names. An
edge from top-level module X to top-level module Y is allowed only when Y's
layer is below X's; two modules of one layer must not import each other. Inside
the modules listed in SUBMODULE_DAGS, the submodules must not import each other
in a cycle either (test code aside, and for the cycles in KNOWN_CYCLES). Paths in
comments are ignored.

Usage: scripts/check-layers.py [--graph]  (exit 1 on a violation)
"""

import os
import re
import sys

# The layer table, lowest first. A module may import only from modules in lower
# layers. Keep docs/DESIGN.md ("Layers") and src/lib.rs in step with it.
LAYERS = [
    ["platform", "logfmt", "scoped", "ratelimit", "trust"],  # the host, small helpers, certificates
    ["events", "netchange"],  # what node and discovery tell each other
    ["node"],  # endpoint, formation check, liveness, the peer manager
    ["discovery"],  # sources of found/lost events; never dial
    ["data"],  # the data plane over the node's connections
    ["config"],  # the command line: flags, variables, value parsers
    ["settings", "api", "authority"],  # checked settings; gRPC service and CLI client; the authority's commands
    ["notify"],  # systemd readiness
    ["daemon"],  # `peat-sidecar run`: wires the layers together
    ["main"],
]

# Modules whose submodules must import each other without cycles.
SUBMODULE_DAGS = ["platform", "node", "discovery", "data", "config", "settings", "api"]

# Cycles between submodules known when this check was written, each with the work that
# removes it. They are reported but do not fail the check; any other cycle does. Delete
# an entry once its cycle is gone (the check says so).
KNOWN_CYCLES = {
    ("api", frozenset({"metrics", "metrics_data"})): "metric helpers in a module of their own",
}

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_path(rel):
    """src-relative file path -> module path (list of segments)."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    if parts == ["main"]:
        return ["main"]
    return parts


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        # drop // comments (including doc comments) but keep string contents
        # that merely contain "//" (URLs), which never hold `crate::` paths here
        idx = line.find("//")
        if idx >= 0:
            line = line[:idx]
        out.append(line)
    return "\n".join(out)


def parse_tree(text, i, prefix, found):
    """Parses a use tree at text[i:] after `prefix::`; appends full paths."""
    while i < len(text) and text[i].isspace():
        i += 1
    if text.startswith("{", i):
        i += 1
        while True:
            while i < len(text) and (text[i].isspace() or text[i] == ","):
                i += 1
            if i >= len(text) or text[i] == "}":
                return i + 1
            i = parse_tree(text, i, prefix, found)
    m = re.compile(IDENT + r"|\*").match(text, i)
    if not m:
        found.append(prefix)
        return i
    seg = m.group(0)
    i = m.end()
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if text.startswith("::", j):
        return parse_tree(text, j + 2, prefix + [seg], found)
    found.append(prefix + ([] if seg in ("*", "self") else [seg]))
    # skip an `as name`
    m = re.compile(r"\s+as\s+" + IDENT).match(text, i)
    return m.end() if m else i


def paths_in(text, here):
    """All module paths named in one file whose module path is `here`."""
    found = []
    for m in re.finditer(r"\b(crate|peat_sidecar)\s*::", text):
        parse_tree(text, m.end(), [], found)
    for m in re.finditer(r"\b((?:super\s*::\s*)+)", text):
        ups = m.group(1).count("super")
        base = here[: max(len(here) - ups, 0)]
        sub = []
        parse_tree(text, m.end(), [], sub)
        found.extend(base + p for p in sub)
    return found


def split_tests(text):
    """(code, test code): `#[cfg(test)] mod name { .. }` blocks go to the second."""
    code, tests, i = [], [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+" + IDENT + r"\s*\{", text):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        code.append(text[i : m.start()])
        tests.append(text[m.start() : j])
        i = j
    code.append(text[i:])
    return "".join(code), "".join(tests)


def collect():
    """([(file, module path, target path, is_test)], set of module paths)"""
    edges, modules = [], set()
    for root, _, files in os.walk(SRC):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            full = os.path.join(root, f)
            rel = os.path.relpath(full, SRC)
            here = module_path(rel)
            modules.add(tuple(here))
            with open(full, encoding="utf-8") as fh:
                code, tests = split_tests(strip_comments(fh.read()))
            if not here:
                continue  # lib.rs only declares the modules
            test_file = "tests" in here
            for text, is_test in ((code, test_file), (tests, True)):
                for p in paths_in(text, here):
                    if p:
                        edges.append((rel, tuple(here), tuple(p), is_test))
    return edges, modules


def find_cycles(graph):
    """Strongly connected components with more than one member."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def submodule(path, modules):
    """The second segment of `path` if it names a submodule (not an item at the root)."""
    return path[1] if len(path) > 1 and path[:2] in modules else None


def main():
    layer_of = {m: n for n, group in enumerate(LAYERS) for m in group}
    edges, modules = collect()
    errors, top, sub, where = [], {}, {}, {}
    for rel, here, t, is_test in sorted(set(edges)):
        src_top, dst_top = here[0], t[0]
        if src_top not in layer_of:
            errors.append(f"src/{rel}: module `{src_top}` is not in the layer table")
            continue
        if dst_top == src_top:
            a, b = submodule(here, modules), submodule(t, modules)
            if src_top in SUBMODULE_DAGS and not is_test and a and b and a != b:
                sub.setdefault(src_top, {}).setdefault(a, set()).add(b)
                where.setdefault((src_top, a, b), rel)
            continue
        if dst_top not in layer_of:
            continue  # an item or macro at the crate root, or an external path
        top.setdefault(src_top, set()).add(dst_top)
        if layer_of[dst_top] >= layer_of[src_top]:
            errors.append(
                f"src/{rel}: `{src_top}` (layer {layer_of[src_top] + 1}) imports "
                f"`{'::'.join(t)}` (layer {layer_of[dst_top] + 1}); imports must go to a lower layer"
            )
    seen_known = set()
    for mod, graph in sorted(sub.items()):
        for comp in find_cycles(graph):
            known = KNOWN_CYCLES.get((mod, frozenset(comp)))
            if known:
                seen_known.add((mod, frozenset(comp)))
                print(f"check-layers: known cycle in `{mod}`: {' <-> '.join(comp)} ({known})")
                continue
            links = [
                f"{a} -> {b} (src/{where[(mod, a, b)]})"
                for a in comp
                for b in sorted(graph.get(a, ()))
                if b in comp
            ]
            errors.append(f"cycle between submodules of `{mod}`: " + ", ".join(links))
    for mod, comp in sorted(set(KNOWN_CYCLES) - seen_known, key=str):
        print(f"check-layers: known cycle in `{mod}` ({', '.join(sorted(comp))}) is gone: "
              "delete it from KNOWN_CYCLES")
    if "--graph" in sys.argv:
        for m in sorted(top, key=lambda m: layer_of.get(m, 99)):
            print(f"{m} -> {', '.join(sorted(top[m], key=lambda x: layer_of.get(x, 99)))}")
        for mod, graph in sorted(sub.items()):
            for a in sorted(graph):
                print(f"  {mod}::{a} -> {', '.join(sorted(graph[a]))}")
    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if errors:
        print(
            f"check-layers: {len(errors)} import(s) against the layers"
            " (the table and the known cycles are in scripts/check-layers.py)",
            file=sys.stderr,
        )
        return 1
    n = sum(len(v) for v in top.values())
    print(f"check-layers: ok ({n} edges between top-level modules, all downward; "
          f"no new cycle between the submodules of {', '.join(SUBMODULE_DAGS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
