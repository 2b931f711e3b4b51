"""The REST API's calls as data: the method, path and body of each, and how an answer
decodes.

One place for what each call sends, shared by the two clients that carry calls out: the
asyncio :class:`~.client.ApiClient` (aiohttp, for libraries and event streams) and the
blocking :class:`~.blocking_client.BlockingApiClient` (the standard library's
``http.client``, which the command line uses so that a one-shot call starts quickly).
Imports orjson and the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import orjson

from ..errors import ApiError, RemoteError

__all__ = [
    "DEFAULT_PORT",
    "Call",
    "ServerSentEvents",
    "api_error",
    "auth_headers",
    "decode_answer",
    "delete",
    "entities",
    "entity_path",
    "events_path",
    "forget",
    "get",
    "observe",
    "patch",
    "put",
    "query",
    "replicas",
    "why",
]

#: The port a node serves the API on unless told otherwise (``sphaera serve --port``), and
#: the one the command line calls by default.
DEFAULT_PORT: Final = 8470


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One request of the REST API.

    Attributes:
        method: The HTTP method.
        path: The path and query, below the node's base URL.
        body: The JSON body, or ``None`` for none.
    """

    method: str
    path: str
    body: Any = None


def auth_headers(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header of ``token`` (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def query(**filters: str | None) -> str:
    """``?name=value&...`` of the filters given, ``""`` when none is."""
    given = {name: value for name, value in filters.items() if value is not None}
    return "?" + urlencode(given) if given else ""


def entity_path(entity_id: str) -> str:
    """The path of one entity (its id escaped, ``/`` included)."""
    return "/v1/entities/" + quote(entity_id, safe="")


def entities(
    *, prefix: str | None = None, kind: str | None = None, status: str | None = None
) -> Call:
    """List the entities (answer: ``{"entities": {id: entity}}``)."""
    return Call(method="GET", path="/v1/entities" + query(prefix=prefix, kind=kind, status=status))


def get(entity_id: str) -> Call:
    """Read one entity."""
    return Call(method="GET", path=entity_path(entity_id))


def put(
    entity_id: str,
    *,
    kind: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    requires: Any = None,
    probe: Mapping[str, Any] | None = None,
) -> Call:
    """Declare (or re-declare) an entity: only the fields given are sent."""
    body: dict[str, Any] = {}
    if kind is not None:
        body["kind"] = kind
    if attrs is not None:
        body["attrs"] = dict(attrs)
    if requires is not None:
        body["requires"] = requires
    if probe is not None:
        body["probe"] = dict(probe)
    return Call(method="PUT", path=entity_path(entity_id), body=body)


def patch(entity_id: str, attrs: Mapping[str, Any]) -> Call:
    """Merge top-level attributes into an entity."""
    return Call(method="PATCH", path=entity_path(entity_id), body={"attrs": dict(attrs)})


def delete(entity_id: str) -> Call:
    """Retract an entity."""
    return Call(method="DELETE", path=entity_path(entity_id))


def why(entity_id: str) -> Call:
    """The explanation tree of an entity's status."""
    return Call(method="GET", path=entity_path(entity_id) + "/why")


def observe(subject: str, *, ok: bool = True, value: Any = None, ttl: float | None = None) -> Call:
    """Record the node's observation of ``subject``."""
    body: dict[str, Any] = {"subject": subject, "ok": ok, "value": value}
    if ttl is not None:
        body["ttl"] = ttl
    return Call(method="POST", path="/v1/observations", body=body)


def replicas() -> Call:
    """The replicas the node knows."""
    return Call(method="GET", path="/v1/replicas")


def forget(replica_id: str) -> Call:
    """Forget a departed replica on every replica."""
    return Call(method="DELETE", path="/v1/replicas/" + quote(replica_id, safe=""))


def events_path(
    *, entity: str | None = None, prefix: str | None = None, kind: str | None = None
) -> str:
    """The path of the event stream the filters keep."""
    return "/v1/events" + query(entity=entity, prefix=prefix, kind=kind)


def decode_answer(status: int, raw: bytes, target: str) -> Any:
    """The decoded JSON answer of a request to ``target`` (``None`` for 204 or no body).

    Raises:
        ApiError: ``status`` is an error status.
        RemoteError: The answer is not JSON.
    """
    if status >= 400:
        raise api_error(status, raw)
    if status == 204 or not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RemoteError(f"{target} did not answer JSON") from exc


def api_error(status: int, raw: bytes) -> ApiError:
    """The :class:`ApiError` of an error answer: the node's code and message when its body
    is the API's JSON error, else the start of the body."""
    try:
        error = orjson.loads(raw)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = raw[:200].decode("utf-8", "replace").strip()
        return ApiError(status, "http_error", text or "no explanation")


class ServerSentEvents:
    """Assembles the server-sent events of ``GET /v1/events`` from the lines of the stream.

    Feed it every line as it comes; an event is complete at the blank line after its
    ``event:`` and ``data:`` fields, and comes out as ``(event name, data)``, the data
    decoded from JSON (or left as text when it is not JSON). Comment lines (``:``, the
    node's keep-alives) are skipped.
    """

    def __init__(self) -> None:
        self._name = "message"
        self._data: list[str] = []

    def line(self, raw: bytes) -> tuple[str, Any] | None:
        """Take one line of the stream (its line ending included or not); return the
        event it completes, if it completes one."""
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            event = None
            if self._data:
                event = (self._name, _json_or_text("\n".join(self._data)))
            self._name, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._name = value
        elif field == "data":
            self._data.append(value)
        return None


def _json_or_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
