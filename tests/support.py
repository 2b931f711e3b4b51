"""Helpers shared by the tests: exact-type comparison of stored values, snapshots."""

from __future__ import annotations

from typing import Any

from sphaera_crdt import Replica
from sphaera_crdt.core.lib0 import decode_state_vector


def typed(value: Any) -> Any:
    """A form of ``value`` in which ``1``, ``1.0`` and ``True`` (and ``0.0``, ``-0.0``) differ.

    Plain ``==`` says ``1 == 1.0 == True``; stored values must come back with their exact
    type, so the tests compare this form instead.
    """
    kind = type(value)
    if kind is float:
        return ("float", value.hex())
    if kind is list:
        return ("list", [typed(item) for item in value])
    if kind is dict:
        return ("dict", sorted((key, typed(item)) for key, item in value.items()))
    return (kind.__name__, value)


def snapshot(replica: Replica) -> tuple[dict[int, int], Any, Any, Any]:
    """Everything a caller can read of a replica's replicated state."""
    return (
        decode_state_vector(replica.state_vector()),
        typed({name: view.to_json() for name, view in replica.entities().items()}),
        [typed(observation.to_json()) for observation in replica.observations()],
        replica.delta(),
    )
