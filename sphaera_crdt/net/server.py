"""The HTTP face of a node: REST, sync, events, health, metrics and a status page.

Handlers are thin: read and check the request, call one named operation of the node
(:class:`~.service.NodeService`, never its replica or attributes), serialise the answer.
Authentication, the JSON error shape and bounded body reading live in :mod:`.middleware`;
every check there runs before a handler touches the node, and the replica validates all
input before it writes, so a refused request changes nothing. A write is answered only
once the node has committed it (:func:`_committed`).

``GET /v1/events`` subscribes to the node's event hub *before* it takes the snapshot it
sends first, so no change can fall between the snapshot and the stream. Streams end when
the client goes away, when the hub cuts off a client too slow to keep up (``overflow``),
or when the application shuts down (so that closing a node never waits for them).
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from ..core import names
from ..core.clocks import format_time
from ..core.views import EntityView
from .events import Subscriber, encode_event
from .filters import ENTITY_PARAMETERS, EVENT_PARAMETERS, EntityFilter
from .middleware import (
    JSON,
    NODE,
    OCTETS,
    ApiError,
    auth_middleware,
    errors_middleware,
    json_response,
    kind_of,
    peer_headers,
    read_body,
    read_json_object,
)
from .openapi import openapi_document
from .service import NodeService
from .status_page import StatusPage, load_status_page

__all__ = ["HEARTBEAT", "STATE", "RequestErrorLog", "ServerState", "create_app"]

#: Seconds between comment heartbeats on an idle event stream.
HEARTBEAT: Final = 15.0
#: ``replica:<id>`` records are written by their replica only, never over this API.
RESERVED_PREFIX: Final = "replica:"


@dataclass(slots=True)
class ServerState:
    """What the handlers of one application share besides the node."""

    page: StatusPage
    heartbeat: float = HEARTBEAT
    openapi: bytes = b""
    streams: set[Subscriber] = field(default_factory=set)


STATE: Final = web.AppKey("sphaera_server", ServerState)


async def _committed(node: NodeService) -> None:
    """Wait until the node's store holds every write so far (2xx means committed)."""
    await node.flush()


def create_app(node: NodeService, *, heartbeat: float = HEARTBEAT) -> web.Application:
    """The aiohttp application that serves ``node`` (routes of DESIGN.md section 5).

    Args:
        node: The node to serve; only its event loop may run the application.
        heartbeat: Seconds between keep-alive comments on idle event streams.

    Returns:
        An application ready for an ``AppRunner`` or aiohttp's test server.
    """
    app = web.Application(
        client_max_size=node.config.max_body, middlewares=[errors_middleware, auth_middleware]
    )
    app[NODE] = node
    app[STATE] = ServerState(
        page=load_status_page(),
        heartbeat=heartbeat,
        openapi=orjson.dumps(openapi_document(metrics_auth=node.config.metrics_auth)),
    )
    app.on_shutdown.append(_close_streams)
    add = app.router.add_route
    add("POST", "/v1/sync", sync_route, name="sync")
    add("POST", "/v1/updates", updates_route, name="updates")
    app.router.add_get("/v1/entities", list_entities, name="entities")
    for method, handler in (
        ("GET", get_entity),
        ("PUT", put_entity),
        ("PATCH", patch_entity),
        ("DELETE", delete_entity),
    ):
        add(method, "/v1/entities/{id}", handler, name=f"entity_{method.lower()}")
    app.router.add_get("/v1/entities/{id}/why", why_route, name="why")
    add("POST", "/v1/observations", observe_route, name="observations")
    app.router.add_get("/v1/observations", list_observations, name="observations_list")
    app.router.add_get("/v1/replicas", replicas_route, name="replicas")
    add("DELETE", "/v1/replicas/{id}", forget_route, name="replica_delete")
    app.router.add_get("/v1/events", events_route, name="events", allow_head=False)
    app.router.add_get("/v1/openapi.json", openapi_route, name="openapi")
    app.router.add_get("/healthz", healthz_route, name="healthz")
    app.router.add_get("/metrics", metrics_route, name="metrics")
    app.router.add_get("/", status_page_route, name="status_page")
    return app


