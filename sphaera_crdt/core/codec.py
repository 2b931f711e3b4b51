"""Type-preserving values.

Raw Yrs turns every int into a float and cannot hold ints of 2^63 or more. Values are
therefore stored as JSON *text*: JSON keeps ``5`` and ``5.0`` apart, and the standard
library reads them back as ``int`` (of any size) and ``float``.

Only the JSON data model is accepted, with exact types: ``None``, ``bool``, ``int``,
finite ``float``, ``str``, ``list`` and ``dict`` with ``str`` keys. Tuples, sets, bytes,
enums, subclasses and NaN are refused, because they would not come back as they went in.

Values nest at most :data:`MAX_DEPTH` lists and dicts deep. The limit is one that every
encoder on a value's way out can write with room to spare: orjson refuses documents
nested deeper than 254 levels, and a value is shown inside answers (an entity inside
``{"entities": {...}}``) and inside explanation trees, which add their own levels.
:func:`loads` holds text from other replicas to the same limits as :func:`dumps` holds
values written here: too deep, a non-finite number, an int of more digits than Python
converts or a lone surrogate is refused, never read as something else.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import math
import re
import sys
from typing import Any, Final

from ..errors import BeyondLimits, InvalidValue

__all__ = [
    "MAX_DEPTH",
    "BeyondLimits",
    "JsonValue",
    "check_text",
    "check_value",
    "copy",
    "dumps",
    "dumps_checked",
    "float_text",
    "int_text",
    "json_text",
    "loads",
]

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]

#: Deepest nesting of lists and dicts accepted in a value (see the module's docstring).
MAX_DEPTH: Final = 128

_SCALARS: Final = frozenset({type(None), bool, int, str})
_ENCODE: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


_ENCODE_STR: Final = json.encoder.encode_basestring


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 reads as inf
        raise BeyondLimits(f"{text[:40]} is not a finite number")
    return number


#: The JSON escape of a UTF-16 surrogate (lone ones cannot be written as UTF-8).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_DECODE: Final = _DECODER.decode
#: The decoder's scanner, called directly: ``decode`` adds two whitespace matches and
#: a Python frame per value, which cost as much as scanning a short value.
_SCAN: Final = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # typeshed: a scanner
#: JSON number text, as the decoder's scanner reads it (ASCII digits only).
_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
#: An int of at most this many characters converts without meeting Python's digit limit.
_SHORT_INT: Final = 18


def _decode(text: str) -> Any:
    """``_DECODE(text)``, quicker for numbers and for text without surrounding whitespace.

    Every value the fast paths return is the one ``_DECODE`` returns; anything else
    (whitespace around the value, trailing data, malformed text) goes to ``_DECODE``,
    which reads it or raises as it always did.
    """
    if text[:1] in "-0123456789":
        number = _NUMBER.fullmatch(text)
        if number is not None:
            if number.lastindex is not None:
                return _finite_float(text)
            if len(text) <= _SHORT_INT:
                return int(text)
    else:
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return _DECODE(text)


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


def dumps(value: object, where: str = "value") -> str:
    """Check and encode a value as compact JSON text.

    Raises:
        InvalidValue: The value would not round-trip with its exact type.
    """
    check_value(value, where)
    return dumps_checked(value, where)


def dumps_checked(value: object, where: str = "value") -> str:
    """:func:`dumps` for a value already passed to :func:`check_value`."""
    try:
        text: str = _ENCODE(value)
        # Yrs stores UTF-8: a lone surrogate would make it panic half-way through a write.
        text.encode()
    except (ValueError, UnicodeError) as exc:  # huge ints, lone surrogates
        raise InvalidValue(f"{where}: {exc}") from exc
    return text


def json_text(value: object, where: str = "value") -> str:
    """:func:`dumps`, quicker for scalars."""
    kind = type(value)
    if kind is str:
        assert isinstance(value, str)
        if not value.isascii():
            check_text(value, where)
        return _ENCODE_STR(value)
    if kind is int:
        assert isinstance(value, int)
        return int_text(value, where)
    if kind is float:
        assert isinstance(value, float)
        return float_text(value, where)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return dumps(value, where)


def check_text(text: str, where: str = "value") -> None:
    """Raise :class:`InvalidValue` unless *text* encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode()
    except UnicodeError as exc:
        raise InvalidValue(f"{where}: {exc}") from exc


def int_text(value: int, where: str = "value") -> str:
    """:func:`dumps` of an ``int``."""
    try:
        return int.__repr__(value)
    except ValueError as exc:  # more digits than Python converts
        raise InvalidValue(f"{where}: {exc}") from exc


def float_text(value: float, where: str = "value") -> str:
    """:func:`dumps` of a ``float``."""
    if not math.isfinite(value):
        raise InvalidValue(f"{where}: {value!r} is not a finite number")
    return float.__repr__(value)


def loads(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode text written by :func:`dumps`.

    Raises:
        BeyondLimits: The text holds a non-finite number, an int of more digits than
            Python converts or a string with a lone surrogate, or nests deeper than
            ``max_depth`` lists and dicts.
        ValueError: The text is malformed.
        RecursionError: The text nests far deeper than ``max_depth``.
    """
    try:
        value = _decode(text)
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            digits = sys.get_int_max_str_digits()
            raise BeyondLimits(f"an int of more than {digits} digits") from exc
        raise
    # Text with few brackets cannot nest deep: only then is the value walked.
    if type(value) in (list, dict) and text.count("[") + text.count("{") > max_depth:
        _check_depth(value, max_depth)
    # An escaped lone surrogate decodes to a str that no encoder writes as UTF-8.
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None:
        try:
            _ENCODE(value).encode()
        except UnicodeError as exc:
            raise BeyondLimits("a string with a lone surrogate") from exc
    return value


def _check_depth(value: list[Any] | dict[str, Any], max_depth: int) -> None:
    """Raise :class:`BeyondLimits` if ``value`` nests deeper than ``max_depth``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise BeyondLimits(f"nested deeper than {max_depth} levels")
        children = item.values() if type(item) is dict else item
        stack.extend((child, depth + 1) for child in children if type(child) in (list, dict))


def copy(value: Any) -> Any:
    """A deep copy of a value that :func:`check_value` accepted (scalars are returned)."""
    if type(value) in (list, dict):
        return _DECODE(dumps_checked(value))
    return value
