"""How a node runs: :class:`NodeConfig`, one field per ``sphaera serve`` flag, checked
when it is made.

A value shared by the node and its network adapters (the server reads its limits and
token, the peer client its TLS and deadline), so it lives apart from both: the node
imports the adapters, and nobody imports the node.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from dataclasses import dataclass
from typing import Final

from .core.formulas import DEFAULT_MAX_SKEW
from .core.probes import DEFAULT_ALLOW, ProbeTargets
from .errors import ConfigError, InputError
from .net.api_calls import DEFAULT_PORT

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PORT",
    "Network",
    "NodeConfig",
    "is_loopback",
    "parse_allowed",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")

DEFAULT_MAX_BODY: Final = 8 * 1024 * 1024
#: Seconds of silence after which a replica is forgotten (a day).
DEFAULT_FORGET_AFTER: Final = 24 * 3600.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """How a node runs; every field has the meaning of the ``sphaera serve`` flag."""

    replica_id: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    peers: tuple[str, ...] = ()
    token: str | None = None
    gossip_interval: float = 1.0
    fanout: int = 2
    max_body: int = DEFAULT_MAX_BODY
    #: Bytes of updates held for missing predecessors at most (default: 4x ``max_body``).
    max_held_bytes: int | None = None
    #: Seconds a client may take to send one request.
    read_timeout: float = 10.0
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The CA that peers' certificates must verify under (default: the system's trust).
    tls_ca: str | None = None
    #: Callers must present a client certificate under ``tls_ca``.
    tls_require_client_cert: bool = False
    #: Hosts and CIDR networks of peers that may be sent the token, besides the seeds'
    #: hosts and loopback (see :mod:`.net.peers`).
    allow_peers: tuple[str, ...] = ()
    #: The URL peers use to reach this node (default: derived from host and port).
    public_url: str | None = None
    #: Seconds without a fresh observation after which a replica is no longer alive
    #: (default: 10 gossip intervals).
    liveness: float | None = None
    #: Metrics need the token too when true.
    metrics_auth: bool = False
    #: Where the SQLite store lives; ``None`` keeps nothing (``--memory``).
    data_dir: str | None = None
    #: ``"full"``: an acknowledged write survives power loss; ``"normal"``: a crash.
    durability: str = "full"
    #: Compact the update log once it holds this many updates or bytes.
    compact_count: int = 10_000
    compact_bytes: int = 16 * 1024 * 1024
    #: Seconds clocks may differ: observations dated further ahead do not count, and a
    #: node this far from a majority of its live peers refuses to observe.
    max_clock_skew: float = DEFAULT_MAX_SKEW
    #: Seconds of silence after which a replica is forgotten by every replica (``None``:
    #: never; see :mod:`.core.forgetting`).
    forget_after: float | None = DEFAULT_FORGET_AFTER
    #: Seconds one peer exchange may take (default: three gossip intervals within 1-5 s).
    client_timeout: float | None = None
    #: How HTTPS peers are verified instead of ``--tls-ca`` or the system's trust (tests
    #: give a context that trusts their own certificate).
    client_ssl: ssl.SSLContext | None = None
    #: Run the probes of replicated records (``--run-probes``).
    run_probes: bool = False
    #: Run ``exec`` probes too (``--allow-exec``; needs ``run_probes``).
    allow_exec: bool = False
    #: Hosts or CIDRs http and tcp probes may contact (``--probe-allow``; loopback if empty).
    probe_allow: tuple[str, ...] = ()
    #: The trust file of signed mode (``--trust``; ``None``: signed mode is off).
    trust_file: str | None = None
    #: The replica's signing key file (``--key``; default with ``data_dir``:
    #: ``DIR/replica.key``, made on first start).
    key_file: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.gossip_interval) or self.gossip_interval <= 0:
            raise ConfigError(f"gossip interval must be positive, not {self.gossip_interval}")
        if self.fanout < 1:
            raise ConfigError(f"fanout must be at least 1, not {self.fanout}")
        if self.max_body < 1024:
            raise ConfigError(f"max body must be at least 1024 bytes, not {self.max_body}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {self.port}")
        if self.read_timeout <= 0:
            raise ConfigError("read timeout must be positive")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ConfigError("the token must be non-empty and contain no whitespace")
        if not is_loopback(self.host) and self.token is None and not self.insecure:
            raise ConfigError(
                f"refusing to serve {self.host} without a token; give --token-file "
                "(or SPHAERA_TOKEN), or --insecure to accept the risk"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_require_client_cert and (self.tls_cert is None or self.tls_ca is None):
            raise ConfigError("--tls-require-client-cert needs --tls-cert, --tls-key and --tls-ca")
        for entry in self.allow_peers:
            try:
                parse_allowed(entry)
            except InputError as exc:
                raise ConfigError(str(exc)) from None
        if self.liveness is not None and self.liveness <= 0:
            raise ConfigError("liveness must be positive")
        if self.durability not in ("full", "normal"):
            raise ConfigError(f"durability must be full or normal, not {self.durability!r}")
        if self.compact_count < 1 or self.compact_bytes < 1:
            raise ConfigError("compaction thresholds must be positive")
        if not 0 < self.max_clock_skew < math.inf:
            raise ConfigError(
                f"max clock skew must be a positive number of seconds, not {self.max_clock_skew}"
            )
        if self.forget_after is not None and not 0 < self.forget_after < math.inf:
            raise ConfigError(f"forget after must be positive seconds, not {self.forget_after}")
        if self.max_held_bytes is not None and self.max_held_bytes < 0:
            raise ConfigError(f"max held bytes must not be negative, not {self.max_held_bytes}")
        if self.client_timeout is not None and not 0 < self.client_timeout < math.inf:
            raise ConfigError(f"client timeout must be positive, not {self.client_timeout}")
        try:
            ProbeTargets(self.probe_hosts)
        except InputError as exc:
            raise ConfigError(str(exc)) from None
        if self.allow_exec and not self.run_probes:
            raise ConfigError("--allow-exec needs --run-probes")
        if self.client_ssl is not None and not isinstance(self.client_ssl, ssl.SSLContext):
            raise TypeError(f"client_ssl must be an ssl.SSLContext, not {self.client_ssl!r}")

    @property
    def held_bytes_limit(self) -> int:
        """Bytes of updates held for missing predecessors at most."""
        return 4 * self.max_body if self.max_held_bytes is None else self.max_held_bytes

    @property
    def liveness_window(self) -> float:
        """Seconds without a fresh observation after which a replica is no longer alive."""
        return self.liveness if self.liveness is not None else 10 * self.gossip_interval

    @property
    def probe_hosts(self) -> tuple[str, ...]:
        """Hosts or networks probes may contact (loopback unless ``probe_allow`` names any)."""
        return self.probe_allow or DEFAULT_ALLOW

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.tls_cert else "http"


def parse_allowed(entry: str) -> str | Network:
    """One ``--allow-peer`` entry: a host name, an IP address or a network in CIDR form.

    Raises:
        InputError: Neither (empty, a URL, a malformed network).
    """
    text = entry.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):  # an IPv6 address as URLs write it
        text = text[1:-1]
    if "/" in text or _is_address(text):
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise InputError(f"--allow-peer {entry!r} is not a host or a network: {exc}") from None
    if _HOST_NAME.fullmatch(text) is None:
        raise InputError(f"--allow-peer takes a host name or a CIDR network, not {entry!r}")
    return text


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
