"""A small convergence sweep run once per test session, in this process (a few seconds)."""

from __future__ import annotations

import functools

from sphaera_crdt.sim.pools import InProcess
from sphaera_crdt.sim.sweep import Sweep, SweepResult, run_sweep

TINY = Sweep(
    replicas=(4, 8),
    fanouts=(1, 2),
    losses=(0.0, 0.2),
    partitions=(0, 2),
    entities=(4,),
    changes=(3,),
    trials=1,
    ideal_trials=5,
    seed=7,
)


@functools.cache
def tiny_sweep() -> SweepResult:
    """Every strategy at N = 4 and 8, two fanouts, two losses, with and without a
    partition (the document is shared: tests must not change it)."""
    return run_sweep(TINY, pool=InProcess())
