"""Entity ids, replica ids and attribute keys are validated with a clear error."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sphaera_crdt import InputError, InvalidIdentifier, Replica, SphaeraError
from sphaera_crdt.core import names

CHECKS: dict[str, tuple[Callable[[object], str], int]] = {
    "entity id": (names.check_entity_id, names.MAX_ID_LEN),
    "replica id": (names.check_replica_id, names.MAX_REPLICA_ID_LEN),
    "attribute key": (names.check_attr_key, names.MAX_ATTR_LEN),
}

CONTROL = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("name", ["db", "replica:a", "café-東京", "a b", "x" * 10, "🙂"])
def test_ordinary_names_are_returned_unchanged(kind: str, name: str) -> None:
    check, _ = CHECKS[kind]
    assert check(name) == name


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_limit_is_inclusive(kind: str) -> None:
    check, limit = CHECKS[kind]
    assert check("x" * limit) == "x" * limit
    with pytest.raises(InvalidIdentifier, match=f"{kind}.*longer than {limit}"):
        check("x" * (limit + 1))


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_empty_name_is_refused(kind: str) -> None:
    check, _ = CHECKS[kind]
    with pytest.raises(InvalidIdentifier, match=f"{kind} must not be empty"):
        check("")


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("char", CONTROL)
def test_control_characters_are_refused(kind: str, char: str) -> None:
    check, _ = CHECKS[kind]
    with pytest.raises(InvalidIdentifier, match="control character") as info:
        check(f"ab{char}cd")
    assert "at 2" in str(info.value)  # says where


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("name", [None, 5, b"db", ["db"], 1.5])
def test_non_str_names_are_refused(kind: str, name: object) -> None:
    check, _ = CHECKS[kind]
    with pytest.raises(InvalidIdentifier, match=f"{kind} must be a str, not {type(name).__name__}"):
        check(name)


def test_str_subclass_is_refused() -> None:
    class Name(str):
        pass

    with pytest.raises(InvalidIdentifier):
        names.check_entity_id(Name("db"))


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_lone_surrogate_is_refused(kind: str) -> None:
    check, _ = CHECKS[kind]
    with pytest.raises(InvalidIdentifier, match="not valid Unicode"):
        check("ab\ud800")


def test_invalid_identifier_is_an_input_error_and_a_value_error() -> None:
    assert issubclass(InvalidIdentifier, InputError)
    assert issubclass(InvalidIdentifier, SphaeraError)
    assert issubclass(InvalidIdentifier, ValueError)


# -- through the replica -------------------------------------------------------------------


def _clock() -> float:
    return 1000.0


@pytest.mark.parametrize("bad", ["", "a\nb", "x" * (names.MAX_REPLICA_ID_LEN + 1)])
def test_replica_refuses_a_bad_replica_id(bad: str) -> None:
    with pytest.raises(InvalidIdentifier, match="replica id"):
        Replica(bad, clock=_clock)


def test_longest_replica_id_still_makes_a_valid_replica_entity() -> None:
    replica_id = "r" * names.MAX_REPLICA_ID_LEN
    replica = Replica(replica_id, clock=_clock)
    assert replica.replica_entity == "replica:" + replica_id
    assert replica.entity("replica:" + replica_id) is not None


BAD_ENTITY_IDS = ["", "db\x00", "db\x1fk", "x" * (names.MAX_ID_LEN + 1), 42]


@pytest.mark.parametrize("bad", BAD_ENTITY_IDS)
def test_writes_refuse_bad_entity_ids_and_change_nothing(bad: str) -> None:
    replica = Replica("a", clock=_clock)
    replica.declare("db", attrs={"port": 1})
    state, records = replica.state_vector(), replica.entities()
    with pytest.raises(InvalidIdentifier, match="entity id"):
        replica.declare(bad)
    with pytest.raises(InvalidIdentifier, match="entity id"):
        replica.update(bad, {"port": 2})
    with pytest.raises(InvalidIdentifier, match="entity id"):
        replica.retract(bad)
    with pytest.raises(InvalidIdentifier, match="entity id"):
        replica.observe(bad, ok=True)
    assert replica.state_vector() == state
    assert replica.entities() == records
    assert replica.observations() == []


BAD_ATTR_KEYS = ["", "port\n", "a\x1fb", "k" * (names.MAX_ATTR_LEN + 1)]


@pytest.mark.parametrize("bad", BAD_ATTR_KEYS)
def test_writes_refuse_bad_attribute_keys_and_change_nothing(bad: str) -> None:
    replica = Replica("a", clock=_clock)
    replica.declare("db", attrs={"port": 1})
    state, records = replica.state_vector(), replica.entities()
    with pytest.raises(InvalidIdentifier, match="attribute key"):
        replica.declare("db", attrs={"port": 2, bad: 1})
    with pytest.raises(InvalidIdentifier, match="attribute key"):
        replica.declare("fresh", attrs={bad: 1})
    with pytest.raises(InvalidIdentifier, match="attribute key"):
        replica.update("db", {"port": 2, bad: 1})
    assert replica.state_vector() == state
    assert replica.entities() == records


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_the_rules_in_words_are_the_rules_checked(kind: str) -> None:
    check, limit = CHECKS[kind]
    words = names.rules(kind)
    article = {"entity id": "an", "replica id": "a", "attribute key": "an"}[kind]
    assert words == f"{article} {kind} is 1 to {limit} characters of text, none a control character"
    assert check("x" * limit) == "x" * limit
    for bad in ("", "x" * (limit + 1), *(f"a{c}b" for c in CONTROL)):
        with pytest.raises(InvalidIdentifier):
            check(bad)
