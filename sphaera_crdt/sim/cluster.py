"""Simulated replicas: the real :class:`Replica`, its timers, its store, crashes and restarts.

Every replica is built by :meth:`Replica.restore` from the workload's base update, with
``identities`` drawn from the simulation's seed and ``clock=loop.clock``, so its freshness
deadlines, stamps and TTLs run in simulated time. After anything happens to a replica (a
local write, a merge, a restart) :meth:`SimCluster.touched` refreshes the agreement
counts and arms a tick at the replica's next deadline, as a node's timer does.

A crash stops a replica: messages to it are dropped and whatever it had in flight is
forgotten. A *durable* replica keeps a store (its updates as :meth:`Replica.on_update`
streams them, as a node's log does) and restarts with :meth:`Replica.restore` from it;
any other restarts empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.lib0 import decode_state_vector
from ..core.replica import Replica
from ..core.views import Change, Status
from .clock import EventLoop
from .identity import IdentitySource
from .measurements import AgreementTracker
from .workload import Workload, apply_change

__all__ = ["SimCluster", "SimNode", "replica_name"]


def replica_name(index: int) -> str:
    """The replica id of replica number ``index``."""
    return f"r{index:04d}"


@dataclass(slots=True, eq=False)
class SimNode:
    """One simulated replica and what the simulator keeps about it."""

    index: int
    id: str
    replica: Replica
    store: list[bytes] | None
    #: the decoded state vector, as of the last :meth:`SimCluster.touched`
    sv: dict[int, int] = field(default_factory=dict)
    up: bool = True
    incarnation: int = 0
    tick_at: float | None = None
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)


class SimCluster:
    """``size`` replicas starting from the workload's base state.

    Args:
        loop: The event loop (its clock is every replica's clock).
        size: Number of replicas.
        workload: The base state and the changes.
        identities: Seeded client ids and nonces.
        durable: Numbers of the replicas that keep a store.
    """

    def __init__(
        self,
        loop: EventLoop,
        size: int,
        workload: Workload,
        identities: IdentitySource,
        durable: frozenset[int] = frozenset(),
    ) -> None:
        self.loop = loop
        self.workload = workload
        self.identities = identities
        self.nodes: list[SimNode] = []
        #: the Yrs update of every transaction the workload's writes committed
        self.written: list[bytes] = []
        self.tracker: AgreementTracker | None = None
        #: called with a replica's number after each of its local changes
        self.on_local_change: Callable[[int], object] = lambda index: None
        #: called with a replica's number after it restarted
        self.on_restart: Callable[[int], object] = lambda index: None
        #: called with a replica's number when it crashes
        self.on_crash: Callable[[int], object] = lambda index: None
        for index in range(size):
            replica = self._restore(replica_name(index), [workload.base])
            store = [workload.base] if index in durable else None
            self.nodes.append(
                SimNode(
                    index=index,
                    id=replica.id,
                    replica=replica,
                    store=store,
                    sv=decode_state_vector(replica.state_vector()),
                )
            )

    def attach(self, tracker: AgreementTracker) -> None:
        """Report states and status changes to ``tracker`` from now on."""
        self.tracker = tracker
        for node in self.nodes:
            self._subscribe(node)

    def initial(self) -> tuple[dict[int, int], dict[str, Status]]:
        """The state vector and statuses every replica starts with."""
        replica = self.nodes[0].replica
        statuses = {entity: replica.status(entity) for entity in self.workload.entity_ids}
        return decode_state_vector(replica.state_vector()), statuses

    # -- the replicas ----------------------------------------------------------------------

    def _restore(self, replica_id: str, updates: list[bytes]) -> Replica:
        return Replica.restore(
            replica_id,
            updates,
            clock=self.loop.clock,
            declare_self=False,
            identities=self.identities,
        )

    def _subscribe(self, node: SimNode) -> None:
        tracker = self.tracker
        if tracker is not None:
            index = node.index

            def report(change: Change) -> None:
                tracker.status_changed(index, change)

            node.unsubscribe.append(node.replica.subscribe(report))
        if node.store is not None:
            node.unsubscribe.append(node.replica.on_update(node.store.append))

    def touched(self, index: int) -> None:
        """Replica ``index`` may hold new state: recount agreement, re-arm its timer."""
        node = self.nodes[index]
        node.sv = dict(node.replica.clocks())  # a copy: the replica updates its own in place
        if self.tracker is not None:
            self.tracker.state_changed(index, node.sv)
        self.arm(node)

    def arm(self, node: SimNode) -> None:
        """Tick the replica at its next freshness deadline, as a node's timer does."""
        deadline = node.replica.next_deadline()
        if deadline is None or (node.tick_at is not None and node.tick_at <= deadline):
            return
        node.tick_at = deadline
        self.loop.at(deadline, self._tick, node, node.incarnation, deadline)

    def _tick(self, node: SimNode, incarnation: int, deadline: float) -> None:
        if not node.up or node.incarnation != incarnation or node.tick_at != deadline:
            return
        node.tick_at = None
        node.replica.tick()
        self.arm(node)

    # -- the workload ----------------------------------------------------------------------

    def write(self, change_number: int) -> bool:
        """Make one change of the workload at its writer; false if the writer is down."""
        change = self.workload.changes[change_number]
        node = self.nodes[change.writer]
        if not node.up:
            return False
        unsubscribe = node.replica.on_update(self.written.append)
        try:
            applied = apply_change(node.replica, self.workload, change)
        finally:
            unsubscribe()
        if not applied:
            return False
        self.touched(node.index)
        if self.tracker is not None:
            client = node.replica.client_id
            self.tracker.track_change(client, node.sv.get(client, 0), self.loop.now)
        self.on_local_change(node.index)
        return True

    # -- crashes ---------------------------------------------------------------------------

    def crash(self, index: int) -> None:
        """Stop replica ``index``: it drops everything in flight and keeps only its store."""
        node = self.nodes[index]
        if not node.up:
            return
        node.up = False
        node.incarnation += 1
        node.tick_at = None
        for unsubscribe in node.unsubscribe:
            unsubscribe()
        node.unsubscribe.clear()
        if self.tracker is not None:
            self.tracker.node_down(index)
        self.on_crash(index)

    def restart(self, index: int) -> None:
        """Start replica ``index`` again: restored from its store, or empty without one."""
        node = self.nodes[index]
        if node.up:
            return
        if node.store is not None:
            node.replica = self._restore(node.id, node.store)
            node.store[:] = [node.replica.delta()]  # the snapshot a restart compacts to
        else:
            node.replica = Replica(
                node.id, clock=self.loop.clock, declare_self=False, identities=self.identities
            )
        node.up = True
        node.incarnation += 1
        node.sv = decode_state_vector(node.replica.state_vector())
        self._subscribe(node)
        if self.tracker is not None:
            replica = node.replica
            self.tracker.node_up(
                index,
                node.sv,
                {entity: replica.status(entity) for entity in self.workload.entity_ids},
            )
        self.arm(node)
        self.on_restart(index)
