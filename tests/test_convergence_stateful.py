"""Replicas converge whatever the operations and however deltas travel.

A hypothesis state machine drives 2-5 replicas through random local writes (declare,
update, retract, observe, with values of every supported type) and random partial syncs:
lossy, duplicating and reordering gossip, deltas computed against stale or third-party
state vectors (so that they arrive without their predecessors), and stale deltas
delivered again. After a full reliable sync every replica must hold the same records,
observations and state vector, and every value must be one that was written to its key:
the last one written wherever the last write causally followed all the others.

Causality is read from state vectors: a write is the Yrs transaction that moved its
writer's clock to ``clock_after``; a replica has integrated it once its state vector
reaches that clock for the writer's client. A write "follows" another if the writer had
integrated the other before writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from profiles import examples
from support import typed

from sphaera_crdt import InvalidValue, Replica, Status, UnknownEntity
from sphaera_crdt.core.lib0 import decode_state_vector
from sphaera_crdt.testing import Cluster, Message

ENTITIES: Final = ["e1", "e2"]
ATTR_KEYS: Final = ["a", "b"]
KINDS: Final = [None, "db", "svc"]
ABSENT: Final = ("absent",)  # the typed value of a removed attribute

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**53 + 2)
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
attr_maps = st.dictionaries(st.sampled_from(ATTR_KEYS), values, max_size=3)
replica_index = st.integers(min_value=0, max_value=4)
unsupported = st.sampled_from([{1, 2}, b"x", (1,), float("nan"), float("inf"), object()])


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass(frozen=True, slots=True)
class Write:
    """One write of one key: who wrote what, and what the writer had seen."""

    writer: str
    client: int
    clock_after: int
    seen: dict[int, int]  # the writer's state vector just before writing
    value: Any  # typed form

    def follows(self, other: Write) -> bool:
        return self.seen.get(other.client, 0) >= other.clock_after


Key = tuple[str, str]  # (entity, "attr:<name>" | "kind" | "retracted" | "owner")


class ConvergenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cluster: Cluster | None = None
        self.clocks: dict[str, Clock] = {}
        self.writes: dict[Key, list[Write]] = {}
        self.observed: dict[tuple[str, str], Any] = {}
        self.messages: list[Message] = []
        self.vectors: list[bytes] = []  # state vectors seen so far, to compute stale deltas

    # -- setup -----------------------------------------------------------------------------

    @initialize(
        starts=st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=5),
        seed=st.integers(min_value=0, max_value=2**16),
    )
    def setup(self, starts: list[float], seed: int) -> None:
        replicas = []
        for index, start in enumerate(starts):
            replica_id = f"r{index}"
            self.clocks[replica_id] = Clock(start)
            replicas.append(
                Replica(
                    replica_id,
                    clock=self.clocks[replica_id],
                    client_id=1_000_003 * (index + 1),
                    nonce=f"n{index}",
                )
            )
        self.cluster = Cluster(replicas, seed=seed)
        for replica in replicas:
            # each replica declared itself: model those writes too
            self._record_own_declaration(replica)

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def replica(self, index: int) -> Replica:
        ids = self.c.ids
        return self.c[ids[index % len(ids)]]

    def _sv(self, replica: Replica) -> dict[int, int]:
        return decode_state_vector(replica.state_vector())

    def _record(self, replica: Replica, seen: dict[int, int], written: dict[Key, Any]) -> None:
        clock_after = self._sv(replica)[replica.client_id]
        assert clock_after > seen.get(replica.client_id, 0), "a write must advance the clock"
        for key, value in written.items():
            write = Write(replica.id, replica.client_id, clock_after, seen, typed(value))
            self.writes.setdefault(key, []).append(write)
        self.vectors.append(replica.state_vector())

    def _record_own_declaration(self, replica: Replica) -> None:
        entity = replica.replica_entity
        written = {(entity, "kind"): "replica", (entity, "retracted"): False}
        written[(entity, "owner")] = replica.id
        clock_after = self._sv(replica)[replica.client_id]
        for key, value in written.items():
            self.writes.setdefault(key, []).append(
                Write(replica.id, replica.client_id, clock_after, {}, typed(value))
            )

    def _attr_writes_exist(self, entity: str) -> bool:
        return any(key[0] == entity and key[1].startswith("attr:") for key in self.writes)

    # -- local writes ----------------------------------------------------------------------

    @rule(
        index=replica_index,
        entity=st.sampled_from(ENTITIES),
        kind=st.sampled_from(KINDS),
        attrs=attr_maps,
    )
    def declare(self, index: int, entity: str, kind: str | None, attrs: dict[str, Any]) -> None:
        replica = self.replica(index)
        view = replica.entity(entity)
        if view is None and self._attr_writes_exist(entity):
            # The replica may hold attributes of an entity whose declaration has not
            # reached it; a declaration removes those, and the model cannot see which.
            return
        removed = [] if view is None else [key for key in view.attrs if key not in attrs]
        seen = self._sv(replica)
        replica.declare(entity, kind=kind, attrs=attrs)
        written: dict[Key, Any] = {
            (entity, "kind"): kind,
            (entity, "retracted"): False,
            (entity, "owner"): replica.id,
        }
        written.update({(entity, f"attr:{key}"): value for key, value in attrs.items()})
        self._record(replica, seen, written)
        for key in removed:
            clock_after = self._sv(replica)[replica.client_id]
            write = Write(replica.id, replica.client_id, clock_after, seen, ABSENT)
            self.writes.setdefault((entity, f"attr:{key}"), []).append(write)

    @rule(index=replica_index, entity=st.sampled_from(ENTITIES), attrs=attr_maps)
    def update(self, index: int, entity: str, attrs: dict[str, Any]) -> None:
        replica = self.replica(index)
        seen = self._sv(replica)
        if replica.entity(entity) is None:
            before = replica.entities()
            try:
                replica.update(entity, attrs)
            except UnknownEntity:
                pass
            else:
                raise AssertionError(f"update of undeclared {entity!r} did not raise")
            assert self._sv(replica) == seen and replica.entities() == before
            return
        replica.update(entity, attrs)
        if attrs:
            self._record(
                replica, seen, {(entity, f"attr:{key}"): value for key, value in attrs.items()}
            )

    @rule(index=replica_index, entity=st.sampled_from(ENTITIES))
    def retract(self, index: int, entity: str) -> None:
        replica = self.replica(index)
        seen = self._sv(replica)
        if replica.entity(entity) is None:
            try:
                replica.retract(entity)
            except UnknownEntity:
                pass
            else:
                raise AssertionError(f"retract of undeclared {entity!r} did not raise")
            assert self._sv(replica) == seen
            return
        replica.retract(entity)
        self._record(replica, seen, {(entity, "retracted"): True})

    @rule(
        index=replica_index,
        subject=st.sampled_from(ENTITIES),
        ok=st.booleans(),
        value=values,
        ttl=st.none() | st.floats(min_value=0, max_value=1e6),
    )
    def observe(self, index: int, subject: str, ok: bool, value: Any, ttl: float | None) -> None:
        replica = self.replica(index)
        observation = replica.observe(subject, ok=ok, value=value, ttl=ttl)
        assert observation.at == self.clocks[replica.id].t
        self.observed[(replica.id, subject)] = typed(observation.to_json())
        self.vectors.append(replica.state_vector())

    @rule(index=replica_index, entity=st.sampled_from(ENTITIES), bad=unsupported)
    def refused_write(self, index: int, entity: str, bad: Any) -> None:
        replica = self.replica(index)
        sv, records = self._sv(replica), replica.entities()
        try:
            replica.observe(entity, value={"nested": [bad]})
        except InvalidValue:
            pass
        else:
            raise AssertionError(f"{bad!r} was accepted")
        assert self._sv(replica) == sv and replica.entities() == records

    @rule(index=replica_index, seconds=st.floats(min_value=-100, max_value=1000))
    def move_clock(self, index: int, seconds: float) -> None:
        # Clocks drift apart and may even go back: causality must not depend on them.
        self.clocks[self.replica(index).id].t += seconds

    # -- moving deltas ---------------------------------------------------------------------

    @rule(
        drop=st.sampled_from([0.0, 0.3, 0.7]),
        duplicate=st.sampled_from([0.0, 0.3]),
        reorder=st.booleans(),
        rounds=st.integers(min_value=1, max_value=3),
    )
    def gossip(self, drop: float, duplicate: float, reorder: bool, rounds: int) -> None:
        self.c.pump(drop=drop, duplicate=duplicate, reorder=reorder, rounds=rounds)

    @rule(src=replica_index, dst=replica_index, basis=st.sampled_from(["dst", "third", "stale"]))
    def send(self, src: int, dst: int, basis: str) -> None:
        source, target = self.replica(src), self.replica(dst)
        since = None  # against what dst holds now
        if basis == "third":
            # against a third replica's state: dst may lack the predecessors
            since = self.replica(src + dst + 1).state_vector()
        elif basis == "stale" and self.vectors:
            since = self.vectors[(src * 7 + dst) % len(self.vectors)]
        self.messages.append(self.c.send(source.id, target.id, since=since))

    @precondition(lambda self: self.cluster is not None and bool(self.c.in_flight))
    @rule(pick=st.integers(min_value=0))
    def deliver_in_flight(self, pick: int) -> None:
        in_flight = self.c.in_flight
        self.c.deliver(in_flight[pick % len(in_flight)])

    @precondition(lambda self: bool(self.messages))
    @rule(pick=st.integers(min_value=0), to=replica_index)
    def redeliver_stale(self, pick: int, to: int) -> None:
        # Any delta ever sent, to any replica, again: merging is idempotent.
        message = self.messages[pick % len(self.messages)]
        self.replica(to).merge(message.update)

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def values_were_written(self) -> None:
        if self.cluster is None:
            return
        for replica in self.c:
            for entity, view in replica.entities().items():
                for key, value in view.attrs.items():
                    self._assert_written((entity, f"attr:{key}"), typed(value), replica)
                self._assert_written((entity, "kind"), typed(view.kind), replica)
                self._assert_written((entity, "owner"), typed(view.owner), replica)

    def _assert_written(self, key: Key, value: Any, replica: Replica) -> None:
        written = [write.value for write in self.writes.get(key, [])]
        assert value in written, f"{replica.id} holds {key}={value}, never written: {written}"

    def teardown(self) -> None:
        if self.cluster is None:
            return
        self.c.settle()
        self.c.assert_converged()
        vectors = self.c.state_vectors()
        assert all(vector == vectors[self.c.ids[0]] for vector in vectors.values())
        reference = self.c[self.c.ids[0]]
        views = reference.entities()
        declared = {key[0] for key in self.writes if key[1] == "retracted"}
        assert set(views) == declared
        for key, writes in self.writes.items():
            entity, field = key
            view = views[entity]
            if field.startswith("attr:"):
                name = field.removeprefix("attr:")
                final = typed(view.attrs[name]) if name in view.attrs else ABSENT
            elif field == "kind":
                final = typed(view.kind)
            elif field == "owner":
                final = typed(view.owner)
            else:
                final = typed(view.status is Status.ABSENT)
            assert final in [write.value for write in writes], (key, final)
            for last in writes:
                if all(last is other or last.follows(other) for other in writes):
                    assert final == last.value, (
                        f"{key}: {final} but the write {last.value} by {last.writer} "
                        f"followed all {len(writes)} writes"
                    )
                    if len({write.writer for write in writes}) > 1:
                        event("a key written by several replicas, the last write causal")
                    break
            else:
                event("a key with concurrent writes")
        observations = sorted(
            (o.observer, o.subject, typed(o.to_json())) for o in reference.observations()
        )
        expected = sorted(
            (observer, subject, o) for (observer, subject), o in self.observed.items()
        )
        assert observations == expected


ConvergenceMachine.TestCase.settings = settings(
    max_examples=examples(300),
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConvergence = ConvergenceMachine.TestCase
