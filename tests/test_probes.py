"""Probes: validation, the sans-IO schedule and targets, the asyncio runner, and a probe
that flips an entity on three in-process nodes."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from nodes import FakeClock, StartNode, node_factory, settle

from sphaera_crdt import Replica, observed
from sphaera_crdt.core.probes import Probe, ProbeSchedule, ProbeTargets
from sphaera_crdt.errors import ConfigError, InvalidProbe, InvalidValue
from sphaera_crdt.net.probes import ProbeRunner
from sphaera_crdt.node import NodeConfig

# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ([], "must be an object"),
        ({}, "exactly one of"),
        ({"http": "http://x/", "tcp": "x:1"}, "exactly one of"),
        ({"http": "ftp://x/"}, "an http.s. URL"),
        ({"http": "http://x:99999/"}, "not a URL"),
        ({"tcp": "localhost"}, "HOST:PORT"),
        ({"tcp": "localhost:0"}, "HOST:PORT"),
        ({"exec": []}, "argv"),
        ({"exec": "true"}, "argv"),
        ({"exec": ["true", 1]}, "argv"),
        ({"tcp": "h:1", "expect": 200}, "http probes only"),
        ({"http": "http://x/", "expect": 42}, "100-599"),
        ({"http": "http://x/", "every": 0}, "every"),
        ({"http": "http://x/", "every": True}, "every"),
        ({"http": "http://x/", "every": float("nan")}, "every"),
        ({"http": "http://x/", "every": 1, "timeout": 2}, "must not exceed"),
        ({"http": "http://x/", "by": "me"}, "by"),
        ({"http": "http://x/", "by": []}, "by"),
        ({"http": "http://x/", "by": ["a", "x" * 129]}, "probe by: replica id"),
        ({"http": "http://x/", "by": ["a\nb"]}, "probe by: replica id"),
        ({"http": "http://x/", "colour": 1}, "unknown probe keys: colour"),
    ],
)
def test_declare_refuses_a_malformed_probe(probe: Any, message: str) -> None:
    replica = Replica("a")
    with pytest.raises(InvalidProbe, match=message) as caught:
        replica.declare("svc", probe=probe)
    assert isinstance(caught.value, InvalidValue)
    assert replica.entity("svc") is None  # nothing was written


def sync(a: Replica, b: Replica) -> None:
    b.merge(a.delta(b.state_vector()))
    a.merge(b.delta(a.state_vector()))


def inject_probe(replica: Replica, entity: str, data: Any) -> None:
    """Declare ``entity`` with a probe that skips validation, as a hostile peer could."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Probe, "parse", staticmethod(lambda data: None))
        replica.declare(entity, probe=data)


def test_probe_is_replicated_like_a_field() -> None:
    a, b = Replica("a"), Replica("b")
    probe = {"http": "http://127.0.0.1:1/health", "every": 2, "by": "*"}
    assert a.declare("svc", probe=probe).probe == probe
    sync(a, b)
    view = b.entity("svc")
    assert view is not None and view.probe == probe and view.to_json()["probe"] == probe
    # Re-declaring without a probe removes it; a record that never had one writes no field.
    a.declare("svc")
    sync(a, b)
    assert b.entity("svc").probe is None  # type: ignore[union-attr]
    a.declare("plain")
    assert "p" not in a._view.records["plain"].fields


@pytest.mark.asyncio
async def test_a_peers_unreadable_probe_is_unreadable_and_not_run() -> None:
    a, b = Replica("a"), Replica("b")
    inject_probe(a, "svc", [1, 2])  # a list where an object belongs
    inject_probe(a, "odd", {"tcp": "nohost", "by": "*"})  # an object, but not a probe
    inject_probe(a, "big", {"exec": ["x"] * 1000, "by": "*"})
    sync(a, b)
    view = b.entity("svc")
    assert view is not None and view.probe is None and view.status.value == "exists"
    assert b._view.records["svc"].unreadable() == {
        "probe": "probe is a list [1, 2], not an object or null"
    }
    assert b.entity("odd").probe == {"tcp": "nohost", "by": "*"}  # type: ignore[union-attr]
    runner = ProbeRunner(b, allow_exec=True)
    assert runner.probes() == {}
    assert await runner.run_due() == 0
    assert b.observations("svc") == [] and b.observations("odd") == []


