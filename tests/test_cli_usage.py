"""The ``sphaera`` command is consistent: every client command takes ``--json``, a usage
error is one line on stderr (exit status 2) whichever command it comes from, and an empty
or malformed id is refused, naming the rules, before any request is made."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import sphaera_crdt
from sphaera_crdt.cli import cli
from sphaera_crdt.cli.app import Usage

ROOT = Path(sphaera_crdt.__file__).resolve().parent.parent
#: The client commands as the README lists them; the group may grow more.
KNOWN_CLIENT_COMMANDS = {
    "entities",
    "get",
    "put",
    "patch",
    "delete",
    "why",
    "observe",
    "forget",
    "replicas",
    "events",
    "watch",
}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="sphaera", env={"SPHAERA_URL": ""})


def one_line(result: Result) -> str:
    """The single line of a usage error on stderr, with exit status 2 and nothing else."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def commands() -> dict[str, click.Command]:
    ctx = click.Context(cli, info_name="sphaera")
    found = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


def options_of(command: click.Command) -> set[str]:
    return {flag for param in command.params for flag in param.opts}


def client_commands() -> dict[str, click.Command]:
    """The commands that talk to a node: those that take ``--url``."""
    return {name: c for name, c in commands().items() if "--url" in options_of(c)}


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- --json --------------------------------------------------------------------------------


def test_every_client_command_takes_json() -> None:
    found = client_commands()
    assert KNOWN_CLIENT_COMMANDS <= set(found)
    missing = sorted(name for name, command in found.items() if "--json" not in options_of(command))
    assert not missing, f"client commands without --json: {missing}"


@pytest.mark.parametrize("name", sorted(KNOWN_CLIENT_COMMANDS))
def test_json_is_in_every_client_command_s_help(name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    assert "--json" in result.stdout


# -- usage errors --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(commands()))
def test_an_unknown_option_is_one_line_for_every_command(name: str) -> None:
    line = one_line(run(name, "--zzzz"))  # close to no option, so click suggests none
    assert line == f"sphaera: error: no such option '--zzzz' (try 'sphaera {name} --help')"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--bogus"], "sphaera: error: no such option '--bogus' (try 'sphaera --help')"),
        (
            ["bench", "convergence", "--zzzz"],
            "sphaera: error: no such option '--zzzz' (try 'sphaera bench convergence --help')",
        ),
        (["bogus"], "sphaera: error: no such command 'bogus' (try 'sphaera --help')"),
        (["get"], "sphaera: error: missing argument 'ID' (try 'sphaera get --help')"),
        (
            ["put", "db", "--attrs", "[1]"],
            "sphaera: error: invalid value for --attrs: must be a JSON object"
            " (try 'sphaera put --help')",
        ),
        (
            ["entities", "--status", "gone"],
            "sphaera: error: invalid value for '--status': 'gone' is not one of 'exists',"
            " 'absent', 'undetermined' (try 'sphaera entities --help')",
        ),
        (
            ["watch", "--exec"],
            "sphaera: error: --exec needs a command (try 'sphaera watch --help')",
        ),
        (
            ["put", "--jso"],
            "sphaera: error: no such option '--jso' (did you mean '--json'?)"
            " (try 'sphaera put --help')",
        ),
    ],
)
def test_usage_errors_are_one_line(args: list[str], expected: str) -> None:
    assert one_line(run(*args)) == expected


def test_several_suggestions_go_in_parentheses_too() -> None:
    ctx = click.Context(cli, info_name="sphaera")
    error = Usage("No such option '--x'. (Did you mean one of: '--a', '--b'?)", ctx)
    shown = io.StringIO()
    error.show(shown)
    assert shown.getvalue() == (
        "sphaera: error: no such option '--x' (did you mean one of: '--a', '--b'?)"
        " (try 'sphaera --help')\n"
    )


def test_a_group_without_a_command_still_prints_its_help() -> None:
    result = run()
    assert result.exit_code == 2
    assert "Usage: sphaera" in result.stderr and "Commands:" in result.stderr


def test_the_real_process_prints_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sphaera_crdt", "put", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "sphaera: error: no such option '--bogus' (try 'sphaera put --help')"
    ]


# -- ids -----------------------------------------------------------------------------------

ENTITY_RULES = "an entity id is 1 to 256 characters of text, none a control character"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["put", ""], "'ID': entity id must not be empty"),
        (["get", ""], "'ID': entity id must not be empty"),
        (["patch", "", "--attrs", "{}"], "'ID': entity id must not be empty"),
        (["delete", "a\nb"], "control character '\\n' at 1"),
        (["why", "x" * 257], "is longer than 256 characters"),
        (["observe", "\x7f"], "control character"),
        (["events", "--entity", ""], "'--entity': entity id must not be empty"),
        (["watch", "--entity", ""], "'--entity': entity id must not be empty"),
    ],
)
def test_a_bad_entity_id_is_refused_before_any_request(args: list[str], problem: str) -> None:
    # The node's URL is a closed port: a request would fail with "unreachable", status 1.
    line = one_line(run(*args, "--url", closed_url()))
    assert line.startswith("sphaera: error: invalid value for "), line
    assert problem in line and ENTITY_RULES in line, line


def test_a_bad_replica_id_names_the_replica_id_rules() -> None:
    line = one_line(run("forget", "", "--url", closed_url()))
    assert "replica id must not be empty" in line
    assert "a replica id is 1 to 128 characters of text, none a control character" in line


def test_a_good_id_reaches_the_node() -> None:
    # The same commands with a valid id do make their request (and find no node).
    result = run("get", "db/1 with spaces", "--url", closed_url(), "--timeout", "2")
    assert result.exit_code == 1
    assert "unreachable" in result.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "not an http or https URL: 'http://'"),
        ("http://127.0.0.1:99999999", "bad port in 'http://127.0.0.1:99999999'"),
    ],
)
def test_a_url_that_cannot_work_is_one_line(url: str, problem: str) -> None:
    result = run("get", "db", "--url", url)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"sphaera: error: --url: {problem}"]
