"""Which of its own observations a replica leaves behind when it rotates its container.

Theory of operation
-------------------
A replica writes one observation per subject it ever observed, and each stays in its
container for as long as the container lives: a replica that probed a thousand short-lived
services carries a thousand observations of subjects that are gone. Rotation (see
:mod:`.ydoc`) rewrites every live entry into a fresh container anyway, so it is where a
replica leaves behind the observations that can no longer count as evidence:

- an observation whose ttl ran out more than ``grace`` seconds ago: ``observed`` never
  counts it again (a clause counts an observation only within its ttl), and the grace
  keeps it for a while for :meth:`~.replica.Replica.why` ("stale for 12 s");
- an observation of a subject that no longer exists, once it cannot count either: the
  subject's record was retracted, or it is the record of a forgotten replica, and the
  observation's ttl ran out (with no ttl: it is older than ``grace``).

Only the writer decides, from its own clock, and only about its own entries; the fresh
container is the decision. A reader that merges the rotation removes, from its view, the
observations that the writer's previous container held and the fresh one does not
(:meth:`.replica.Replica.merge`), so replicas that merged the rotation agree with one that
reads the document from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Final

from .forgetting import REPLICA_PREFIX
from .records import SEP, EntityRecord, MergedView, split_entry

__all__ = ["DEFAULT_GRACE", "OBSERVATION", "prunable"]

#: Seconds an observation is kept past its ttl before a rotation leaves it behind.
DEFAULT_GRACE: Final = 600.0
#: The kind prefix of an observation's entry key.
OBSERVATION: Final = "s" + SEP


def prunable(
    own: Mapping[str, str],
    view: MergedView,
    observer: str,
    epoch: int,
    now: float,
    grace: float,
    forgotten: Set[str],
) -> list[str]:
    """The entry keys of ``observer``'s own observations that a rotation leaves behind.

    Args:
        own: The writer's live entries (entry key -> text).
        view: The merged view; an entry is judged by its winning observation there, and
            only when the view holds exactly this entry, same stamp and payload (one written
            in the same transaction as the rotation is not in the view yet: it is kept).
        observer: The writer's replica id.
        epoch: The writer's stamp epoch (to read the entries' stamps).
        now: The writer's clock.
        grace: Seconds past the ttl an observation is kept.
        forgotten: Ids of forgotten replicas.
    """
    dropped: list[str] = []
    observations = view.observations
    records = view.records
    for key, text in own.items():
        if not key.startswith(OBSERVATION):
            continue
        subject = key[len(OBSERVATION) :]
        winner = observations.get(subject, {}).get(observer)
        if winner is None or winner.observation is None:
            continue
        entry = split_entry(text, epoch)
        if entry is None or entry[0] != winner.order[0] or entry[1] != winner.payload:
            continue
        observation = winner.observation
        age = now - observation.at
        ttl = observation.ttl
        if ttl is not None and age > ttl + grace:
            dropped.append(key)
            continue
        expired = age > ttl if ttl is not None else age > grace
        if expired and _gone(subject, records, forgotten):
            dropped.append(key)
    return dropped


def _gone(subject: str, records: Mapping[str, EntityRecord], forgotten: Set[str]) -> bool:
    """Whether ``subject`` no longer exists as a record: retracted, or a forgotten replica."""
    record = records.get(subject)
    if record is not None:
        return record.declared and record.retracted
    return subject.startswith(REPLICA_PREFIX) and subject[len(REPLICA_PREFIX) :] in forgotten
