"""One real node as the target of hostile inputs, and a blocking HTTP client for it.

The node runs alone with gossip and liveness of an hour, so nothing changes its state but
the requests the test sends: the state before and after a request can be compared
exactly. :meth:`Target.state` is everything a client can read of it: the entities
(records, statuses, reasons) and the node's answer to a sync request from an empty
document, whose STEP2 holds the whole replicated state and whose STEP1 its state vector.
A request answered 4xx must leave both unchanged.

Hypothesis drives these tests with plain functions, so the client here is the standard
library's :mod:`http.client`, one connection per request.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from procs import NodeProcess, Processes

from sphaera_crdt.core.lib0 import write_varuint

from .cluster import vmhwm_kib

__all__ = ["MAX_BODY", "Answer", "Target", "running_target", "sync_frame"]

#: The body cap of the target (the smallest the node accepts is 1 KiB); held updates are
#: capped at 4x this by default.
MAX_BODY: Final = 1024 * 1024
OCTETS: Final = "application/octet-stream"
#: y-protocols: message type SYNC, then STEP1 / STEP2 / UPDATE.
STEP1, STEP2, UPDATE = 0, 1, 2
EMPTY_STATE_VECTOR: Final = b"\x00"


def sync_frame(kind: int, payload: bytes) -> bytes:
    """One y-protocols SYNC message: type byte, sync-type byte, varuint length, payload."""
    return bytes([0, kind]) + write_varuint(len(payload)) + payload


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Target:
    """A node process and the requests the hostile tests send it."""

    def __init__(self, process: NodeProcess) -> None:
        self.process = process
        host, port = process.url.removeprefix("http://").rsplit(":", 1)
        self.host = host
        self.port = int(port)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = OCTETS,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            sent = dict(headers or {})
            if body is not None:
                sent.setdefault("Content-Type", content_type)
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, response.read())
        finally:
            connection.close()

    def post(self, path: str, body: bytes, content_type: str = OCTETS) -> Answer:
        return self.request("POST", path, body, content_type)

    def put_json(self, path: str, data: Any) -> Answer:
        return self.request("PUT", path, json.dumps(data).encode(), "application/json")

    def state(self) -> tuple[bytes, bytes]:
        """The entities and the sync answer to an empty document (see the module doc)."""
        entities = self.request("GET", "/v1/entities")
        assert entities.status == 200, entities
        synced = self.post("/v1/sync", sync_frame(STEP1, EMPTY_STATE_VECTOR))
        assert synced.status == 200, synced
        return entities.body, synced.body

    def entities(self) -> dict[str, Any]:
        answer = self.request("GET", "/v1/entities")
        assert answer.status == 200, answer
        return dict(answer.json()["entities"])

    def reset_peak(self) -> None:
        """Reset the process's VmHWM to its current resident size."""
        Path(f"/proc/{self.process.popen.pid}/clear_refs").write_text("5")

    def peak_kib(self) -> int:
        return vmhwm_kib(self.process.popen.pid)

    def refused_unchanged(self, method: str, path: str, body: bytes, **options: Any) -> Answer:
        """Send a request; assert it answers below 500 and, if 4xx, changed nothing."""
        before = self.state()
        answer = self.request(method, path, body, **options)
        assert answer.status < 500, f"{method} {path}: {answer.status} {answer.body[:200]!r}"
        if answer.status >= 400:
            assert self.state() == before, f"{method} {path} answered {answer.status}, yet changed"
            assert set(answer.json()) == {"error"}, answer.body[:200]
        return answer


@contextmanager
def running_target(name: str = "target", args: tuple[str, ...] = ()) -> Iterator[Target]:
    """A lone node (``--memory``) that does nothing by itself; stopped on exit."""
    procs = Processes()
    try:
        process = procs.start(
            name,
            args=[
                "--gossip-interval",
                "3600",
                "--liveness",
                "3600",
                "--max-body",
                str(MAX_BODY),
                *args,
            ],
        )
        yield Target(process)
        assert process.popen.poll() is None, f"the node died: {process.stderr()[-2000:]}"
    finally:
        procs.close()
