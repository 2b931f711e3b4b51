"""A deterministic, in-process network of real replicas for convergence benchmarks.

N :class:`~sphaera_crdt.Replica` objects gossip as nodes do (the decisions of
:mod:`sphaera_crdt.core.gossip`, the sync bodies of :mod:`sphaera_crdt.core.sync`) over a
simulated network with latency, loss, duplication, reordering, partitions and crashes,
on a simulated clock. The same seed gives the same
figures in any process. See ``benchmarks/README.md`` for the figures and how to read them.

Example::

    from sphaera_crdt.sim import Scenario, run_scenario

    result = run_scenario(Scenario(strategy="gossip", replicas=20, fanout=2, loss=0.1))
    print(result.figures["state"]["rounds"])
"""

from .runner import RunResult, Scenario, run_scenario
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "RunResult", "Scenario", "run_scenario"]
