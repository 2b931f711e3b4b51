"""Hostile update bytes against a replica, run in a child process.

Some inputs make Yrs panic inside a transaction; if that takes the interpreter down, it
must fail one test with a clear message, not kill the whole test run. ``test_merge`` runs
``python hostile.py fuzz SEED FIRST`` (inputs from index FIRST on) or ``python hostile.py
panic`` and reads one JSON line per input, written before and after each check so that a
crash names its input and the run can resume after it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pycrdt
from support import snapshot

from sphaera_crdt import InvalidUpdate, Replica
from sphaera_crdt.core.lib0 import decode_state_vector, read_varuint


class Fixture:
    """A source replica, the base state a victim holds, and a delta on top of it."""

    def __init__(self) -> None:
        t = [1000.0]
        self.clock: Callable[[], float] = lambda: t[0]
        # Fixed client ids and nonces make the bytes, and so the inputs, the same every run.
        self.source = Replica("src", clock=self.clock, client_id=1001, nonce="5eed")
        self.source.declare("db", kind="pg", attrs={"port": 5432, "big": 2**80, "l": [1, 2.5]})
        self.source.observe("db", ok=True, value={"latency": 3}, ttl=10)
        self.base = self.source.delta()
        base_sv = self.source.state_vector()
        t[0] = 1001.0
        self.source.update("db", {"port": 5433, "role": "primary"})
        self.source.declare("api", attrs={"v": "x" * 40})
        self.source.observe("db", ok=False, value=None)
        self.source.retract("api")
        self.delta = self.source.delta(base_sv)
        self.full = self.source.delta()

    def victim(self) -> Replica:
        victim = Replica("victim", clock=self.clock, client_id=2002, nonce="71c7")
        victim.merge(self.base)
        return victim


def huge_clock(delta: bytes) -> bytes:
    """``delta`` with its first client's start clock replaced by a varint near 2^64."""
    _, pos = read_varuint(delta, 0)  # number of clients
    _, pos = read_varuint(delta, pos)  # number of structs of the first client
    _, pos = read_varuint(delta, pos)  # client id
    _, end = read_varuint(delta, pos)  # start clock
    return delta[:pos] + b"\xff" * 9 + b"\x01" + delta[end:]


def raw_apply_error(base: bytes, data: bytes) -> str | None:
    """What a bare pycrdt ``Doc`` holding ``base`` raises on ``data`` (no sphaera_crdt)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(base)
    try:
        doc.apply_update(data)
    except BaseException as exc:  # PanicException is a BaseException
        return type(exc).__name__
    return None


def hostile_inputs(fixture: Fixture, seed: int) -> Iterator[tuple[str, bytes]]:
    """Truncations, byte mutations, garbage appends, huge varints and random bytes."""
    rng = random.Random(seed)
    sources = {"delta": fixture.delta, "full": fixture.full}
    for name, data in sources.items():
        for cut in sorted(rng.sample(range(len(data)), k=min(40, len(data)))):
            yield f"truncate {name}[:{cut}]", data[:cut]
        for _ in range(120):
            index = rng.randrange(len(data))
            mutated = bytearray(data)
            mutated[index] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            yield f"mutate {name}[{index}]={mutated[index]}", bytes(mutated)
        for _ in range(20):
            yield f"append to {name}", data + rng.randbytes(rng.randrange(1, 32))
        for _ in range(20):
            index = rng.randrange(len(data))
            huge = b"\xff" * rng.randrange(5, 12) + b"\x01"
            yield f"huge varint in {name} at {index}", data[:index] + huge + data[index + 1 :]
        yield f"huge start clock in {name}", huge_clock(data)
    for _ in range(60):
        yield "random", rng.randbytes(rng.randrange(1, 64))


def sync(src: Replica, dst: Replica) -> None:
    dst.merge(src.delta(dst.state_vector()))


def check(fixture: Fixture, label: str, data: bytes, probe: int) -> tuple[bool, str | None]:
    """Merge ``data`` into a fresh victim; return ``(accepted, problem or None)``.

    Either the merge raises :class:`InvalidUpdate` and the victim is unchanged, or it is
    accepted; either way the victim keeps working and a later normal sync converges.
    """
    victim = fixture.victim()
    before = snapshot(victim)
    try:
        victim.merge(data)
    except InvalidUpdate:
        if snapshot(victim) != before:
            return False, "InvalidUpdate, but the replica changed"
        accepted = False
    except BaseException as exc:
        return False, f"raised {type(exc).__name__} (not InvalidUpdate): {exc}"
    else:
        accepted = True
    peer = Replica("peer", clock=fixture.clock, client_id=3003, nonce="9ee5")
    peer.merge(fixture.full)
    victim.declare(f"probe-{probe}", attrs={"from": "victim"})
    peer.declare(f"peer-probe-{probe}", attrs={"from": "peer"})
    try:
        for _ in range(2):
            sync(victim, peer)
            sync(peer, victim)
    except BaseException as exc:
        return accepted, f"a later normal sync raised {type(exc).__name__}: {exc}"
    if decode_state_vector(victim.state_vector()) != decode_state_vector(peer.state_vector()):
        return accepted, "state vectors differ after a normal sync"
    for replica in (victim, peer):
        for name, origin in ((f"probe-{probe}", "victim"), (f"peer-probe-{probe}", "peer")):
            view = replica.entity(name)
            if view is None or view.attrs != {"from": origin}:
                return accepted, f"{name} did not reach {replica.id} after a normal sync"
    # An accepted input may carry altered content under valid ids (Yrs v1 updates have no
    # checksum), which no later sync can repair; a refused one must leave no trace at all.
    if not accepted and (
        victim.entities() != peer.entities() or victim.observations() != peer.observations()
    ):
        return accepted, "refused, yet records differ from the peer's after a normal sync"
    return accepted, None


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main(argv: list[str]) -> int:
    fixture = Fixture()
    if argv[1:] == ["panic"]:
        inputs = [("huge start clock in delta", huge_clock(fixture.delta))]
    else:
        inputs = list(hostile_inputs(fixture, int(argv[2])))
    first = int(argv[3]) if len(argv) > 3 else 0
    _emit(total=len(inputs))
    for index, (label, data) in enumerate(inputs):
        if index < first:
            continue
        _emit(start=index, label=label, data=data.hex(), raw=raw_apply_error(fixture.base, data))
        accepted, problem = check(fixture, label, data, index)
        _emit(done=index, accepted=accepted, problem=problem)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
