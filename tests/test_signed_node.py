"""A node in signed mode: its key (made on first start, kept, checked against the trust
file), the trust file re-read when it changes, only listed replicas as peers, and the HTTP
face of it (403 ``unverified_update``, ``signed`` and ``trust_digest``, ``trusted``)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nodes import INTERVAL, LIVENESS, FakeClock, node_factory, quiesce, settle
from pycrdt import Doc, create_sync_message, create_update_message

from sphaera_crdt import Replica
from sphaera_crdt.cli import cli
from sphaera_crdt.core.gossip import Answer, GossipMachine, Observe, Target
from sphaera_crdt.core.trust import Trust, public_key_text
from sphaera_crdt.core.views import Status
from sphaera_crdt.errors import ConfigError, InvalidTrust, UnverifiedUpdate
from sphaera_crdt.keys import KEY_FILE, generate_key, load_key, load_trust, save_key
from sphaera_crdt.net.openapi import ERROR_CODES, openapi_document
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

Client = TestClient[web.Request, web.Application]
TOKEN = "s3cret-t0ken"


def line(replica_id: str, key: Ed25519PrivateKey) -> str:
    return f"{replica_id} {public_key_text(key)}\n"


@pytest.fixture
def cluster_keys(tmp_path: Path) -> dict[str, Path]:
    """Key files of replicas a and b (mode 0600), and trust.txt listing both."""
    files: dict[str, Path] = {}
    text = ""
    for name in ("a", "b"):
        key = generate_key()
        save_key(key, tmp_path / f"{name}.key")
        files[name] = tmp_path / f"{name}.key"
        text += line(name, key)
    (tmp_path / "trust.txt").write_text(text)
    files["trust"] = tmp_path / "trust.txt"
    return files


def signed_config(name: str, files: dict[str, Path], **config: Any) -> NodeConfig:
    options: dict[str, Any] = {
        "replica_id": name,
        "port": 0,
        "gossip_interval": INTERVAL,
        "liveness": LIVENESS,
        "trust_file": str(files["trust"]),
        "key_file": str(files[name]),
        **config,
    }
    return NodeConfig(**options)


# -- the key -------------------------------------------------------------------------------


def test_a_node_with_data_makes_its_key_once_and_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "a"
    # The operator prints the line before the first start (sphaera key makes the key)...
    printed = CliRunner().invoke(cli, ["key", "--data", str(data), "--id", "a"])
    assert printed.exit_code == 0, printed.output
    (tmp_path / "trust.txt").write_text(printed.stdout)
    config = NodeConfig(replica_id="a", data_dir=str(data), trust_file=str(tmp_path / "trust.txt"))
    first = Node(config)
    try:
        assert first.replica.trust == Trust.parse(printed.stdout)
        assert first.trust_digest == Trust.parse(printed.stdout).digest
    finally:
        asyncio.run(first.close())
    key_file = data / KEY_FILE
    made = key_file.read_bytes()
    again = Node(config)  # restored from the store, same key
    try:
        assert again.signing_key is not None
        assert public_key_text(again.signing_key) == printed.stdout.split()[1]
    finally:
        asyncio.run(again.close())
    assert key_file.read_bytes() == made
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_node_makes_its_key_on_first_start(tmp_path: Path) -> None:
    data = tmp_path / "a"
    key = generate_key()
    # a list that names another key: the node makes its own, then refuses to start
    (tmp_path / "trust.txt").write_text(line("a", key))
    config = NodeConfig(replica_id="a", data_dir=str(data), trust_file=str(tmp_path / "trust.txt"))
    with pytest.raises(InvalidTrust) as refused:
        Node(config)
    made = load_key(data / KEY_FILE)
    assert str(refused.value) == (
        f"the key of replica 'a' in {data / KEY_FILE} is {public_key_text(made)}, but trust "
        f"file {tmp_path / 'trust.txt'} gives {public_key_text(key)}"
    )
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
    assert not (data / "replica.sqlite3").exists()  # refused before the store was claimed
    # with the key's line in the list, the same directory starts
    (tmp_path / "trust.txt").write_text(line("a", made))
    node = Node(config)
    asyncio.run(node.close())


def test_a_node_without_its_line_names_the_line_to_add(cluster_keys: dict[str, Path]) -> None:
    stranger = cluster_keys["a"].with_name("c.key")
    save_key(generate_key(), stranger)
    with pytest.raises(InvalidTrust, match=r"replica 'c' is not in trust file .*add the line 'c"):
        Node(signed_config("c", {**cluster_keys, "c": stranger}))


def test_signed_mode_in_memory_needs_a_key(cluster_keys: dict[str, Path]) -> None:
    config = NodeConfig(replica_id="a", trust_file=str(cluster_keys["trust"]))
    with pytest.raises(ConfigError, match=r"signed mode in memory needs .*--key FILE"):
        Node(config)
    # a replica made by the program brings its own key; the file must give its list
    trust = load_trust(cluster_keys["trust"])
    given = Replica("a", signing_key=load_key(cluster_keys["a"]), trust=trust)
    assert Node(config, replica=given).trust_digest == trust.digest
    with pytest.raises(ConfigError, match="the replica's trust list differs from trust file"):
        Node(config, replica=Replica("a"))


def test_a_key_alone_signs_without_a_list(cluster_keys: dict[str, Path]) -> None:
    node = Node(NodeConfig(replica_id="a", key_file=str(cluster_keys["a"])))
    assert node.signing_key is not None
    assert node.replica.trust is None and node.trust_digest is None


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="sphaera", env={"SPHAERA_TOKEN": ""})


def one_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_serve_refuses_signed_mode_it_cannot_run(
    tmp_path: Path, cluster_keys: dict[str, Path]
) -> None:
    trust = str(cluster_keys["trust"])
    assert one_error(run("serve", "--id", "a", "--memory", "--trust", trust)) == (
        "sphaera: error: --trust with --memory needs --key FILE (the replica's signing key)"
    )
    # b's key under a's id: both keys are named, nothing is started
    line = one_error(
        run("serve", "--id", "a", "--memory", "--trust", trust, "--key", str(cluster_keys["b"]))
    )
    a_key = public_key_text(load_key(cluster_keys["a"]))
    b_key = public_key_text(load_key(cluster_keys["b"]))
    assert line == (
        f"sphaera: error: the key of replica 'a' in {cluster_keys['b']} is {b_key}, but trust "
        f"file {trust} gives {a_key}"
    )
    (tmp_path / "bad.txt").write_text("a not-a-key\n")
    line = one_error(
        run("serve", "--id", "a", "--memory", "--trust", str(tmp_path / "bad.txt"), "--key", "x")
    )
    assert line.startswith(f"sphaera: error: trust file {tmp_path / 'bad.txt'} line 1: ")
    line = one_error(run("serve", "--id", "a", "--data", str(tmp_path / "d"), "--trust", "none"))
    assert line.startswith("sphaera: error: cannot read trust file none: ")


# -- peers ---------------------------------------------------------------------------------


def test_only_listed_replicas_are_peers() -> None:
    a_key, b_key = generate_key(), generate_key()
    trust = Trust.parse(line("a", a_key) + line("b", b_key))
    replica = Replica("a", signing_key=a_key, trust=trust)
    replica.declare("replica:b", kind="replica", attrs={"url": "http://127.0.0.1:9001"})
    replica.declare("replica:ghost", kind="replica", attrs={"url": "http://127.0.0.1:9002"})
    machine = GossipMachine(replica, interval=1.0, fanout=8, rng=random.Random(1))
    assert machine.live_peers() == {"b": "http://127.0.0.1:9001"}
    assert [t.url for t in machine.round_due(0.0).targets] == ["http://127.0.0.1:9001"]
    assert machine.id_for("http://127.0.0.1:9002") is None
    # the same records without signed mode: the ghost is a peer (the filter is the cause)
    unsigned = Replica("a")
    unsigned.merge(replica.delta())
    open_machine = GossipMachine(unsigned, interval=1.0, fanout=8, rng=random.Random(1))
    assert set(open_machine.live_peers()) == {"b", "ghost"}


class Listener:
    """A loopback TCP port that records every request head it receives."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("signed", [True, False])
