"""Embedding a replica in an asyncio application, with its state kept in SQLite.

The application owns one :class:`~sphaera_crdt.Replica` (only its event loop touches it)
and wires it up the way a node does:

* ``subscribe`` delivers every status change (printed here as it happens);
* a timer task sleeps until ``next_deadline()`` and calls ``tick()`` then, so that an
  entity whose evidence ages out disappears with nobody acting; any change wakes it up to
  re-arm (a new observation moves the deadline);
* ``Persistence`` appends every update the replica commits to a SQLite store in a worker
  thread; after a restart, ``open_replica`` restores the replica from those saved updates.

The story: ``api`` requires that ``db`` exists, is the primary, and was observed healthy
within the last half second. It appears when ``db`` is promoted, disappears by itself half
a second after the last observation, comes back when observed again, and survives a
restart from the store.

Run: python examples/asyncio_app.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from sphaera_crdt import Change, Replica, all_of, attr, exists, observed
from sphaera_crdt.persistence import Persistence, open_replica
from sphaera_crdt.store import SQLiteStore, Store
from sphaera_crdt.why_text import render_why

#: Seconds an observation of db counts as evidence (short, so that the example is quick).
WITHIN = 0.5


class App:
    """An application around one replica: change events, a deadline timer and durability."""

    def __init__(self, replica: Replica, store: Store) -> None:
        self.replica = replica
        self.persistence = Persistence(replica, store)
        self.changes: asyncio.Queue[Change] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._unsubscribe = [
            replica.subscribe(self._on_change),
            # Any record or observation written may bring the next deadline forward.
            replica.subscribe_records(lambda _: self._wake.set()),
        ]
        self._timer = asyncio.create_task(self._run_timer())

    def _on_change(self, change: Change) -> None:
        # Called inside the replica's step: do no I/O on the replica here, hand it on.
        print(f"  change: {change.entity} {change.before} -> {change.after} ({change.reason})")
        self.changes.put_nowait(change)
        self._wake.set()

    async def _run_timer(self) -> None:
        """Tick the replica at its next deadline; re-arm whenever something changed."""
        while True:
            deadline = self.replica.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.replica.now())
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                self.replica.tick()

    async def change_of(self, entity: str) -> Change:
        """The next status change of ``entity`` (within a few seconds, or TimeoutError)."""
        async with asyncio.timeout(5.0):
            while (change := await self.changes.get()).entity != entity:
                pass
        return change

    async def close(self) -> None:
        """Stop the timer, then commit what is pending and close the store."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._timer.cancel()
        try:
            await self._timer
        except asyncio.CancelledError:
            pass
        await self.persistence.close()


def show_why(replica: Replica, entity: str) -> None:
    print(f"  why {entity}:")
    for line in render_why(replica.why(entity)).splitlines():
        print("    " + line)


async def run(data: Path) -> None:
    store = SQLiteStore(data)
    app = App(open_replica("app", store), store)
    replica = app.replica

    print(
        f"declare db (role=replica) and api: requires db exists, db.role == primary, "
        f"db observed ok within {WITHIN} s"
    )
    replica.declare("db", kind="postgres", attrs={"port": 5432, "role": "replica"})
    requires = all_of(
        exists("db"), attr("db", "role", "eq", "primary"), observed("db", within=WITHIN)
    )
    replica.declare("api", kind="service", requires=requires)
    print(f"  api: {replica.status('api')}")

    print("observe db healthy")
    seen = replica.observe("db", ok=True, value={"latency_ms": 3})
    print(f"  api: {replica.status('api')} (db is not the primary yet)")

    print("promote db")
    replica.update("db", {"role": "primary"})
    await app.change_of("api")
    show_why(replica, "api")

    print("wait: nobody acts, the timer ticks at next_deadline()")
    change = await app.change_of("api")
    age = replica.now() - seen.at
    print(f"  api went {change.after} {age:.2f} s after the observation of db")
    show_why(replica, "api")

    print("observe db again")
    replica.observe("db", ok=True, value={"latency_ms": 4})
    await app.change_of("api")

    print("stop: commit to the store and close it")
    await app.close()

    print(f"restart: restore the replica from the updates saved in {data}")
    store = SQLiteStore(data)
    try:
        restored = open_replica("app", store)
        for entity_id in ("db", "api"):
            view = restored.entity(entity_id)
            assert view is not None
            attrs = json.dumps(view.attrs, sort_keys=True)
            print(
                f"  {view.id}: kind={view.kind} attrs={attrs} requires={json.dumps(view.requires)}"
            )
        for seen in restored.observations("db"):
            value = json.dumps(seen.value, sort_keys=True)
            print(f"  observation: {seen.observer} saw {seen.subject} ok={seen.ok} value={value}")
        print(f"  api: {restored.status('api')} (derived anew from the restored state)")
    finally:
        store.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sphaera-example-") as data:
        asyncio.run(run(Path(data)))


if __name__ == "__main__":
    main()
