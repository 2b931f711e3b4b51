"""A blocking client of a node's REST API, on the standard library's ``http.client``.

:class:`BlockingApiClient` makes the same calls as the asyncio :class:`~.client.ApiClient`,
from the same call descriptions (:mod:`.api_calls`), event streams included, and translates
failures the same way: an error answer raises :class:`ApiError`, a node that cannot be
reached or times out :class:`PeerUnavailable`. It exists so that the command line, which
makes one call and exits, does not load aiohttp and asyncio first: that alone took longer
than the whole call.

Each call opens a connection and closes it. No redirect is followed (the token would go
along); no proxy is used (as with :class:`~.client.ApiClient`).
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson

from ..errors import ApiError, InputError, PeerUnavailable
from . import api_calls

if TYPE_CHECKING:  # the watch machinery is loaded by watch() alone: one-shot calls start sooner
    from .watch import Backoff, StatusChange

__all__ = ["BlockingApiClient"]

T = TypeVar("T")


class BlockingApiClient:
    """A blocking client of one node's REST API.

    Args:
        url: The node's base URL, such as ``http://127.0.0.1:8470``.
        token: The bearer token, if the node requires one.
        timeout: Seconds to connect, and to wait for each read of the answer.
        ssl: A context to verify an https node's certificate with (system trust by default).

    Raises:
        InputError: ``url`` is not an http or https URL with a host.

    Example::

        api = BlockingApiClient("http://127.0.0.1:8470")
        api.put("db", kind="postgres", attrs={"port": 5432})
        print(api.entities())
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"not an http or https URL: {url!r}")
        try:
            self._port = parts.port
        except ValueError as exc:
            raise InputError(f"bad port in {url!r}") from exc
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._base = parts.path
        self._headers = api_calls.auth_headers(token)
        self._timeout = timeout
        self._ssl = ssl

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            context = self._ssl if self._ssl is not None else ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON answer (``None`` for 204).

        Raises:
            ApiError: The node answered with an error status or a redirect.
            PeerUnavailable: The node could not be reached or timed out.
            RemoteError: The answer is not JSON.
        """
        target = f"{self.url}{path}"
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        connection = self._connect()
        try:
            response = self._open(connection, method, path, data, headers)
            raw = self._unavailable_on_failure(response.read)
        finally:
            connection.close()
        return api_calls.decode_answer(response.status, raw, target)

    def events(
        self, *, entity: str | None = None, prefix: str | None = None, kind: str | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Stream server-sent events as ``(event name, decoded data)`` until the node closes;
        only those of ``entity``, of ids starting with ``prefix``, of ``kind``, when given.

        The timeout bounds connecting and the answer's headers, not the stream: events
        come when statuses change.

        Raises:
            ApiError: The node refused the stream.
            PeerUnavailable: The node could not be reached, or the connection broke.
        """
        path = api_calls.events_path(entity=entity, prefix=prefix, kind=kind)
        connection = self._connect()
        try:
            response = self._open(connection, "GET", path, None, dict(self._headers))
            if response.status >= 400:
                raise api_calls.api_error(response.status, response.read())
            if connection.sock is not None:
                connection.sock.settimeout(None)
            events = api_calls.ServerSentEvents()
            while raw_line := self._read_stream(response):
                event = events.line(raw_line)
                if event is not None:
                    yield event
        finally:
            connection.close()

    def watch(
        self,
        *,
        entity: str | None = None,
        prefix: str | None = None,
        kind: str | None = None,
        backoff: Backoff | None = None,
        on_drop: Callable[[str, float], None] | None = None,
    ) -> Iterator[StatusChange]:
        """Every status change of the entities the filters keep, one at a time, in order,
        for as long as it is iterated; a dropped stream is opened again after a bounded
        delay and what changed meanwhile is reported from its snapshot (:mod:`.watch`).

        ``on_drop(why, delay)`` is called each time the stream ends or cannot be opened,
        with the seconds the watch waits before it tries again.

        Raises:
            ApiError: The node refused the stream (a bad filter, a wrong token); a node
                that cannot be reached is retried, never raised.
        """
        from .watch import Backoff, Watch

        watch = Watch(backoff=backoff or Backoff())
        while True:
            try:
                for name, data in self.events(entity=entity, prefix=prefix, kind=kind):
                    yield from watch.event(name, data)
                why = "the stream ended"
            except PeerUnavailable as exc:
                why = str(exc)  # the stream dropped or never opened: open it again below
            delay = watch.dropped()
            if on_drop is not None:
                on_drop(why, delay)
            time.sleep(delay)

    def _open(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
    ) -> http.client.HTTPResponse:
        """Send a request and read the answer's status and headers.

        Raises:
            ApiError: The answer is a redirect (not followed: the token would go along).
            PeerUnavailable: The node could not be reached or timed out.
        """

        def send() -> http.client.HTTPResponse:
            connection.request(method, self._base + path, body=data, headers=headers)
            return connection.getresponse()

        response = self._unavailable_on_failure(send)
        if 300 <= response.status < 400:
            where = response.getheader("Location") or "nowhere"
            message = f"{self.url}{path} redirects to {where} (not followed)"
            raise ApiError(response.status, "redirect", message)
        return response

    def _read_stream(self, response: http.client.HTTPResponse) -> bytes:
        """The next line of an event stream (``b""`` when the node ended it)."""
        try:
            return response.readline()
        except (http.client.HTTPException, OSError) as exc:
            raise PeerUnavailable(f"{self.url}: event stream broke", url=self.url) from exc

    def _unavailable_on_failure(self, step: Callable[[], T]) -> T:
        """Run one step of an exchange; a network failure raises :class:`PeerUnavailable`."""
        try:
            return step()
        except TimeoutError as exc:
            raise PeerUnavailable(f"{self.url} timed out", url=self.url) from exc
        except http.client.HTTPException as exc:
            detail = str(exc) or type(exc).__name__
            raise PeerUnavailable(f"{self.url} unreachable: {detail}", url=self.url) from exc
        except OSError as exc:
            detail = exc.strerror or str(exc) or type(exc).__name__
            raise PeerUnavailable(f"{self.url} unreachable: {detail}", url=self.url) from exc

    def _send(self, call: api_calls.Call) -> Any:
        return self.request(call.method, call.path, call.body)

    def entities(
        self, *, prefix: str | None = None, kind: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """Every entity the node knows, with its status: ``{id: entity}``; only those whose
        id starts with ``prefix``, of ``kind``, with ``status``, when given."""
        answer = self._send(api_calls.entities(prefix=prefix, kind=kind, status=status))
        entities: dict[str, Any] = answer["entities"]
        return entities

    def get(self, entity_id: str) -> dict[str, Any]:
        """One entity (raises :class:`ApiError` with status 404 if unknown)."""
        result: dict[str, Any] = self._send(api_calls.get(entity_id))
        return result

    def put(
        self,
        entity_id: str,
        *,
        kind: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        requires: Any = None,
        probe: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Declare (or re-declare) an entity."""
        call = api_calls.put(entity_id, kind=kind, attrs=attrs, requires=requires, probe=probe)
        result: dict[str, Any] = self._send(call)
        return result

    def patch(self, entity_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Merge top-level attributes into an entity."""
        result: dict[str, Any] = self._send(api_calls.patch(entity_id, attrs))
        return result

    def delete(self, entity_id: str) -> Any:
        """Retract an entity."""
        return self._send(api_calls.delete(entity_id))

    def why(self, entity_id: str) -> dict[str, Any]:
        """The explanation tree of an entity's status."""
        result: dict[str, Any] = self._send(api_calls.why(entity_id))
        return result

    def observe(
        self, subject: str, *, ok: bool = True, value: Any = None, ttl: float | None = None
    ) -> dict[str, Any]:
        """Record the node's observation of ``subject``."""
        result: dict[str, Any] = self._send(api_calls.observe(subject, ok=ok, value=value, ttl=ttl))
        return result

    def replicas(self) -> dict[str, Any]:
        """``{"self": id, "replicas": {id: {"url", "status"}}}``."""
        result: dict[str, Any] = self._send(api_calls.replicas())
        return result

    def forget(self, replica_id: str) -> dict[str, Any]:
        """Forget a departed replica on every replica: ``{"forgotten": [id]}``."""
        result: dict[str, Any] = self._send(api_calls.forget(replica_id))
        return result
