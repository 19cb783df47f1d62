"""decode/ has no import circles between its files (TYPE_CHECKING and function-local imports
count too: grimp sees them all), and handlers never import the dispatcher."""

from __future__ import annotations

import grimp


def _decode_graph() -> dict[str, set[str]]:
    g = grimp.build_graph("ngxscope")
    mods = [m for m in g.modules if m.startswith("ngxscope.decode")]
    return {m: {i for i in g.find_modules_directly_imported_by(m) if i.startswith("ngxscope.decode")}
            for m in mods}


def test_no_import_cycles_in_decode() -> None:
    edges = _decode_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    assert "ngxscope.decode.assembler" in edges and len(edges) > 10
    assert cycles == []


def test_only_the_dispatcher_knows_the_handlers() -> None:
    edges = _decode_graph()
    for mod, imported in edges.items():
        assert "ngxscope.decode.assembler" not in imported, mod
        if not mod.startswith(("ngxscope.decode.handlers", "ngxscope.decode.assembler")):
            assert not any(i.startswith("ngxscope.decode.handlers") for i in imported), mod