# -- sync ----------------------------------------------------------------------------------


async def sync_route(request: web.Request) -> web.Response:
    """``POST /v1/sync``: one push-pull round trip in y-protocols SYNC messages.

    The body is SYNC_STEP1 (the caller's state vector), optionally followed by
    SYNC_UPDATE or SYNC_STEP2 messages (what the caller pushes). The answer is SYNC_STEP2
    (what the caller lacks) then SYNC_STEP1 (this node's state vector).
    """
    node = request.app[NODE]
    peer_id, _ = peer_headers(request)  # the URL is checked, but it proves nothing
    body = await read_body(request, OCTETS)
    answer = node.handle_sync(body, peer_id)
    await _committed(node)
    return web.Response(
        body=answer,
        content_type=OCTETS,
        headers={
            "Sphaera-Replica": node.replica_id,
            "Sphaera-Url": node.url,
            # read last, so that the caller's round trip brackets it
            "Sphaera-Time": format_time(node.now()),
        },
    )


async def updates_route(request: web.Request) -> web.Response:
    """``POST /v1/updates``: merge a raw Yrs v1 update; 204 when merged (403
    ``unverified_update`` in signed mode when its entries do not verify: nothing merged)."""
    node = request.app[NODE]
    peer_id, _ = peer_headers(request)
    body = await read_body(request, OCTETS)
    node.handle_update(body, peer_id)
    await _committed(node)
    return web.Response(status=204)


# -- entities ------------------------------------------------------------------------------


def _entity_id(request: web.Request, *, write: bool = False) -> str:
    entity_id = request.match_info["id"]
    if write and entity_id.startswith(RESERVED_PREFIX):
        raise ApiError(
            422,
            "invalid_identifier",
            f"{entity_id!r}: replica:<id> records are written by their replica only",
        )
    return entity_id


def _existing(request: web.Request, entity_id: str) -> EntityView:
    view = request.app[NODE].entity(entity_id)
    if view is None:
        raise ApiError(404, "not_found", f"entity {entity_id!r} is not declared")
    return view


def _entity_path(entity_id: str) -> str:
    return "/v1/entities/" + urllib.parse.quote(entity_id, safe="")


async def list_entities(request: web.Request) -> web.Response:
    """``GET /v1/entities[?prefix=&kind=&status=]``: every declared entity the filter
    keeps (:class:`~.filters.EntityFilter`), ``{"entities": {ID: ENTITY}}``."""
    keep = EntityFilter.from_query(request.query, ENTITY_PARAMETERS)
    views = request.app[NODE].entities()
    return json_response(
        {
            "entities": {
                entity_id: view.to_json() for entity_id, view in views.items() if keep.keeps(view)
            }
        }
    )


async def get_entity(request: web.Request) -> web.Response:
    """``GET /v1/entities/{id}``: one entity, or 404."""
    return json_response(_existing(request, _entity_id(request)).to_json())


async def put_entity(request: web.Request) -> web.Response:
    """``PUT /v1/entities/{id}``: declare with ``{"kind"?, "attrs"?, "requires"?, "probe"?}``.

    The body states the whole record (attributes it does not name are removed). Answers
    201 with ``Location`` for a new entity, 200 for a re-declared one.
    """
    node = request.app[NODE]
    entity_id = _entity_id(request, write=True)
    data = await read_json_object(request, frozenset({"kind", "attrs", "requires", "probe"}))
    new = node.entity(entity_id) is None
    view = node.declare(
        entity_id,
        kind=data.get("kind"),
        attrs=_attrs(data.get("attrs", {}), required=False),
        requires=data.get("requires"),
        probe=data.get("probe"),
    )
    await _committed(node)
    response = json_response(view.to_json(), 201 if new else 200)
    if new:
        response.headers[hdrs.LOCATION] = _entity_path(entity_id)
    return response


