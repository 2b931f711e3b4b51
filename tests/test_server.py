"""The HTTP server: every route's happy path and JSON shapes, OpenAPI, metrics, status page.

The node is constructed but not entered (no gossip, no timers) and served by aiohttp's
in-process test server; the event stream and full-node tests are in
``test_server_events.py``, error cases in ``test_server_errors.py``, sync in
``test_server_sync.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sphaera_crdt.core.constraints import all_of, exists, observed
from sphaera_crdt.net.openapi import openapi_document
from sphaera_crdt.net.server import create_app
from sphaera_crdt.node import Node, NodeConfig

pytestmark = pytest.mark.asyncio

ENTITY_KEYS = {"id", "kind", "attrs", "requires", "owner", "status", "reason"}


class Clock:
    """A settable clock."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node(clock: Clock) -> Node:
    return Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600), clock=clock)


@pytest_asyncio.fixture
async def client(node: Node) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_app(node))) as client:
        yield client


Client = TestClient[web.Request, web.Application]


async def put(client: Client, entity_id: str, body: dict[str, Any]) -> Any:
    response = await client.put(f"/v1/entities/{entity_id}", json=body)
    assert response.status in (200, 201), await response.text()
    return await response.json()


# -- entities ------------------------------------------------------------------------------


async def test_put_declares_and_answers_the_entity(client: Client, node: Node) -> None:
    response = await client.put(
        "/v1/entities/db", json={"kind": "postgres", "attrs": {"port": 5432, "ratio": 0.5}}
    )
    assert response.status == 201
    assert response.headers["Location"] == "/v1/entities/db"
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == {
        "id": "db",
        "kind": "postgres",
        "attrs": {"port": 5432, "ratio": 0.5},
        "requires": None,
        "owner": "a",
        "status": "exists",
        "reason": body["reason"],
    }
    assert type(body["attrs"]["port"]) is int
    assert node.replica.entity("db") == node.replica.entity("db")
    view = node.replica.entity("db")
    assert view is not None and view.attrs == {"port": 5432, "ratio": 0.5}


async def test_put_again_redeclares_with_200_and_states_the_whole_record(client: Client) -> None:
    await put(client, "db", {"attrs": {"port": 1, "old": True}})
    response = await client.put("/v1/entities/db", json={"kind": "pg", "attrs": {"port": 2}})
    assert response.status == 200
    assert "Location" not in response.headers
    body = await response.json()
    assert body["attrs"] == {"port": 2}
    assert body["kind"] == "pg"


async def test_put_with_empty_object_and_nulls(client: Client) -> None:
    body = await put(client, "bare", {})
    assert body["kind"] is None and body["attrs"] == {} and body["requires"] is None
    body = await put(client, "bare", {"kind": None, "attrs": None, "requires": None})
    assert body["status"] == "exists"


async def test_requires_is_taken_as_plain_json_and_drives_status(client: Client) -> None:
    requires = all_of(exists("db"), observed("db", within=10))
    body = await put(client, "api", {"requires": requires})
    assert body["requires"] == requires
    assert body["status"] == "absent"
    await put(client, "db", {"kind": "pg"})
    response = await client.post("/v1/observations", json={"subject": "db"})
    assert response.status == 200
    body = await (await client.get("/v1/entities/api")).json()
    assert body["status"] == "exists"


async def test_get_one_and_all(client: Client) -> None:
    await put(client, "db", {"attrs": {"nested": {"list": [1, 2.5, "x", None]}}})
    await put(client, "api", {"requires": {"exists": "db"}})
    one = await client.get("/v1/entities/db")
    assert one.status == 200
    assert (await one.json())["attrs"] == {"nested": {"list": [1, 2.5, "x", None]}}
    everything = await (await client.get("/v1/entities")).json()
    assert set(everything) == {"entities"}
    entities = everything["entities"]
    assert {"db", "api", "replica:a"} <= set(entities)
    for entity_id, entity in entities.items():
        assert set(entity) == ENTITY_KEYS
        assert entity["id"] == entity_id
        assert entity["status"] in ("exists", "absent", "undetermined")


