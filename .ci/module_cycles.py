"""Fails (exit 1) when a crate's modules depend on each other in a cycle, at the level of
files and at the level of top-level modules. An edge A -> B is a file of module A naming
module B (`crate::b::…`, `super::b`, `use crate::{b, …}`) outside its tests; foo.rs and
foo/bar.rs are modules foo and foo::bar; a module naming its own submodule is declaring it,
not depending on it. Read from source text, so it sees what `use` and paths say.

usage: python3 .ci/module_cycles.py gateway/src control-plane/src portico/src"""
import os, re, sys
from collections import defaultdict

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith('.rs'):
                rel = os.path.relpath(os.path.join(root, f), src)[:-3]
                if rel in ('lib', 'main'):
                    continue
                mods['::'.join(rel.split(os.sep))] = os.path.join(root, f)
    return mods

def strip_tests(text):
    i = text.find('#[cfg(test)]')
    return text if i < 0 else text[:i]

def graph(src):
    mods = modules(src)
    edges = defaultdict(set)
    for name, path in mods.items():
        text = strip_tests(open(path).read())
        text = re.sub(r'//.*', '', text)
        parts = name.split('::')
        refs = set()
        for m in re.finditer(r'\bcrate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', text):
            refs.add(tuple(m.group(1).split('::')))
        for m in re.finditer(r'\bsuper::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', text):
            refs.add(tuple(parts[:-1] + m.group(1).split('::')))
        # `use crate::{a, b::c}` groups
        for m in re.finditer(r'use crate::\{([^;]*)\};', text, re.S):
            for item in re.split(r',\s*', m.group(1)):
                item = item.strip()
                if item and item[0].islower():
                    refs.add(tuple(re.split(r'::|\{', item)[0:1]))
        for m in re.finditer(r'use super::\{([^;]*)\};', text, re.S):
            for item in re.split(r',\s*', m.group(1)):
                item = item.strip()
                if item and item[0].islower():
                    refs.add(tuple(parts[:-1] + re.split(r'::|\{', item)[0:1]))
        for ref in refs:
            # the longest module prefix of the reference
            target = None
            for k in range(len(ref), 0, -1):
                cand = '::'.join(ref[:k])
                if cand in mods:
                    target = cand
                    break
            if target is None or target == name or target.startswith(name + '::'):
                continue
            edges[name].add(target)
    return mods, edges

def sccs(nodes, edges):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in nodes:
        if v not in index: visit(v)
    return out

failed = False
for src in sys.argv[1:]:
    mods, edges = graph(src)
    cycles = sccs(sorted(mods), edges)
    print(f"{src}: {len(mods)} modules, {sum(len(e) for e in edges.values())} edges, {len(cycles)} cycles")
    for c in cycles:
        print("   cycle:", " <-> ".join(c))
    top = defaultdict(set)
    for a, targets in edges.items():
        for b in targets:
            ta, tb = a.split('::')[0], b.split('::')[0]
            if ta != tb:
                top[ta].add(tb)
    tops = sorted({m.split('::')[0] for m in mods})
    top_cycles = sccs(tops, top)
    print(f"   top-level modules: {len(tops)}, {len(top_cycles)} cycles")
    for c in top_cycles:
        print("   top-level cycle:", " <-> ".join(c))
    failed |= bool(cycles or top_cycles)
sys.exit(1 if failed else 0)