async def test_a_ghost_record_with_a_loopback_url_is_never_contacted(
    cluster_keys: dict[str, Path], signed: bool
) -> None:
    clock = FakeClock()
    signing: dict[str, Any] = {} if signed else {"trust_file": None, "key_file": None}
    async with Listener() as ghost:
        node = Node(signed_config("a", cluster_keys, token=TOKEN, fanout=8, **signing), clock=clock)
        async with node:
            # written by a itself, so signed and counted: only the trust list keeps it out
            node.replica.declare("replica:ghost", kind="replica", attrs={"url": ghost.url})
            assert node.replica.status("replica:ghost").value == "exists"
            assert node.gossip is not None
            listed = ghost.url in node.gossip.targets()
            await node.gossip.round()
            await node.gossip.push()
    if signed:
        assert not listed
        assert ghost.heads == []
    else:  # without signed mode the same record is contacted, token attached
        assert listed
        assert ghost.heads and f"Bearer {TOKEN}".encode() in ghost.heads[0]


# -- HTTP ----------------------------------------------------------------------------------


class Refusing(Replica):
    """A replica whose merges all fail verification (what signed mode does to a forgery)."""

    def merge(self, update: bytes, shape: Any = None) -> Any:
        raise UnverifiedUpdate("an entry of 'b' does not verify under the trust list")


