"""The package layout holds: imports go only downward, no import cycles, and
only the Kafka package talks to a Kafka client library."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module may import from its own package and from lower layers;
# packages sharing a layer know nothing of each other.
LAYERS: list[set[str]] = [
    {"stream.errors"},
    {"stream.faults"},
    {"stream.config"},
    {"stream.events", "stream.model"},
    {"stream.kafka"},
    {"stream.sync"},
    {"stream.observe"},
    {"stream.runtime"},
    {"stream.serve"},
    {"stream.tools"},
    {"stream.api"},
    {"stream.cliargs"},
    {"stream.commands"},
    {"stream.cli"},
    {"stream.__main__"},
]
KAFKA_LIBRARIES = {"kafka", "confluent_kafka"}


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("stream",):
        for path in (ROOT / top).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its package under stream/, or itself."""
    for layer in LAYERS:
        for unit in layer:
            if module == unit or module.startswith(unit + "."):
                return unit
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_imports_only_go_downward():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        if module == "stream":
            continue
        unit = _unit(module)
        for name in _imports(path, top_level_only=False):
            if name not in modules or name == "stream":
                continue
            target = _unit(name)
            if target != unit and _layer(target) >= _layer(unit):
                wrong.append(f"{module} imports {name}")
    assert sorted(set(wrong)) == []


def test_no_import_cycles():
    modules = _modules()
    graph = {
        m: {n for n in _imports(p, top_level_only=True) if n in modules and n != m}
        for m, p in modules.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_only_the_kafka_package_imports_a_kafka_client_library():
    offenders = sorted(
        module
        for module, path in _modules().items()
        if not module.startswith("stream.kafka")
        and {n.split(".")[0] for n in _imports(path, top_level_only=False)} & KAFKA_LIBRARIES
    )
    assert offenders == []