async def patch_entity(request: web.Request) -> web.Response:
    """``PATCH /v1/entities/{id}``: merge ``{"attrs": {...}}`` into a declared entity."""
    node = request.app[NODE]
    entity_id = _entity_id(request, write=True)
    data = await read_json_object(request, frozenset({"attrs"}))
    _existing(request, entity_id)
    if "attrs" not in data:
        raise ApiError(422, "invalid_request", 'PATCH takes {"attrs": {...}}')
    view = node.patch(entity_id, _attrs(data["attrs"], required=True))
    await _committed(node)
    return json_response(view.to_json())


def _attrs(value: Any, *, required: bool) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if type(value) is not dict:
        raise ApiError(422, "invalid_value", f"attrs must be a JSON object, not {kind_of(value)}")
    return value


async def delete_entity(request: web.Request) -> web.Response:
    """``DELETE /v1/entities/{id}``: retract; answers the entity (now ``absent``)."""
    node = request.app[NODE]
    entity_id = _entity_id(request, write=True)
    _existing(request, entity_id)
    view = node.retract(entity_id)
    await _committed(node)
    return json_response(view.to_json())


async def why_route(request: web.Request) -> web.Response:
    """``GET /v1/entities/{id}/why[?depth=N]``: the explanation tree of the status."""
    entity_id = _entity_id(request)
    _existing(request, entity_id)
    raw = request.query.get("depth", "3")
    if not raw.isdecimal() or not 0 <= int(raw) <= 32:
        raise ApiError(422, "invalid_request", f"depth must be an integer 0-32, not {raw!r}")
    return json_response(request.app[NODE].why(entity_id, depth=int(raw)))


# -- observations and replicas -------------------------------------------------------------


async def observe_route(request: web.Request) -> web.Response:
    """``POST /v1/observations``: record ``{"subject", "ok"?, "value"?, "ttl"?}``.

    The observation is this replica's; it replaces its previous one of the subject.
    """
    node = request.app[NODE]
    data = await read_json_object(request, frozenset({"subject", "ok", "value", "ttl"}))
    if "subject" not in data:
        raise ApiError(422, "invalid_request", "an observation needs a 'subject'")
    _refuse_if_outlier(node)
    observation = node.observe(
        data["subject"], ok=data.get("ok", True), value=data.get("value"), ttl=data.get("ttl")
    )
    await _committed(node)
    return json_response(observation.to_json())


async def list_observations(request: web.Request) -> web.Response:
    """``GET /v1/observations[?subject=ID]``: the latest observation of each observer.

    Answers ``{"at": NOW, "observations": [OBSERVATION + "age"]}`` sorted by subject then
    observer: ``at`` is this node's clock, ``age`` is ``at`` minus the observation's
    (negative when its observer's clock runs ahead). Whether an observation counts for a
    constraint is the constraint's to say (``why`` shows it); the ages let a reader show
    how old the evidence is without trusting its own clock.
    """
    subject = _single_parameter(request, "subject")
    node = request.app[NODE]
    now = node.now()
    listed = []
    for observation in node.observations(subject):
        item = observation.to_json()
        item["age"] = now - observation.at
        listed.append(item)
    return json_response({"at": now, "observations": listed})


def _single_parameter(request: web.Request, name: str) -> str | None:
    """The one optional query parameter ``name`` of a read: 400 for any other parameter,
    for ``name`` given twice or empty."""
    for key in request.query:
        if key != name:
            raise ApiError(400, "invalid_filter", f"unknown filter {key!r} (known: {name})")
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, "invalid_filter", f"filter {name!r} given twice")
    if values and not values[0]:
        raise ApiError(400, "invalid_filter", f"filter {name!r} is empty")
    return values[0] if values else None


