"""Values keep their exact type: in the codec, and across replicas."""

from __future__ import annotations

import decimal
import enum
import math
from collections.abc import Callable
from typing import Any

import pytest
from support import snapshot, typed

from sphaera_crdt import InputError, InvalidValue, Replica, SphaeraError
from sphaera_crdt.core import codec

INTS = [
    0,
    1,
    -1,
    5,
    2**31,
    2**53 - 1,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**64 + 1,
    -(2**63),
    -(2**63) - 1,
    -(2**64) - 1,
    3**100,
    -(7**90),
    10**4299,  # the longest int the standard library will write by default
]
FLOATS = [0.0, -0.0, 5.0, 1.5, -2.25, 2.0**53, 2.0**64, 1e308, -1e308, 5e-324, 0.1, 1 / 3]
SCALARS = [None, True, False, "", "text", "é東京🙂", "line\nbreak\x00\x1f\u2028", '"{[\\']
NESTED = [
    [],
    {},
    [1, 1.0, True, None, "1"],
    {"int": 1, "float": 1.0, "bool": True, "none": None},
    {"big": [2**64, {"deeper": [-(2**70), 0.5, [[]]]}], "": {"": ""}},
    {"k\x00": 1, "é": [2**100, 2**63]},
    [[[[[[[[[[1]]]]]]]]]],
]
VALUES = INTS + FLOATS + SCALARS + NESTED


def test_typed_distinguishes_what_equality_does_not() -> None:
    # The comparison helper itself must tell these apart, or the round-trip tests prove nothing.
    assert typed(1) != typed(1.0)
    assert typed(1) != typed(True)
    assert typed(0.0) != typed(-0.0)
    assert typed([1]) != typed([1.0])
    assert typed({"a": 0}) != typed({"a": False})
    assert typed({"a": [2**64]}) == typed({"a": [2**64]})


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_codec_round_trips_with_exact_types(value: Any) -> None:
    assert typed(codec.loads(codec.dumps(value))) == typed(value)


def test_text_keeps_int_and_float_apart() -> None:
    assert codec.dumps(5) == "5"
    assert codec.dumps(5.0) == "5.0"
    assert type(codec.loads("5")) is int
    assert type(codec.loads("5.0")) is float


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Name(enum.StrEnum):
    A = "a"


class MyInt(int):
    pass


class MyStr(str):
    pass


class MyDict(dict[str, Any]):
    pass


