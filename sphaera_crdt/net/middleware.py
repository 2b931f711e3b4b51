"""The middlewares of a node's HTTP server and the request plumbing its handlers share.

Theory of operation
-------------------
Every failure goes through :func:`errors_middleware` (the outermost): it answers
``{"error": {"code", "message"}}`` with the status from :data:`ERRORS` for the library's
exceptions (caller mistakes are 422, unusable peer bytes 400, entries that do not verify
in signed mode 403, unknown entities 404), from
:class:`ApiError` for refusals made here, or from aiohttp's own HTTP exceptions (unknown
route 404, wrong method 405, body too large 413), and counts the refusal in
``sphaera_rejected_requests_total`` by code.

:func:`auth_middleware` refuses, when the node has a token, every request without
``Authorization: Bearer <token>`` except on the public routes (``/healthz``, the status
page and, unless ``metrics_auth`` is set, ``/metrics``). Unknown routes are not public, so
without the token they answer 401, not 404: nothing is learnt about the API.

Bodies are read by :func:`read_body` only: the media type is checked first (415), then the
announced ``Content-Length`` (413, before a byte is read), then the body is read under a
deadline (``read_timeout``; a client that drips bytes gets 408 and the connection is
closed) and a size cap (``max_body``, which aiohttp also enforces on chunked bodies). All
of it runs before a handler touches the replica.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from typing import Any, Final

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from ..core import names
from ..errors import (
    ApiError,
    InputError,
    InvalidConstraint,
    InvalidIdentifier,
    InvalidMessage,
    InvalidUpdate,
    InvalidValue,
    RemoteError,
    UnknownEntity,
    UnverifiedUpdate,
)
from .service import NodeService

__all__ = [
    "ERRORS",
    "JSON",
    "NODE",
    "OCTETS",
    "PUBLIC_ROUTES",
    "ApiError",
    "auth_middleware",
    "dumps",
    "errors_middleware",
    "json_response",
    "kind_of",
    "peer_headers",
    "read_body",
    "read_json_object",
]

JSON: Final = "application/json"
OCTETS: Final = "application/octet-stream"
#: Headers a peer sends on sync and update requests.
REPLICA_HEADER: Final = "Sphaera-Replica"
URL_HEADER: Final = "Sphaera-Url"
MAX_URL_LEN: Final = 2048
#: Names of the routes that never need the token (``metrics`` unless ``metrics_auth``).
PUBLIC_ROUTES: Final = frozenset({"healthz", "status_page"})
METRICS_ROUTE: Final = "metrics"

#: The node an application serves, as its handlers see it.
NODE: Final = web.AppKey[NodeService]("sphaera_node")

# orjson reads ints beyond 64 bits as floats; bodies that may hold one take the slow,
# exact path (a digit run this long may also be a float or sit in a string: harmless).
_LONG_NUMBER: Final = re.compile(rb"\d{19}")


#: Library errors and how they answer, most specific first.
ERRORS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (UnknownEntity, 404, "not_found"),
    (InvalidConstraint, 422, "invalid_constraint"),
    (InvalidIdentifier, 422, "invalid_identifier"),
    (InvalidValue, 422, "invalid_value"),
    (InputError, 422, "invalid_request"),
    (InvalidMessage, 400, "invalid_message"),
    # Signed mode: well-formed, but entries that do not verify (a refusal, not a mistake).
    (UnverifiedUpdate, 403, "unverified_update"),
    (InvalidUpdate, 400, "invalid_update"),
    (RemoteError, 400, "invalid_message"),
)
#: aiohttp's HTTP exceptions (routing, size cap) by status.
_HTTP_CODES: Final = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure with the JSON error shape, and count it."""
    try:
        return await handler(request)
    except ApiError as exc:
        error = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _from_http(request, exc)
    except Exception as exc:
        error = _from_library(request, exc)
    node = request.app[NODE]
    node.count_rejected(error.code)
    node.log.debug("refused %s %s: %s %s", request.method, request.path, error.status, error.code)
    response = json_response(
        {"error": {"code": error.code, "message": error.message}}, error.status
    )
    response.headers.update(error.headers)
    if error.status == 408:
        response.force_close()
    return response


