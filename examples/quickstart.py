"""Two replicas converge without a coordinator.

Run: python examples/quickstart.py
"""

from __future__ import annotations

from sphaera_crdt import Replica


def main() -> None:
    a = Replica("a")
    b = Replica("b")

    a.declare("db", kind="postgres", attrs={"port": 5432})
    b.declare("cache", kind="redis", attrs={"port": 6379})

    # Each side sends the other what its state vector says it lacks.
    b.merge(a.delta(b.state_vector()))
    a.merge(b.delta(a.state_vector()))

    # Concurrent updates of different attributes of one entity both survive.
    a.update("db", {"role": "primary"})
    b.update("db", {"max_connections": 200})
    b.observe("db", ok=True, value={"latency_ms": 3}, ttl=10)
    b.merge(a.delta(b.state_vector()))
    a.merge(b.delta(a.state_vector()))

    assert a.state_vector() == b.state_vector()
    assert a.entities() == b.entities()
    for view in a.entities().values():
        print(f"{view.id:12} {view.status.value:8} kind={view.kind} attrs={view.attrs}")
    for observation in a.observations("db"):
        print(f"{observation.observer} saw {observation.subject}: ok={observation.ok}")
    print("replicas a and b converged")


if __name__ == "__main__":
    main()
