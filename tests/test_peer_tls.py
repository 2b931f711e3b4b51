"""Who a node sends its token to, and TLS between peers on a certificate authority of the
cluster's own (made here with trustme), with and without mutual TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import trustme
from nodes import FakeClock, converged, node_factory, settle
from procs import Processes

from sphaera_crdt.errors import InputError
from sphaera_crdt.net.client import ApiClient, PeerUnavailable
from sphaera_crdt.net.peers import PeerAllowlist, parse_allowed
from sphaera_crdt.node import ConfigError, NodeConfig

# -- who gets the token --------------------------------------------------------------------


def allowlist(*allow: str, peers: tuple[str, ...] = (), tls_ca: str | None = None) -> PeerAllowlist:
    config = NodeConfig(replica_id="a", peers=peers, allow_peers=allow, tls_ca=tls_ca)
    return PeerAllowlist.from_config(config)


def test_the_allowlist() -> None:
    seeded = allowlist(peers=("http://Seed.Example:8470",))
    assert seeded.allows("http://seed.example:9999")  # the seed's host, any port
    for url in ("http://127.0.0.1:1", "http://127.9.9.9:1", "http://[::1]:1", "http://localhost:1"):
        assert seeded.allows(url)
    for url in (
        "http://seed.example.evil.test:1",  # hosts are compared whole
        "http://10.0.0.7:1",
        "https://other.example:1",  # verified under the system's trust: not a member
        "ftp://127.0.0.1:1",
        "http://:1",
        "not a url",
    ):
        assert not seeded.allows(url), url
    listed = allowlist("10.0.0.0/8", "node.example", "[2001:db8::1]")
    assert listed.allows("http://10.200.0.1:1") and listed.allows("https://node.example:1")
    assert listed.allows("http://[2001:db8::1]:1")
    assert not listed.allows("http://11.0.0.1:1") and not listed.allows("http://[2001:db8::2]:1")
    # Under a private CA, an https peer is a member whatever its host: its certificate says.
    private = allowlist(tls_ca="/ca.pem")
    assert private.allows("https://203.0.113.5:1") and not private.allows("http://203.0.113.5:1")


@pytest.mark.parametrize("entry", ["", "http://x", "10.0.0.0/33", "a b", "x/y"])
def test_a_malformed_allow_peer_is_refused(entry: str) -> None:
    with pytest.raises(InputError):
        parse_allowed(entry)
    with pytest.raises(ConfigError, match="allow-peer"):
        NodeConfig(replica_id="a", allow_peers=(entry,))


def test_mutual_tls_needs_a_ca_and_a_certificate() -> None:
    with pytest.raises(ConfigError, match="tls-require-client-cert"):
        NodeConfig(replica_id="a", tls_cert="c", tls_key="k", tls_require_client_cert=True)
    with pytest.raises(ConfigError, match="tls-require-client-cert"):
        NodeConfig(replica_id="a", tls_ca="ca", tls_require_client_cert=True)


# -- https on the cluster's own CA ---------------------------------------------------------


class Authority:
    """A private CA and the files of the certificates it issues for 127.0.0.1."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.ca = trustme.CA()
        self.directory = directory
        self.name = name
        self.file = str(directory / f"{name}.pem")
        self.ca.cert_pem.write_to_path(self.file)

    def issue(self, holder: str) -> tuple[str, str]:
        """(certificate chain file, key file) for ``holder`` at 127.0.0.1."""
        cert = self.ca.issue_cert("127.0.0.1", common_name=holder)
        chain = self.directory / f"{self.name}-{holder}.pem"
        key = self.directory / f"{self.name}-{holder}.key"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        return str(chain), str(key)

    def node_settings(self, holder: str, *, mutual: bool) -> dict[str, object]:
        cert, key = self.issue(holder)
        return {
            "tls_cert": cert,
            "tls_key": key,
            "tls_ca": self.file,
            "tls_require_client_cert": mutual,
        }

    def client_context(
        self, holder: str | None = None, issuer: Authority | None = None
    ) -> ssl.SSLContext:
        """A client that trusts this CA, presenting a certificate for ``holder`` (if
        given) that ``issuer`` (default: this CA) issued."""
        context = ssl.create_default_context(cafile=self.file)
        if holder is not None:
            context.load_cert_chain(*(issuer or self).issue(holder))
        return context