@pytest_asyncio.fixture
async def refusing() -> AsyncIterator[tuple[Node, Client]]:
    node = Node(NodeConfig(replica_id="a", port=0, gossip_interval=INTERVAL), replica=Refusing("a"))
    async with TestClient(TestServer(create_app(node))) as client:
        yield node, client


@pytest.mark.asyncio
async def test_an_unverified_update_is_a_403_and_counted(
    refusing: tuple[Node, Client],
) -> None:
    node, client = refusing
    source = Replica("src")
    source.declare("db", kind="pg")
    update = source.delta()
    octets = {"Content-Type": "application/octet-stream"}
    before = node.replica.delta()
    response = await client.post("/v1/updates", data=update, headers=octets)
    assert response.status == 403
    assert await response.json() == {
        "error": {
            "code": "unverified_update",
            "message": "an entry of 'b' does not verify under the trust list",
        }
    }
    body = create_sync_message(Doc()) + create_update_message(update)
    response = await client.post("/v1/sync", data=body, headers=octets)
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "unverified_update"
    assert node.replica.delta() == before
    metrics = await (await client.get("/metrics")).text()
    assert 'sphaera_rejected_requests_total{reason="unverified_update"} 2.0' in metrics
    # a malformed update is still a 400
    response = await client.post("/v1/updates", data=b"\xff\xff", headers=octets)
    assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_update")


# -- trust reload --------------------------------------------------------------------------


def rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the file's time on: the check compares stamps, and two
    writes within one tick of the file system's clock would otherwise look alike."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.fixture
def signed_a(cluster_keys: dict[str, Path]) -> Node:
    """Node a (not started: the checks are called directly) holding b's signed writes."""
    node = Node(signed_config("a", cluster_keys))
    b = Replica(
        "b", signing_key=load_key(cluster_keys["b"]), trust=load_trust(cluster_keys["trust"])
    )
    b.declare("replica:b", kind="replica", attrs={"url": "http://127.0.0.1:9"})
    b.declare("db", kind="pg")
    node.replica.merge(b.delta())
    assert node.replica.status("db") is Status.EXISTS
    assert node.live_peers() == {"b": "http://127.0.0.1:9"}
    return node


