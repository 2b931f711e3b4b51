"""``why()`` never recurses without bound, and its trees nest within what orjson writes.

However deep it is asked to go and however long the chain, a tree nests at most
``MAX_NESTING`` levels, says where it was cut, and summarises the rest of the chain.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sphaera_crdt import Replica, Status, attr, exists, not_
from sphaera_crdt.core.codec import MAX_DEPTH
from sphaera_crdt.core.explain import MAX_NESTING


def nesting(value: Any) -> int:
    """Levels of lists and dicts in ``value`` (iteratively: trees may be deep)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) in (list, dict):
            deepest = max(deepest, depth)
            children = item.values() if type(item) is dict else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def chain(length: int) -> Replica:
    """``e0`` needs ``e1`` ... needs ``e<length>``, which is not declared."""
    replica = Replica("r", clock=lambda: 1000.0)
    for index in reversed(range(length)):  # dependencies first: quicker to build
        replica.declare(f"e{index}", requires=exists(f"e{index + 1}"))
    return replica


def test_a_long_chain_explained_a_million_levels_deep() -> None:
    replica = chain(5000)
    assert replica.status("e0") is Status.ABSENT
    tree = replica.why("e0", depth=10**6)
    assert nesting(tree) <= MAX_NESTING + 2
    orjson.dumps(tree)
    # Follow the tree down to where it was cut: the chain summary names the cause.
    node = tree
    while "because" in node:
        node = node["because"]["dependency"]
    assert node["truncated"].startswith("the tree is cut at")
    assert node["chain"]["ends_at"] == "e5000"
    assert node["chain"]["reason"] == "undeclared"


def test_deep_rules_and_deep_values_stay_within_the_encoder() -> None:
    replica = Replica("r", clock=lambda: 1000.0)
    value: Any = 0
    for _ in range(MAX_DEPTH - 62):  # a requires nests at most MAX_DEPTH levels in all
        value = [value]
    replica.declare("db", attrs={"v": value})
    # Each rule nests 60 nots around an attr clause holding a deep value.
    for index in range(40):
        clause: Any = attr("db", "v", "eq", value) if index == 39 else exists(f"r{index + 1}")
        for _ in range(30):
            clause = not_(not_(clause))
        replica.declare(f"r{index}", requires=clause)
    for depth in (0, 3, 32, 10**6):
        tree = replica.why("r0", depth=depth)
        assert nesting(tree) <= MAX_NESTING + 1 + MAX_DEPTH
        orjson.dumps(tree)
    assert replica.status("r0") is Status.EXISTS


@pytest.mark.parametrize("depth", [-1, 0, 1, 10**18])
def test_any_depth_is_answered(depth: int) -> None:
    replica = chain(300)
    tree = replica.why("e0", depth=depth)
    orjson.dumps(tree)


def test_the_limits_leave_room_for_answers_around_them() -> None:
    # orjson writes 254 levels; answers wrap a tree or a value in a few objects.
    assert MAX_NESTING + 1 + MAX_DEPTH + 8 < 254