async def status_of(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz", ssl=context) as response:
            await response.read()
            return response.status


@pytest.mark.asyncio
@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
async def test_a_three_node_https_cluster_on_its_own_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutual: bool
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # --tls-ca alone is enough
    authority = Authority(tmp_path)
    async with node_factory(FakeClock()) as start:
        a = await start("a", token="t0ken", **authority.node_settings("a", mutual=mutual))
        b = await start(
            "b", token="t0ken", peers=[a.url], **authority.node_settings("b", mutual=mutual)
        )
        c = await start(
            "c", token="t0ken", peers=[b.url], **authority.node_settings("c", mutual=mutual)
        )
        assert all(node.url.startswith("https://") for node in (a, b, c))
        a.replica.declare("db", attrs={"port": 5432})
        c.replica.declare("api", requires={"exists": "db"})
        await settle([a, b, c])
        assert converged([a, b, c]) and c.replica.exists("api")
        assert c.live_peers() == {"a": a.url, "b": b.url}
        # A client that trusts the CA and presents a certificate of it is served ...
        assert await status_of(a.url, authority.client_context("someone")) == 200
        if not mutual:
            assert await status_of(a.url, authority.client_context()) == 200
            return
        # ... and under mutual TLS, one without a certificate is refused in the handshake,
        # as is one whose certificate another CA issued,
        stranger = Authority(tmp_path, "other")
        for context in (authority.client_context(), authority.client_context("x", stranger)):
            with pytest.raises(aiohttp.ClientError):
                await status_of(a.url, context)
        # and so is a node that verifies the cluster's certificates but has none of its own.
        d = await start("d", token="t0ken", peers=[a.url], tls_ca=authority.file)
        (exchange,) = await d.gossip.round()
        assert not exchange.ok
        assert d.replica.entity("db") is None and a.replica.entity("replica:d") is None


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sphaera_serve_processes_on_their_own_ca_with_mutual_tls(tmp_path: Path) -> None:
    """The flags end to end: three ``sphaera serve`` processes, no ``SSL_CERT_FILE``."""
    authority = Authority(tmp_path)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    client = authority.client_context("cli")
    procs = Processes()  # its processes get no SPHAERA_* and we set no SSL_CERT_FILE
    try:

        def serve(name: str, peers: list[str]) -> str:
            cert, key = authority.issue(name)
            args = [
                *("--tls-cert", cert, "--tls-key", key, "--tls-ca", authority.file),
                *("--tls-require-client-cert", "--token-file", str(token)),
                *("--gossip-interval", "0.1", "--liveness", "2"),
            ]
            return procs.start(name, peers=peers, args=args).url

        first = serve("a", [])
        urls = [first, serve("b", [first]), serve("c", [first])]
        assert all(url.startswith("https://") for url in urls)
        async with ApiClient(urls[2], token="t0ken", ssl=client) as api:
            await api.put("db", kind="postgres")

        async def view(url: str) -> tuple[str | None, dict[str, str]]:
            """(status of db, status of every replica) on the node at ``url``."""
            async with ApiClient(url, token="t0ken", ssl=client) as api:
                replicas = (await api.replicas())["replicas"]
                db = (await api.entities()).get("db")
            statuses = {peer: str(about["status"]) for peer, about in replicas.items()}
            return (None if db is None else str(db["status"])), statuses

        wanted = ("exists", {"a": "exists", "b": "exists", "c": "exists"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (views := [await view(url) for url in urls]) != [wanted] * 3:
            assert loop.time() < deadline, f"not converged: {views}"
            await asyncio.sleep(0.1)
        with pytest.raises(PeerUnavailable):
            async with ApiClient(first, token="t0ken", ssl=authority.client_context()) as api:
                await api.entities()
        # The client commands: with a certificate of the CA, and without one.
        cert, key = authority.issue("cli")
        tls = ["--url", first, "--token-file", str(token), "--tls-ca", authority.file]
        served = sphaera("get", "db", *tls, "--tls-cert", cert, "--tls-key", key)
        assert served.returncode == 0 and '"status": "exists"' in served.stdout
        refused = sphaera("get", "db", *tls)
        assert refused.returncode != 0 and refused.stdout == ""
        assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        procs.close()


def sphaera(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sphaera_crdt", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
