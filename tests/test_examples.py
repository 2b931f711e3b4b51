"""Every example in ``examples/`` runs as is, finishes by itself and shows what it says.

Each runs as a user would run it (``python examples/NAME.py`` from the checkout) in a
subprocess with a deadline; the assertions pick lines of its output that carry the point
of the example.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, timeout: float = 60.0) -> list[str]:
    """Run ``examples/<name>`` and return its output lines; it must exit with status 0."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Whatever it logs, nothing failed and nothing was left running or open.
    for sign in ("Traceback", "Unclosed", "was destroyed", "never awaited"):
        assert sign not in result.stderr, result.stderr
    return result.stdout.splitlines()


def after(lines: list[str], heading: str) -> list[str]:
    """The lines that follow the first line starting with ``heading``."""
    for index, line in enumerate(lines):
        if line.startswith(heading):
            return lines[index + 1 :]
    raise AssertionError(f"no line starts with {heading!r} in:\n" + "\n".join(lines))


def test_every_example_is_tested_and_described() -> None:
    names = {path.name for path in EXAMPLES.glob("*.py")}
    tested = {
        "quickstart.py",
        "asyncio_app.py",
        "http_cluster.py",
        "convergence_bench.py",
    }
    assert names == tested
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert f"examples/{name}" in readme


def test_quickstart_shows_derived_existence() -> None:
    lines = run_example("quickstart.py", timeout=30)
    # Not yet evidence: absent on a. After b's observation and a sync: on both.
    assert lines[1].startswith("  on a: api absent")
    merged = after(lines, "t=0s  b merges")
    assert merged[0].startswith("  on a: api exists")
    assert merged[1].startswith("  on b: api exists")
    # The why tree, indented, names the observation that held and who made it.
    why = after(lines, "why does api exist on a?")
    assert why[0] == "  api: exists"
    assert any(line.strip() == "observed db within 10 s: true (1 fresh, 1 needed)" for line in why)
    assert any(line.strip().startswith("b: ok, fresh, 0 s old") for line in why[:8])
    # The evidence ages out with nobody acting: absent on both, and why says it is stale.
    aged = after(lines, "next deadline on a: t=10s")
    assert aged[0].startswith("  on a: api absent")
    assert aged[1].startswith("  on b: api absent")
    stale = after(lines, "why is api absent on b?")
    observation = [line.strip() for line in stale[:6] if line.strip().startswith("b: ")]
    assert observation == ["b: ok, stale for 2 s, 12 s old"]
    # A new observation brings it back.
    back = after(lines, "t=12s b observes db again")
    assert back[0].startswith("  on a: api exists")
    assert back[1].startswith("  on b: api exists")
    assert lines[-1] == "replicas a and b converged: api exists on both again"


def test_asyncio_app_ticks_at_deadlines_and_restores_from_its_store() -> None:
    lines = run_example("asyncio_app.py", timeout=30)
    assert "  change: db absent -> exists (declared with no requirements)" in lines
    assert after(lines, "observe db healthy")[0] == "  api: absent (db is not the primary yet)"
    # Promoting db completes the evidence: subscribe delivers the change, why shows the
    # attribute clause and the observation that decided.
    promoted = after(lines, "promote db")
    assert promoted[0].startswith("  change: api absent -> exists")
    assert any(line.strip().startswith("attr db.role eq") for line in promoted[:9])
    assert any(line.strip().startswith("app: ok, fresh") for line in promoted[:12])
    # The timer ticks at next_deadline(): the change comes with nobody acting, once the
    # observation is older than the constraint's window.
    waited = after(lines, "wait: nobody acts")
    assert waited[0].startswith("  change: api exists -> absent")
    went = waited[1].split()
    assert went[:3] == ["api", "went", "absent"]
    assert went[4:] == ["s", "after", "the", "observation", "of", "db"]
    assert float(went[3]) >= 0.5
    assert after(lines, "observe db again")[0].startswith("  change: api absent -> exists")
    # Restored from the SQLite store: the records and the observation survived.
    restored = after(lines, "restart: restore the replica")
    assert (
        restored[0] == '  db: kind=postgres attrs={"port": 5432, "role": "primary"} requires=null'
    )
    assert restored[1].startswith('  api: kind=service attrs={} requires={"all": [{"exists": "db"}')
    assert restored[2] == '  observation: app saw db ok=True value={"latency_ms": 4}'


def test_http_cluster_syncs_three_nodes_and_a_bare_pycrdt_doc() -> None:
    lines = run_example("http_cluster.py", timeout=60)
    listening = [line for line in lines if " listening on http://127.0.0.1:" in line]
    assert [line.split()[0] for line in listening] == ["n1", "n2", "n3", "n4"]
    assert any(line.startswith("every node sees n1, n2 and n3 live") for line in lines)
    # The writes made on n1 and n2 through the REST API are seen on every node.
    seen = after(lines, "PUT /v1/entities/api on n2")
    for index, replica_id in enumerate(("n1", "n2", "n3")):
        expected = f"  {replica_id}: db exists (kind=postgres, port=5432), api exists"
        assert seen[index].startswith(expected)
    # The bare doc pulls the whole state in y-protocols messages ...
    pulled = after(lines, "a bare pycrdt Doc syncs with n3")
    assert pulled[0] == "  n3 answered SYNC_STEP2+SYNC_STEP1, then SYNC_STEP1"
    assert pulled[1].endswith("carrying api, db, replica:n1, replica:n2, replica:n3")
    # ... and pushes it to a node that had no peers and knew nothing.
    assert any(line.endswith("with no peers: GET db answers 404") for line in lines)
    pushed = after(lines, "the bare Doc syncs with n4")
    assert pushed[0] == "  n4 answered SYNC_STEP2+SYNC_STEP1, then SYNC_STEP1"
    assert pushed[1] == "  n4: api exists, owner n2, requires {'exists': 'db'}"
    assert lines[-1] == "stopped"


@pytest.mark.slow  # a few seconds: the sweep starts a worker process per run
def test_convergence_bench_writes_json_and_draws_a_plot(tmp_path: Path) -> None:
    lines = run_example("convergence_bench.py", "--out", str(tmp_path), timeout=120)
    assert lines[0] == "running 24 scenarios and 6 ideal epidemics"
    assert lines[1] == f"loaded {tmp_path / 'convergence.json'}: 24 runs"
    table = after(lines, "mean rounds to identical state")
    assert table[0].split() == ["N=4", "N=8", "N=16"]
    labels = [
        f"{s}, fanout {f}" for s in ("full-state", "gossip", "ideal push-pull") for f in (1, 2)
    ]
    for label, row in zip(labels, table[1:7], strict=True):
        assert row.startswith(f"  {label} ")
        rounds = [float(figure) for figure in row.removeprefix(f"  {label}").split()]
        assert len(rounds) == 3 and all(0 < value < 20 for value in rounds)
    png = tmp_path / "rounds.png"
    assert lines[-1] == f"saved the plot to {png}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 800)
