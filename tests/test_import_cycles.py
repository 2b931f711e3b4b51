"""The package has no import cycles: dependencies between its modules flow one way.

The graph is read from the source with :mod:`ast`, so it holds every import: at module
top, inside functions (a lazy import only postpones a cycle) and under ``TYPE_CHECKING``
(a cycle hidden from the interpreter is still one in the design).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Set
from pathlib import Path
from typing import Final

import sphaera_crdt

PACKAGE = Path(sphaera_crdt.__file__).parent
ROOT = PACKAGE.name

#: Cycles tolerated, each as the sorted tuple of its modules: none. An entry added here
#: must say why and how it will go.
KNOWN_CYCLES: Final[frozenset[tuple[str, ...]]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(name: str, source: str, *, package: str, modules: Set[str]) -> Iterator[str]:
    """The package's modules that ``name`` imports anywhere in its source.

    ``from .pkg import sub`` depends on the module ``pkg.sub`` when there is one, else on
    ``pkg`` itself. Parent packages that the interpreter runs on the way are not counted:
    they would put every module on a cycle through the package's ``__init__``.
    """
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    yield sub
                elif target in modules:
                    yield target


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    paths = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = _imports(name, path.read_text(), package=package, modules=paths.keys())
        graph[name] = {target for target in targets if target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_package_has_no_import_cycle() -> None:
    unexpected = [cycle for cycle in cycles(import_graph()) if cycle not in KNOWN_CYCLES]
    assert not unexpected, "import cycles: " + "; ".join(" <-> ".join(c) for c in unexpected)


def test_known_cycles_are_still_cycles() -> None:
    # An entry left behind after its cycle is gone would let the cycle come back unseen.
    assert KNOWN_CYCLES <= set(cycles(import_graph()))


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    sources = {
        "pkg.a": "def f():\n    from . import b\n",
        "pkg.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
    }
    graph = {
        name: set(_imports(name, source, package="pkg", modules=sources.keys()))
        for name, source in sources.items()
    }
    assert cycles(graph) == [("pkg.a", "pkg.b")]