async def test_entity_ids_with_slashes_and_colons_are_percent_encoded(client: Client) -> None:
    response = await client.put("/v1/entities/svc%2Fweb:8080", json={"kind": "svc"})
    assert response.status == 201
    assert response.headers["Location"] == "/v1/entities/svc%2Fweb%3A8080"
    body = await (await client.get(response.headers["Location"])).json()
    assert body["id"] == "svc/web:8080"


async def test_patch_merges_top_level_attrs(client: Client) -> None:
    await put(client, "db", {"attrs": {"port": 5432, "role": "replica"}})
    response = await client.patch("/v1/entities/db", json={"attrs": {"role": "primary", "v": 2}})
    assert response.status == 200
    body = await response.json()
    assert set(body) == ENTITY_KEYS
    assert body["attrs"] == {"port": 5432, "role": "primary", "v": 2}


async def test_delete_retracts_and_answers_the_absent_entity(client: Client) -> None:
    await put(client, "db", {})
    await put(client, "api", {"requires": {"exists": "db"}})
    response = await client.delete("/v1/entities/db")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == "db" and body["status"] == "absent"
    api = await (await client.get("/v1/entities/api")).json()
    assert api["status"] == "absent"
    # A retracted entity is still known: GET answers it, PUT brings it back.
    assert (await client.get("/v1/entities/db")).status == 200
    assert (await put(client, "db", {}))["status"] == "exists"


async def test_observations_are_listed_with_their_age(client: Client, clock: Clock) -> None:
    for subject, ttl in (("web", None), ("db", 30)):
        response = await client.post("/v1/observations", json={"subject": subject, "ttl": ttl})
        assert response.status == 200
    clock.t += 2.5
    response = await client.get("/v1/observations")
    assert response.status == 200
    body = await response.json()
    assert body["at"] == 1002.5
    # Sorted by subject; the age is read on this node's clock.
    assert body["observations"] == [
        {
            "observer": "a",
            "subject": subject,
            "ok": True,
            "value": None,
            "at": 1000.0,
            "ttl": ttl,
            "age": 2.5,
        }
        for subject, ttl in (("db", 30), ("web", None))
    ]
    one = await (await client.get("/v1/observations", params={"subject": "web"})).json()
    assert [item["subject"] for item in one["observations"]] == ["web"]
    none = await (await client.get("/v1/observations", params={"subject": "nobody"})).json()
    assert none["observations"] == []
    for query in ("subject=", "subject=a&subject=b", "observer=a"):
        response = await client.get("/v1/observations?" + query)
        assert response.status == 400, query
        assert (await response.json())["error"]["code"] == "invalid_filter"


async def test_why_explains_the_status(client: Client) -> None:
    await put(client, "api", {"requires": {"exists": "db"}})
    response = await client.get("/v1/entities/api/why")
    assert response.status == 200
    tree = await response.json()
    assert tree["entity"] == "api"
    assert tree["status"] == "absent"
    assert "db" in str(tree)
    shallow = await (await client.get("/v1/entities/api/why?depth=0")).json()
    assert shallow["entity"] == "api"


# -- observations, replicas, health --------------------------------------------------------


async def test_observation_answers_what_was_stored(client: Client, clock: Clock) -> None:
    clock.t = 1234.5
    response = await client.post(
        "/v1/observations",
        json={"subject": "db", "ok": False, "value": {"latency_ms": 3}, "ttl": 30},
    )
    assert response.status == 200
    assert await response.json() == {
        "observer": "a",
        "subject": "db",
        "ok": False,
        "value": {"latency_ms": 3},
        "at": 1234.5,
        "ttl": 30,
    }
    defaults = await (await client.post("/v1/observations", json={"subject": "x"})).json()
    assert defaults["ok"] is True and defaults["value"] is None and defaults["ttl"] is None