def _from_http(request: web.Request, exc: web.HTTPException) -> ApiError:
    code = _HTTP_CODES.get(exc.status, "http_error")
    message = exc.reason
    headers: dict[str, str] = {}
    if exc.status == 404:
        message = f"no route {request.path}"
    elif exc.status == 405:
        message = f"{request.method} is not allowed on {request.path}"
        if hdrs.ALLOW in exc.headers:
            headers[hdrs.ALLOW] = exc.headers[hdrs.ALLOW]
    elif exc.status == 413:
        message = f"the body is larger than {request.app[NODE].config.max_body} bytes"
    return ApiError(exc.status, code, message, headers)


def _from_library(request: web.Request, exc: Exception) -> ApiError:
    for kind, status, code in ERRORS:
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    request.app[NODE].log.exception("%s %s failed", request.method, request.path)
    return ApiError(500, "internal_error", "the node failed to answer; see its log")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests without the bearer token, except on public routes."""
    node = request.app[NODE]
    token = node.config.token
    if token is not None and not _public(request, node) and not _authorized(request, token):
        raise ApiError(
            401,
            "unauthorized",
            "this route needs the header Authorization: Bearer <token>",
            {hdrs.WWW_AUTHENTICATE: 'Bearer realm="sphaera"'},
        )
    return await handler(request)


def _public(request: web.Request, node: NodeService) -> bool:
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    return name in PUBLIC_ROUTES or (name == METRICS_ROUTE and not node.config.metrics_auth)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    offered = credentials.strip().encode("utf-8", "surrogateescape")
    # compare_digest takes as long for a wrong token as for a right one of the same length.
    return scheme.lower() == "bearer" and hmac.compare_digest(offered, token.encode())


# -- reading and writing bodies ------------------------------------------------------------


async def read_body(request: web.Request, media_type: str) -> bytes:
    """The request body, checked for media type, size and read deadline.

    Raises:
        ApiError: 415, 413 (announced or actual size over ``max_body``) or 408.
    """
    config = request.app[NODE].config
    # Without a Content-Type, aiohttp (like RFC 9110) assumes application/octet-stream.
    if request.content_type != media_type:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"this route takes {media_type}, not {request.content_type or 'nothing'}",
        )
    length = request.content_length
    if length is not None and length > config.max_body:
        raise ApiError(
            413, "body_too_large", f"the body is larger than {config.max_body} bytes ({length})"
        )
    try:
        async with asyncio.timeout(config.read_timeout):
            return await request.read()
    except TimeoutError as exc:
        raise ApiError(
            408, "request_timeout", f"the body took longer than {config.read_timeout} s to send"
        ) from exc


async def read_json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object body whose keys are all in ``allowed``.

    Raises:
        ApiError: 400 if the body is not JSON, 422 if it is not such an object.
    """
    body = await read_body(request, JSON)
    try:
        if _LONG_NUMBER.search(body) is None:
            data = orjson.loads(body)
        else:
            data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if type(data) is not dict:
        raise ApiError(
            422, "invalid_request", f"the body must be a JSON object, not {kind_of(data)}"
        )
    unexpected = sorted(set(data) - allowed)
    if unexpected:
        raise ApiError(
            422,
            "invalid_request",
            f"unexpected keys {unexpected}; this route takes {sorted(allowed)}",
        )
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def kind_of(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
    # A stored int beyond 64 bits: the standard library writes it exactly.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type=JSON)


def peer_headers(request: web.Request) -> tuple[str | None, str | None]:
    """The calling peer's ``Sphaera-Replica`` and ``Sphaera-Url``, checked.

    Raises:
        ApiError: 400 ``invalid_header``.
    """
    peer_id = request.headers.get(REPLICA_HEADER)
    peer_url = request.headers.get(URL_HEADER)
    if peer_id is not None:
        try:
            names.check_replica_id(peer_id)
        except InvalidIdentifier as exc:
            raise ApiError(400, "invalid_header", f"{REPLICA_HEADER}: {exc}") from exc
    if peer_url is not None and not _valid_url(peer_url):
        raise ApiError(400, "invalid_header", f"{URL_HEADER} must be an http(s) URL with a host")
    return peer_id, peer_url


def _valid_url(text: str) -> bool:
    if len(text) > MAX_URL_LEN:
        return False
    try:
        url = URL(text)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host) and url.user is None
