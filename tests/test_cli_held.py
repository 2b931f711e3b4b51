"""``sphaera serve --max-held-bytes``: bounds the bytes of held updates (4x --max-body by
default)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sphaera_crdt.cli import cli, serving
from sphaera_crdt.node import NodeConfig


def test_serve_takes_max_held_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    configs: list[NodeConfig] = []

    async def record(config: NodeConfig) -> None:
        configs.append(config)

    monkeypatch.setattr(serving, "_serve", record)
    runner = CliRunner()
    assert "--max-held-bytes" in runner.invoke(cli, ["serve", "--help"]).output
    base = ["serve", "--id", "a", "--memory", "--max-body", "4096"]
    assert runner.invoke(cli, [*base, "--max-held-bytes", "12345"]).exit_code == 0
    assert runner.invoke(cli, base).exit_code == 0
    assert [config.held_bytes_limit for config in configs] == [12345, 4 * 4096]
    refused = runner.invoke(cli, [*base, "--max-held-bytes", "-1"])
    assert refused.exit_code == 2 and "--max-held-bytes" in refused.output
