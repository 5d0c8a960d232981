"""The package's imports go one way: no import cycle, and no layer imports one above it.

The layers, lowest first (README, "How it works"):

- base: ``errors``, ``config``, ``json_files``, ``paths``, ``run_state``;
- ``io`` and ``dicom`` (files in and out; they may use each other, module cycles aside);
- ``engine`` (uses base and io) and ``evaluation`` (uses base and io only: never the engine);
- ``api``, ``options`` (RunOptions and the run flags), ``run_report`` and ``progress`` (use everything below);
- the entry points: ``cli``, ``__main__``, ``cohort``, ``container``, ``node``.

Every import counts, also those inside functions (the lazy ones that keep ``--help`` fast) and those
under ``TYPE_CHECKING``: a lazy import closes a cycle as surely as one at the top. The package's own
``__init__`` (the facade that re-exports the public names) is left out: it sits above everything.
Read with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pantherseg"

LAYERS = {
    "base": {"errors", "config", "json_files", "paths", "run_state"},
    "io": {"io"},
    "dicom": {"dicom"},
    "engine": {"engine"},
    "evaluation": {"evaluation"},
    "api": {"api", "options", "progress", "run_report"},
    "entry": {"cli", "__main__", "cohort", "container", "node"},
}
MAY_IMPORT = {
    "base": {"base"},
    "io": {"base", "io", "dicom"},
    "dicom": {"base", "io", "dicom"},
    "engine": {"base", "io", "engine"},
    "evaluation": {"base", "io", "evaluation"},
    "api": {"base", "io", "dicom", "engine", "api"},
    "entry": set(LAYERS),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # ``from pantherseg.io import images`` imports a module
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return {module for module in found if module in known and module != "pantherseg" and module != name}


def layer_of(name: str) -> str:
    first = name.split(".")[1]
    for layer, members in LAYERS.items():
        if first in members:
            return layer
    raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in {Path(__file__).name}")


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items() if name != "pantherseg"}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or round about."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_module_belongs_to_a_layer():
    for name in import_graph():
        layer_of(name)


def test_no_import_cycle():
    cycles = [group for group in strongly_connected(import_graph()) if len(group) > 1]
    assert cycles == [], f"modules that import each other (directly or round about): {cycles}"


def test_no_layer_imports_one_above_it():
    violations = []
    for name, targets in import_graph().items():
        for target in sorted(targets):
            if layer_of(target) not in MAY_IMPORT[layer_of(name)]:
                violations.append(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})")
    assert violations == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert [group for group in strongly_connected(graph) if len(group) > 1] == expected


def test_the_import_reader_sees_lazy_and_aliased_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from pantherseg.io import images as im\n    import pantherseg.api\n")
    known = {"pantherseg.io", "pantherseg.io.images", "pantherseg.api", "pantherseg.engine.x"}
    assert imports_of("pantherseg.engine.x", source, known) == {"pantherseg.io.images", "pantherseg.api"}


def test_the_public_names_are_re_exported_flat():
    """``pantherseg.segment`` etc. do not depend on where the code lives; every name resolves."""
    import pantherseg
    from pantherseg import api, evaluation

    for name in pantherseg.__all__:
        assert getattr(pantherseg, name) is not None, name
    assert pantherseg.segment is api.segment and pantherseg.CaseResult is api.CaseResult
    assert pantherseg.evaluate is evaluation.folders.evaluate
    assert pantherseg.CaseResult is not evaluation.folders.CaseEvaluation  # two different things, two names
    with pytest.raises(AttributeError):
        pantherseg.no_such_name  # noqa: B018


def test_inference_py_only_wires():
    """The container's entry point holds no logic of its own: that lives in pantherseg.container.entry_point."""
    tree = ast.parse((PACKAGE.parent / "inference.py").read_text(encoding="utf-8"))
    defined = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert defined == []
