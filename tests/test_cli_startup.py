"""The ``sphaera`` command starts quickly: ``--version`` and the one-shot client commands
load neither the node, the server, the simulator nor plotting, nor aiohttp, asyncio or
pycrdt. Checked on the modules a fresh interpreter holds after running the command, which
is deterministic where a timing is not (``benchmarks/bench_cli.py`` measures the time).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sphaera_crdt
from sphaera_crdt import core
from sphaera_crdt.cli import cli

ROOT = Path(sphaera_crdt.__file__).resolve().parent.parent
#: What no client command, nor ``--version``, may load (a module or any below it).
HEAVY = (
    "aiohttp",
    "asyncio",
    "pycrdt",
    "matplotlib",
    "sqlite3",
    "prometheus_client",
    "sphaera_crdt.node",
    "sphaera_crdt.net.server",
    "sphaera_crdt.net.client",
    "sphaera_crdt.sim",
    "sphaera_crdt.core.replica",
)

#: Runs the command as ``python -m sphaera_crdt`` does, then reports the modules loaded.
PROGRAM = """
import json, runpy, sys
out, sys.argv = sys.argv[1], ["sphaera", *sys.argv[2:]]
try:
    runpy.run_module("sphaera_crdt", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as file:
    json.dump({"code": code, "modules": sorted(sys.modules)}, file)
"""


def loaded_by(tmp_path: Path, *args: str, status: int = 0) -> set[str]:
    """The modules a fresh interpreter holds after ``sphaera ARGS`` exited with ``status``."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    report = json.loads(out.read_text())
    assert (report["code"] or 0) == status, done.stdout + done.stderr
    return set(report["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)
    )


ENTITIES = {"db": {"kind": "pg", "status": "exists", "reason": "declared"}}
#: A stream the stand-in node ends after a snapshot and one change.
EVENT_STREAM = (
    b'event: snapshot\ndata: {"entities": {"db": {"status": "absent", "reason": "r"}}}\n\n'
    b'event: change\ndata: {"entity": "db", "before": "absent", "after": "exists",'
    b' "reason": "declared"}\n\n'
)


@pytest.fixture
def node_url() -> Iterator[str]:
    """A stand-in node answering the entity list (the client's start path is under test)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"entities": ENTITIES}).encode()
            kind = "application/json"
            code = 200
            if self.path.startswith("/v1/events"):
                body, kind = EVENT_STREAM, "text/event-stream"
            if "refuse" in self.path:
                code, body = 401, b'{"error": {"code": "unauthorized", "message": "no"}}'
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_version_loads_nothing_heavy(tmp_path: Path) -> None:
    loaded = loaded_by(tmp_path, "--version")
    assert "sphaera_crdt.cli.app" in loaded  # the probe really ran the command
    assert not heavy_in(loaded)
    for name in ("orjson", "rich", "http.client", "importlib.metadata"):
        assert name not in loaded, name
    assert not any(
        name.startswith("sphaera_crdt.cli.") and name != "sphaera_crdt.cli.app" for name in loaded
    ), "--version loaded a command's module"


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_client_command_loads_only_the_http_client(
    tmp_path: Path, node_url: str, json_flag: list[str]
) -> None:
    loaded = loaded_by(tmp_path, "entities", "--url", node_url, *json_flag)
    assert "sphaera_crdt.net.blocking_client" in loaded  # it really made its call
    assert not heavy_in(loaded)
    assert ("rich" in loaded) is not bool(json_flag)  # only a table needs rich


def test_the_event_stream_loads_only_the_http_client(tmp_path: Path, node_url: str) -> None:
    loaded = loaded_by(tmp_path, "events", "--url", node_url)
    assert "sphaera_crdt.net.blocking_client" in loaded
    assert not heavy_in(loaded)
    result = CliRunner().invoke(cli, ["events", "--url", node_url], prog_name="sphaera")
    assert result.exit_code == 0, result.output
    assert result.stdout == "db: absent (r)\ndb: absent -> exists (declared)\n"


def test_watch_loads_only_the_http_client(tmp_path: Path, node_url: str) -> None:
    # The stand-in node refuses this stream, so the watch ends (with status 1) after its
    # request instead of following the stream for ever.
    loaded = loaded_by(tmp_path, "watch", "--url", node_url, "--kind", "refuse", status=1)
    assert "sphaera_crdt.net.blocking_client" in loaded
    assert not heavy_in(loaded)


def test_key_loads_nothing_heavy(tmp_path: Path) -> None:
    # Run where a node will run, before it starts: it needs no server, document or store.
    loaded = loaded_by(tmp_path, "key", "--key", str(tmp_path / "k"), "--create", "--id", "a")
    assert "sphaera_crdt.keys" in loaded  # it really made the key
    assert (tmp_path / "k").exists()
    assert not heavy_in(loaded)
    # reading a data directory's replica id loads sqlite3, and still nothing else
    loaded = loaded_by(tmp_path, "key", "--data", str(tmp_path / "d"), "--id", "a")
    assert {name.partition(".")[0] for name in heavy_in(loaded)} == {"sqlite3"}


def test_the_probe_would_notice_a_heavy_import(tmp_path: Path) -> None:
    # Guards the tests above against a probe that can never see anything: the server
    # command's help loads the node.
    assert "sphaera_crdt.node" in heavy_in(loaded_by(tmp_path, "serve", "--help"))


def test_the_package_names_load_on_first_use() -> None:
    for package in (sphaera_crdt, core):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
            assert name in dir(package)
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
    assert sphaera_crdt.Replica is core.Replica


def test_version_is_the_package_s_one_version() -> None:
    # --version prints __version__ (no metadata lookup); the build reads the same one.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert "version" not in project["project"]
    assert project["tool"]["hatch"]["version"]["path"] == "sphaera_crdt/__init__.py"
    assert re.search(
        r'^__version__ = "([^"]+)"$', (ROOT / "sphaera_crdt/__init__.py").read_text(), re.M
    )
    result = CliRunner().invoke(cli, ["--version"], prog_name="sphaera")
    assert result.stdout == f"sphaera, version {sphaera_crdt.__version__}\n"