def test_an_edited_trust_file_is_applied_and_logged(
    signed_a: Node, cluster_keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    node, path = signed_a, cluster_keys["trust"]
    before = node.trust_digest
    with caplog.at_level(logging.DEBUG, logger="sphaera_crdt.node"):
        assert not node.check_trust()  # nothing changed: not even read
    assert not caplog.records
    a_line = line("a", load_key(cluster_keys["a"]))
    node.replica.declare("mine", kind="k")  # a's own write, not sent anywhere yet
    rewrite(path, a_line)  # b removed
    with caplog.at_level(logging.INFO, logger="sphaera_crdt.node"):
        assert node.check_trust()
    assert node.replica.status("mine") is Status.EXISTS
    assert node.replica.status("replica:a") is Status.EXISTS
    after = Trust.parse(a_line)
    assert node.replica.trust == after and node.trust_digest == after.digest != before
    assert node.replica.status("db") is not Status.EXISTS  # b's writes stop counting
    assert node.live_peers() == {}  # and b is no longer a peer
    # db and replica:b stop existing
    assert [r.getMessage() for r in caplog.records] == [
        f"trust file {path} reloaded (digest {before} -> {after.digest}): removed b; "
        "2 status changes"
    ]
    assert caplog.records[0].levelno == logging.INFO
    assert not node.check_trust()  # read: no change until the next edit
    # b back under a new key: its entries, signed with the old one, still do not count
    rewrite(path, a_line + line("b", generate_key()))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sphaera_crdt.node"):
        assert node.check_trust()
    assert "added b;" in caplog.records[0].getMessage()
    assert node.replica.status("db") is not Status.EXISTS
    # the original list again: b counts again
    rewrite(path, a_line + line("b", load_key(cluster_keys["b"])))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sphaera_crdt.node"):
        assert node.check_trust()
    assert "changed key b;" in caplog.records[0].getMessage()
    # b's container was retired while b was not listed: what b writes from now on counts
    # again, and it is a peer again once it declares itself
    assert node.replica.status("db") is not Status.EXISTS
    assert node.live_peers() == {}
    b = Replica("b", signing_key=load_key(cluster_keys["b"]), trust=load_trust(path))
    b.declare("replica:b", kind="replica", attrs={"url": "http://127.0.0.1:9"})
    b.declare("db", kind="pg")
    b.merge(node.replica.delta())
    node.replica.merge(b.delta())
    assert node.replica.status("db") is Status.EXISTS
    assert node.live_peers() == {"b": "http://127.0.0.1:9"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("a not-a-key\n", "line 1: a public key starts with"),
        (None, "cannot read trust file"),
        ("own", "the key of replica 'a' in {a_key} is"),
        ("without", "replica 'a' is not in trust file"),
    ],
)
def test_a_trust_file_that_cannot_be_used_keeps_the_list_in_use(
    signed_a: Node,
    cluster_keys: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    content: str | None,
    problem: str,
) -> None:
    node, path = signed_a, cluster_keys["trust"]
    before = node.replica.trust
    b_line = line("b", load_key(cluster_keys["b"]))
    if content is None:
        path.unlink()
    elif content == "own":  # a's line under another key
        rewrite(path, line("a", generate_key()) + b_line)
    elif content == "without":  # a's line dropped
        rewrite(path, b_line)
    else:
        rewrite(path, content)
    with caplog.at_level(logging.INFO, logger="sphaera_crdt.node"):
        assert not node.check_trust()
        assert not node.check_trust()  # reported once, not at every look
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    message = caplog.records[0].getMessage()
    assert problem.format(a_key=cluster_keys["a"]) in message and "\n" not in message
    assert message.endswith(f"; keeping the trust list in use (digest {before.digest})")
    assert node.replica.trust == before
    assert node.replica.status("db") is Status.EXISTS


