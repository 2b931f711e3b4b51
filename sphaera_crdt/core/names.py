"""Validation of the names that key the replicated state.

Entity ids, replica ids and attribute keys become parts of keys inside the CRDT document
and appear in URLs, logs and explanations, so they are short, non-empty and free of control
characters (which also keeps the unit separator free for the document layout).
"""

from __future__ import annotations

import re
from typing import Final

from ..errors import InvalidIdentifier

__all__ = [
    "MAX_ATTR_LEN",
    "MAX_ID_LEN",
    "MAX_REPLICA_ID_LEN",
    "check_attr_key",
    "check_entity_id",
    "check_replica_id",
    "rules",
]

MAX_ID_LEN: Final = 256
MAX_ATTR_LEN: Final = 128
#: Leaves room for the ``replica:`` prefix of the entity every replica declares for itself.
MAX_REPLICA_ID_LEN: Final = 128

# C0 and C1 control characters and DEL.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


#: Names already found valid, by limit: most calls repeat a few thousand names.
_VALID: Final[dict[int, set[str]]] = {}
_VALID_MAX: Final = 100_000


def _check(kind: str, name: object, limit: int) -> str:
    valid = _VALID.get(limit)
    if type(name) is str and valid is not None and name in valid:
        return name
    _check_new(kind, name, limit)
    if valid is None:
        valid = _VALID[limit] = set()
    elif len(valid) >= _VALID_MAX:
        valid.clear()
    assert type(name) is str
    valid.add(name)
    return name


def _check_new(kind: str, name: object, limit: int) -> None:
    if type(name) is not str:
        raise InvalidIdentifier(f"{kind} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidIdentifier(f"{kind} must not be empty")
    if len(name) > limit:
        raise InvalidIdentifier(f"{kind} {name[:32]!r}... is longer than {limit} characters")
    bad = _CONTROL.search(name)
    if bad is not None:
        raise InvalidIdentifier(
            f"{kind} {name!r} contains control character {bad.group()!r} at {bad.start()}"
        )
    try:
        name.encode()
    except UnicodeEncodeError as exc:
        raise InvalidIdentifier(f"{kind} {name!r} is not valid Unicode text") from exc


def rules(kind: str) -> str:
    """The rules of a kind of name in words, for messages that teach them: ``kind`` is
    ``"entity id"``, ``"replica id"`` or ``"attribute key"``."""
    limit = {"replica id": MAX_REPLICA_ID_LEN, "attribute key": MAX_ATTR_LEN}.get(kind, MAX_ID_LEN)
    article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
    return f"{article} {kind} is 1 to {limit} characters of text, none a control character"


def check_entity_id(name: object) -> str:
    """Return *name* if it is a valid entity id, else raise :class:`InvalidIdentifier`."""
    return _check("entity id", name, MAX_ID_LEN)


def check_replica_id(name: object) -> str:
    """Return *name* if it is a valid replica id, else raise :class:`InvalidIdentifier`."""
    return _check("replica id", name, MAX_REPLICA_ID_LEN)


def check_attr_key(name: object) -> str:
    """Return *name* if it is a valid attribute key, else raise :class:`InvalidIdentifier`."""
    return _check("attribute key", name, MAX_ATTR_LEN)
