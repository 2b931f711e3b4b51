"""HTTP clients: :class:`PeerClient` (gossip's sync exchanges) and :class:`ApiClient` (the
REST API, as the command line uses it).

Both translate every aiohttp and socket failure at this boundary: a peer that cannot be
reached, times out or answers with an error status raises :class:`PeerUnavailable`; a
REST call answered with an error raises :class:`ApiError` carrying the node's error code.
The bearer token goes into the ``Authorization`` header only: never into a URL, a log
line or an exception message.

A peer exchange has a deadline of three gossip intervals, kept within 1-5 seconds
(``NodeConfig.client_timeout`` overrides it). :class:`PeerClient` contacts only
the URLs that :class:`~.peers.PeerAllowlist` allows, never follows a redirect, and
verifies HTTPS peers under ``--tls-ca`` when given (presenting the node's own certificate
to peers that require one), else under the system's trust store (see :mod:`.peers`). A
test may pass its own :class:`ssl.SSLContext` as ``NodeConfig.client_ssl`` (for
:class:`PeerClient`) or as ``ssl=`` (for :class:`ApiClient`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import aiohttp
import orjson

from ..config import NodeConfig
from ..core.clocks import format_time, parse_time
from ..core.gossip import exchange_timeout
from ..errors import ApiError, PeerNotAllowed, PeerUnavailable, RemoteError
from . import api_calls
from .peers import PeerAllowlist, client_ssl_context
from .watch import Backoff, StatusChange, Watch

__all__ = [
    "ApiClient",
    "ApiError",
    "PeerClient",
    "PeerNotAllowed",
    "PeerUnavailable",
    "StatusChange",
    "SyncAnswer",
]

REPLICA_HEADER: Final = "Sphaera-Replica"
URL_HEADER: Final = "Sphaera-Url"
#: The sender's clock, seconds since the epoch as a float, on sync requests and answers.
TIME_HEADER: Final = "Sphaera-Time"
SYNC_CONTENT_TYPE: Final = "application/octet-stream"
#: An answer to a sync request larger than this is refused (a peer's whole state fits).
MAX_ANSWER: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncAnswer:
    """A peer's answer to ``POST /v1/sync``.

    Attributes:
        body: The sync messages it sent back (STEP2 then STEP1).
        replica_id: Its ``Sphaera-Replica`` response header, if it sent one.
        url: Its ``Sphaera-Url`` response header, if it sent one.
        time: Its clock when it answered (``Sphaera-Time``), if it sent a usable one.
        sent: This node's clock when the request was sent.
        received: This node's clock when the answer's headers came.
    """

    body: bytes
    replica_id: str | None = None
    url: str | None = None
    time: float | None = None
    sent: float = 0.0
    received: float = 0.0


def _ssl_option(context: ssl.SSLContext | None) -> ssl.SSLContext | bool:
    # True means "verify with the default trust store" to aiohttp.
    return context if context is not None else True


class PeerClient:
    """The connection pool a node uses to talk to its peers.

    Args:
        config: The node's configuration (token, TLS, allowed peers, deadline).
        replica_id: The node's replica id, sent with every request.
        url: The URL peers reach the node at, sent with every request (none if empty).
        clock: The node's clock, sent with every request and read around each exchange.

    Raises:
        InputError: The node's ``--tls-ca``, certificate or key cannot be loaded.
    """

    def __init__(
        self, config: NodeConfig, *, replica_id: str, url: str, clock: Callable[[], float]
    ) -> None:
        total = config.client_timeout
        if total is None:
            total = exchange_timeout(config.gossip_interval)
        self._timeout = aiohttp.ClientTimeout(total=total, connect=min(total, 2.0))
        context = config.client_ssl
        self._ssl = _ssl_option(context if context is not None else client_ssl_context(config))
        self.allowlist = PeerAllowlist.from_config(config)
        self._token = config.token
        self._replica_id = replica_id
        self._url = url
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": SYNC_CONTENT_TYPE,
            REPLICA_HEADER: self._replica_id,
            **api_calls.auth_headers(self._token),
        }
        if self._url:
            headers[URL_HEADER] = self._url
        headers[TIME_HEADER] = format_time(self._clock())
        return headers

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)
        return self._session

    def allows(self, url: str) -> bool:
        """Whether this node contacts a peer at ``url`` (see :mod:`.peers`)."""
        return self.allowlist.allows(url)

    async def sync(self, url: str, body: bytes) -> SyncAnswer:
        """One sync exchange: ``POST {url}/v1/sync`` with ``body``.

        Raises:
            PeerNotAllowed: ``url`` is not an allowed peer; nothing was sent.
            PeerUnavailable: Network error, timeout, or an answer other than 200 (a
                redirect included: the token never follows one).
            RemoteError: The answer is larger than :data:`MAX_ANSWER`.
        """
        if not self.allows(url):
            raise PeerNotAllowed(
                f"{url} is not an allowed peer (a seed's host, loopback, --allow-peer, "
                "or https under --tls-ca)",
                url=url,
            )
        target = f"{url.rstrip('/')}/v1/sync"
        session = self._open()
        clock = self._clock
        try:
            headers = self._headers()
            sent = clock()
            async with session.post(
                target, data=body, headers=headers, ssl=self._ssl, allow_redirects=False
            ) as response:
                received = clock()  # the peer read its clock between sent and now
                if response.status != 200:
                    detail = await _error_detail(response)
                    raise PeerUnavailable(
                        f"{url} answered {response.status}{detail}",
                        url=url,
                        status=response.status,
                    )
                answer = await _read_limited(response, MAX_ANSWER)
                return SyncAnswer(
                    body=answer,
                    replica_id=response.headers.get(REPLICA_HEADER) or None,
                    url=response.headers.get(URL_HEADER) or None,
                    time=parse_time(response.headers.get(TIME_HEADER)),
                    sent=sent,
                    received=received,
                )
        except TimeoutError as exc:
            raise PeerUnavailable(f"{url} timed out", url=url) from exc
        except aiohttp.ClientError as exc:
            raise PeerUnavailable(f"{url} unreachable: {_describe(exc)}", url=url) from exc
        except OSError as exc:
            raise PeerUnavailable(f"{url} unreachable: {exc.strerror or exc}", url=url) from exc

    async def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing one longer than ``limit`` without reading it all.

    Raises:
        RemoteError: The body is longer than ``limit``.
    """
    if (response.content_length or 0) > limit:
        raise RemoteError(f"{response.url} answered {response.content_length} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RemoteError(f"{response.url} answered more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """``": message"`` from a JSON error body, or nothing."""
    try:
        data = orjson.loads(await response.content.read(64 * 1024))
        message = data["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError, aiohttp.ClientError, TimeoutError):
        return ""
    return f": {message}" if isinstance(message, str) else ""


def _describe(exc: aiohttp.ClientError) -> str:
    """A one-line description of a client error, without aiohttp's nested reprs."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__


class ApiClient:
    """A client of one node's REST API; an async context manager.

    Args:
        url: The node's base URL, such as ``http://127.0.0.1:8470``.
        token: The bearer token, if the node requires one.
        timeout: Seconds for one request (event streams have no total deadline).
        ssl: A context to verify the node's certificate with (system trust by default).

    Example::

        async with ApiClient("http://127.0.0.1:8470") as api:
            await api.put("db", kind="postgres", attrs={"port": 5432})
            print(await api.entities())
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
        self._headers = api_calls.auth_headers(token)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._ssl = _ssl_option(ssl)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request; return the decoded JSON answer (``None`` for 204).

        Raises:
            ApiError: The node answered with an error status.
            PeerUnavailable: The node could not be reached or timed out.
            RemoteError: The answer is not JSON.
        """
        if self._session is None:
            raise RuntimeError("use ApiClient as an async context manager")
        target = f"{self.url}{path}"
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            async with self._session.request(
                method, target, data=data, headers=headers, timeout=self._timeout, ssl=self._ssl
            ) as response:
                raw = await response.read()
                return api_calls.decode_answer(response.status, raw, target)
        except TimeoutError as exc:
            raise PeerUnavailable(f"{self.url} timed out", url=self.url) from exc
        except aiohttp.ClientError as exc:
            message = f"{self.url} unreachable: {_describe(exc)}"
            raise PeerUnavailable(message, url=self.url) from exc

    async def _send(self, call: api_calls.Call) -> Any:
        return await self.request(call.method, call.path, call.body)

    async def entities(
        self, *, prefix: str | None = None, kind: str | None = None, status: str | None = None
    ) -> dict[str, Any]:
        """Every entity the node knows, with its status: ``{id: entity}``; only those whose
        id starts with ``prefix``, of ``kind``, with ``status``, when given."""
        answer = await self._send(api_calls.entities(prefix=prefix, kind=kind, status=status))
        entities: dict[str, Any] = answer["entities"]
        return entities

    async def get(self, entity_id: str) -> dict[str, Any]:
        """One entity (raises :class:`ApiError` with status 404 if unknown)."""
        result: dict[str, Any] = await self._send(api_calls.get(entity_id))
        return result

    async def put(
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
        result: dict[str, Any] = await self._send(call)
        return result

    async def patch(self, entity_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Merge top-level attributes into an entity."""
        result: dict[str, Any] = await self._send(api_calls.patch(entity_id, attrs))
        return result

    async def delete(self, entity_id: str) -> Any:
        """Retract an entity."""
        return await self._send(api_calls.delete(entity_id))

    async def why(self, entity_id: str) -> dict[str, Any]:
        """The explanation tree of an entity's status."""
        result: dict[str, Any] = await self._send(api_calls.why(entity_id))
        return result

    async def observe(
        self, subject: str, *, ok: bool = True, value: Any = None, ttl: float | None = None
    ) -> dict[str, Any]:
        """Record the node's observation of ``subject``."""
        call = api_calls.observe(subject, ok=ok, value=value, ttl=ttl)
        result: dict[str, Any] = await self._send(call)
        return result

    async def replicas(self) -> dict[str, Any]:
        """``{"self": id, "replicas": {id: {"url", "status"}}}``."""
        result: dict[str, Any] = await self._send(api_calls.replicas())
        return result

    async def forget(self, replica_id: str) -> dict[str, Any]:
        """Forget a departed replica on every replica: ``{"forgotten": [id]}``."""
        result: dict[str, Any] = await self._send(api_calls.forget(replica_id))
        return result

    async def events(
        self, *, entity: str | None = None, prefix: str | None = None, kind: str | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """Stream server-sent events as ``(event name, decoded data)`` until the node closes;
        only those of ``entity``, of ids starting with ``prefix``, of ``kind``, when given.

        Raises:
            ApiError: The node refused the stream.
            PeerUnavailable: The node could not be reached, or the connection broke.
        """
        if self._session is None:
            raise RuntimeError("use ApiClient as an async context manager")
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout.connect)
        try:
            path = api_calls.events_path(entity=entity, prefix=prefix, kind=kind)
            async with self._session.get(
                f"{self.url}{path}", timeout=timeout, ssl=self._ssl
            ) as response:
                if response.status >= 400:
                    raise api_calls.api_error(response.status, await response.read())
                events = api_calls.ServerSentEvents()
                async for raw_line in response.content:
                    event = events.line(raw_line)
                    if event is not None:
                        yield event
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
            raise PeerUnavailable(f"{self.url}: event stream broke", url=self.url) from exc

    async def watch(
        self,
        *,
        entity: str | None = None,
        prefix: str | None = None,
        kind: str | None = None,
        backoff: Backoff | None = None,
        on_drop: Callable[[str, float], None] | None = None,
    ) -> AsyncIterator[StatusChange]:
        """Every status change of the entities the filters keep, one at a time, in order,
        for as long as it is iterated; a dropped stream is opened again after a bounded
        delay and what changed meanwhile is reported from its snapshot (:mod:`.watch`).

        ``on_drop(why, delay)`` is called each time the stream ends or cannot be opened,
        with the seconds the watch waits before it tries again.

        Raises:
            ApiError: The node refused the stream (a bad filter, a wrong token); a node
                that cannot be reached is retried, never raised.
        """
        watch = Watch(backoff=backoff or Backoff())
        while True:
            try:
                async for name, data in self.events(entity=entity, prefix=prefix, kind=kind):
                    for change in watch.event(name, data):
                        yield change
                why = "the stream ended"
            except PeerUnavailable as exc:
                why = str(exc)  # the stream dropped or never opened: open it again below
            delay = watch.dropped()
            if on_drop is not None:
                on_drop(why, delay)
            await asyncio.sleep(delay)