REFUSED: list[tuple[Any, str]] = [
    ({1, 2}, "set"),
    (frozenset(), "frozenset"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    ((1, 2), "tuple"),
    (math.nan, "not a finite number"),
    (math.inf, "not a finite number"),
    (-math.inf, "not a finite number"),
    (object(), "object"),
    (Color.RED, "Color"),
    (Level.LOW, "Level"),
    (Name.A, "Name"),
    (MyInt(3), "MyInt"),
    (MyStr("s"), "MyStr"),
    (MyDict(a=1), "MyDict"),
    (decimal.Decimal("1.5"), "Decimal"),
    (1j, "complex"),
    ({1: "a"}, "is not a str"),
    ({("a",): 1}, "is not a str"),
    ({"ok": [1, {"inner": {2}}]}, "set"),
    ([1, 2, math.nan], "not a finite number"),
    (10**4300, "4300"),
    ("lone \ud800 surrogate", "surrogates"),
    ({"\udfff": 1}, "surrogates"),
]


REFUSED_IDS = [f"{type(value).__name__}-{index}" for index, (value, _) in enumerate(REFUSED)]


@pytest.mark.parametrize(("value", "message"), REFUSED, ids=REFUSED_IDS)
def test_codec_refuses_what_would_not_come_back(value: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        codec.dumps(value)


def test_refusal_names_the_offending_path() -> None:
    with pytest.raises(InvalidValue, match=r"attrs\.cfg\.list\[2\]"):
        codec.dumps({"list": [1, 2, {3}]}, "attrs.cfg")


def test_nesting_depth_is_bounded() -> None:
    shallow: Any = 0
    for _ in range(100):
        shallow = [shallow]
    assert codec.loads(codec.dumps(shallow)) == shallow
    deep: Any = 0
    for _ in range(codec.MAX_DEPTH + 10):
        deep = {"k": deep}
    with pytest.raises(InvalidValue):
        codec.dumps(deep)


def test_invalid_value_is_an_input_error_and_a_value_error() -> None:
    assert issubclass(InvalidValue, InputError)
    assert issubclass(InvalidValue, SphaeraError)
    assert issubclass(InvalidValue, ValueError)


def test_loads_refuses_non_finite_constants() -> None:
    for text in ("[NaN]", "Infinity", "-Infinity"):
        with pytest.raises(ValueError):
            codec.loads(text)


# -- across replicas -----------------------------------------------------------------------


def _pair() -> tuple[Replica, Replica]:
    return Replica("a", clock=lambda: 100.0), Replica("b", clock=lambda: 100.0)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_through_every_write_path(value: Any) -> None:
    a, b = _pair()
    a.declare("declared", attrs={"v": value})
    a.declare("updated")
    a.update("updated", {"v": value})
    a.observe("observed", ok=True, value=value)
    b.merge(a.delta(b.state_vector()))
    for replica in (a, b):
        declared, updated = replica.entity("declared"), replica.entity("updated")
        assert declared is not None and updated is not None
        assert typed(declared.attrs["v"]) == typed(value)
        assert typed(updated.attrs["v"]) == typed(value)
        [observation] = replica.observations("observed")
        assert typed(observation.value) == typed(value)


def test_values_round_trip_through_a_third_replica_and_a_full_state() -> None:
    a, b = _pair()
    c = Replica("c", clock=lambda: 100.0)
    value = {"ints": [5, 2**53 + 1, 2**64, -(2**65)], "f": [5.0, -0.0], "n": None, "b": False}
    a.declare("x", attrs={"v": value})
    b.merge(a.delta())
    c.merge(b.delta(c.state_vector()))
    view = c.entity("x")
    assert view is not None
    assert typed(view.attrs["v"]) == typed(value)


def test_returned_values_are_copies() -> None:
    a, _ = _pair()
    a.declare("x", attrs={"cfg": {"list": [1, 2]}})
    a.observe("x", value={"seen": [1]})
    first = a.entity("x")
    assert first is not None
    first.attrs["cfg"]["list"].append(3)
    first.attrs["new"] = 1
    a.observations("x")[0].value["seen"].append(2)
    again = a.entity("x")
    assert again is not None
    assert again.attrs == {"cfg": {"list": [1, 2]}}
    assert a.observations("x")[0].value == {"seen": [1]}


def test_caller_mutating_a_written_value_afterwards_changes_nothing() -> None:
    a, b = _pair()
    value = {"list": [1, 2]}
    a.declare("x", attrs={"cfg": value})
    value["list"].append(3)
    b.merge(a.delta())
    for replica in (a, b):
        view = replica.entity("x")
        assert view is not None and view.attrs == {"cfg": {"list": [1, 2]}}


WRITES: dict[str, Callable[[Replica, Any], object]] = {
    "declare": lambda r, v: r.declare("x", attrs={"port": 1, "v": v}),
    "declare-new": lambda r, v: r.declare("new", attrs={"v": v}),
    "update": lambda r, v: r.update("x", {"port": 2, "v": v}),
    "observe": lambda r, v: r.observe("x", ok=True, value=v),
}


@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize(("value", "message"), REFUSED, ids=REFUSED_IDS)
def test_refused_values_raise_at_the_call_and_change_nothing(
    write: str, value: Any, message: str
) -> None:
    a, _ = _pair()
    a.declare("x", attrs={"port": 1})
    a.observe("x", ok=True, value="before")
    before = snapshot(a)
    with pytest.raises(InvalidValue, match=message):
        WRITES[write](a, value)
    assert snapshot(a) == before
    # The replica still works afterwards, and the refused write never shows up elsewhere.
    a.update("x", {"port": 3})
    _, b = _pair()
    b.merge(a.delta())
    view = b.entity("x")
    assert view is not None and view.attrs == {"port": 3}
    assert b.entity("new") is None


@pytest.mark.parametrize(
    "kwargs",
    [{"ok": 1}, {"ok": None}, {"ttl": -1}, {"ttl": math.nan}, {"ttl": math.inf}, {"ttl": "5"}],
    ids=repr,
)
def test_observe_refuses_bad_ok_and_ttl_and_changes_nothing(kwargs: dict[str, Any]) -> None:
    a, _ = _pair()
    before = snapshot(a)
    with pytest.raises(InvalidValue):
        a.observe("x", **kwargs)
    assert snapshot(a) == before


@pytest.mark.parametrize("kind", [5, b"pg", ["pg"]], ids=repr)
def test_declare_refuses_a_non_str_kind_and_changes_nothing(kind: Any) -> None:
    a, _ = _pair()
    before = snapshot(a)
    with pytest.raises(InvalidValue, match="kind"):
        a.declare("x", kind=kind)
    assert snapshot(a) == before


@pytest.mark.parametrize("attrs", [[("a", 1)], "a", 5], ids=repr)
def test_attrs_must_be_a_mapping(attrs: Any) -> None:
    a, _ = _pair()
    a.declare("x")
    before = snapshot(a)
    with pytest.raises(InvalidValue, match="mapping"):
        a.update("x", attrs)
    with pytest.raises(InvalidValue, match="mapping"):
        a.declare("x", attrs=attrs)
    assert snapshot(a) == before


def test_replicas_refuse_values_nested_past_the_limit_and_change_nothing() -> None:
    from sphaera_crdt import Replica, attr, not_

    def nested(depth: int) -> Any:
        value: Any = 0
        for _ in range(depth):
            value = [value]
        return value

    replica = Replica("r", clock=lambda: 1000.0)
    replica.declare("db", attrs={"v": nested(codec.MAX_DEPTH)})
    before = replica.delta()
    too_deep = nested(codec.MAX_DEPTH + 1)
    clause = attr("db", "v", "eq", nested(codec.MAX_DEPTH - 1))  # fits on its own
    with pytest.raises(InvalidValue, match="nested deeper than 128"):
        replica.declare("x", attrs={"v": too_deep})
    with pytest.raises(InvalidValue):
        replica.update("db", {"w": too_deep})
    with pytest.raises(InvalidValue):
        replica.observe("db", value=too_deep)
    with pytest.raises(InvalidValue):  # the requires as a whole nests too deep
        replica.declare("x", requires=not_(clause))
    assert replica.delta() == before
