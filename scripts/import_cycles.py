#!/usr/bin/env python3
"""Import circles between the modules of ngxscope, function-local and TYPE_CHECKING imports
included (grimp sees every import statement): prints each strongly connected component.

    .venv/bin/python scripts/import_cycles.py [--runtime]   (--runtime: skip TYPE_CHECKING)

Exit code 1 when there is a circle.
"""

from __future__ import annotations

import sys

import grimp


def circles(package: str = "ngxscope", *, type_checking: bool = True) -> list[list[str]]:
    """The import circles (strongly connected components of 2+ modules), each sorted."""
    # no cache: grimp keys it by file times, and another checkout of the same package (a
    # worktree, a "before" tree) can leave entries that look fresh
    graph = grimp.build_graph(package, exclude_type_checking_imports=not type_checking, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & set(modules)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(root: str) -> None:  # Tarjan, iterative (no recursion limit)
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = len(index)
                stack.append(v)
                on_stack.add(v)
            for j in range(i, len(edges[v])):
                w = edges[v][j]
                if w not in index:
                    work += [(v, j + 1), (w, 0)]
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])

    for m in modules:
        if m not in index:
            visit(m)
    return sorted(found)


def main() -> int:
    graph_circles = circles(type_checking="--runtime" not in sys.argv)
    n = sum(map(len, graph_circles))
    print(f"{len(graph_circles)} import circles covering {n} modules")
    for comp in graph_circles:
        print(f"  {len(comp)}: " + " ".join(comp))
    return 1 if graph_circles else 0


if __name__ == "__main__":
    sys.exit(main())
