"""The package's import graph: no cycles among r1hpc modules, and the lower layers (algorithms,
rewards, store, file I/O, lease, trainers, rollout and Megatron backends) never import the stage
layer (r1hpc/stages) or the pipeline. Imports inside functions count as much as those at the top
(a cycle through a lazy import is still a cycle; only the time it bites differs).

Read from the source (ast), so nothing is imported and the test takes well under a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "r1hpc"

LOWER = (
    "r1hpc.algos",
    "r1hpc.rewards",
    "r1hpc.store",
    "r1hpc.fsio",
    "r1hpc.lease",
    "r1hpc.train",
    "r1hpc.rollout",
    "r1hpc.megatron",
)
UPPER = ("r1hpc.stages", "r1hpc.pipeline")

# Known violations, to be fixed: each entry must still occur (the test fails once one is gone, so the
# list only shrinks). Empty since the Megatron train job moved into the stage layer
# (r1hpc/stages/grpo_megatron.py).
KNOWN_TO_FIX: frozenset[tuple[str, str]] = frozenset()


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """r1hpc modules that `name` imports anywhere in its body (`from a import b` names a.b when
    that is a module, else a). TYPE_CHECKING blocks count too: they are edges a type checker follows."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import r1hpc.a.b` with b a module or a name
                target = target.rpartition(".")[0]
            if target.startswith("r1hpc") and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imports(name, path, modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(src, dst) for src, dsts in graph.items() if _in(src, LOWER) for dst in dsts if _in(dst, UPPER)}


def test_graph_sees_function_level_imports():
    graph = _graph()
    assert "r1hpc.rollout.hf" in graph["r1hpc.rollout.factory"]  # imported inside make_generator
    assert "r1hpc.rollout.base" in graph["r1hpc.rollout.hf"]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles among r1hpc modules (break each with a module both sides import):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles
    )


def test_lower_layers_do_not_import_stages_or_pipeline():
    found = _upward(_graph())
    new = sorted(found - KNOWN_TO_FIX)
    assert not new, "upward imports into r1hpc.stages / r1hpc.pipeline:\n" + "\n".join(f"  {a} -> {b}" for a, b in new)


def test_known_to_fix_is_still_accurate():
    gone = sorted(KNOWN_TO_FIX - _upward(_graph()))
    assert not gone, f"fixed, remove from KNOWN_TO_FIX in tests/test_layers.py: {gone}"


def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
