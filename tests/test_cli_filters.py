"""The command line's filters and ``sphaera watch``'s flags: ``entities --prefix/--kind/
--status`` answer what the node's filtered API answers, bad filters are one line, and
``watch`` checks its ``--exec`` command before connecting."""

from __future__ import annotations

import orjson

from tests.test_cli import clean_env, error_line, node_url, run

__all__ = ["clean_env", "node_url"]  # fixtures, used by name


def test_entities_filters(node_url: str) -> None:
    env = {"SPHAERA_URL": node_url, "SPHAERA_TOKEN": "t0k"}

    def ok(*args: str) -> str:
        result = run(*args, env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    ok("put", "db", "--kind", "postgres")
    ok("put", "api-1", "--kind", "svc", "--requires", '{"exists": "db"}')
    ok("put", "api-2", "--kind", "svc", "--requires", '{"exists": "cache"}')

    def ids(*args: str) -> set[str]:
        return set(orjson.loads(ok("entities", "--json", *args))["entities"])

    assert ids("--prefix", "api") == {"api-1", "api-2"}
    assert ids("--status", "absent") == {"api-2"}
    assert ids("--prefix", "api", "--status", "exists") == {"api-1"}
    assert ids("--kind", "postgres") == {"db"}
    assert ids("--kind", "svc", "--status", "undetermined") == set()
    table = ok("entities", "--status", "absent", "--prefix", "api")
    assert "api-2" in table and "api-1" not in table

    empty = run("entities", "--kind", "", env=env)
    assert empty.exit_code == 1
    assert "400 invalid_filter" in error_line(empty)
    unknown = run("entities", "--status", "gone", env=env)
    assert unknown.exit_code == 2 and "gone" in unknown.output


def test_watch_help_and_usage() -> None:
    result = run("watch", "--help")
    assert result.exit_code == 0
    for flag in ("--entity", "--prefix", "--kind", "--exec", "--json"):
        assert flag in result.output
    assert "SPHAERA_ENTITY" in result.output
    assert "  watch " in run("--help").output
    assert "  events " in run("--help").output

    missing = run("watch", "--exec")
    assert missing.exit_code == 2 and "--exec needs a command" in missing.output
    stray = run("watch", "echo")
    assert stray.exit_code == 2 and "goes after --exec" in stray.output
