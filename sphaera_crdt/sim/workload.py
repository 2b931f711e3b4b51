"""The workload: a base state every replica starts with, then a burst of changes.

The base is ``entities`` entities declared by a replica outside the simulation
(``seed``), so that all replicas start with identical state and statuses. Their
constraints make statuses depend on each other and on time:

* 15% have no constraint (they exist once declared);
* 55% require an earlier entity to exist (a forest of dependency chains);
* 30% also require a fresh observation of themselves (``observed(e, within=W)``); the
  base has none, so they start ``absent``.

A change is one transaction at a random replica (the writer): an attribute update (50%;
statuses unaffected), an observation of an entity that requires one (25%; it and its
dependents come into existence until the observation ages out, in simulated time),
a retraction (15%; the entity and its dependents disappear) or a re-declaration (10%;
a retracted entity comes back). Concurrent changes of one entity conflict and are
resolved by the replicas' last-writer-wins registers, as in a real cluster.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..core.constraints import all_of, exists, observed
from ..core.replica import Replica
from ..errors import UnknownEntity
from .identity import IdentitySource

__all__ = ["Change", "EntitySpec", "Workload", "apply_change", "build_workload"]

#: Seconds an observation counts for ``observed(e, within=...)``.
OBSERVED_WITHIN: Final = 30.0
#: Seconds an observation made by a change lives (its TTL).
OBSERVATION_TTL: Final = 20.0
SEED_REPLICA: Final = "seed"

Operation = Literal["update", "observe", "retract", "declare"]
_OPERATIONS: Final[tuple[tuple[Operation, float], ...]] = (
    ("update", 0.50),
    ("observe", 0.25),
    ("retract", 0.15),
    ("declare", 0.10),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class EntitySpec:
    """One entity of the base state."""

    id: str
    requires: dict[str, Any] | None
    observed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One transaction of the workload, made by replica number ``writer``."""

    writer: int
    operation: Operation
    entity: str
    value: int

    def __post_init__(self) -> None:
        if self.writer < 0:
            raise ValueError("writer is a replica number")


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """Base entities, the Yrs update that declares them, and the changes."""

    entities: tuple[EntitySpec, ...]
    base: bytes
    changes: tuple[Change, ...]

    def spec(self, entity_id: str) -> EntitySpec:
        return self.entities[int(entity_id.removeprefix("e"))]

    @property
    def entity_ids(self) -> list[str]:
        return [spec.id for spec in self.entities]


def build_workload(
    *, replicas: int, entities: int, changes: int, rng: random.Random, identities: IdentitySource
) -> Workload:
    """Draw a workload for ``replicas`` replicas from ``rng``.

    Raises:
        ValueError: No replicas, no entities, or a negative number of changes.
    """
    if replicas < 1 or entities < 1 or changes < 0:
        raise ValueError("a workload needs replicas, entities and a non-negative change count")
    specs = []
    for index in range(entities):
        draw = rng.random()
        parent = f"e{rng.randrange(index)}" if index else None
        requires: dict[str, Any] | None
        needs_observation = draw >= 0.70
        if needs_observation:
            own = observed(f"e{index}", within=OBSERVED_WITHIN)
            requires = own if parent is None else all_of(exists(parent), own)
        elif draw < 0.15 or parent is None:
            requires = None
        else:
            requires = exists(parent)
        specs.append(EntitySpec(id=f"e{index}", requires=requires, observed=needs_observation))
    seed = Replica(SEED_REPLICA, clock=lambda: 0.0, declare_self=False, identities=identities)
    for spec in specs:
        seed.declare(spec.id, kind="service", attrs={"v": 0}, requires=spec.requires)
    base = seed.delta()
    observable = [spec.id for spec in specs if spec.observed]
    drawn = []
    names = [name for name, _ in _OPERATIONS]
    weights = [weight for _, weight in _OPERATIONS]
    for number in range(changes):
        operation = rng.choices(names, weights)[0]
        if operation == "observe" and not observable:
            operation = "update"
        entity = rng.choice(observable) if operation == "observe" else f"e{rng.randrange(entities)}"
        value = int(rng.random() < 0.8) if operation == "observe" else number + 1
        drawn.append(
            Change(writer=rng.randrange(replicas), operation=operation, entity=entity, value=value)
        )
    return Workload(entities=tuple(specs), base=base, changes=tuple(drawn))


def apply_change(replica: Replica, workload: Workload, change: Change) -> bool:
    """Make ``change`` on ``replica`` (one transaction); false if the entity is unknown there."""
    try:
        if change.operation == "update":
            replica.update(change.entity, {"v": change.value})
        elif change.operation == "observe":
            replica.observe(change.entity, ok=bool(change.value), ttl=OBSERVATION_TTL)
        elif change.operation == "retract":
            replica.retract(change.entity)
        else:
            spec = workload.spec(change.entity)
            replica.declare(
                spec.id, kind="service", attrs={"v": change.value}, requires=spec.requires
            )
    except UnknownEntity:
        return False
    return True
