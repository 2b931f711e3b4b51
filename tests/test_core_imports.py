"""The core is sans-IO: it imports pycrdt, cryptography, PyNaCl and the standard library only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import sphaera_crdt

PACKAGE = Path(sphaera_crdt.__file__).parent
CORE = PACKAGE / "core"
# pyo3_runtime is the module pycrdt's Rust extension registers (PanicException lives there);
# cryptography signs the entries of signed mode and PyNaCl (nacl) verifies them.
ALLOWED_THIRD_PARTY = {"pycrdt", "pyo3_runtime", "cryptography", "nacl"}
FORBIDDEN = ("aiohttp", "sqlite3", "_sqlite3", "asyncio")


def _loaded_after(statement: str) -> set[str]:
    """Run ``statement`` in a fresh interpreter; return the modules it loaded."""
    program = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_importing_the_core_loads_no_io_library() -> None:
    # The package loads its names on first use: import every module of the core.
    loaded = _loaded_after(
        "import importlib, pkgutil, sphaera_crdt.core\n"
        "for info in pkgutil.iter_modules(sphaera_crdt.core.__path__, 'sphaera_crdt.core.'):\n"
        "    importlib.import_module(info.name)"
    )
    assert "sphaera_crdt.core.replica" in loaded  # the probe really imported the core
    assert "pycrdt" in loaded
    for name in FORBIDDEN:
        assert name not in loaded, f"importing sphaera_crdt.core loaded {name}"
        assert not any(module.startswith(name + ".") for module in loaded)


def test_the_probe_would_notice_an_io_import() -> None:
    # Guards the test above against a probe that can never see anything.
    loaded = _loaded_after("import sqlite3, asyncio")
    assert {"sqlite3", "asyncio"} <= loaded


def test_core_modules_import_only_pycrdt_and_the_standard_library() -> None:
    files = sorted(CORE.glob("*.py"))
    assert CORE / "replica.py" in files
    offenders = {}
    for path in files:
        foreign = {
            name
            for name in _top_level_imports(path)
            if name in FORBIDDEN
            or (
                name not in sys.stdlib_module_names
                and name not in ALLOWED_THIRD_PARTY
                and name != "sphaera_crdt"
            )
        }
        if foreign:
            offenders[path.name] = sorted(foreign)
    assert offenders == {}, f"core modules import outside pycrdt and the stdlib: {offenders}"


def test_testing_helper_imports_only_the_standard_library_and_the_package() -> None:
    foreign = {
        name
        for name in _top_level_imports(PACKAGE / "testing.py")
        if name not in sys.stdlib_module_names and name != "sphaera_crdt"
    }
    assert foreign == set()
    loaded = _loaded_after("import sphaera_crdt.testing")
    assert "sphaera_crdt.testing" in loaded
    for name in ("pytest", "hypothesis", *FORBIDDEN):
        assert name not in loaded
