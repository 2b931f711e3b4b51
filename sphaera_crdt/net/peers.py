"""Which peer URLs a node contacts (and so sends its bearer token to), and the TLS it
speaks to them.

Theory of operation
-------------------
Peers are found in the merged state: any replica with the token can write a
``replica:<id>`` record naming any URL, and every node would then send its token there.
So a URL is contacted only if it passes :meth:`PeerAllowlist.allows`:

* its host is the host of a ``--peer`` seed, a loopback address (or ``localhost``), or a
  host or network given with ``--allow-peer`` (hosts are compared as written in the URL,
  without resolving them; a network matches URLs whose host is an IP address in it); or
* it is ``https`` and the node has ``--tls-ca``: the peer's certificate must then verify
  under the cluster's own certificate authority, which proves it a member whatever its
  address.

A URL that is not allowed is not contacted at all (no request, no token): failing closed
costs a misconfigured cluster its gossip with that peer, which the node logs, while the
alternative, contacting it without the token, would still tell a stranger who we are.

Every ``https`` peer is verified: under ``--tls-ca`` only when it is given, else under the
system's trust store. With ``--tls-ca`` and ``--tls-cert`` the node also presents its
certificate as a client certificate, which peers that run with
``--tls-require-client-cert`` demand (presenting it to peers that do not ask costs
nothing, and lets a cluster turn mutual TLS on one node at a time).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from ..config import Network, NodeConfig, parse_allowed
from ..errors import InputError

__all__ = ["PeerAllowlist", "client_ssl_context", "parse_allowed", "server_ssl_context"]

_LOOPBACK_NAMES: Final = frozenset({"localhost"})


def _host_of(url: str) -> str | None:
    """The lower-cased host of ``url`` (no brackets around IPv6), ``None`` if it has none."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAllowlist:
    """The peer URLs a node may contact (see the module's docstring).

    Attributes:
        hosts: Host names and addresses allowed as written (seeds' hosts, ``--allow-peer``).
        networks: Networks whose addresses are allowed (``--allow-peer`` CIDRs, and single
            addresses given there).
        private_ca: Whether ``https`` URLs are verified under the node's own CA
            (``--tls-ca``), which allows them whatever their host.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()
    private_ca: bool = False

    @classmethod
    def from_config(cls, config: NodeConfig) -> PeerAllowlist:
        """The allowlist of a node: its seeds' hosts, ``--allow-peer`` and ``--tls-ca``.

        Raises:
            InputError: An ``--allow-peer`` entry is malformed.
        """
        hosts = {host for url in config.peers if (host := _host_of(url)) is not None}
        networks: list[Network] = []
        for entry in config.allow_peers:
            allowed = parse_allowed(entry)
            if isinstance(allowed, str):
                hosts.add(allowed)
            else:
                networks.append(allowed)
        return cls(
            hosts=frozenset(hosts), networks=tuple(networks), private_ca=config.tls_ca is not None
        )

    def allows(self, url: str) -> bool:
        """Whether a peer at ``url`` may be contacted (and sent the token)."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            return False
        host = _host_of(url)
        if host is None or scheme not in ("http", "https"):
            return False
        if scheme == "https" and self.private_ca:
            return True
        if host in self.hosts or host in _LOOPBACK_NAMES:
            return True
        address = _address(host)
        if address is None:
            return False
        return address.is_loopback or any(address in network for network in self.networks)


def client_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """How a node verifies ``https`` peers: under ``--tls-ca`` alone when given (and then
    presenting ``--tls-cert`` as its client certificate); ``None``: the system's trust
    store.

    Raises:
        InputError: The CA, certificate or key cannot be loaded.
    """
    if config.tls_ca is None:
        return None
    try:
        context = ssl.create_default_context(cafile=config.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load the CA of --tls-ca {config.tls_ca}: {exc}") from exc
    if config.tls_cert is not None:
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"cannot load TLS certificate or key: {exc}") from exc
    return context


def server_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    """How a node serves ``https`` (``None``: plain http); with
    ``--tls-require-client-cert``, callers must present a certificate under ``--tls-ca``.

    Raises:
        InputError: The certificate, key or CA cannot be loaded.
    """
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load TLS certificate or key: {exc}") from exc
    if config.tls_require_client_cert:
        try:
            context.load_verify_locations(cafile=config.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(f"cannot load the CA of --tls-ca {config.tls_ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context