def _refuse_if_outlier(node: NodeService) -> None:
    """503 while this node's clock is the outlier: its observations would be dated wrongly
    for every replica that reads them."""
    outlier = node.clock_outlier()
    if outlier is not None:
        retry = max(1, math.ceil(node.config.gossip_interval))
        raise ApiError(
            503,
            "clock_skew",
            f"{outlier.describe()}; observations are refused until it is back "
            f"(clock offset {outlier.offset:+.3f}s)",
            headers={hdrs.RETRY_AFTER: str(retry)},
        )


async def replicas_route(request: web.Request) -> web.Response:
    """``GET /v1/replicas``: ``{"self": ID, "signed", "trust_digest", "replicas": {ID:
    {"url", "status", "clock_offset", "last_seen_age", "trusted"}}}``.

    Built from the ``replica:<id>`` entities of the merged state, this node included.
    ``clock_offset`` is the replica's clock minus this node's in seconds, as last measured
    by an exchange this node started (``0`` for this node, ``null`` when never measured);
    ``last_seen_age`` is the seconds since its freshest observation (``null``: never seen);
    ``trusted`` whether the trust list names it (``null`` when signed mode is off).
    """
    node = request.app[NODE]
    replicas = {replica_id: info.to_json() for replica_id, info in node.replicas().items()}
    return json_response({"self": node.replica_id, **_signed(node), "replicas": replicas})


def _signed(node: NodeService) -> dict[str, Any]:
    """``{"signed", "trust_digest"}``: whether signed mode is on, and with which list."""
    digest = node.trust_digest
    return {"signed": digest is not None, "trust_digest": digest}


async def forget_route(request: web.Request) -> web.Response:
    """``DELETE /v1/replicas/{id}``: forget a departed replica on every replica.

    Answers ``{"forgotten": [ID]}``; 404 if no container of it is known here, 422 for
    this node's own id (a node never forgets itself).
    """
    node = request.app[NODE]
    replica_id = names.check_replica_id(request.match_info["id"])
    if replica_id == node.replica_id:
        raise ApiError(422, "invalid_request", f"replica {replica_id!r} cannot forget itself")
    forgotten = node.forget(replica_id)
    if not forgotten:
        raise ApiError(404, "not_found", f"replica {replica_id!r} is not known here")
    await _committed(node)
    return json_response({"forgotten": forgotten})


# -- events --------------------------------------------------------------------------------


