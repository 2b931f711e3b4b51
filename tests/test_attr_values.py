"""``attr`` comparisons follow JSON's data model, as the README documents them: ``true`` is
not ``1`` at any depth, ``1`` equals ``1.0``, strings order by code point, ``contains`` on
an object tests its keys, ``present`` holds for null, a missing attribute satisfies no
operator (``ne`` included), and a path's dots always separate keys."""

from __future__ import annotations

from typing import Any

import pytest

from sphaera_crdt import Replica, Status, attr


def holds(actual: Any, op: str, expected: Any = None, path: str = "v") -> bool:
    replica = Replica("r", clock=lambda: 1000.0)
    replica.declare("db", attrs={"v": actual, "a.b": 1})
    replica.declare("api", requires=attr("db", path, op, expected))
    status = replica.status("api")
    assert replica.derive_all().get("api", Status.ABSENT) is status
    assert status is not Status.UNDETERMINED
    return status is Status.EXISTS


@pytest.mark.parametrize(
    ("actual", "op", "expected", "result"),
    [
        # true is not 1, at any depth
        (True, "eq", 1, False),
        (1, "eq", True, False),
        ([True], "eq", [1], False),
        ([1], "eq", [True], False),
        ([[False]], "eq", [[0]], False),
        ({"k": True}, "eq", {"k": 1}, False),
        ({"k": [0]}, "eq", {"k": [False]}, False),
        ({"k": True}, "in", [{"k": 1}], False),
        ([True], "in", [[1]], False),
        ([{"k": 1}], "contains", {"k": True}, False),
        ([[1]], "contains", [True], False),
        ([True], "ne", [1], True),
        # equal JSON values are equal, whatever their nesting
        ([True, {"k": [None, "x"]}], "eq", [True, {"k": [None, "x"]}], True),
        ({"k": True}, "in", [{"k": True}], True),
        ([{"k": 1}], "contains", {"k": 1}, True),
        # ints and floats compare as numbers, also inside lists and objects
        (1, "eq", 1.0, True),
        ([1], "eq", [1.0], True),
        ({"k": 2}, "eq", {"k": 2.0}, True),
        (2**53 + 1, "eq", float(2**53), False),
        # a list is not an object, null is not false nor 0
        ([], "eq", {}, False),
        (None, "eq", False, False),
        (None, "eq", 0, False),
        ({"a": 1, "b": 2}, "eq", {"b": 2, "a": 1}, True),
        # ordering: numbers with numbers, strings with strings (by code point), else false
        (2, "lt", 2.5, True),
        ("a", "lt", "b", True),
        ("Z", "lt", "a", True),
        ("10", "lt", "9", True),
        ("1", "lt", 2, False),
        (True, "lt", 2, False),
        ([1], "lt", [2], False),
        # contains: substring, list member, object key
        ("postgres", "contains", "gres", True),
        (["a", "b"], "contains", "b", True),
        ({"k": 1}, "contains", "k", True),
        ({"k": 1}, "contains", 1, False),
        # present holds for null
        (None, "present", None, True),
    ],
)
def test_attr_comparisons(actual: Any, op: str, expected: Any, result: bool) -> None:
    assert holds(actual, op, expected) is result


def test_a_missing_attribute_satisfies_no_operator() -> None:
    for op, expected in [("ne", 1), ("eq", None), ("present", None), ("in", [None])]:
        assert holds(1, op, expected, path="missing") is False
        assert holds({"k": 1}, op, expected, path="v.missing") is False


def test_dots_in_a_path_separate_keys() -> None:
    assert holds({"b": 2}, "eq", 2, path="v.b") is True
    # The attribute named "a.b" cannot be reached: "a.b" reads key "b" of attribute "a".
    assert holds(1, "present", path="a.b") is False