# -- the sans-IO schedule and targets ------------------------------------------------------


def test_schedule_runs_what_this_replica_runs_when_due() -> None:
    every = Probe.parse({"tcp": "h:1", "every": 10, "by": "*"})
    owned = Probe.parse({"tcp": "h:2", "every": 5})
    listed = Probe.parse({"tcp": "h:3", "every": 5, "by": ["b"]})
    schedule = ProbeSchedule("a")
    probes = {"x": (every, "b"), "y": (owned, "a"), "z": (owned, "b"), "w": (listed, "a")}
    assert schedule.due(probes, 100.0) == ["x", "y"]
    schedule.started("x", 100.0)
    schedule.started("y", 100.0)
    assert schedule.due(probes, 104.0) == []
    assert schedule.due(probes, 105.0) == ["y"]
    assert schedule.next_due() == 100.0 + 5
    # A changed probe is due at once; a vanished one is forgotten.
    changed = Probe.parse({"tcp": "h:1", "every": 20, "by": "*"})
    assert schedule.due({"x": (changed, "b")}, 106.0) == ["x"]
    assert set(schedule.due_at) == {"x"}


def test_targets_allow_loopback_by_default_and_listed_hosts_only() -> None:
    default = ProbeTargets()
    assert default.allows("127.0.0.1") and default.allows("::1") and default.allows("localhost")
    assert not default.allows("10.0.0.1") and not default.allows("example.com")
    listed = ProbeTargets(["10.0.0.0/8", "svc.internal"])
    assert listed.allows("10.2.3.4") and listed.allows("SVC.internal")
    assert not listed.allows("127.0.0.1")
    with pytest.raises(InvalidProbe, match="--probe-allow"):
        ProbeTargets(["http://x/"])


def test_config_checks_probe_flags() -> None:
    with pytest.raises(ConfigError, match="--allow-exec needs --run-probes"):
        NodeConfig(replica_id="a", allow_exec=True)
    with pytest.raises(ConfigError, match="--probe-allow"):
        NodeConfig(replica_id="a", probe_allow=("not a host",))


# -- the runner ----------------------------------------------------------------------------


