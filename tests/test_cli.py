"""The ``sphaera`` command: help texts, one-line errors, flags, and the client commands
against a node running in a background thread."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result

from sphaera_crdt.cli import cli, serving
from sphaera_crdt.cli.app import COMMANDS as LAZY_COMMANDS
from sphaera_crdt.cli.app import SUMMARIES
from sphaera_crdt.node import Node, NodeConfig
from sphaera_crdt.persistence import open_replica
from sphaera_crdt.store import SQLiteStore

COMMANDS = [
    "serve",
    "entities",
    "get",
    "put",
    "patch",
    "delete",
    "why",
    "observe",
    "replicas",
    "forget",
    "events",
    "demo",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPHAERA_TOKEN", raising=False)
    monkeypatch.delenv("SPHAERA_URL", raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, prog_name="sphaera")


def error_line(result: Result) -> str:
    """The one line a failure writes to stderr (and nothing else, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- help ----------------------------------------------------------------------------------


def test_top_level_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


def test_the_listed_summaries_are_the_commands_own() -> None:
    """``--help`` lists commands without loading them, from SUMMARIES: each summary is
    what click would derive from the command's own help."""
    assert set(SUMMARIES) == set(LAZY_COMMANDS)
    context = click.Context(cli)
    for name, summary in SUMMARIES.items():
        command = cli.get_command(context, name)
        assert command is not None
        assert command.get_short_help_str(10**6) == summary, name


def test_top_level_help_loads_no_command() -> None:
    program = (
        "import sys\n"
        "from sphaera_crdt.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.startswith(('sphaera_crdt.cli.', 'aiohttp'))]\n"
        "print(sorted(loaded), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert "  serve " in result.stdout and "  why " in result.stdout
    assert result.stderr.strip() == "['sphaera_crdt.cli.app']"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    summary = result.output.split("\n\n")[1].strip()
    assert summary and not summary.startswith("Options")


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and "sphaera" in result.output


# -- serve: refusals -----------------------------------------------------------------------


def test_bad_flags_are_usage_errors() -> None:
    for args in (
        ["serve", "--id", "a", "--memory", "--port", "70000"],
        ["serve", "--id", "a", "--memory", "--fanout", "0"],
        ["serve", "--id", "a", "--memory", "--gossip-interval", "-1"],
        ["serve", "--memory"],
        ["serve", "--id", "a", "--memory", "--no-such-flag"],
    ):
        result = run(*args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output


def test_memory_and_data_exclude_each_other(tmp_path: Path) -> None:
    result = run("serve", "--id", "a", "--memory", "--data", str(tmp_path))
    assert result.exit_code == 2
    assert "either --memory or --data" in error_line(result)


def test_a_foreign_data_directory_is_one_line(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    open_replica("x", store)
    store.close()
    result = run("serve", "--id", "a", "--port", "0", "--data", str(tmp_path))
    assert result.exit_code == 1
    assert "belongs to replica 'x'" in error_line(result)


def test_non_loopback_host_needs_a_token() -> None:
    result = run("serve", "--id", "a", "--memory", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert error_line(result).startswith("sphaera: error: refusing to serve 0.0.0.0")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--id", "x" * 200], "replica id 'xxx"),
        (["--id", "a\tb"], "control character"),
        (["--id", "a", "--peer", "ftp://x"], "must start with http:// or https://"),
        (["--id", "a", "--tls-cert", "cert.pem"], "go together"),
        (["--id", "a", "--token-file", "/no/such/file"], "cannot read token file"),
    ],
)
def test_configuration_errors_are_one_line(extra: list[str], message: str) -> None:
    result = run("serve", "--memory", "--port", "0", *extra)
    assert result.exit_code == 2
    assert message in error_line(result)


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  \n")
    result = run("serve", "--id", "a", "--memory", "--token-file", str(token))
    assert result.exit_code == 2
    assert "is empty" in error_line(result)


def test_busy_port_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run("serve", "--id", "a", "--memory", "--port", str(port))
    assert result.exit_code == 1
    assert error_line(result).startswith(f"sphaera: error: cannot listen on 127.0.0.1:{port}")


def test_unreadable_certificate_is_one_line(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    result = run(
        "serve",
        "--id",
        "a",
        "--memory",
        "--port",
        "0",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    assert result.exit_code == 2
    assert "cannot load TLS certificate" in error_line(result)


# -- serve: accepted configurations (the server itself replaced by a recorder) -------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[NodeConfig]:
    configs: list[NodeConfig] = []

    async def record(config: NodeConfig) -> None:
        configs.append(config)

    monkeypatch.setattr(serving, "_serve", record)
    return configs


def test_insecure_allows_a_non_loopback_host(served: list[NodeConfig]) -> None:
    result = run("serve", "--id", "a", "--memory", "--host", "0.0.0.0", "--insecure")
    assert result.exit_code == 0, result.output
    assert served[0].host == "0.0.0.0" and served[0].insecure


def test_flags_reach_the_node_config(served: list[NodeConfig], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("  s3cret\n")
    result = run(
        "serve",
        "--id",
        "a",
        "--memory",
        "--port",
        "0",
        "--peer",
        "http://10.0.0.1:8470/",
        "--peer",
        "https://b.example",
        "--token-file",
        str(token),
        "--gossip-interval",
        "0.5",
        "--fanout",
        "3",
        "--max-body",
        "4096",
        "--liveness",
        "7",
        "--public-url",
        "https://a.example/",
    )
    assert result.exit_code == 0, result.output
    (config,) = served
    assert config.replica_id == "a" and config.port == 0
    assert config.peers == ("http://10.0.0.1:8470/", "https://b.example")
    assert config.token == "s3cret"
    assert (config.gossip_interval, config.fanout, config.max_body) == (0.5, 3, 4096)
    assert config.liveness == 7 and config.public_url == "https://a.example"


def test_data_directory(served: list[NodeConfig], tmp_path: Path) -> None:
    assert run("serve", "--id", "a", "--data", str(tmp_path / "a")).exit_code == 0
    assert run("serve", "--id", "b").exit_code == 0
    assert run("serve", "--id", "c", "--memory", "--durability", "normal").exit_code == 0
    assert [config.data_dir for config in served] == [
        str(tmp_path / "a"),
        str(Path("sphaera-data") / "b"),
        None,
    ]
    assert [config.durability for config in served] == ["full", "full", "normal"]


def test_token_from_environment(served: list[NodeConfig]) -> None:
    result = run("serve", "--id", "a", "--memory", env={"SPHAERA_TOKEN": " t0k "})
    assert result.exit_code == 0
    assert served[0].token == "t0k"


# -- client commands -----------------------------------------------------------------------


def test_unreachable_node_is_one_line() -> None:
    result = run("entities", "--url", closed_url(), "--timeout", "2")
    assert result.exit_code == 1
    assert "unreachable" in error_line(result)


def test_bad_url_is_refused() -> None:
    result = run("get", "db", "--url", "127.0.0.1:8470")
    assert result.exit_code == 2
    assert "--url must start with http://" in error_line(result)


@pytest.mark.parametrize("attrs", ["{not json", "[1, 2]"])
def test_bad_json_options_are_usage_errors(attrs: str) -> None:
    result = run("put", "db", "--attrs", attrs, "--url", closed_url())
    assert result.exit_code == 2
    assert "--attrs" in result.output and "Traceback" not in result.output


@pytest.fixture
def node_url() -> Iterator[str]:
    """A node served from a background thread, with its own event loop."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with Node(NodeConfig(replica_id="n", port=0, token="t0k")) as node:
            box["url"] = node.url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield box["url"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def test_client_commands_against_a_node(node_url: str, tmp_path: Path) -> None:
    env = {"SPHAERA_URL": node_url, "SPHAERA_TOKEN": "t0k"}

    def ok(*args: str) -> str:
        result = run(*args, env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    attrs = tmp_path / "attrs.json"
    attrs.write_text('{"port": 5432}')
    db = orjson.loads(ok("put", "db", "--kind", "postgres", "--attrs", f"@{attrs}"))
    assert db["attrs"] == {"port": 5432} and db["status"] == "exists"
    ok("put", "api", "--requires", '{"all": [{"exists": "db"}, {"observed": "db", "within": 60}]}')
    assert orjson.loads(ok("get", "api"))["status"] == "absent"
    observation = orjson.loads(ok("observe", "db", "--value", '{"ms": 3}', "--ttl", "60"))
    assert observation["subject"] == "db" and observation["ok"] is True
    assert orjson.loads(ok("get", "api"))["status"] == "exists"
    assert orjson.loads(ok("patch", "db", "--attrs", '{"role": "primary"}'))["attrs"] == {
        "port": 5432,
        "role": "primary",
    }
    why = orjson.loads(ok("why", "api", "--json"))
    assert isinstance(why, dict)
    table = ok("entities")
    assert "api" in table and "postgres" in table and "exists" in table
    listing = orjson.loads(ok("entities", "--json"))["entities"]
    assert set(listing) >= {"db", "api", "replica:n"}
    assert "n (self)" in ok("replicas")
    assert orjson.loads(ok("replicas", "--json"))["self"] == "n"
    ok("delete", "db")
    assert orjson.loads(ok("get", "api"))["status"] == "absent"

    missing = run("get", "nothing", env=env)
    assert missing.exit_code == 1
    assert error_line(missing).startswith("sphaera: error: 404 not_found")

    unauthorised = run("entities", env={"SPHAERA_URL": node_url})
    assert unauthorised.exit_code == 1
    assert "401" in error_line(unauthorised)


def test_every_one_shot_client_command_answers_json(node_url: str) -> None:
    env = {"SPHAERA_URL": node_url, "SPHAERA_TOKEN": "t0k"}

    def answer(*args: str) -> Any:
        result = run(*args, "--json", env=env)
        assert result.exit_code == 0, result.output
        return orjson.loads(result.stdout)

    put = answer("put", "db", "--kind", "postgres")
    assert (put["id"], put["kind"], put["status"]) == ("db", "postgres", "exists")
    assert answer("get", "db")["id"] == "db"
    assert answer("patch", "db", "--attrs", '{"port": 1}')["attrs"] == {"port": 1}
    assert answer("observe", "db", "--ttl", "60")["subject"] == "db"
    assert isinstance(answer("why", "db"), dict)
    assert "db" in answer("entities")["entities"]
    assert answer("replicas")["self"] == "n"
    assert answer("delete", "db")["status"] == "absent"  # the entity, now retracted
    assert answer("get", "db")["status"] == "absent"


def test_forget_refuses_the_node_itself_and_unknown_replicas(node_url: str) -> None:
    env = {"SPHAERA_URL": node_url, "SPHAERA_TOKEN": "t0k"}
    itself = run("forget", "n", env=env)
    assert itself.exit_code == 1
    assert error_line(itself).startswith("sphaera: error: 422 invalid_request")
    unknown = run("forget", "gone", env=env)
    assert unknown.exit_code == 1
    assert error_line(unknown).startswith("sphaera: error: 404 not_found")


def test_demo_converges() -> None:
    result = run("demo", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert "api is absent everywhere, by itself" in result.stdout
    assert result.stdout.rstrip().endswith("demo done")
