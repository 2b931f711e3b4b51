"""The one exception hierarchy of sphaera_crdt: every exception class of the package.

Errors carry blame. :class:`InputError` means the caller handed us something wrong
(a value we cannot store, a malformed identifier or constraint, a configuration that
cannot work); it is also a :class:`ValueError`, so generic code that validates input
keeps working. :class:`RemoteError` means bytes that came from another replica are
unusable; nothing a peer sends can raise anything else. :class:`StoreError` is the disk,
:class:`PeerUnavailable` the network and :class:`ApiError` a node's refusal of an HTTP
request, the same object on both sides of the wire. Foreign exceptions (pycrdt, orjson,
aiohttp, sqlite3, the operating system) are translated at the boundary with
``raise ... from exc``.

The command line keeps two click exceptions of its own (``cli.app.Fail`` and
``BadConfig``): they are how click prints one line and exits with a status, the CLI's
translation of these errors, not errors of the library.

This module imports nothing, so that every layer (the sans-IO core included) can use it.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BeyondLimits",
    "ConfigError",
    "ConvergenceError",
    "DemoTimeout",
    "InputError",
    "InvalidConstraint",
    "InvalidIdentifier",
    "InvalidMessage",
    "InvalidProbe",
    "InvalidTrust",
    "InvalidUpdate",
    "InvalidValue",
    "PeerNotAllowed",
    "PeerUnavailable",
    "PoolUnavailable",
    "RemoteError",
    "SelfContact",
    "SphaeraError",
    "StoreError",
    "UnknownEntity",
    "UnsureCompile",
    "UnverifiedUpdate",
]


class SphaeraError(Exception):
    """Base class of every error raised by sphaera_crdt."""


# -- the caller's mistakes -----------------------------------------------------------------


class InputError(SphaeraError, ValueError):
    """The caller passed something this library cannot accept; nothing was changed."""


class InvalidValue(InputError):
    """A value cannot be stored with its exact type (sets, bytes, NaN, objects, ...)."""


class InvalidProbe(InvalidValue):
    """A probe that is not ``{"http": URL}``, ``{"tcp": "HOST:PORT"}`` or ``{"exec": ARGV}``
    with valid ``every``, ``timeout``, ``expect`` and ``by``."""


class InvalidIdentifier(InputError):
    """An entity id, replica id or attribute key is empty, too long or has control characters."""


class InvalidConstraint(InputError):
    """A constraint does not have the shape of the constraint language."""


class UnknownEntity(InputError, LookupError):
    """The entity is not declared on this replica."""


class ConfigError(InputError):
    """A node cannot start with this configuration."""


class InvalidTrust(ConfigError):
    """A trust list, public key or key file that cannot be read, or a signing key that is
    not the one the trust list gives for its replica."""


# -- a peer's bytes ------------------------------------------------------------------------


class RemoteError(SphaeraError):
    """Bytes received from another replica are unusable; nothing was changed."""


class InvalidUpdate(RemoteError, ValueError):
    """An update or state vector could not be decoded or applied; the replica is unchanged."""


class UnverifiedUpdate(InvalidUpdate):
    """In signed mode: an update carries entries that do not verify under the trust list
    (a writer not listed, a bad or missing signature, an entry in another writer's
    container); nothing was applied."""


class InvalidMessage(RemoteError, ValueError):
    """A sync body is not well-formed y-protocols SYNC messages; nothing was applied."""


class BeyondLimits(SphaeraError, ValueError):
    """Well-formed JSON text holds a value beyond the limits of values (see
    :func:`~sphaera_crdt.core.codec.loads`); the reader treats the entry as unreadable."""


# -- the disk and the network --------------------------------------------------------------


class StoreError(SphaeraError):
    """The store cannot be opened or used: corrupt, foreign, of another schema, or I/O."""


class PeerUnavailable(SphaeraError):
    """A peer or node could not be reached, timed out, or refused the request.

    Attributes:
        url: Where the request went.
        status: The HTTP status of a refusal, ``None`` for network errors and timeouts.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class PeerNotAllowed(PeerUnavailable):
    """A peer URL that this node does not contact: its host is not an allowed peer."""


class SelfContact(SphaeraError):
    """A gossip target URL turned out to be this node's own (a seed list that names it)."""


class ApiError(SphaeraError):
    """An HTTP request refused by a node, with a status and a stable error code.

    The server raises it to answer ``{"error": {"code", "message"}}`` with ``status``
    (and ``headers``); the client raises it when a node answered so.

    Args:
        status: The HTTP status.
        code: The machine-readable ``error.code`` (``"not_found"``, ``"invalid_constraint"``,
            ...).
        message: What went wrong, for people.
        headers: Extra response headers (``WWW-Authenticate``, ``Allow``, ``Retry-After``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# -- tools ---------------------------------------------------------------------------------


class DemoTimeout(SphaeraError):
    """The demo's nodes did not reach the expected state in time."""


class PoolUnavailable(SphaeraError):
    """A sweep's runs cannot go where they were sent: the ``ray`` package is missing, the
    Ray cluster cannot be reached, or a worker process died without an answer."""


class ConvergenceError(SphaeraError, AssertionError):
    """Replicas of a test cluster that should agree do not; the message says how they
    differ (an :class:`AssertionError`, so that test runners report it as a failure)."""


# -- internal signals ----------------------------------------------------------------------


class UnsureCompile(SphaeraError):
    """The constraint compiler's fast path met something it does not vouch for, and hands
    the constraint to the full checker. Never escapes :mod:`~sphaera_crdt.core.compiler`."""
