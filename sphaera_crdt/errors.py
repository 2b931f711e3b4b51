"""The one exception hierarchy of sphaera_crdt.

Errors carry blame. :class:`InputError` means the caller handed us something wrong
(a value we cannot store, a malformed identifier or constraint); it is also a
:class:`ValueError`, so generic code that validates input keeps working. :class:`RemoteError`
means bytes that came from another replica are unusable; nothing a peer sends can raise
anything else. Foreign exceptions (pycrdt, orjson, the operating system) are translated
at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "InvalidConstraint",
    "InvalidIdentifier",
    "InvalidUpdate",
    "InvalidValue",
    "RemoteError",
    "SphaeraError",
    "UnknownEntity",
]


class SphaeraError(Exception):
    """Base class of every error raised by sphaera_crdt."""


class InputError(SphaeraError, ValueError):
    """The caller passed something this library cannot accept; nothing was changed."""


class InvalidValue(InputError):
    """A value cannot be stored with its exact type (sets, bytes, NaN, objects, ...)."""


class InvalidIdentifier(InputError):
    """An entity id, replica id or attribute key is empty, too long or has control characters."""


class InvalidConstraint(InputError):
    """A constraint does not have the shape of the constraint language."""


class UnknownEntity(InputError, LookupError):
    """The entity is not declared on this replica."""


class RemoteError(SphaeraError):
    """Bytes received from another replica are unusable; nothing was changed."""


class InvalidUpdate(RemoteError, ValueError):
    """An update or state vector could not be decoded or applied; the replica is unchanged."""
