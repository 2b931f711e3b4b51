"""Type-preserving values.

Raw Yrs turns every int into a float and cannot hold ints of 2^63 or more. Values are
therefore stored as JSON *text*: JSON keeps ``5`` and ``5.0`` apart, and orjson reads
them back as ``int`` and ``float``. orjson stops at 64-bit integers, so a value holding a
larger int is written with the standard library instead and flagged, so that readers use
the matching decoder.

Only the JSON data model is accepted, with exact types: ``None``, ``bool``, ``int``,
finite ``float``, ``str``, ``list`` and ``dict`` with ``str`` keys. Tuples, sets, bytes,
enums, subclasses and NaN are refused, because they would not come back as they went in.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import orjson

from ..errors import InvalidValue

__all__ = [
    "MAX_DEPTH",
    "JsonValue",
    "check_value",
    "dumps",
    "dumps_checked",
    "loads",
]

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]

#: Deepest nesting accepted; orjson itself refuses to read deeper than 1024.
MAX_DEPTH: Final = 256

_SCALARS: Final = frozenset({type(None), bool, int, str})


def check_value(value: object, where: str = "value") -> None:
    """Raise :class:`InvalidValue` unless *value* round-trips with its exact type."""
    _check(value, where, 0)


def _check(value: Any, where: str, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue(f"{where}: {value!r} is not a finite number")
        return
    if depth >= MAX_DEPTH:
        raise InvalidValue(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]", depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise InvalidValue(f"{where}: dict key {key!r} is not a str")
            _check(item, f"{where}.{key}", depth + 1)
        return
    hint = " (use a list)" if kind is tuple else ""
    raise InvalidValue(f"{where}: {kind.__name__} values cannot be stored{hint}")


def dumps(value: object, where: str = "value") -> tuple[bool, str]:
    """Check and encode a value; returns ``(needs_stdlib, text)``.

    ``needs_stdlib`` is true when the value holds an int outside orjson's 64-bit range;
    such text must be read with :func:`loads` and ``stdlib=True``.

    Raises:
        InvalidValue: The value would not round-trip with its exact type.
    """
    check_value(value, where)
    return dumps_checked(value, where)


def dumps_checked(value: object, where: str = "value") -> tuple[bool, str]:
    """:func:`dumps` for a value already passed to :func:`check_value`."""
    try:
        return False, orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise InvalidValue(f"{where}: {exc}") from exc
    try:
        return True, json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except ValueError as exc:  # ints over sys.get_int_max_str_digits()
        raise InvalidValue(f"{where}: {exc}") from exc


def loads(text: str, *, stdlib: bool = False) -> Any:
    """Decode text written by :func:`dumps`; raises ``ValueError`` on malformed text."""
    if stdlib:
        return json.loads(text, parse_constant=_refuse_constant)
    return orjson.loads(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")