async def events_route(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events[?entity=&prefix=&kind=]``: status changes as server-sent events.

    The stream opens with one ``snapshot`` event whose data is the current state,
    ``{"entities": {ID: {"status", "reason"}}, "at"}``, so a client that connects late
    starts from it; then one ``change`` event per status change, data
    ``{"entity", "before", "after", "reason", "at"}`` (``at``: the node's clock, seconds
    since the epoch). A filter keeps the snapshot and the changes of the entities it
    matches alike (:class:`~.filters.EntityFilter`). An idle stream carries a
    ``: keep-alive`` comment every 15 s. A client too slow to keep up receives a final
    ``overflow`` event and the stream ends: reconnect, and start again from a snapshot.

    Events come serialised by the hub, once for all streams (:mod:`.events`); a stream
    sends whatever accumulated since its last write in one write.
    """
    keep = EntityFilter.from_query(request.query, EVENT_PARAMETERS)
    state = request.app[STATE]
    node = request.app[NODE]
    # Subscribe first: the snapshot below is then the state just before the first queued
    # change, so nothing is missed and nothing is reported twice.
    subscriber = node.events.subscribe(keep)
    state.streams.add(subscriber)
    response = web.StreamResponse(
        headers={hdrs.CACHE_CONTROL: "no-cache", "X-Accel-Buffering": "no"}
    )
    response.content_type = "text/event-stream"
    try:
        snapshot = {
            entity_id: {"status": view.status.value, "reason": view.reason}
            for entity_id, view in node.entities().items()
            if keep.keeps(view)
        }
        await response.prepare(request)
        await response.write(encode_event("snapshot", {"entities": snapshot, "at": node.now()}))
        while True:
            try:
                async with asyncio.timeout(state.heartbeat):
                    frames = await subscriber.take()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if not frames:
                break  # cut off or closed, and everything owed was sent
            await response.write(frames)
    except ConnectionError:
        node.log.debug("event stream client went away")
    finally:
        state.streams.discard(subscriber)
        node.events.unsubscribe(subscriber)
    return response


async def _close_streams(app: web.Application) -> None:
    """End open event streams, so that shutting down does not wait for their clients."""
    state = app[STATE]
    for subscriber in list(state.streams):
        app[NODE].events.unsubscribe(subscriber)
        subscriber.finish()


# -- malformed requests --------------------------------------------------------------------


class RequestErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log (``aiohttp.server``), with requests that aiohttp cannot parse
    (a malformed request line or header, an oversized line: anyone can send those) written
    as one line at DEBUG instead of an ERROR with a traceback each. Anything else aiohttp
    reports keeps its traceback.

    Give it to the runner: ``web.AppRunner(app, logger=RequestErrorLog())``.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"))

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            # aiohttp's message spans several lines (it draws a caret under the fault).
            detail = " ".join(str(exc).split())[:300].replace("%", "%%")
            kwargs = {key: value for key, value in kwargs.items() if key != "exc_info"}
            msg = f"{msg}: {detail}"
        return msg, kwargs

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: Any = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: object,
    ) -> None:
        level = logging.DEBUG if isinstance(exc_info, HttpProcessingError) else logging.ERROR
        self.log(
            level,
            msg,
            *args,
            exc_info=exc_info,
            stack_info=stack_info,
            stacklevel=stacklevel,
            extra=extra,
            **kwargs,
        )


# -- operations ----------------------------------------------------------------------------


async def openapi_route(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: the OpenAPI 3.1 document of these routes."""
    return web.Response(body=request.app[STATE].openapi, content_type=JSON)


async def healthz_route(request: web.Request) -> web.Response:
    """``GET /healthz``: ``{"status": "ok", "replica": ID, "signed", "trust_digest"}``;
    never needs the token. ``signed`` says whether signed mode is on, ``trust_digest``
    which trust list is in use (``null`` without one): equal lists have equal digests.

    While this node's clock is the outlier it answers 503 with ``{"status": "clock-skew",
    "replica", "clock_offset", "max_clock_skew", "error": {"code", "message"}}`` (an error
    answer like any other, with the facts beside it). 503 rather than 200: the node still
    serves reads and syncs but refuses observations, so it is not ready for the whole of
    its role, and a load balancer or readiness probe should send traffic elsewhere
    (restarting it would not fix its clock: not a liveness probe to restart on).
    """
    node = request.app[NODE]
    outlier = node.clock_outlier()
    if outlier is None:
        return json_response({"status": "ok", "replica": node.replica_id, **_signed(node)})
    return json_response(
        {
            "status": "clock-skew",
            "replica": node.replica_id,
            **_signed(node),
            "clock_offset": outlier.offset,
            "max_clock_skew": outlier.max_skew,
            "error": {"code": "clock_skew", "message": outlier.describe()},
        },
        503,
    )


async def metrics_route(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text; needs the token only with ``metrics_auth``."""
    return web.Response(
        body=request.app[NODE].metrics_exposition(),
        headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST},
    )


async def status_page_route(request: web.Request) -> web.Response:
    """``GET /``: the live status page (static; its script reads the API with the token).

    The page holds no data and is served without the token. Its script calls the ``/v1``
    routes; on a node with a token, open ``/#token=TOKEN`` (a URL fragment is never sent
    to the server) or type the token into the form the page shows after a 401. The
    token is kept in the tab's ``sessionStorage`` and removed from the address bar.
    """
    page = request.app[STATE].page
    return web.Response(
        body=page.html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": page.csp,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            hdrs.CACHE_CONTROL: "no-cache",
        },
    )
