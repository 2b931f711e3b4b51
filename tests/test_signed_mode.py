"""Signed mode in the core: seals, the door's refusals, the audit under a trust list."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from sphaera_crdt import Replica
from sphaera_crdt.core import door as door_module
from sphaera_crdt.core import updates
from sphaera_crdt.core.seals import SEAL, digest, make_seal, parse_seal
from sphaera_crdt.core.trust import Trust, public_key_text
from sphaera_crdt.core.updates import Struct, shape
from sphaera_crdt.errors import InvalidTrust, InvalidUpdate, UnverifiedUpdate
from sphaera_crdt.testing import Cluster

IDS = ("a", "b", "c")
KEYS = {replica_id: Ed25519PrivateKey.generate() for replica_id in (*IDS, "x")}
TRUST = Trust.parse("".join(f"{i} {public_key_text(KEYS[i])}\n" for i in IDS))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def signed(replica_id: str, clock: Callable[[], float], trust: Trust = TRUST) -> Replica:
    return Replica(replica_id, clock=clock, signing_key=KEYS[replica_id], trust=trust)


def sync(src: Replica, dst: Replica) -> None:
    dst.merge(src.delta(dst.state_vector()))


def both_ways(*replicas: Replica) -> None:
    for _ in range(2):
        for src in replicas:
            for dst in replicas:
                if src is not dst:
                    sync(src, dst)


@pytest.fixture
def pair() -> tuple[Replica, Replica, Clock]:
    clock = Clock()
    a, b = signed("a", clock), signed("b", clock)
    a.declare("db", kind="svc", attrs={"port": 5432})
    a.observe("db", ok=True, ttl=60)
    b.declare("app", requires={"observed": "db", "by": ["a"], "within": 60})
    both_ways(a, b)
    assert b.status("app").value == "exists"
    return a, b, clock


def container_of(doc: Doc, replica_id: str) -> str:
    root = doc.get("w", type=Map)
    return next(
        key
        for key in root.keys()
        if key.startswith(replica_id + "\x1f") and isinstance(root.get(key), Map)
    )


def bare_copy(replica: Replica) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(replica.delta(None))
    return doc


def items(update: bytes) -> list[Struct]:
    listed = shape(update, items=True).items
    assert listed is not None
    return listed


def assert_refused(replica: Replica, update: bytes) -> None:
    before = (replica.state_vector(), replica.derive_all(), replica.entities())
    with pytest.raises(UnverifiedUpdate):
        replica.merge(update)
    assert (replica.state_vector(), replica.derive_all(), replica.entities()) == before


# -- writing and converging ------------------------------------------------------------------


def test_signed_replicas_converge_through_rotations_and_relays(pair: tuple) -> None:
    a, b, clock = pair
    c = signed("c", clock)
    for i in range(200):  # enough overwrites to rotate a's container several times
        a.update("db", {"port": i})
    assert a.rotations >= 2
    sync(a, b)
    sync(b, c)  # c hears of a only through b
    assert c.entity("db").attrs == {"port": 199}
    sync(c, a)
    sync(c, b)
    assert c.derive_all() == a.derive_all() == b.derive_all()
    assert c.unreadable == 0


def test_every_write_carries_a_seal_that_verifies(pair: tuple) -> None:
    a, _, _ = pair
    doc = bare_copy(a)
    container = doc.get("w", type=Map).get(container_of(doc, "a"))
    seals = [parse_seal(container[key]) for key in container.keys() if key.startswith(SEAL)]
    assert seals and all(seal is not None for seal in seals)
    verifier = TRUST.verifier("a")
    assert verifier is not None
    key = container_of(doc, "a")
    assert all(seal.verify(key, verifier) for seal in seals if seal is not None)
    assert not any(seal.verify(key + "x", verifier) for seal in seals if seal is not None)


def test_an_unsigned_replica_reads_signed_entries_and_skips_the_seals(pair: tuple) -> None:
    a, _, clock = pair
    plain = Replica("p", clock=clock)
    sync(a, plain)
    assert plain.entity("db").attrs == {"port": 5432}
    assert plain.unreadable == 0


def test_signed_cluster_converges_under_loss_duplication_and_reordering() -> None:
    clock = Clock()
    cluster = Cluster([signed(replica_id, clock) for replica_id in IDS], seed=3)
    for step in range(30):
        writer = cluster[IDS[step % 3]]
        writer.declare(f"e{step % 7}", attrs={"n": step})
        writer.observe(f"e{step % 5}", ok=step % 2 == 0, ttl=600)
        cluster.pump(drop=0.3, duplicate=0.2, reorder=True, rounds=2)
    cluster.settle()
    cluster.assert_converged()
    views = [replica.derive_all() for replica in cluster]
    assert views[0] == views[1] == views[2]


def test_restore_reseals_and_the_peers_accept_the_fresh_container(pair: tuple) -> None:
    a, b, clock = pair
    restored = Replica.restore(
        "a", [a.delta(None)], clock=clock, signing_key=KEYS["a"], trust=TRUST
    )
    assert restored.entity("db").attrs == {"port": 5432}
    sync(restored, b)
    sync(b, restored)
    assert restored.derive_all() == b.derive_all()
    assert b.status("app").value == "exists"


# -- the door's refusals ---------------------------------------------------------------------


def test_a_bare_client_writing_into_another_container_is_refused(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    before = doc.get_state()
    doc.get("w", type=Map).get(container_of(doc, "a"))["e\x1fghost\x1fk"] = "Z'svc"
    assert_refused(b, doc.get_update(before))


def test_overwriting_another_writers_entry_is_refused(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    container = doc.get("w", type=Map).get(container_of(doc, "a"))
    entry = next(key for key in container.keys() if key.startswith("s\x1f"))
    before = doc.get_state()
    container[entry] = container[entry].replace("t", "f")
    assert_refused(b, doc.get_update(before))


def test_a_forged_seal_under_another_key_is_refused(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    key = container_of(doc, "a")
    # Everything a seal binds is right but the key that signed it.
    maps = [item for item in items(doc.get_update()) if item.key == key and item.kind == 3]
    root_client = maps[-1].client
    container = doc.get("w", type=Map).get(key)
    before = doc.get_state()
    entry, text = "e\x1fghost\x1fk", "Z'svc"
    seal = make_seal(key, doc.client_id, root_client, 0, digest(entry, text), KEYS["x"])
    with doc.transaction():
        container[entry] = text
        container[SEAL + "ff"] = seal
    with pytest.raises(UnverifiedUpdate, match="does not verify"):
        b.merge(doc.get_update(before))
    assert b.entity("ghost") is None


def test_a_container_of_a_writer_not_listed_is_refused(pair: tuple) -> None:
    _, b, clock = pair
    stranger = Replica("ghost", clock=clock, signing_key=KEYS["x"])
    stranger.declare("db", attrs={"port": 1})
    assert_refused(b, stranger.delta(None))
    outsider = Replica("x", clock=clock, signing_key=KEYS["x"])
    outsider.declare("replica:x", kind="replica", attrs={"url": "http://127.0.0.1:1"})
    assert_refused(b, outsider.delta(None))


def test_a_far_future_container_is_no_sign_of_life(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    before = doc.get_state()
    doc.get("w", type=Map)["a\x1fforged.ffffffffff"] = Map()
    b.merge(doc.get_update(before))  # an empty container proves nothing; it is let in
    starts = b._live_containers()["a"]
    assert max(starts) < 2e9, starts
    with_entry = bare_copy(b)
    before = with_entry.get_state()
    with_entry.get("w", type=Map).get("a\x1fforged.ffffffffff")["e\x1fdb\x1fk"] = "Z'evil"
    assert_refused(b, with_entry.get_update(before))


def test_items_under_this_replicas_own_client_id_are_refused(pair: tuple) -> None:
    _, b, _ = pair
    forged: Doc = Doc(client_id=b.client_id)
    forged.apply_update(b.delta(None))
    before = forged.get_state()
    container = forged.get("w", type=Map).get(container_of(forged, "b"))
    container["e\x1fapp\x1fk"] = "Z'evil"
    assert_refused(b, forged.get_update(before))


def test_a_replayed_old_value_under_the_writers_client_is_refused(pair: tuple) -> None:
    a, b, _ = pair
    old = bare_copy(a)
    key = container_of(old, "a")
    old_text = old.get("w", type=Map).get(key)["e\x1fdb\x1fa\x1fport"]
    a.update("db", {"port": 6000})
    sync(a, b)
    forged: Doc = Doc(client_id=a.client_id)  # impersonates a's client at its next clock
    forged.apply_update(a.delta(None))
    before = forged.get_state()
    forged.get("w", type=Map).get(container_of(forged, "a"))["e\x1fdb\x1fa\x1fport"] = old_text
    assert_refused(b, forged.get_update(before))
    assert b.entity("db").attrs == {"port": 6000}


def test_deleted_items_under_the_writers_client_at_new_clocks_are_refused(pair: tuple) -> None:
    a, b, _ = pair
    forged: Doc = Doc(client_id=a.client_id)  # takes the clocks of a's next entries
    forged.apply_update(a.delta(None))
    before = forged.get_state()
    container = forged.get("w", type=Map).get(container_of(forged, "a"))
    container["e\x1fdb\x1fa\x1fnew"] = "Z1"
    del container["e\x1fdb\x1fa\x1fnew"]
    update = forged.get_update(before)
    assert [item.kind for item in items(update)] == [1]  # deleted content only
    assert_refused(b, update)
    a.update("db", {"port": 7000})  # a's next entry takes those clocks: it still arrives
    sync(a, b)
    assert b.entity("db").attrs == {"port": 7000}


def test_own_items_carried_back_do_not_cost_the_waiting_seal(pair: tuple) -> None:
    a, b, _ = pair
    a.declare("later", kind="svc")  # waits for a seal
    b.declare("other", kind="svc")
    echo = b.delta(None)  # b's news, and a's own items back
    a.merge(echo)
    sync(a, b)  # the seal a writes now covers "later"
    assert b.entity("later") is not None


def test_a_delete_set_alone_deletes_nothing(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    before = doc.get_state()
    container = doc.get("w", type=Map).get(container_of(doc, "a"))
    del container["e\x1fdb\x1fk"]
    b.merge(doc.get_update(before))
    assert b.entity("db").kind == "svc"


def test_a_changed_entry_text_is_refused(pair: tuple) -> None:
    a, _, clock = pair
    fresh = signed("c", clock)
    update = a.delta(None)
    index = update.index(b"5432")
    tampered = update[:index] + b"5433" + update[index + 4 :]
    with pytest.raises(UnverifiedUpdate):
        fresh.merge(tampered)
    fresh.merge(update)
    assert fresh.entity("db").attrs == {"port": 5432}


def test_a_retired_container_is_reclaimed_by_its_writer(pair: tuple) -> None:
    a, b, _ = pair
    doc = bare_copy(a)
    before = doc.get_state()
    doc.get("w", type=Map)[container_of(doc, "a")] = ""  # anyone may retire a container
    retire = doc.get_update(before)
    b.merge(retire)
    assert b.entity("db") is None
    a.merge(retire)
    assert a.entity("db").attrs == {"port": 5432}  # a moved to a fresh container
    sync(a, b)
    assert b.entity("db").attrs == {"port": 5432}
    assert b.status("app").value == "exists"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_no_changed_byte_makes_a_forged_entry_count(pair: tuple, position: int, value: int) -> None:
    a, _, clock = pair
    update = a.delta(None)
    position %= len(update)
    mutated = update[:position] + bytes([value]) + update[position + 1 :]
    fresh = signed("c", clock)
    try:
        fresh.merge(mutated)
    except InvalidUpdate:
        return
    # Let in: then it says nothing a's genuine update does not (the byte changed a clock,
    # a length or a client in a way that still verifies, or nothing at all).
    reference = signed("c", clock)
    reference.merge(update)
    for entity_id, view in fresh.entities().items():
        assert reference.entity(entity_id) == view


# -- the trust list ----------------------------------------------------------------------------


def test_removing_a_writer_from_the_list_stops_its_entries_everywhere(pair: tuple) -> None:
    a, b, clock = pair
    c = signed("c", clock)
    both_ways(a, b, c)
    assert c.status("app").value == "exists"
    smaller = Trust({i: TRUST[i] for i in ("b", "c")})
    changes = b.set_trust(smaller)
    assert any(change.entity == "db" for change in changes)
    assert b.entity("db") is None and b.status("app").value == "absent"
    c.set_trust(smaller)
    sync(b, c)
    sync(c, b)
    assert c.derive_all() == b.derive_all()
    fresh = signed("c", clock, smaller)  # a newcomer syncs from b: a's items are gone
    fresh.merge(b.delta(None))
    assert fresh.entity("db") is None
    a.update("db", {"port": 1})  # a writes on: its new entries are refused
    with pytest.raises(UnverifiedUpdate):
        b.merge(a.delta(b.state_vector()))


def test_a_changed_key_stops_the_old_seals_and_the_restart_reseals(pair: tuple) -> None:
    a, b, clock = pair
    new_key = Ed25519PrivateKey.generate()
    changed = Trust({**TRUST, "a": Trust.parse(f"a {public_key_text(new_key)}")["a"]})
    b.set_trust(changed)
    assert b.entity("db") is None
    restarted = Replica.restore(
        "a", [a.delta(None)], clock=clock, signing_key=new_key, trust=changed
    )
    assert restarted.entity("db").attrs == {"port": 5432}
    sync(restarted, b)
    assert b.entity("db").attrs == {"port": 5432}
    assert b.status("app").value == "exists"


def test_a_new_list_keeps_this_replicas_latest_unsealed_writes(pair: tuple) -> None:
    a, _, _ = pair
    a.declare("fresh", kind="svc")  # written after the last delta: not sealed yet
    a.set_trust(TRUST)
    assert a.entity("fresh") is not None
    assert a.entity("replica:a") is not None


def test_restore_leaves_out_entries_that_no_longer_verify(pair: tuple) -> None:
    _, b, clock = pair
    smaller = Trust({i: TRUST[i] for i in ("b", "c")})
    restored = Replica.restore(
        "b", [b.delta(None)], clock=clock, signing_key=KEYS["b"], trust=smaller
    )
    assert restored.entity("db") is None
    assert restored.status("app").value == "absent"


def test_signed_mode_needs_the_listed_key() -> None:
    with pytest.raises(InvalidTrust, match="signing key"):
        Replica("a", trust=TRUST)
    with pytest.raises(InvalidTrust, match="not the one"):
        Replica("a", signing_key=KEYS["b"], trust=TRUST)
    with pytest.raises(InvalidTrust, match="not in the trust list"):
        Replica("x", signing_key=KEYS["x"], trust=TRUST)
    plain = Replica("a")
    with pytest.raises(InvalidTrust):
        plain.set_trust(TRUST)


def test_turning_signed_mode_off_counts_everything_again(pair: tuple) -> None:
    _, b, _ = pair
    smaller = Trust({i: TRUST[i] for i in ("b", "c")})
    b.set_trust(smaller)
    assert b.entity("db") is None
    b.set_trust(None)
    assert b.trust is None


# -- seals and structs -------------------------------------------------------------------------


def test_parse_seal_refuses_anything_but_a_seal() -> None:
    seal = make_seal("a\x1fn.1", 5, 7, 9, digest("k", "v"), KEYS["a"])
    parsed = parse_seal(seal)
    assert parsed is not None and (parsed.client, parsed.root_client, parsed.first) == (5, 7, 9)
    for broken in ("", "x", seal + ".", seal.replace(".", ".0x", 1), "-1" + seal[1:], seal[:-4]):
        assert parse_seal(broken) is None


def test_parse_seal_reads_only_the_text_make_seal_writes() -> None:
    """No two texts read as one seal: a forwarder cannot make replicas hold different
    texts for the same item."""
    seal = make_seal("a\x1fn.1", 5, 7, 9, digest("k", "v"), KEYS["a"])
    client, root, first, signature, digests = seal.split(".")
    assert parse_seal(seal) is not None
    # leading zeros in a number
    assert parse_seal(".".join(("05", root, first, signature, digests))) is None
    # the unused low bits of the signature's last base64 character
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = last.index(signature[-1])
    other = signature[:-1] + last[index ^ 1]
    assert parse_seal(".".join((client, root, first, other, digests))) is None
    # the same for the digests (16 bytes: two padding characters)
    index = last.index(digests[-3])
    other = digests[:-3] + last[index ^ 1] + "=="
    assert parse_seal(".".join((client, root, first, signature, other))) is None
    # and a seal that verifies still verifies after parsing
    parsed = parse_seal(seal)
    assert parsed is not None
    trust = Trust({"a": KEYS["a"].public_key().public_bytes_raw()})
    verifier = trust.verifier("a")
    assert verifier is not None and parsed.verify("a\x1fn.1", verifier)
    assert not parsed.verify("a\x1fn.2", verifier)


def test_shape_lists_where_each_item_goes() -> None:
    doc: Doc = Doc()
    root = doc.get("w", type=Map)
    root["a\x1fn.1"] = Map()
    container = root["a\x1fn.1"]
    container["k"] = "v1"
    container["k"] = "v2"
    update = doc.get_update()
    listed = shape(update, items=True)
    assert shape(update).items is None  # listed only when asked for
    assert listed.items is not None
    found, end = listed.items, listed.deletes_at
    assert end < len(update) and update[end:] != b"\x00"  # the overwrite deleted v1
    assert [item.kind for item in found][:1] == [3]  # the container map
    assert found[-1].text == "v2" and found[-1].origin is not None


def test_a_signed_merge_walks_each_update_once(
    pair: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The causal gate's walk lists the items the door checks; a held update keeps no
    list (held updates are bounded by bytes, their items take several times that) and is
    walked again when it is released."""
    a, b, _ = pair
    before = b.state_vector()
    a.update("db", {"port": 1})
    first = a.delta(before)
    middle = a.state_vector()
    a.update("db", {"port": 2})
    second = a.delta(middle)
    walks: list[bool] = []
    real = updates.shape

    def counted(update: bytes, items: bool = False) -> updates.UpdateShape:
        walks.append(items)
        return real(update, items)

    monkeypatch.setattr(updates, "shape", counted)
    monkeypatch.setattr(door_module, "shape", counted)
    b.merge(second)  # its predecessor is missing: held
    assert walks == [True]
    assert all(needs.items is None for needs in b._gate._held.values())
    b.merge(first)  # goes in, and releases the held one, whose items are listed again
    assert walks == [True, True, True]
    assert b.entity("db").attrs == {"port": 2}
    unsigned = Replica("u")
    walks.clear()
    unsigned.merge(a.delta())
    assert walks == [False]  # unsigned replicas list no items