async def test_replicas_lists_replica_entities(client: Client, node: Node) -> None:
    node.replica.declare("replica:b", kind="replica", attrs={"url": "http://127.0.0.1:9"})
    node.replica.declare("replica:odd", kind="not-a-replica")
    node.replica.observe("replica:b", ok=True)
    response = await client.get("/v1/replicas")
    assert response.status == 200
    body = await response.json()
    assert body["self"] == "a"
    assert (body["signed"], body["trust_digest"]) == (False, None)
    assert body["replicas"] == {
        "a": {
            "url": None,
            "status": "exists",
            "clock_offset": 0.0,
            "last_seen_age": None,
            "trusted": None,
        },
        "b": {
            "url": "http://127.0.0.1:9",
            "status": "exists",
            "clock_offset": None,
            "last_seen_age": 0.0,
            "trusted": None,
        },
    }


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {
        "status": "ok",
        "replica": "a",
        "signed": False,
        "trust_digest": None,
    }


async def test_big_ints_round_trip_exactly(client: Client) -> None:
    big = 2**80
    response = await client.put(
        "/v1/entities/big",
        data=b'{"attrs": {"n": %d, "m": -%d, "f": 1.5}}' % (big, big),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 201
    text = await response.text()
    assert str(big) in text and f"-{big}" in text
    body = await (await client.get("/v1/entities/big")).json()
    assert body["attrs"] == {"n": big, "m": -big, "f": 1.5}


# -- metrics -------------------------------------------------------------------------------


async def test_metrics_counts_statuses_and_rejections(client: Client) -> None:
    await put(client, "db", {})
    await put(client, "api", {"requires": {"exists": "nothing"}})
    bad = await client.put(
        "/v1/entities/x", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad.status == 400
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'sphaera_entities{status="exists"} 2.0' in text  # db and replica:a
    assert 'sphaera_entities{status="absent"} 1.0' in text
    assert 'sphaera_rejected_requests_total{reason="invalid_json"} 1.0' in text


# -- OpenAPI -------------------------------------------------------------------------------


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/")
    target: Any = document
    for part in ref[2:].split("/"):
        target = target[part]
    return target


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if "$ref" in value else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


async def test_openapi_document_matches_the_routes(client: Client) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Required when the node has a token.",
    }
    routed = {
        (route.resource.canonical, route.method.lower())
        for route in client.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    }
    assert routed == documented
    operation_ids = [
        item[method]["operationId"]
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    ]
    assert len(operation_ids) == len(set(operation_ids))
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            assert operation["responses"], (path, method)
            errors = [code for code in operation["responses"] if code[0] in "45"]
            for code in errors:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "snapshot" in document["paths"]["/v1/events"]["get"]["description"]


async def test_openapi_marks_metrics_auth() -> None:
    assert openapi_document()["paths"]["/metrics"]["get"]["security"] == []
    guarded = openapi_document(metrics_auth=True)["paths"]["/metrics"]["get"]
    assert "security" not in guarded and "401" in guarded["responses"]


# -- status page ---------------------------------------------------------------------------


async def test_status_page_is_self_contained_html(client: Client) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    html = await response.text()
    assert "/v1/events" in html and "/v1/entities" in html and "/v1/replicas" in html
    assert "Dependency graph" in html
    # No resources from elsewhere: no absolute URLs at all.
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", html)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_openapi_document_is_valid_openapi_3_1() -> None:
    """Checked against the OpenAPI 3.1 specification where the validator is installed."""
    validator = pytest.importorskip("openapi_spec_validator")
    errors = list(validator.OpenAPIV31SpecValidator(openapi_document()).iter_errors())
    assert errors == []
    errors = list(
        validator.OpenAPIV31SpecValidator(openapi_document(metrics_auth=True)).iter_errors()
    )
    assert errors == []
