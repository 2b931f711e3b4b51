"""The ideal epidemic: pure information spread in synchronous rounds, no bytes.

The theory baseline for the gossip's rounds. ``rumors`` pieces of information start at
random replicas; in every round, every replica contacts ``fanout`` distinct random others
at once, with what everyone knew at the start of the round:

* ``push``: the caller tells the callee what it knows;
* ``push-pull``: and the callee tells the caller what it knows.

With ``loss``, a request is lost with that probability (no push, no pull) and so is an
answer (the push happened, the pull did not), as for a simulated exchange. A trial ends
when every replica knows every rumor; it reports the rounds that took, and for every
rumor the rounds until everyone knew it.

For fanout 1 and no loss, push needs ``log2 N + ln N + O(1)`` rounds (Frieze and
Grimmett; Pittel) and push-pull ``log3 N + O(log log N)`` (Karp, Schindelhauer, Shenker
and Vöcking): :func:`theory_rounds` gives those curves for the plots.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["EpidemicTrial", "Mode", "spread", "theory_rounds"]

Mode = Literal["push", "push-pull"]
#: A trial that has not finished after this many rounds is abandoned.
MAX_ROUNDS: Final = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class EpidemicTrial:
    """One run of the ideal epidemic."""

    rounds: int
    per_rumor: tuple[int, ...]


def spread(
    size: int,
    fanout: int,
    rumors: int,
    rng: random.Random,
    *,
    mode: Mode = "push-pull",
    loss: float = 0.0,
) -> EpidemicTrial:
    """Spread ``rumors`` rumors over ``size`` replicas until everyone knows them all.

    Raises:
        ValueError: Fewer than two replicas, no rumor, a fanout below 1 or loss >= 1.
    """
    if size < 2 or rumors < 1 or fanout < 1 or not 0.0 <= loss < 1.0:
        raise ValueError("need two replicas, a rumor, fanout >= 1 and loss in [0, 1)")
    fanout = min(fanout, size - 1)
    full = (1 << rumors) - 1
    known = [0] * size
    for rumor in range(rumors):
        known[rng.randrange(size)] |= 1 << rumor
    done = [-1] * rumors  # a rumor starts at one replica of at least two
    rounds = 0
    pull = mode == "push-pull"
    while any(mask != full for mask in known):
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise RuntimeError(f"the epidemic did not finish in {MAX_ROUNDS} rounds")
        before = list(known)
        for caller in range(size):
            for callee in _targets(rng, size, caller, fanout):
                if loss and rng.random() < loss:
                    continue
                known[callee] |= before[caller]
                if pull and not (loss and rng.random() < loss):
                    known[caller] |= before[callee]
        for rumor in range(rumors):
            if done[rumor] < 0 and _everyone(known, 1 << rumor):
                done[rumor] = rounds
    return EpidemicTrial(rounds=rounds, per_rumor=tuple(done))


def _everyone(known: list[int], bit: int) -> bool:
    return all(mask & bit for mask in known)


def _targets(rng: random.Random, size: int, caller: int, fanout: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < fanout:
        peer = rng.randrange(size - 1)
        peer += peer >= caller
        if peer not in chosen:
            chosen.append(peer)
    return chosen


def theory_rounds(size: float, mode: Mode) -> float:
    """The leading terms of the expected rounds for fanout 1 and no loss."""
    if size < 2:
        return 0.0
    if mode == "push":
        return math.log2(size) + math.log(size)
    return math.log(size, 3) + math.log(max(math.log(size), 1.0))