class Service:
    """A local HTTP service whose health the test switches."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""
        self.hits = 0

    async def health(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=self.status, text="ok" if self.status == 200 else "down")


@pytest_asyncio.fixture
async def service() -> AsyncIterator[Service]:
    service = Service()
    app = web.Application()
    app.router.add_get("/health", service.health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    service.url = f"http://127.0.0.1:{port}/health"
    yield service
    await runner.cleanup()


def last(replica: Replica, subject: str) -> Any:
    [observation] = replica.observations(subject)
    return observation


@pytest.mark.asyncio
async def test_http_probe_observes_status_and_latency(service: Service) -> None:
    clock = FakeClock()
    replica = Replica("a", clock=clock)
    replica.declare("svc", probe={"http": service.url, "every": 2})
    runner = ProbeRunner(replica, clock=clock)
    try:
        assert await runner.run_due() == 1
        seen = last(replica, "svc")
        assert seen.ok is True and seen.value["status"] == 200 and seen.value["ms"] >= 0
        assert seen.ttl == 6 and seen.at == clock.now
        assert await runner.run_due() == 0  # not due again before `every`
        service.status = 503
        clock.advance(2)
        assert await runner.run_due() == 1
        assert last(replica, "svc").ok is False and last(replica, "svc").value["status"] == 503
    finally:
        await runner.close()


@pytest.mark.asyncio
async def test_probe_to_a_refused_host_is_not_run() -> None:
    replica = Replica("a")
    replica.declare("far", probe={"tcp": "192.0.2.1:80"})
    replica.declare("named", probe={"http": "http://example.com/"})
    runner = ProbeRunner(replica)
    try:
        assert await runner.run_due() == 0
        assert replica.observations("far") == [] and replica.observations("named") == []
        assert "192.0.2.1" in runner.refused["far"]
        assert "example.com" in runner.refused["named"]
    finally:
        await runner.close()


@pytest.mark.asyncio
async def test_exec_is_refused_without_allow_exec(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    replica = Replica("a")
    argv = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('x'); print('hello')"]
    replica.declare("job", probe={"exec": argv})
    refusing = ProbeRunner(replica)
    assert await refusing.run_due() == 0
    assert "--allow-exec" in refusing.refused["job"]
    assert not marker.exists() and replica.observations("job") == []
    allowing = ProbeRunner(replica, allow_exec=True)
    assert await allowing.run_due() == 1
    seen = last(replica, "job")
    assert marker.exists() and seen.ok is True and seen.value["out"].startswith("hello")


@pytest.mark.asyncio
async def test_a_slow_probe_costs_its_timeout_and_a_failed_start_is_an_observation() -> None:
    replica = Replica("a")
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    replica.declare("slow", probe={"exec": slow, "every": 5, "timeout": 0.3})
    replica.declare("missing", probe={"exec": ["/nonexistent/program"]})
    replica.declare("closed", probe={"tcp": "127.0.0.1:1", "timeout": 1})
    runner = ProbeRunner(replica, allow_exec=True, max_in_flight=2)
    started = time.monotonic()
    assert await asyncio.wait_for(runner.run_due(), 10) == 3
    assert time.monotonic() - started < 5
    assert last(replica, "slow").ok is False
    assert "timed out after 0.3" in last(replica, "slow").value["error"]
    assert "FileNotFoundError" in last(replica, "missing").value["error"]
    assert last(replica, "closed").ok is False and "error" in last(replica, "closed").value


@pytest.mark.asyncio
async def test_checks_in_flight_are_bounded() -> None:
    replica = Replica("a")
    for index in range(5):
        replica.declare(f"job{index}", probe={"exec": [sys.executable, "-c", "pass"]})
    runner = ProbeRunner(replica, allow_exec=True, max_in_flight=2)
    peak = 0
    check = runner.check

    async def counting(probe: Probe) -> tuple[bool, Any]:
        nonlocal peak
        peak = max(peak, 2 - runner._slots._value)
        return await check(probe)

    runner.check = counting  # type: ignore[method-assign]
    assert await runner.run_due() == 5
    assert peak <= 2


# -- three nodes ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_probe_flips_an_entity_on_three_nodes(service: Service) -> None:
    clock = FakeClock()
    async with node_factory(clock) as start:
        await flip_on_three_nodes(start, clock, service)


async def flip_on_three_nodes(start: StartNode, clock: FakeClock, service: Service) -> None:
    a = await start("a")
    b = await start("b", peers=[a.url])
    c = await start("c", peers=[a.url])
    nodes = [a, b, c]
    a.declare(
        "svc",
        kind="service",
        attrs={},
        requires=None,
        probe={"http": service.url, "every": 1, "by": "*"},
    )
    a.declare("api", kind="api", attrs={}, requires=observed("svc", within=3, quorum=2))
    await settle(nodes)
    # Each node's runner, as an embedder would run it, on the nodes' clock.
    runners = [ProbeRunner(node.replica, clock=clock) for node in nodes]

    async def probe_round() -> None:
        clock.advance(1)
        for runner in runners:
            assert await runner.run_due() == 1
        await settle(nodes)

    try:
        assert [node.replica.status("api").value for node in nodes] == ["absent"] * 3
        await probe_round()
        assert [node.replica.status("api").value for node in nodes] == ["exists"] * 3
        assert {o.observer for o in a.replica.observations("svc")} == {"a", "b", "c"}
        service.status = 503
        await probe_round()
        assert [node.replica.status("api").value for node in nodes] == ["absent"] * 3
        service.status = 200
        await probe_round()
        assert [node.replica.status("api").value for node in nodes] == ["exists"] * 3
        assert service.hits == 9
    finally:
        for runner in runners:
            await runner.close()


@pytest.mark.asyncio
async def test_node_runs_probes_only_with_run_probes(service: Service) -> None:
    clock = FakeClock()
    async with node_factory(clock) as start:
        passive = await start("a")
        assert passive.probes is None
        active = await start("b", run_probes=True)
        assert active.probes is not None and active.probes.allow_exec is False
        active.declare(
            "svc", kind=None, attrs={}, requires=None, probe={"http": service.url, "every": 1}
        )
        seen = asyncio.Event()
        active.replica.subscribe_records(lambda change: seen.set() if change.id == "svc" else None)
        async with asyncio.timeout(10):
            await seen.wait()
        assert last(active.replica, "svc").ok is True


# -- HTTP and CLI --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_put_carries_a_probe_and_refuses_a_bad_one() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from sphaera_crdt.net.openapi import openapi_document
    from sphaera_crdt.net.server import create_app
    from sphaera_crdt.node import Node

    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600), clock=FakeClock())
    probe = {"tcp": "127.0.0.1:5432", "every": 5}
    async with TestClient(TestServer(create_app(node))) as client:
        response = await client.put("/v1/entities/db", json={"probe": probe})
        assert response.status == 201
        assert (await response.json())["probe"] == probe
        assert (await (await client.get("/v1/entities/db")).json())["probe"] == probe
        plain = await (await client.put("/v1/entities/plain", json={})).json()
        assert "probe" not in plain
        response = await client.put("/v1/entities/db", json={"probe": {"tcp": "nowhere"}})
        assert response.status == 422
        error = await response.json()
        assert error["error"]["code"] == "invalid_value"
        assert "HOST:PORT" in error["error"]["message"]
    schemas = openapi_document()["components"]["schemas"]
    assert "probe" in schemas["Declaration"]["properties"]
    assert set(schemas["Probe"]["properties"]) >= {"http", "tcp", "exec", "every", "by"}


def test_serve_flags_reach_the_node_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sphaera_crdt.cli import cli, serving

    configs: list[NodeConfig] = []

    async def record(config: NodeConfig) -> None:
        configs.append(config)

    monkeypatch.setattr(serving, "_serve", record)
    args = ["serve", "--id", "a", "--memory", "--run-probes", "--allow-exec"]
    args += ["--probe-allow", "10.0.0.0/8", "--probe-allow", "db.internal"]
    result = CliRunner().invoke(cli, args, prog_name="sphaera")
    assert result.exit_code == 0, result.output
    (config,) = configs
    assert config.run_probes and config.allow_exec
    assert config.probe_hosts == ("10.0.0.0/8", "db.internal")
    refused = CliRunner().invoke(cli, ["serve", "--id", "a", "--memory", "--allow-exec"])
    assert refused.exit_code == 2 and "--allow-exec needs --run-probes" in refused.stderr


def test_cli_put_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import orjson
    from click.testing import CliRunner

    from sphaera_crdt.cli import cli
    from sphaera_crdt.node import Node

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with Node(NodeConfig(replica_id="n", port=0)) as node:
            box["url"] = node.url
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        monkeypatch.delenv("SPHAERA_TOKEN", raising=False)
        env = {"SPHAERA_URL": box["url"]}
        probe = '{"http": "http://127.0.0.1:8080/health", "every": 2, "by": "*"}'
        result = CliRunner().invoke(cli, ["put", "svc", "--probe", probe], env=env)
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.stdout)["probe"] == orjson.loads(probe)
        bad = CliRunner().invoke(cli, ["put", "svc", "--probe", '{"exec": "ls"}'], env=env)
        assert bad.exit_code != 0
        [line] = bad.stderr.strip().splitlines()
        assert "argv" in line
        bad = CliRunner().invoke(cli, ["put", "svc", "--probe", "[1]"], env=env)
        assert bad.exit_code == 2 and "must be a JSON object" in bad.stderr
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


@pytest.mark.asyncio
async def test_runner_follows_record_changes(service: Service) -> None:
    clock = FakeClock()
    replica = Replica("a", clock=clock)
    runner = ProbeRunner(replica, clock=clock)
    try:
        assert await runner.run_due() == 0
        replica.declare("svc", probe={"http": service.url, "every": 1})
        assert await runner.run_due() == 1
        replica.retract("svc")
        clock.advance(1)
        assert await runner.run_due() == 0
        replica.declare("svc", probe={"http": service.url, "every": 1, "by": ["b"]})
        clock.advance(1)
        assert await runner.run_due() == 0  # another replica's to run
        replica.declare("svc", probe={"http": service.url, "every": 1, "by": ["a"]})
        assert await runner.run_due() == 1
        replica.declare("svc")
        clock.advance(1)
        assert await runner.run_due() == 0
        assert service.hits == 2
    finally:
        await runner.close()