def test_sighup_reloads_even_an_unchanged_file(
    signed_a: Node, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sphaera_crdt.node"):
        assert not signed_a.reload_trust()
    assert [r.getMessage() for r in caplog.records] == [
        f"trust file {signed_a.trust_file.path} read again: no change"
    ]
    unsigned = Node(NodeConfig(replica_id="a"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sphaera_crdt.node"):
        assert not unsigned.reload_trust() and not unsigned.check_trust()
    assert [r.getMessage() for r in caplog.records] == [
        "not in signed mode: no trust file to reload"
    ]


def test_the_healthz_and_replicas_of_a_signed_node(signed_a: Node) -> None:
    async def answers() -> tuple[Any, Any]:
        async with TestClient(TestServer(create_app(signed_a))) as client:
            health = await (await client.get("/healthz")).json()
            replicas = await (await client.get("/v1/replicas")).json()
            return health, replicas

    signed_a.replica.declare("replica:ghost", kind="replica", attrs={"url": "http://x:1"})
    health, replicas = asyncio.run(answers())
    digest = signed_a.trust_digest
    assert digest is not None
    assert health == {"status": "ok", "replica": "a", "signed": True, "trust_digest": digest}
    assert (replicas["signed"], replicas["trust_digest"]) == (True, digest)
    assert {name: info["trusted"] for name, info in replicas["replicas"].items()} == {
        "a": True,
        "b": True,
        "ghost": False,
    }


@pytest.mark.parametrize("signed", [True, False])
def test_the_replicas_command_shows_who_is_trusted(signed: bool) -> None:
    answer = {
        "self": "a",
        "signed": signed,
        "trust_digest": "0123456789abcdef" if signed else None,
        "replicas": {
            name: {
                "url": f"http://127.0.0.1:{port}",
                "status": "exists",
                "clock_offset": 0.0,
                "last_seen_age": 0.0,
                "trusted": (name != "ghost") if signed else None,
            }
            for name, port in (("a", 1), ("ghost", 2))
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = orjson.dumps(answer)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = CliRunner().invoke(
            cli, ["replicas", "--url", url], env={"COLUMNS": "200", "SPHAERA_TOKEN": ""}
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    if signed:
        assert rows["replica"][-1] == "trusted"
        assert rows["a"][-1] == "yes" and rows["ghost"][-1] == "no"
    else:
        assert "trusted" not in result.stdout


@pytest.mark.asyncio
async def test_forged_updates_are_refused_with_403_and_change_nothing(
    cluster_keys: dict[str, Path],
) -> None:
    node = Node(signed_config("a", cluster_keys, token=TOKEN))
    trust = load_trust(cluster_keys["trust"])
    genuine = Replica("b", signing_key=load_key(cluster_keys["b"]), trust=trust)
    genuine.declare("db", kind="pg")
    forger = Replica("b", signing_key=generate_key())  # b's id, another key
    forger.declare("db", kind="forged")
    stranger = Replica("c")  # no key at all, as a bare client writes
    stranger.declare("api", kind="forged")
    octets = {"Content-Type": "application/octet-stream", "Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(create_app(node))) as client:
        for update in (forger.delta(), stranger.delta()):
            before = (node.replica.state_vector(), node.replica.entities())
            response = await client.post("/v1/updates", data=update, headers=octets)
            assert response.status == 403, await response.text()
            assert (await response.json())["error"]["code"] == "unverified_update"
            body = create_sync_message(Doc()) + create_update_message(update)
            response = await client.post("/v1/sync", data=body, headers=octets)
            assert response.status == 403, await response.text()
            assert (node.replica.state_vector(), node.replica.entities()) == before
        response = await client.post("/v1/updates", data=genuine.delta(), headers=octets)
        assert response.status == 204, await response.text()
        view = node.replica.entity("db")
        assert view is not None and view.kind == "pg"
        metrics = await (await client.get("/metrics")).text()
    assert 'sphaera_rejected_requests_total{reason="unverified_update"} 4.0' in metrics


@pytest.mark.asyncio
async def test_a_writer_removed_from_the_file_stops_counting_on_every_node(
    tmp_path: Path,
) -> None:
    names = ("a", "b", "c")
    keys = {name: tmp_path / f"{name}.key" for name in names}
    for path in keys.values():
        save_key(generate_key(), path)
    lines = {name: line(name, load_key(keys[name])) for name in names}
    trust = tmp_path / "trust.txt"
    trust.write_text("".join(lines.values()))
    clock = FakeClock()
    async with node_factory(clock) as start:
        a = await start("a", trust_file=str(trust), key_file=str(keys["a"]))
        b = await start("b", peers=[a.url], trust_file=str(trust), key_file=str(keys["b"]))
        c = await start("c", peers=[a.url], trust_file=str(trust), key_file=str(keys["c"]))
        nodes = [a, b, c]
        b.replica.declare("db", kind="pg")
        await settle(nodes)
        assert all(node.replica.status("db") is Status.EXISTS for node in nodes)
        assert b.url in a.gossip.targets() and b.url in c.gossip.targets()

        rewrite(trust, lines["a"] + lines["c"])  # b removed, everywhere
        assert [node.check_trust() for node in nodes] == [True, False, True]  # b keeps its own
        for node in (a, c):
            assert node.replica.status("db") is not Status.EXISTS
            assert b.url not in node.gossip.targets()
            assert "b" not in node.live_peers()
        # b's gossip changes nothing on the others: what it pushes is refused at the door
        b.replica.declare("db", kind="pg", attrs={"again": True})
        await b.gossip.round()
        await quiesce(nodes)
        for node in (a, c):
            assert node.replica.status("db") is not Status.EXISTS


@pytest.mark.parametrize("signed", [True, False])
def test_an_answer_in_the_name_of_an_unlisted_replica_is_no_sign_of_life(signed: bool) -> None:
    a_key, b_key = generate_key(), generate_key()
    trust = Trust.parse(line("a", a_key) + line("b", b_key)) if signed else None
    a = Replica("a", signing_key=a_key, trust=trust)
    b = Replica("b", signing_key=b_key, trust=trust)
    # a itself declares a ghost at b's URL (signed by a: only the list keeps it out)
    a.declare("replica:ghost", kind="replica", attrs={"url": "http://b"})
    caller = GossipMachine(a, interval=1.0, fanout=2, rng=random.Random(1), liveness=10.0)
    answerer = GossipMachine(b, interval=1.0, fanout=2, rng=random.Random(2), liveness=10.0)
    exchange = caller.round_exchange(Target(url="http://b", peer_id="ghost"))
    request = exchange.start()
    assert request is not None
    body = answerer.request_received(request.body, "a").response
    outcome = caller.answered(exchange, "http://b", Answer(body=body, replica_id="ghost"), 5.0)
    if signed:
        assert outcome.observe is None
    else:
        assert outcome.observe == Observe(replica_id="ghost", ttl=10.0)


def test_the_openapi_document_describes_signed_mode() -> None:
    document = openapi_document()
    for path in ("/v1/sync", "/v1/updates"):
        refused = document["paths"][path]["post"]["responses"]["403"]
        assert "`unverified_update`" in refused["description"]
    assert "unverified_update" in ERROR_CODES
    schemas = document["components"]["schemas"]
    for name in ("Health", "Replicas", "ClockSkew"):
        assert {"signed", "trust_digest"} <= set(schemas[name]["required"]), name
    replica = schemas["Replicas"]["properties"]["replicas"]["additionalProperties"]
    assert "trusted" in replica["required"]
    assert replica["properties"]["trusted"]["type"] == ["boolean", "null"]
