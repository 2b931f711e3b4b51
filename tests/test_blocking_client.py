"""The blocking API client against a small stand-in server (the standard library's): what
each call sends, how answers decode, and how failures are translated."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from sphaera_crdt.errors import ApiError, InputError, PeerUnavailable, RemoteError
from sphaera_crdt.net import api_calls
from sphaera_crdt.net.blocking_client import BlockingApiClient
from sphaera_crdt.net.watch import Backoff


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    #: Sent with chunked transfer encoding instead of ``body``, as an event stream is; a
    #: chunk may be raw bytes that break the encoding.
    chunks: list[bytes] | None = None


@dataclass
class Stand:
    """What the stand-in server saw, and what it answers next."""

    url: str
    answer: Answer = field(default_factory=Answer)
    seen: list[dict[str, Any]] = field(default_factory=list)
    #: Answers to the next requests, in order, before ``answer`` again.
    queue: list[Answer] = field(default_factory=list)


@pytest.fixture
def stand() -> Iterator[Stand]:
    yield from _stand(None)


def _stand(tls: ssl.SSLContext | None) -> Iterator[Stand]:
    """A stand-in server on a free loopback port (https with ``tls``)."""
    box: dict[str, Stand] = {}

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            box["stand"].seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(body) if body else None,
                }
            )
            stand = box["stand"]
            answer = stand.queue.pop(0) if stand.queue else stand.answer
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if answer.chunks is None:
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in answer.chunks:
                self.wfile.write(chunk)

        do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "http" if tls is None else "https"
    box["stand"] = Stand(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield box["stand"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


CALLS: list[tuple[Callable[[BlockingApiClient], Any], api_calls.Call]] = [
    (lambda api: api.get("a/b"), api_calls.Call(method="GET", path="/v1/entities/a%2Fb")),
    (
        lambda api: api.put("db", kind="pg", attrs={"port": 1}, requires={"exists": "x"}),
        api_calls.Call(
            method="PUT",
            path="/v1/entities/db",
            body={"kind": "pg", "attrs": {"port": 1}, "requires": {"exists": "x"}},
        ),
    ),
    (
        lambda api: api.patch("db", {"role": "primary"}),
        api_calls.Call(method="PATCH", path="/v1/entities/db", body={"attrs": {"role": "primary"}}),
    ),
    (lambda api: api.delete("db"), api_calls.Call(method="DELETE", path="/v1/entities/db")),
    (lambda api: api.why("db"), api_calls.Call(method="GET", path="/v1/entities/db/why")),
    (
        lambda api: api.observe("db", ok=False, value=3, ttl=9),
        api_calls.Call(
            method="POST",
            path="/v1/observations",
            body={"subject": "db", "ok": False, "value": 3, "ttl": 9},
        ),
    ),
    (lambda api: api.replicas(), api_calls.Call(method="GET", path="/v1/replicas")),
    (lambda api: api.forget("r 1"), api_calls.Call(method="DELETE", path="/v1/replicas/r%201")),
]


@pytest.mark.parametrize(("action", "expected"), CALLS)
def test_each_call_sends_its_method_path_and_body(
    stand: Stand, action: Callable[[BlockingApiClient], Any], expected: api_calls.Call
) -> None:
    stand.answer = Answer(body=b'{"answer": 1}')
    assert action(BlockingApiClient(stand.url + "/base/", token="s3cret")) == {"answer": 1}
    (seen,) = stand.seen
    assert (seen["method"], seen["path"], seen["body"]) == (
        expected.method,
        "/base" + expected.path,
        expected.body,
    )
    assert seen["headers"]["Authorization"] == "Bearer s3cret"
    if expected.body is not None:
        assert seen["headers"]["Content-Type"] == "application/json"


def test_entities_sends_the_filters_and_unwraps_the_answer(stand: Stand) -> None:
    stand.answer = Answer(body=b'{"entities": {"db": {"status": "exists"}}}')
    api = BlockingApiClient(stand.url)
    assert api.entities(prefix="d", status="exists") == {"db": {"status": "exists"}}
    (seen,) = stand.seen
    assert seen["path"] == "/v1/entities?prefix=d&status=exists"
    assert "Authorization" not in seen["headers"]


def test_no_content_is_none(stand: Stand) -> None:
    stand.answer = Answer(status=204, body=b"")
    assert BlockingApiClient(stand.url).delete("db") is None


def test_error_answers_carry_the_node_code(stand: Stand) -> None:
    stand.answer = Answer(status=404, body=b'{"error": {"code": "not_found", "message": "no"}}')
    with pytest.raises(ApiError) as caught:
        BlockingApiClient(stand.url).get("db")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "not_found",
        "no",
    )
    stand.answer = Answer(status=502, body=b"bad gateway")
    with pytest.raises(ApiError) as caught:
        BlockingApiClient(stand.url).get("db")
    assert (caught.value.status, caught.value.code) == (502, "http_error")


def test_a_redirect_is_not_followed(stand: Stand) -> None:
    stand.answer = Answer(status=307, body=b"", headers={"Location": "http://elsewhere/"})
    with pytest.raises(ApiError, match="redirects to http://elsewhere/"):
        BlockingApiClient(stand.url, token="s3cret").get("db")
    assert len(stand.seen) == 1


def test_an_answer_that_is_not_json_is_the_remote_s_fault(stand: Stand) -> None:
    stand.answer = Answer(body=b"<html>")
    with pytest.raises(RemoteError, match="did not answer JSON"):
        BlockingApiClient(stand.url).replicas()


def test_closed_port_and_silence_are_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PeerUnavailable, match="unreachable"):
        BlockingApiClient(closed).replicas()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PeerUnavailable, match="timed out"):
            BlockingApiClient(url, timeout=0.2).replicas()


@pytest.mark.parametrize("url", ["ftp://host", "http://", "http://host:99999999"])
def test_a_url_that_cannot_work_is_the_caller_s_fault(url: str) -> None:
    with pytest.raises(InputError):
        BlockingApiClient(url)


def test_https_verifies_the_node_and_presents_a_certificate() -> None:
    authority = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(server)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client must present one
    authority.configure_trust(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    authority.issue_cert("cli").configure_cert(client)
    stands = _stand(server)
    stand = next(stands)
    try:
        stand.answer = Answer(body=b'{"self": "n"}')
        assert BlockingApiClient(stand.url, ssl=client).replicas() == {"self": "n"}
        # The system's trust store does not know this CA: the node is not trusted.
        with pytest.raises(PeerUnavailable, match="unreachable"):
            BlockingApiClient(stand.url).replicas()
        assert len(stand.seen) == 1
    finally:
        stands.close()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


STREAM = [
    b"event: snapshot\ndata: ",
    b'{"entities": {}}\n\n: keep-alive\n\n',
    b'event: change\ndata: {"entity": "db"}\n\ndata: not json\n\n',
]
EVENTS = [("snapshot", {"entities": {}}), ("change", {"entity": "db"}), ("message", "not json")]


def test_events_are_read_from_a_chunked_stream_until_it_ends(stand: Stand) -> None:
    stand.answer = Answer(chunks=[*map(chunk, STREAM), b"0\r\n\r\n"])
    api = BlockingApiClient(stand.url, token="s3cret")
    assert list(api.events(entity="db", kind="pg")) == EVENTS
    (seen,) = stand.seen
    assert seen["path"] == "/v1/events?entity=db&kind=pg"
    assert seen["headers"]["Authorization"] == "Bearer s3cret"


def test_events_from_a_plain_body(stand: Stand) -> None:
    stand.answer = Answer(body=b"".join(STREAM))
    assert list(BlockingApiClient(stand.url).events()) == EVENTS


def test_a_refused_or_broken_stream(stand: Stand) -> None:
    stand.answer = Answer(status=401, body=b'{"error": {"code": "unauthorized", "message": "no"}}')
    with pytest.raises(ApiError, match="401 unauthorized"):
        list(BlockingApiClient(stand.url).events())
    stand.answer = Answer(chunks=[chunk(STREAM[0]), b"40\r\ncut short"])
    with pytest.raises(PeerUnavailable, match="event stream broke"):
        list(BlockingApiClient(stand.url).events())


def snapshot(**statuses: str) -> bytes:
    entities = {name: {"status": status, "reason": "r"} for name, status in statuses.items()}
    return b"event: snapshot\ndata: " + json.dumps({"entities": entities}).encode() + b"\n\n"


def change(entity: str, before: str, after: str) -> bytes:
    data = {"entity": entity, "before": before, "after": after, "reason": "r"}
    return b"event: change\ndata: " + json.dumps(data).encode() + b"\n\n"


def test_watch_reconnects_and_reports_what_changed_meanwhile(stand: Stand) -> None:
    stand.queue = [
        Answer(body=snapshot(db="absent") + change("db", "absent", "exists")),  # then ends
        Answer(chunks=[chunk(snapshot(db="exists")), b"40\r\ncut short"]),  # then breaks
    ]
    stand.answer = Answer(body=snapshot(db="absent", api="exists"))
    drops: list[str] = []
    watch = BlockingApiClient(stand.url).watch(
        prefix="d",
        backoff=Backoff(first=0.001, limit=0.002),
        on_drop=lambda why, delay: drops.append(why),
    )
    got = [next(watch) for _ in range(3)]
    watch.close()
    assert [(c.entity, c.before.value, c.after.value, c.resumed) for c in got] == [
        ("db", "absent", "exists", False),
        ("api", "absent", "exists", True),  # found by the snapshot after reconnecting
        ("db", "exists", "absent", True),
    ]
    assert drops == ["the stream ended", f"{stand.url}: event stream broke"]
    assert [seen["path"] for seen in stand.seen] == ["/v1/events?prefix=d"] * 3


def test_watch_raises_when_the_node_refuses_the_stream(stand: Stand) -> None:
    stand.answer = Answer(status=400, body=b'{"error": {"code": "bad_filter", "message": "no"}}')
    with pytest.raises(ApiError, match="400 bad_filter"):
        next(BlockingApiClient(stand.url).watch(kind=""))
