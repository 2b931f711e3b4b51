"""Forgetting departed replicas: tombstones, and the rule that every replica applies alike.

Theory of operation
-------------------
A replica is forgotten container by container. A *tombstone* is an entry that any replica
writes into its own container, under the key ``f <digest>``: it names one container of the
forgotten replica by a digest of its writer key (see :mod:`.ydoc` and :func:`digest`).
Tombstones are replicated data like any other entry and are never withdrawn, so the set of
forgotten containers only grows, and two replicas that hold the same entries hold the same set.
Every replica skips the entries of a forgotten container when it builds its merged view:
the forgotten replica's records and observations stop counting everywhere alike. The
replica that writes a tombstone also retires the container in the document (its root key
is overwritten, see :meth:`.ydoc.DocumentAdapter.retire`), which turns its items into
garbage-collected ranges on every replica: the state no longer carries it.

Explicit forget (``Replica.forget``) writes tombstones for every container of the replica
that the writer knows. A container it did not know yet (written concurrently) is not
covered: it is forgotten by the next forget, timed or explicit.

Timed forget is decided from replicated data only. The *last sign of life* of a replica
is the greatest of:

- the epoch of each of its live containers (the time its writer started, in the nonce);
- the time ``at`` of every observation it wrote (a running node observes its peers at
  every exchange);
- the time ``at`` of every observation that says ``ok`` about ``replica:<id>``.

A replica whose last sign of life is more than ``window`` seconds before ``now`` is due
to be forgotten (:func:`due`). This is a pure function of the merged view and ``now``:
replicas holding the same state and evaluating at the same time agree, and replicas whose
clocks differ by ``d`` decide within ``d`` of each other. The first to decide writes the
tombstones, which then travel like any write, so the disagreement lasts no longer than
clock skew plus one gossip round. A replica never forgets itself, and one that has not
been running for a whole window does not apply the rule at all: after a long outage its
view is stale until gossip catches up, and every peer would look silent to it.

A forgotten replica that is still running sees the tombstone naming its container: it
moves to a fresh container (a new nonce) and declares itself again, so it is welcomed as a
new writer. One that returns later starts with a fresh container anyway (every start does).
"""

from __future__ import annotations

import base64
import hashlib
import string
from collections.abc import Iterable, Mapping
from typing import Final

from .records import SEP, MergedView

__all__ = ["TOMBSTONE", "digest", "due", "last_signs", "parse_tombstone", "tombstone_key"]

#: The kind of a tombstone entry key.
TOMBSTONE: Final = "f"
REPLICA_PREFIX: Final = "replica:"
_DIGEST_LENGTH: Final = 12
_DIGEST_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_")


def digest(writer: str) -> str:
    """The name a tombstone gives container ``writer``: 72 bits of its BLAKE2b hash.

    A tombstone is never withdrawn, so its size is paid for as long as the cluster lives;
    the digest is 12 characters where the writer key is 20 to 80. Naming another
    container by mistake would take a second preimage (2**72 work), and two of a cluster's
    containers colliding by chance would take about 2**36 of them.
    """
    hashed = hashlib.blake2b(writer.encode("utf-8", "surrogatepass"), digest_size=9)
    return base64.urlsafe_b64encode(hashed.digest()).decode("ascii")


def tombstone_key(writer: str) -> str:
    """The entry key of the tombstone of container ``writer`` (``<replica id> SEP <nonce>``)."""
    return f"{TOMBSTONE}{SEP}{digest(writer)}"


def parse_tombstone(key: str) -> str | None:
    """The digest of the container a tombstone entry names, or ``None`` if ``key`` is no
    tombstone. A tombstone that names the writer key in full (the earlier layout) is read
    as its digest."""
    if key[:2] != TOMBSTONE + SEP:
        return None
    named = key[2:]
    if SEP in named:
        replica_id, _, nonce = named.rpartition(SEP)
        return digest(named) if replica_id and nonce else None
    return named if len(named) == _DIGEST_LENGTH and _DIGEST_CHARS.issuperset(named) else None


def last_signs(view: MergedView, containers: Mapping[str, Iterable[float]]) -> dict[str, float]:
    """The last sign of life of every replica (see the module's docstring).

    Args:
        view: The merged view (forgotten containers already left out).
        containers: replica id -> the start times (epochs, in seconds) of its live
            containers.
    """
    signs: dict[str, float] = {}
    for replica_id, starts in containers.items():
        for start in starts:
            if start > signs.get(replica_id, -1e300):
                signs[replica_id] = start
    for subject, by_observer in view.observations.items():
        about = subject[len(REPLICA_PREFIX) :] if subject.startswith(REPLICA_PREFIX) else None
        for observer, winner in by_observer.items():
            observation = winner.observation
            if observation is None:
                continue
            at = observation.at
            if observer in signs and at > signs[observer]:
                signs[observer] = at
            if about is not None and observation.ok and about in signs and at > signs[about]:
                signs[about] = at
    return signs


def due(
    view: MergedView,
    containers: Mapping[str, Iterable[float]],
    now: float,
    window: float,
    self_id: str,
) -> set[str]:
    """The replicas to forget at ``now``: last sign of life more than ``window`` ago.

    Only replicas that still have a live container are considered (the others are already
    forgotten), and never ``self_id``.
    """
    return {
        replica_id
        for replica_id, last in last_signs(view, containers).items()
        if replica_id != self_id and now - last > window
    }
