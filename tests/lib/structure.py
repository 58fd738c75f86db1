#!/usr/bin/python3
"""The tree's structure, checked from the built objects and the sources.

  structure.py deps BUILD          the file-level dependency graph of each program:
                                   an edge a -> b when a.o uses a symbol b.o defines;
                                   prints every circle (a strongly connected group of
                                   more than one file), one per line; exit 1 if any
  structure.py includes ROOT       every circle of '#include "..."' between the tree's
                                   C files, file by file; exit 1 if any
  structure.py sizes LIMIT FILE... every FILE with more lines than LIMIT; exit 1 if any

A circle is found by symbols, not by includes: one header declaring everything
hides a circle of calls from an include check, never from the linker's view.
"""
import os
import re
import subprocess
import sys

# The programs and the object folders they link (besides build/worker/lib,
# the shared library every program links).
PROGRAMS = {
    "helmq-worker": ["worker"],
    "helmq-projector": ["worker/projector"],
    "helmq-api": ["worker/api"],
    "helmq-broker": ["worker/broker"],
    "helmq": ["producer-cli"],
}


def objects(build, folder):
    d = os.path.join(build, folder)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".o"))


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in "TDBRVWC":  # global definitions (upper case: external)
            defined.add(name)
    return defined, undefined


def circles(graph):
    """Tarjan's strongly connected components of size > 1 (or a self-loop)."""
    index, low, on, stack, out = {}, {}, set(), [], []
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def source_of(build, obj):
    rel = os.path.relpath(obj, build)
    return rel[:-2] + ".c"


def deps(build):
    found = 0
    lib = objects(build, "worker/lib")
    for prog, folders in PROGRAMS.items():
        objs = [o for f in folders for o in objects(build, f)] + lib
        table = {o: symbols(o) for o in objs}
        owner = {}
        for o, (defined, _) in table.items():
            for s in defined:
                owner.setdefault(s, o)
        graph = {}
        for o, (_, undefined) in table.items():
            a = source_of(build, o)
            graph.setdefault(a, set())
            for s in undefined:
                if s in owner and owner[s] != o:
                    graph[a].add(source_of(build, owner[s]))
        for comp in circles(graph):
            found += 1
            print("%s: circle: %s" % (prog, " <-> ".join(comp)))
    return 1 if found else 0


INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def includes(root):
    files = {}
    for top in ("worker", "producer-cli"):
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in names:
                if n.endswith((".c", ".h")):
                    files[os.path.relpath(os.path.join(d, n), root)] = None
    by_name = {}
    for f in files:
        by_name.setdefault(os.path.basename(f), []).append(f)
    graph = {}
    for f in files:
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            text = fh.read()
        graph[f] = set()
        for inc in INCLUDE.findall(text):
            local = os.path.normpath(os.path.join(os.path.dirname(f), inc))
            if local in files:
                graph[f].add(local)
            elif os.path.join("worker/lib", inc) in files:
                graph[f].add(os.path.join("worker/lib", inc))
    # File by file: a circle can only run through headers (nothing includes a
    # .c file). Which module a header's functions live in is the symbol
    # check's business (deps): a public header such as codec.h is implemented
    # by several files, each including it.
    mod = graph
    found = 0
    for comp in circles(mod):
        found += 1
        print("include circle: %s" % " <-> ".join(comp))
    return 1 if found else 0


def sizes(limit, paths):
    over = 0
    for p in paths:
        with open(p, "rb") as fh:
            n = fh.read().count(b"\n")
        if n > limit:
            over += 1
            print("%s: %d lines (limit %d)" % (p, n, limit))
    return 1 if over else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "deps":
        return deps(argv[2])
    if len(argv) >= 3 and argv[1] == "includes":
        return includes(argv[2])
    if len(argv) >= 3 and argv[1] == "sizes":
        return sizes(int(argv[2]), argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
