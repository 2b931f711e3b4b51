"""The Replica: replicated records and observations, deltas, merges and events.

A replica owns one pycrdt document (see :mod:`.ydoc` for its layout) and a merged view
of it (see :mod:`.records`). Local writes go to both at once; a merge applies the peer's
bytes to the document (once their predecessors are there, see :mod:`.causal`) and feeds
the entries they changed into the view. The view is a join of last-writer-wins
registers, so it equals what a fresh replica would build from the same document,
whatever order the updates came in.

Statuses are derived from the view by the existence engine (:mod:`.existence`); every
step (a write, a merge, a tick) re-evaluates only what the step affected and reports the
entities whose status changed as :class:`Change` events, dependencies first (delivered
by :mod:`.outbox`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import InvalidTrust, InvalidUpdate, InvalidValue, UnknownEntity
from . import collector, forgetting, names, pruning, updates
from .causal import MAX_HELD_BYTES, CausalGate, HeldStats
from .constraints import check_constraint
from .door import Door
from .existence import ExistenceEngine
from .explain import explain, reason
from .forgetting import TOMBSTONE, parse_tombstone, tombstone_key
from .formulas import DEFAULT_MAX_SKEW, FALSE, TRUE, UNKNOWN
from .lib0 import decode_state_vector
from .outbox import ChangeCallback, Outbox, RecordCallback
from .probes import Probe
from .pruning import DEFAULT_GRACE
from .records import (
    ABSENT_ATTR,
    SEP,
    EntityRecord,
    Entry,
    MergedView,
    Winner,
    attr_payload,
    encode_payload,
    fresh_copy,
    in_this_layout,
    make_entry,
    nonce_epoch,
    observation_payload,
    removed_entry,
    split_entry,
    stamp_text,
)
from .seals import SEAL
from .trust import Trust
from .views import Change, EntityView, Observation, RecordChange, Status
from .ydoc import DocumentAdapter, Identities, new_nonce, split_writer_key, writer_key

__all__ = ["Clock", "Replica"]

Clock = Callable[[], float]

REPLICA_PREFIX: Final = "replica:"
_STATUS: Final = {TRUE: Status.EXISTS, FALSE: Status.ABSENT, UNKNOWN: Status.UNDETERMINED}
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_log = logging.getLogger("sphaera_crdt.replica")
#: A merge that changes at least this many entries, and half the view's size, derives every
#: status anew rather than step by step (see :meth:`Replica._integrate`).
BULK_MERGE: Final = 1024
#: An update at least this long is merged with the cyclic collector paused (see
#: :mod:`.collector`).
BULK_BYTES: Final = 64 * 1024


class Replica:
    """One replica of the shared state.

    Args:
        replica_id: This replica's id; it also declares the entity ``replica:<id>``.
        clock: Returns the current time in seconds (``time.time`` by default).
        predicates: Named predicates that constraints may ``call``.
        logger: Where failures of subscribers are reported.
        nonce: The id of this replica's container in the document (random by default);
            a store that restores a replica passes the one it had.
        client_id: The Yrs client id (random by default). Never reuse one with restored state.
        declare_self: Declare ``replica:<id>`` at construction (default true).
        identities: Draws the nonce and the Yrs client ids not given (random by default);
            a seeded source makes a replica's bytes repeatable.
        max_skew: Seconds an observation may be dated ahead of this replica's clock and
            still count as fresh evidence (5 by default); one dated further ahead does not
            count until the clock catches up with it.
        max_held_bytes: Updates held for missing predecessors are kept up to this many
            bytes in all, the oldest dropped first (see :mod:`.causal`).
        signing_key: This replica's Ed25519 key: every write is sealed with it (see
            :mod:`.seals`).
        trust: Turns on signed mode: only entries sealed by a key this list gives for
            their container's writer count, and merges carrying others are refused.
            Needs ``signing_key``, the key the list gives for this replica.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        clock: Clock = time.time,
        predicates: Mapping[str, Callable[..., Any]] | None = None,
        logger: logging.Logger | None = None,
        nonce: str | None = None,
        client_id: int | None = None,
        declare_self: bool = True,
        identities: Identities | None = None,
        max_skew: float = DEFAULT_MAX_SKEW,
        max_held_bytes: int = MAX_HELD_BYTES,
        forget_after: float | None = None,
        observation_grace: float = DEFAULT_GRACE,
        signing_key: Ed25519PrivateKey | None = None,
        trust: Trust | None = None,
    ) -> None:
        if type(observation_grace) not in (int, float) or not 0 <= observation_grace < math.inf:
            raise InvalidValue(
                "observation_grace must be a finite number of seconds >= 0, "
                f"not {observation_grace!r}"
            )
        #: seconds past its ttl an own observation is kept (see :mod:`.pruning`)
        self.observation_grace: Final = float(observation_grace)
        if forget_after is not None and (
            type(forget_after) not in (int, float) or not 0 < forget_after < math.inf
        ):
            raise InvalidValue(
                f"forget_after must be a positive number of seconds, not {forget_after!r}"
            )
        #: seconds of silence after which a replica is forgotten (see :mod:`.forgetting`)
        self.forget_after: Final = None if forget_after is None else float(forget_after)
        #: writer keys of forgotten containers (grows only)
        self._forgotten: set[str] = set()
        #: digests named by every tombstone seen (see :func:`.forgetting.digest`)
        self._forgotten_digests: set[str] = set()
        #: digest -> writer key, for every writer key seen
        self._by_digest: dict[str, str] = {}
        self._rebuild_needed = False
        #: set by a merge large enough that statuses are derived anew (see _integrate)
        self._bulk = False
        self._next_forget_check = math.inf
        self._declares_self = declare_self
        self._identities = identities
        if type(max_held_bytes) is not int or max_held_bytes < 0:
            raise InvalidValue(f"max_held_bytes must be a non-negative int, not {max_held_bytes!r}")
        self.id: Final = names.check_replica_id(replica_id)
        if trust is not None:
            if signing_key is None:
                raise InvalidTrust(f"signed mode needs the signing key of replica {self.id!r}")
            listed = trust.get(self.id)
            if listed is None:
                raise InvalidTrust(f"replica {self.id!r} is not in the trust list")
            if signing_key.public_key().public_bytes_raw() != listed:
                raise InvalidTrust(
                    f"the signing key of replica {self.id!r} is not the one the trust list gives"
                )
        self._signing_key = signing_key
        self._trust = trust
        self._clock = clock
        if type(max_skew) not in (int, float) or not 0 <= max_skew < math.inf:
            raise InvalidValue(
                f"max_skew must be a finite number of seconds >= 0, not {max_skew!r}"
            )
        self.max_skew: Final = float(max_skew)
        self.predicates: dict[str, Callable[..., Any]] = dict(predicates or {})
        self._log = logger or _log
        if nonce is None:
            now = clock()
            epoch: int | None = max(0, int(now * 1000)) if math.isfinite(now) else 0
        else:
            epoch = nonce_epoch(nonce)
        if epoch is None or epoch < 0:
            raise InvalidValue(f"nonce {nonce!r} does not end with a hex stamp epoch")
        self._epoch = epoch
        #: when this incarnation started (ms): the epoch, unless restore adopted an earlier one
        self._started = epoch
        if self.forget_after is not None:
            # The rule is not applied before the replica has run a whole window (see tick).
            self._next_forget_check = epoch / 1000 + self.forget_after
        self._view = MergedView()
        self._doc = DocumentAdapter(
            self.id,
            nonce=nonce,
            epoch=epoch,
            client_id=client_id,
            live_hint=lambda: self._view.size,
            identities=identities,
        )
        self._doc.prune = self._prunable
        self._gate = CausalGate(self._doc, self._log, max_bytes=max_held_bytes)
        #: signed mode's checks of merges (see :mod:`.door`); None when it is off
        self._door: Door | None = None
        #: (writer key, entry key) of entries that do not verify under the trust list
        self._excluded: set[tuple[str, str]] = set()
        self._doc.signing_key = signing_key
        if trust is not None:
            self._open_door(trust)
        # Stamps never go below the epoch, so offsets written in entries stay positive.
        self._stamp = epoch - 1
        self._engine = ExistenceEngine(self._view, self.id, self.predicates, self.max_skew)
        self._events = Outbox(self._log)
        self._writers: dict[str, tuple[str, str, int] | None] = {}
        self._writer(self._doc.key)  # a tombstone may name this replica's own container
        if declare_self:
            self.declare(self.replica_entity, kind="replica")

    @classmethod
    @collector.paused()
    def restore(
        cls,
        replica_id: str,
        updates: Iterable[bytes],
        *,
        clock: Clock = time.time,
        predicates: Mapping[str, Callable[..., Any]] | None = None,
        logger: logging.Logger | None = None,
        declare_self: bool = True,
        identities: Identities | None = None,
        max_skew: float = DEFAULT_MAX_SKEW,
        max_held_bytes: int = MAX_HELD_BYTES,
        forget_after: float | None = None,
        observation_grace: float = DEFAULT_GRACE,
        signing_key: Ed25519PrivateKey | None = None,
        trust: Trust | None = None,
    ) -> Replica:
        """Rebuild a replica from saved updates (a snapshot and a log, in order).

        The replica gets a fresh Yrs client id (reusing one with restored state makes
        replicas diverge silently) and a fresh container: the entries of its earlier
        containers are copied into it, and the old containers are dropped. Its stamps
        count from the latest earlier container's epoch, so those entries are copied as
        they are. Every status is then derived from scratch. ``identities`` draws the new
        client ids and nonce; ``max_skew``, ``signing_key`` and ``trust`` are the
        constructor's.

        Raises:
            InvalidUpdate: A saved update cannot be applied.
        """
        replica = cls(
            replica_id,
            clock=clock,
            predicates=predicates,
            logger=logger,
            declare_self=False,
            identities=identities,
            max_skew=max_skew,
            max_held_bytes=max_held_bytes,
            forget_after=forget_after,
            observation_grace=observation_grace,
            signing_key=signing_key,
            trust=trust,
        )
        replica._declares_self = declare_self
        view = replica._view
        #: entry key -> (stamp, payload, text, epoch of its container) of the entries moved
        mine: dict[str, tuple[int, str, str, int]] = {}
        old_containers: set[str] = set()
        loaded = replica._doc.load(updates)
        excluded = replica._audit()
        for _, key, _ in loaded:
            forgotten = parse_tombstone(key)
            if forgotten is not None:
                replica._learn_tombstone(forgotten)
        for writer, key, text in loaded:
            origin = replica._writer(writer)
            if writer in replica._forgotten or key[:2] == SEAL:
                continue  # its own forgotten containers are not carried over either
            if origin is None:
                view.malformed += 1
                continue
            if origin[0] != replica.id:
                if (key[:1] != TOMBSTONE or parse_tombstone(key) is None) and (
                    not excluded or (writer, key) not in excluded
                ):
                    view.apply(*origin, key, text)
                continue
            # An earlier incarnation's entry is carried over and sealed anew whatever its
            # seal says: only this replica wrote in its containers (the door refuses
            # anyone else's items there), and its key may have changed since.
            # An earlier incarnation's entry: carried over into the new container. It is
            # split once, for the view and for restamping.
            old_containers.add(writer)
            split = split_entry(text, origin[2])
            readable = key[:1] != TOMBSTONE or parse_tombstone(key) is None
            if split is None:
                if readable:
                    view.malformed += 1
                continue
            stamp, payload = split
            if readable:
                view.apply_split(origin[0], origin[1], key, stamp, payload)
            moved = mine.get(key)
            if moved is None or moved[0] < stamp:
                # (an entry of the first layout is rewritten in this one: no epoch matches)
                mine[key] = (stamp, payload, text, origin[2] if in_this_layout(text) else -1)
        replica._stamp = max(view.max_stamp, replica._stamp)
        if mine:
            # Stamps are counted from the latest earlier incarnation's epoch, so that its
            # entries move as they are written (restamping each cost more than the rest of
            # the move's Python work); an entry of an older one is restamped.
            latest = max(epoch for _, _, _, epoch in mine.values())
            if latest >= 0:
                replica._adopt_epoch(latest)
            epoch = replica._epoch
            replica._doc.write(
                (key, text if was == epoch else stamp_text(stamp - epoch) + payload)
                for key, (stamp, payload, text, was) in mine.items()
            )
        replica._doc.drop_containers(old_containers)
        if replica._door is not None:
            replica._retire_untrusted()
        replica._engine.recompute(clock())
        if declare_self and replica.entity(replica.replica_entity) is None:
            replica.declare(replica.replica_entity, kind="replica")
        return replica

    def _adopt_epoch(self, epoch: int) -> None:
        """Count stamps from ``epoch`` (restore, before this replica writes anything): its
        container takes a fresh nonce that carries it."""
        if epoch == self._epoch:
            return
        self._epoch = epoch
        self._doc.renew(new_nonce(epoch, self._identities))
        self._writer(self._doc.key)
        self._stamp = max(self._stamp, epoch - 1)

    def on_update(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``callback(update)`` with the Yrs update of every transaction this replica
        commits (local writes and merges alike), e.g. to append it to a log. The callback
        must not raise. Returns an unsubscribe function."""
        return self._doc.on_update(callback)

    # -- identity --------------------------------------------------------------------------

    @property
    def replica_entity(self) -> str:
        """The entity id this replica declares for itself: ``replica:<id>``."""
        return REPLICA_PREFIX + self.id

    @property
    def nonce(self) -> str:
        """The id of this replica's container in the document."""
        return self._doc.nonce

    @property
    def client_id(self) -> int:
        """The Yrs client id of this replica's document."""
        return int(self._doc.doc.client_id)

    @property
    def writer_clients(self) -> tuple[int, int]:
        """Every Yrs client id this replica writes with: its document's and its root writer's
        (which creates its containers). Its local changes are the items of these clients."""
        return self._doc.writer_clients

    def now(self) -> float:
        """The replica's clock."""
        return self._clock()

    # -- local writes ----------------------------------------------------------------------

    def declare(
        self,
        entity_id: str,
        *,
        kind: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        requires: Any = None,
        probe: Mapping[str, Any] | None = None,
    ) -> EntityView:
        """Declare (or re-declare) an entity, stating its whole record.

        Attributes the entity had and ``attrs`` does not name are removed. Declaring a
        retracted entity brings it back. ``probe`` asks replicas to check the entity and
        record the outcome as their observation of it (see :mod:`.probes`).

        Raises:
            InvalidIdentifier: A bad entity id or attribute key.
            InvalidValue: A value that cannot be stored with its exact type.
            InvalidProbe: A malformed ``probe``.
        """
        names.check_entity_id(entity_id)
        if probe is not None:
            if isinstance(probe, Mapping):
                probe = dict(probe)
            Probe.parse(probe)
        if kind is not None and type(kind) is not str:
            raise InvalidValue(f"kind of {entity_id!r} must be a str or None")
        attrs = self._check_attrs(entity_id, attrs or {})
        requires = self._check_requires(entity_id, requires)
        payloads = {key: attr_payload(key, value) for key, value in attrs.items()}
        # Stamp after every value was encoded, so a refused declaration changes nothing.
        stamp = self._next_stamp()
        epoch = self._epoch
        base = f"e{SEP}{entity_id}{SEP}"
        entries = [
            make_entry(base + "k", stamp, epoch, kind, "kind"),
            make_entry(base + "q", stamp, epoch, requires, "requires"),
            make_entry(base + "o", stamp, epoch, self.id, "owner"),
            make_entry(base + "x", stamp, epoch, False, "retracted"),
        ]
        record = self._view.records.get(entity_id)
        # Written only by records that have or had a probe: others keep their old size.
        if probe is not None or (record is not None and "p" in record.fields):
            entries.append(make_entry(base + "p", stamp, epoch, probe, "probe"))
        head = stamp_text(stamp - epoch)
        for key, value in attrs.items():
            payload = payloads[key]
            # The view keeps a copy: the caller may go on mutating its own value.
            copied = fresh_copy(value, payload)
            entries.append((f"{base}a{SEP}{key}", head + payload, stamp, copied, payload))
        if record is not None:
            for key, winner in record.attrs.items():
                if key not in attrs and winner.value is not ABSENT_ATTR:
                    entries.append(removed_entry(f"{base}a{SEP}{key}", stamp, epoch))
        self._write(entries)
        view = self.entity(entity_id)
        assert view is not None
        return view

    def update(self, entity_id: str, attrs: Mapping[str, Any]) -> None:
        """Merge top-level ``attrs`` into a declared entity's attributes.

        Concurrent updates of different attributes on different replicas all survive;
        concurrent updates of one attribute converge to one of the values everywhere.

        Raises:
            UnknownEntity: The entity was never declared on this replica.
        """
        self._declared(entity_id)
        if type(attrs) is not dict:
            attrs = self._check_attrs(entity_id, attrs)
        check_key = names.check_attr_key
        encoded = []
        for key, value in attrs.items():
            check_key(key)
            try:
                encoded.append((key, value, encode_payload(value)))
            except InvalidValue:
                encode_payload(value, f"attrs.{key}")  # raises again, naming the attribute
                raise
        if not encoded:
            return
        # Stamp after every value was encoded, so a refused update changes nothing.
        now = self._clock()
        stamp = self._next_stamp(now)
        head = stamp_text(stamp - self._epoch)
        base = f"e{SEP}{entity_id}{SEP}a{SEP}"
        doc = self._doc
        if len(encoded) == 1:
            doc.write_one(base + encoded[0][0], head + encoded[0][2])
        else:
            doc.write([(base + key, head + payload) for key, _, payload in encoded])
        view = self._view
        if stamp > view.max_stamp:
            view.max_stamp = stamp
        order = (stamp, self.id, doc.nonce)
        records: list[RecordChange] = []
        changed = False
        for key, value, payload in encoded:
            # The view keeps a copy: the caller may go on mutating its own value.
            winner = Winner(order, fresh_copy(value, payload), payload)
            if view.apply_attr(entity_id, key, winner):
                changed = True
        if changed:
            self._engine.record_changed(entity_id, "a")
            if self._events.records:
                records.append(RecordChange(kind="entity", id=entity_id, local=True))
        self._finish(records, now=now)

    def retract(self, entity_id: str) -> None:
        """Retract an entity: it becomes ``absent`` everywhere once this write arrives.

        Raises:
            UnknownEntity: The entity was never declared on this replica.
        """
        self._declared(entity_id)
        key = f"e{SEP}{entity_id}{SEP}x"
        stamp = self._next_stamp()
        self._write([make_entry(key, stamp, self._epoch, True, "retracted")])

    def observe(
        self, subject: str, *, ok: bool = True, value: Any = None, ttl: float | None = None
    ) -> Observation:
        """Record this replica's observation of ``subject``; it replaces the previous one.

        Raises:
            InvalidIdentifier: A bad subject id.
            InvalidValue: ``ok`` is not a bool, ``ttl`` not a non-negative number, or
                ``value`` cannot be stored with its exact type.
        """
        names.check_entity_id(subject)
        at = self._clock()
        observation = Observation(
            observer=self.id, subject=subject, ok=ok, value=value, at=at, ttl=ttl
        )
        payload = observation_payload(ok, value, at, ttl)
        # The observation's time is the clock's reading: the step below runs at it too.
        stamp = self._next_stamp(at)
        self._doc.write_one(f"s{SEP}{subject}", stamp_text(stamp - self._epoch) + payload)
        view = self._view
        if stamp > view.max_stamp:
            view.max_stamp = stamp
        records: list[RecordChange] = []
        order = (stamp, self.id, self._doc.nonce)
        # The view may keep the caller's value: readers decode their copy from the payload.
        if view.apply_observation(subject, order, observation, payload):
            self._engine.observation_changed(subject)
            if self._events.records:
                records.append(
                    RecordChange(kind="observation", id=subject, observer=self.id, local=True)
                )
        self._finish(records, now=at)
        return observation

    # -- reading ---------------------------------------------------------------------------

    def status(self, entity_id: str) -> Status:
        """The derived status of an entity on this replica (``absent`` if unknown)."""
        return _STATUS[self._engine.status.get(entity_id, FALSE)]

    def why(self, entity_id: str, *, depth: int = 3) -> dict[str, Any]:
        """A JSON-serialisable tree of the clauses and facts that decided the status.

        ``exists`` dependencies are explained ``depth`` levels deep; below that, chains
        are summarised by their length and the link where the cause lies. Each entity in
        the tree names under ``decided_by`` the atoms its ``reason`` names; the root holds
        ``now``, this replica's clock when the tree was made, to read its instants against.
        """
        return explain(self._engine, entity_id, depth=depth, now=self._clock())

    def derive_all(self, now: float | None = None) -> dict[str, Status]:
        """Statuses recomputed from scratch (not incrementally) at ``now``.

        Leaves the replica's own statuses alone; useful to audit the incremental engine.
        Only entities that are not ``absent`` are listed.
        """
        engine = ExistenceEngine(self._view, self.id, self.predicates, self.max_skew)
        derived = engine.recompute(self._clock() if now is None else now)
        return {entity: _STATUS[value] for entity, value in sorted(derived.items())}

    def exists(self, entity_id: str) -> bool:
        """Whether the entity's status is ``exists``."""
        return self.status(entity_id) is Status.EXISTS

    def entity(self, entity_id: str) -> EntityView | None:
        """The entity's merged record and status, or ``None`` if it was never declared."""
        record = self._view.records.get(entity_id)
        if record is None or not record.declared:
            return None
        return EntityView(
            id=entity_id,
            kind=record.kind,
            attrs=record.attrs_copy(),
            requires=record.requires_copy(),
            owner=record.owner,
            probe=record.probe_copy(),
            status=self.status(entity_id),
            reason=reason(self._engine, entity_id),
        )

    def entities(self) -> dict[str, EntityView]:
        """Every declared entity (retracted ones included, with status ``absent``)."""
        views = {}
        for entity_id in sorted(self._view.records):
            view = self.entity(entity_id)
            if view is not None:
                views[entity_id] = view
        return views

    def entity_ids(self, prefix: str = "") -> list[str]:
        """Ids of declared entities (retracted ones included) that start with ``prefix``."""
        return sorted(
            entity_id
            for entity_id, record in self._view.records.items()
            if entity_id.startswith(prefix) and record.declared
        )

    def observations(self, subject: str | None = None) -> list[Observation]:
        """The latest observation of each observer, of one subject or of all subjects."""
        table = self._view.observations
        subjects = sorted(table) if subject is None else [subject]
        found = []
        for name in subjects:
            for _, winner in sorted(table.get(name, {}).items()):
                observation = winner.copy()
                if observation is not None:  # unreadable ones are counted, see unreadable
                    found.append(observation)
        return found

    # -- replication -----------------------------------------------------------------------

    def state_vector(self) -> bytes:
        """The Yrs state vector of this replica's document, in canonical form.

        Yrs writes clients in hash order; here they are sorted, so that two replicas
        holding the same state give equal bytes.
        """
        return self._doc.canonical_state()

    def clocks(self) -> dict[int, int]:
        """The state vector as ``{client: clock}`` (a cached view: do not modify it)."""
        return self._doc.clocks()

    def delta(self, since: bytes | None = None) -> bytes:
        """A Yrs v1 update holding everything that a peer at state vector ``since`` lacks.

        Raises:
            InvalidUpdate: ``since`` is not a well-formed state vector.
        """
        if since is not None:
            decode_state_vector(since)
        return self._doc.delta(since)

    def merge(self, update: bytes, shape: updates.UpdateShape | None = None) -> list[Change]:
        """Merge a Yrs v1 update from any replica, in any order, any number of times.

        An update whose causal predecessors are missing is held and applied once they
        arrive (within ``max_held_bytes``, see :attr:`held_stats`). A held update that Yrs
        refuses once it is released is dropped and counted; the merge that released it
        goes on.

        ``shape`` is the update's :func:`~.updates.shape` when the caller has parsed it
        already (the sync path parses a received update once, then hands it along).

        Raises:
            InvalidUpdate: The bytes are not a valid update; the replica is unchanged.
        """
        if type(update) is not bytes:
            raise InvalidUpdate(f"an update is bytes, not {type(update).__name__}")
        if len(update) >= BULK_BYTES:
            with collector.paused():
                return self._merge(update, shape)
        return self._merge(update, shape)

    def _merge(self, update: bytes, shape: updates.UpdateShape | None) -> list[Change]:
        gate = self._gate
        needs = gate.admit(update, shape)
        if needs is None:
            return []  # a duplicate, or held until its predecessors arrive
        self._bulk = False
        records: list[RecordChange] = []
        self._integrate(update, records, needs)
        for waiting, waiting_needs in gate.released():
            # The update merged above is in: one that it released and that Yrs refuses
            # is the held update's fault, dropped without failing this merge.
            try:
                self._integrate(waiting, records, waiting_needs)
            except InvalidUpdate as exc:
                gate.refused(waiting, exc)
        if self._rebuild_needed:
            return self._rebuild(records)
        if self._bulk:
            self._bulk = False
            return self._rederive(records)
        return self._finish(records)

    @property
    def unreadable(self) -> int:
        """Entries merged from other writers that could not be read: undecodable, empty,
        nested too deep, beyond the value limits, of the wrong type or shape, or with no
        stamp. A readable entry never stands in for one: an unreadable ``requires`` or
        retracted flag leaves its entity undetermined, and :meth:`why` names the fields."""
        return self._view.malformed + self._view.unreadable

    @property
    def trust(self) -> Trust | None:
        """The trust list of signed mode; ``None`` when signed mode is off."""
        return self._trust

    def set_trust(self, trust: Trust | None, now: float | None = None) -> list[Change]:
        """Apply an edited trust list (``None`` turns signed mode off); return the status
        changes.

        Every entry is checked again under the new list: entries of writers no longer
        listed, or sealed under a key the list no longer gives, stop counting, and the
        containers of writers not listed are retired (as every replica with the same list
        does). This replica's own entries follow the same rule.

        Raises:
            InvalidTrust: Signed mode needs a signing key, and this replica has none.
        """
        if trust is not None and self._signing_key is None:
            raise InvalidTrust(f"signed mode needs the signing key of replica {self.id!r}")
        self._trust = trust
        if trust is None:
            self._door = None
            self._gate.items = False
            self._doc.on_root_item = None
            self._excluded = set()
        else:
            self._doc.seal()  # the audit reads seals: this replica's latest writes need one
            self._open_door(trust)
            self._audit()
            self._retire_untrusted()
        return self._rebuild([], now)

    def _open_door(self, trust: Trust) -> None:
        door = Door(trust)
        door.own_clients = frozenset(self._doc.writer_clients)
        self._door = door
        self._gate.items = True

        def on_root_item(item: tuple[int, int], key: str, container: bool) -> None:
            if container:
                door.own_container(key, item)
            else:
                door.own_root(item, key)

        self._doc.on_root_item = on_root_item

    def _audit(self) -> set[tuple[str, str]]:
        """Check the whole document under the trust list; the entries that fail are
        excluded from the view (see :meth:`.door.Door.audit`)."""
        door = self._door
        if door is None:
            return set()
        admission = door.audit(self._doc.doc.get_update())
        door.commit(admission)
        self._excluded = set(admission.failed)
        return self._excluded

    def _retire_untrusted(self) -> None:
        """Retire the containers of writers the trust list does not give."""
        trust = self._trust
        if trust is None:
            return
        untrusted = []
        for key in self._doc.containers():
            origin = self._writer(key)
            if origin is not None and origin[0] not in trust and key != self._doc.key:
                untrusted.append(key)
        self._doc.retire(untrusted)

    def _reclaim(self) -> None:
        """Move to a fresh container after another writer retired this one (signed mode).

        Anyone may retire a container; the writer keeps its entries and seals them anew.
        """
        doc = self._doc
        doc.own_replaced = False
        kept = list(doc.own_entries.items())
        doc.renew(new_nonce(self._epoch, self._identities))
        self._writer(doc.key)
        if kept:
            doc.write(kept)
        self._rebuild_needed = True

    @property
    def rotations(self) -> int:
        """How many times this replica has rotated its container (see :mod:`.ydoc`)."""
        return self._doc.rotations

    @property
    def held_stats(self) -> HeldStats:
        """The updates held for missing predecessors (count and bytes) and those dropped."""
        return self._gate.stats()

    def _integrate(
        self, update: bytes, records: list[RecordChange], needs: updates.UpdateShape
    ) -> None:
        door = self._door
        if door is not None:
            admission = door.admit(update, needs, self._doc.clocks())
            entries = self._doc.apply(admission.update, needs.ranges)
            door.commit(admission)
        else:
            entries = self._doc.apply(update, needs.ranges)
        self._gate.integrated(needs)
        view = self._view
        excluded = self._excluded
        forgotten = self._forgotten
        if len(entries) >= max(BULK_MERGE, view.size // 2):
            # Most of the view changes (a full state merged into a young replica): deriving
            # every status anew afterwards costs less than keeping each one up to date.
            self._bulk = True
        note = self._record if self._bulk else self._note
        writers = self._writers
        for writer, key, text in entries:
            origin = writers[writer] if writer in writers else self._writer(writer)
            if writer in forgotten or key[:2] == SEAL:
                continue
            if key[:1] == TOMBSTONE:
                named = parse_tombstone(key)
                if named is not None:
                    if self._learn_tombstone(named):
                        self._rebuild_needed = True
                    continue
            if origin is None:
                view.malformed += 1
                continue
            if excluded:
                excluded.discard((writer, key))  # let in by the door: it verifies
            changed = view.apply(*origin, key, text)
            if changed is not None:
                note(changed, records, local=False)
        for writer, kept in self._doc.rotated:
            if writer not in forgotten:
                self._left_behind(writer, kept, records)
        if door is not None and self._doc.own_replaced and self._doc.key not in forgotten:
            self._reclaim()
        if self._doc.retired_seen:
            # A retired container's entries leave the view, as they left the document: a
            # replica that reads the document afresh does not see them either.
            self._rebuild_needed = True
        if view.max_stamp > self._stamp:
            self._stamp = view.max_stamp

    def tick(self, now: float | None = None) -> list[Change]:
        """Re-derive what the passing of time affects; return the status changes.

        Entities whose observations went stale are re-evaluated, and so is every entity
        whose constraint calls a predicate (predicates may depend on anything).
        """
        if self.forget_after is not None:
            moment = self._clock() if now is None else now
            # A replica that has not run for a whole window may hold a stale view (it was
            # down, and has not heard from its peers yet): it leaves the decision to others.
            if moment >= self._next_forget_check and moment - self._started / 1000 >= (
                self.forget_after
            ):
                self._next_forget_check = moment + min(60.0, self.forget_after / 10)
                due = forgetting.due(
                    self._view, self._live_containers(), moment, self.forget_after, self.id
                )
                if due:
                    return self.forget(*sorted(due), now=moment)
        return self._finish([], now=now, volatile=True)

    # -- forgetting (see :mod:`.forgetting`) ----------------------------------------------

    def forget(self, *replica_ids: str, now: float | None = None) -> list[Change]:
        """Forget replicas on every replica: their records and observations stop counting.

        Writes a tombstone for every container of theirs that this replica knows and
        retires those containers from the document; the tombstones replicate like any
        write, and every replica that merges them forgets alike. A forgotten replica that
        returns starts with a fresh container and is welcomed as new.

        Raises:
            InvalidValue: A replica id is malformed, or it is this replica's own.
        """
        for replica_id in replica_ids:
            names.check_replica_id(replica_id)
            if replica_id == self.id:
                raise InvalidValue(f"replica {self.id!r} cannot forget itself")
        wanted = set(replica_ids)
        keys = [
            key
            for key in self._doc.containers()
            if key not in self._forgotten
            and (origin := self._writer(key)) is not None
            and origin[0] in wanted
        ]
        if not keys:
            return self._finish([], now=now)
        self._doc.write([(tombstone_key(key), "At") for key in keys])
        self._forgotten.update(keys)
        self._forgotten_digests.update(forgetting.digest(key) for key in keys)
        self._doc.retire(keys)
        return self._rebuild([], now=now)

    def _learn_tombstone(self, named: str) -> bool:
        """Note a tombstone's digest; whether it was new. The container it names, if this
        replica knows it, is forgotten now; one it learns of later, when it first sees it
        (see :meth:`_writer`)."""
        if named in self._forgotten_digests:
            return False
        self._forgotten_digests.add(named)
        writer = self._by_digest.get(named)
        if writer is not None:
            self._forgotten.add(writer)
        return True

    def forgotten(self) -> set[str]:
        """The ids of replicas with at least one forgotten container."""
        return {origin[0] for key in self._forgotten if (origin := self._writer(key))}

    def _live_containers(self) -> dict[str, list[float]]:
        """replica id -> the start times of its containers that are not forgotten (in
        signed mode, of those that hold a verified seal: an empty container proves
        nothing)."""
        found: dict[str, list[float]] = {}
        door = self._door
        own = self._doc.key
        for key in self._doc.containers():
            origin = self._writer(key)
            if origin is None or key in self._forgotten:
                continue
            if door is not None and key != own and not door.sealed(key):
                continue
            found.setdefault(origin[0], []).append(origin[2] / 1000)
        return found

    def _rebuild(self, records: list[RecordChange], now: float | None = None) -> list[Change]:
        """Rebuild the view without the forgotten containers and derive every status anew.

        Forgetting takes away winning entries, which a last-writer-wins view cannot undo
        in place; it is rare, so the view is rebuilt from the document. If this replica's
        own container was forgotten, it moves to a fresh one first.
        """
        self._rebuild_needed = False
        doc = self._doc
        doc.pruned = []  # the view is rebuilt from what the container holds
        if doc.key in self._forgotten:
            kept = [(key, text) for key, text in doc.own_entries.items() if key[:1] == TOMBSTONE]
            nonce = new_nonce(self._epoch, self._identities)
            doc.renew(nonce)
            self._writer(doc.key)
            if kept:
                doc.write(kept)
        view = self._view
        view.__init__()  # type: ignore[misc]  # the engine holds this very view
        own = [(doc.key, key, text) for key, text in doc.own_entries.items()]
        excluded = self._excluded
        for writer, key, text in [*doc.scan(), *own]:
            origin = self._writer(writer)
            if (
                writer in self._forgotten
                or key[:2] == SEAL
                or parse_tombstone(key) is not None
                or (excluded and (writer, key) in excluded)
            ):
                continue
            if origin is None:
                view.malformed += 1
            else:
                view.apply(*origin, key, text)
        if self._events.records:
            # The node re-declares itself when its own record is no longer its own.
            records.append(RecordChange(kind="entity", id=self.replica_entity, local=False))
        changes = self._rederive(records, now)
        if self._declares_self:
            record = view.records.get(self.replica_entity)
            if record is None or not record.live:
                self.declare(self.replica_entity, kind="replica")
        return changes

    def _rederive(self, records: list[RecordChange], now: float | None = None) -> list[Change]:
        """Derive every status anew; deliver the records and the status changes."""
        if self._doc.pruned:
            self._unprune(records)
        engine = self._engine
        before = dict(engine.status)
        moment = self._clock() if now is None else now
        after = engine.recompute(moment)
        entities = sorted(set(before) | set(after), key=lambda e: (engine.level.get(e, 0), e))
        changes = [
            Change(
                entity=entity_id,
                before=_STATUS[before.get(entity_id, FALSE)],
                after=_STATUS[after.get(entity_id, FALSE)],
                reason=reason(engine, entity_id),
            )
            for entity_id in entities
            if before.get(entity_id, FALSE) != after.get(entity_id, FALSE)
        ]
        self._events.deliver(records, changes)
        return changes

    def next_deadline(self) -> float | None:
        """The earliest time at which some status may change with time alone."""
        deadline = self._engine.next_deadline()
        if self.forget_after is None:
            return deadline
        check = self._next_forget_check
        return check if deadline is None else min(deadline, check)

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` for every status change; returns an unsubscribe function."""
        return self._events.subscribe(self._events.changes, callback)

    def subscribe_records(self, callback: RecordCallback) -> Callable[[], None]:
        """Call ``callback(record_change)`` whenever a replicated record changes."""
        return self._events.subscribe(self._events.records, callback)

    # -- internals -------------------------------------------------------------------------

    def _next_stamp(self, now: float | None = None) -> int:
        if now is None:
            now = self._clock()
        wall = int(now * 1000) if math.isfinite(now) else 0
        stamp = self._stamp + 1
        if wall > stamp:
            stamp = wall
        self._stamp = stamp
        return stamp

    def _write(self, entries: list[Entry]) -> None:
        self._doc.write([(entry[0], entry[1]) for entry in entries])
        records: list[RecordChange] = []
        view = self._view
        nonce = self._doc.nonce
        for key, _, stamp, value, payload in entries:
            changed = view.apply_parsed(self.id, nonce, key, stamp, value, payload)
            if changed is not None:
                self._note(changed, records, local=True)
        self._finish(records)

    def _note(
        self,
        changed: tuple[str, str | None, str],
        records: list[RecordChange],
        *,
        local: bool,
    ) -> None:
        subject, observer, field = changed
        if observer is None:
            self._engine.record_changed(subject, field)
        else:
            self._engine.observation_changed(subject)
        self._record(changed, records, local=local)

    def _record(
        self,
        changed: tuple[str, str | None, str],
        records: list[RecordChange],
        *,
        local: bool,
    ) -> None:
        """:meth:`_note` without telling the engine (statuses are derived anew after)."""
        if not self._events.records:
            return
        subject, observer, _ = changed
        if observer is None:
            records.append(RecordChange(kind="entity", id=subject, local=local))
        else:
            records.append(
                RecordChange(kind="observation", id=subject, observer=observer, local=local)
            )

    def _finish(
        self,
        records: list[RecordChange],
        *,
        now: float | None = None,
        volatile: bool = False,
    ) -> list[Change]:
        if self._doc.pruned:
            self._unprune(records)
        engine = self._engine
        steps = engine.step(self._clock() if now is None else now, volatile=volatile)
        if not steps and not records and not self._events.pending:
            return []
        changes = [
            Change(
                entity=entity_id,
                before=_STATUS[before],
                after=_STATUS[after],
                reason=reason(engine, entity_id),
            )
            for entity_id, before, after in steps
        ]
        self._events.deliver(records, changes)
        return changes

    # -- leaving observations behind (see :mod:`.pruning`) ----------------------------------

    def _prunable(self, own: dict[str, str]) -> list[str]:
        """The own observations a rotation leaves behind (called by the document)."""
        return pruning.prunable(
            own,
            self._view,
            self.id,
            self._epoch,
            self._clock(),
            self.observation_grace,
            self.forgotten(),
        )

    def _unprune(self, records: list[RecordChange]) -> None:
        """Take the observations this replica's last rotation left behind out of its view."""
        pruned = self._doc.pruned
        self._doc.pruned = []
        view = self._view
        own = self._doc.own_entries
        for key in pruned:
            if key in own:
                continue  # written again since: the view holds the new entry
            subject = key[len(pruning.OBSERVATION) :]
            if view.remove_observation(subject, self.id):
                self._note((subject, self.id, ""), records, local=True)

    def _left_behind(self, writer: str, kept: set[str], records: list[RecordChange]) -> None:
        """Take out of the view what a peer's rotated container no longer holds.

        Only observations are ever left behind: those of the rotated container's writer
        whose winning entry came from that container and whose key the fresh container
        lacks. A replica's earlier incarnation may still hold one (rare: restores adopt and
        drop them); its entry then wins again.
        """
        origin = self._writer(writer)
        if origin is None:
            return
        observer, nonce, _ = origin
        view = self._view
        subjects = view.observed_by.get(observer)
        if not subjects:
            return
        prefix = pruning.OBSERVATION
        missing = [subject for subject in subjects if prefix + subject not in kept]
        if not missing:
            return
        live = {key for key in self._doc.containers() if key not in self._forgotten}
        live.discard(writer)
        # The winner came from the rotated container, or from a container of the same
        # replica that is no longer in the document (an earlier incarnation, retired).
        gone = [
            subject
            for subject in missing
            if (won := view.observations[subject][observer].order[2]) == nonce
            or writer_key(observer, won) not in live
        ]
        if not gone:
            return
        others = [
            (key, found)
            for key in live
            if (found := self._writer(key)) is not None and found[0] == observer
        ]
        for subject in gone:
            view.remove_observation(subject, observer)
            for key, found in others:
                text = self._doc.entry(key, prefix + subject)
                if text is not None:
                    view.apply(*found, prefix + subject, text)
            self._note((subject, observer, ""), records, local=False)

    def _writer(self, key: str) -> tuple[str, str, int] | None:
        """(replica id, nonce, epoch) of a container key; ``None`` if malformed."""
        try:
            return self._writers[key]
        except KeyError:
            pass
        parsed = split_writer_key(key)
        epoch = None if parsed is None else nonce_epoch(parsed[1])
        origin = None if parsed is None or epoch is None else (parsed[0], parsed[1], epoch)
        self._writers[key] = origin
        named = forgetting.digest(key)
        self._by_digest[named] = key
        if named in self._forgotten_digests:
            self._forgotten.add(key)
        return origin

    def _declared(self, entity_id: str) -> EntityRecord:
        names.check_entity_id(entity_id)
        record = self._view.records.get(entity_id)
        if record is None or not record.declared:
            raise UnknownEntity(f"entity {entity_id!r} is not declared on replica {self.id!r}")
        return record

    @staticmethod
    def _check_attrs(entity_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(attrs, Mapping):
            raise InvalidValue(f"attrs of {entity_id!r} must be a mapping of str to values")
        for key in attrs:
            names.check_attr_key(key)
        return dict(attrs)

    @staticmethod
    def _check_requires(entity_id: str, requires: Any) -> Any:
        if requires is None:
            return None
        return check_constraint(requires, f"requires of {entity_id!r}")
