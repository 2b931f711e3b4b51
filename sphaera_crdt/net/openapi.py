"""The OpenAPI 3.1 document of a node's HTTP API, built as plain data.

Served on ``GET /v1/openapi.json``. It describes the routes of :mod:`.server`; a test
checks that both list the same routes and methods and that every reference resolves.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

__all__ = ["ERROR_CODES", "OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
_REF: Final = "#/components/schemas/"
#: Every ``error.code`` a node answers with.
ERROR_CODES: Final = tuple(
    """invalid_json invalid_request invalid_value invalid_identifier invalid_constraint
    invalid_message invalid_update invalid_header unauthorized not_found method_not_allowed
    request_timeout body_too_large unsupported_media_type bad_request http_error
    internal_error clock_skew unverified_update""".split()
)

JsonObject = dict[str, Any]


def _ref(name: str) -> JsonObject:
    return {"$ref": _REF + name}


def _json_body(schema: JsonObject, description: str) -> JsonObject:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> JsonObject:
    return _json_body(_ref("Error"), description)


def _bytes(description: str) -> JsonObject:
    return {
        "description": description,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
            }
        },
    }


_ENTITY_ID: Final[JsonObject] = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The entity id, percent-encoded (a `/` in an id is `%2F`).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}
_PEER_HEADERS: Final[list[JsonObject]] = [
    {
        "name": "Sphaera-Replica",
        "in": "header",
        "required": False,
        "description": "The calling replica's id: a claim, never evidence that it lives.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    {
        "name": "Sphaera-Url",
        "in": "header",
        "required": False,
        "description": "The URL at which the calling replica is reached (http or https).",
        "schema": {"type": "string", "format": "uri", "maxLength": 2048},
    },
    {
        "name": "Sphaera-Time",
        "in": "header",
        "required": False,
        "description": "The caller's clock, seconds since the epoch (a float). Not trusted: "
        "offsets are measured only from answers to exchanges a node started.",
        "schema": {"type": "string", "maxLength": 32},
    },
]

#: Who answered a sync: a caller that reached a peer's declared URL and reads that peer's
#: id here counts the exchange as an observation of it.
_ANSWER_HEADERS: Final[JsonObject] = {
    "Sphaera-Replica": {
        "description": "The answering replica's id.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "Sphaera-Url": {
        "description": "The URL the answering replica declares.",
        "schema": {"type": "string", "format": "uri", "maxLength": 2048},
    },
    "Sphaera-Time": {
        "description": "This node's clock when it answered, seconds since the epoch: the "
        "caller measures this node's clock offset from it and the round trip.",
        "schema": {"type": "string"},
    },
}

#: What a node in signed mode answers to entries that do not verify (sync and updates).
_UNVERIFIED: Final[JsonObject] = {
    "403": _error(
        "Signed mode: the body is well-formed but carries entries that do not verify under "
        "this node's trust list (a writer it does not list, a missing or wrong signature, "
        "an entry in another writer's container) (`unverified_update`); nothing was "
        "merged, so forgeries do not spread."
    )
}
#: ``signed`` and ``trust_digest``, in ``/healthz`` and ``/v1/replicas``.
_SIGNED: Final[JsonObject] = {
    "signed": {
        "type": "boolean",
        "description": "Whether signed mode is on: only entries that verify under the "
        "node's trust list count, and only the replicas it lists are peers.",
    },
    "trust_digest": {
        "type": ["string", "null"],
        "description": "Identifies the trust list in use (equal lists, equal digests: "
        "compare it across nodes); null when signed mode is off.",
    },
}

#: Errors that any route with a body can answer.
_BODY_ERRORS: Final[JsonObject] = {
    "413": _error("The body is larger than the node's `--max-body` (`body_too_large`)."),
    "415": _error("Wrong `Content-Type` (`unsupported_media_type`)."),
    "408": _error("The body was not sent within the read deadline (`request_timeout`)."),
}
_JSON_ERRORS: Final[JsonObject] = {
    "400": _error("The body is not JSON (`invalid_json`)."),
    "422": _error(
        "Valid JSON with a wrong shape or value: `invalid_request`, `invalid_value`, "
        "`invalid_identifier`, `invalid_constraint`."
    ),
    **_BODY_ERRORS,
}

_SCHEMAS: Final[JsonObject] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "Stable, machine-readable.",
                        "examples": list(ERROR_CODES),
                    },
                    "message": {"type": "string", "description": "For people."},
                },
            }
        },
    },
    "Status": {"type": "string", "enum": ["exists", "absent", "undetermined"]},
    "Value": {
        "description": (
            "Any JSON value; ints and floats keep their type on every replica. Lists and "
            "objects nest at most 128 levels (a whole `requires` included): deeper is 422."
        ),
    },
    "Attrs": {
        "type": "object",
        "additionalProperties": _ref("Value"),
        "propertyNames": {"minLength": 1, "maxLength": 128},
    },
    "Constraint": {
        "description": (
            "The constraint language (DESIGN.md section 2): `true`, `false`, or an object "
            "with exactly one clause."
        ),
        "oneOf": [
            {"type": "boolean"},
            {
                "type": "object",
                "required": ["exists"],
                "properties": {"exists": {"type": "string"}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["all"],
                "properties": {"all": {"type": "array", "items": _ref("Constraint")}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["any"],
                "properties": {"any": {"type": "array", "items": _ref("Constraint")}},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["not"],
                "properties": {"not": _ref("Constraint")},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["at_least", "of"],
                "properties": {
                    "at_least": {"type": "integer", "minimum": 0},
                    "of": {"type": "array", "items": _ref("Constraint")},
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["observed", "within"],
                "properties": {
                    "observed": {"type": "string"},
                    "within": {"type": "number", "minimum": 0},
                    "by": {
                        "oneOf": [
                            {"enum": ["*", "self"]},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        ],
                        "default": "*",
                    },
                    "quorum": {"type": "integer", "minimum": 1, "default": 1},
                    "ok": {"type": "boolean", "default": True},
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["attr", "op"],
                "properties": {
                    "attr": {
                        "type": "array",
                        "prefixItems": [{"type": "string"}, {"type": "string"}],
                        "minItems": 2,
                        "maxItems": 2,
                        "description": '[ENTITY_ID, "dotted.path"]',
                    },
                    "op": {
                        "enum": ["eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "present"]
                    },
                    "value": _ref("Value"),
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["call"],
                "properties": {"call": {"type": "string"}, "args": {"type": "object"}},
                "additionalProperties": False,
            },
        ],
    },
    "Entity": {
        "type": "object",
        "required": ["id", "kind", "attrs", "requires", "owner", "status", "reason"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": ["string", "null"]},
            "attrs": _ref("Attrs"),
            "requires": {"oneOf": [_ref("Constraint"), {"type": "null"}]},
            "owner": {"type": ["string", "null"], "description": "The declaring replica."},
            "status": _ref("Status"),
            "reason": {"type": "string", "description": "One line: why this status."},
            "probe": {
                "allOf": [_ref("Probe")],
                "description": "Present only when the entity carries a readable probe object.",
            },
        },
    },
    "Probe": {
        "type": "object",
        "description": "A check replicas run and record as their observation of the entity "
        "(ok, value, ttl of 3 periods); exactly one of http, tcp, exec.",
        "properties": {
            "http": {"type": "string", "description": "A URL; ok when it answers `expect`."},
            "expect": {"type": "integer", "default": 200},
            "tcp": {"type": "string", "description": "HOST:PORT; ok when it accepts."},
            "exec": {
                "type": "array",
                "items": {"type": "string"},
                "description": "An argv; ok when it exits 0.",
            },
            "every": {"type": "number", "default": 10, "description": "Seconds between runs."},
            "timeout": {"type": "number", "description": "Seconds a run may take."},
            "by": {
                "oneOf": [
                    {"type": "string", "enum": ["owner", "*"]},
                    {"type": "array", "items": {"type": "string"}},
                ],
                "default": "owner",
                "description": "Which replicas run it.",
            },
        },
        "additionalProperties": False,
    },
    "Entities": {
        "type": "object",
        "required": ["entities"],
        "properties": {"entities": {"type": "object", "additionalProperties": _ref("Entity")}},
    },
    "Declaration": {
        "type": "object",
        "description": "The whole record: attributes not named here are removed.",
        "properties": {
            "kind": {"type": ["string", "null"]},
            "attrs": {"oneOf": [_ref("Attrs"), {"type": "null"}]},
            "requires": {"oneOf": [_ref("Constraint"), {"type": "null"}]},
            "probe": {"oneOf": [_ref("Probe"), {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    "AttrsPatch": {
        "type": "object",
        "required": ["attrs"],
        "description": "Top-level attributes merged into the entity's attributes.",
        "properties": {"attrs": _ref("Attrs")},
        "additionalProperties": False,
    },
    "Explanation": {
        "type": "object",
        "description": "A tree of the clauses and facts that decided the status. Each entity "
        "in it (the root, and the `dependency` of an `exists` clause) has `entity`, `status`, "
        "`reason`, and `because`: its rule's clause, with `clause`, `value` and, for `all`, "
        "`any`, `at_least` and `not`, the `deciding` children. An `observed` clause lists "
        "its `observations` with `at`, `age`, `fresh` and `expires_at` (fresh) or "
        "`stale_since` (stale), instants on this node's clock.",
        "required": ["entity", "status", "reason"],
        "properties": {
            "entity": {"type": "string"},
            "status": _ref("Status"),
            "reason": {"type": "string", "description": "One line: the atoms that decided."},
            "now": {
                "type": "number",
                "description": "At the root only: this node's clock when the tree was made "
                "(seconds since the epoch), to read the tree's instants against.",
            },
            "decided_by": {
                "type": "array",
                "description": "The atoms the reason names, at most 8: each has `clause` "
                "(`exists`, `observed`, `attr`, `call`, `const`, or a connective that decides "
                "by its shape alone), `value` (its own: `true`, `false` or `unknown`), "
                "`negated` (under an odd number of `not`: its value is the opposite of the "
                "status), `text` (the reason's words for it) and what identifies it (`entity`; "
                "`subject`, `within`, `by`, `quorum`, `ok`, `fresh`; `path`, `op`, `expected`; "
                "`name`, `args`; `constant`; `need`, `of`).",
                "items": {
                    "type": "object",
                    "required": ["clause", "value", "negated", "text"],
                    "properties": {
                        "clause": {"type": "string"},
                        "value": {"enum": ["true", "false", "unknown"]},
                        "negated": {"type": "boolean"},
                        "text": {"type": "string"},
                    },
                },
            },
            "decided_by_more": {
                "type": "integer",
                "description": "Deciding atoms not listed in `decided_by`.",
            },
            "because": {"type": "object", "description": "The clause of the entity's rule."},
            "cycle": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The members of the cycle the entity lies on.",
            },
            "chain": {
                "type": "object",
                "description": "Past the depth asked for: the chain of single causes followed "
                "down, with `links`, `ends_at`, and that entity's `status` and `reason`.",
            },
            "see": {"type": "string", "description": "Explained above (the tree came round)."},
            "unreadable": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Fields of the record that could not be read, with why.",
            },
            "truncated": {
                "type": "string",
                "description": "The tree was cut here (it nests at most 100 levels).",
            },
        },
        "additionalProperties": True,
    },
    "ObservationRequest": {
        "type": "object",
        "required": ["subject"],
        "properties": {
            "subject": {"type": "string", "minLength": 1, "maxLength": 256},
            "ok": {"type": "boolean", "default": True},
            "value": _ref("Value"),
            "ttl": {"type": ["number", "null"], "minimum": 0},
        },
        "additionalProperties": False,
    },
    "Observation": {
        "type": "object",
        "required": ["observer", "subject", "ok", "value", "at", "ttl"],
        "properties": {
            "observer": {"type": "string", "description": "The observing replica."},
            "subject": {"type": "string"},
            "ok": {"type": "boolean"},
            "value": _ref("Value"),
            "at": {"type": "number", "description": "Seconds, the observer's clock."},
            "ttl": {"type": ["number", "null"]},
        },
    },
    "Observations": {
        "type": "object",
        "required": ["at", "observations"],
        "properties": {
            "at": {"type": "number", "description": "This node's clock, seconds."},
            "observations": {
                "type": "array",
                "items": {
                    "allOf": [_ref("Observation")],
                    "required": ["age"],
                    "properties": {
                        "age": {
                            "type": "number",
                            "description": "Seconds from the observation's `at` to this "
                            "node's clock (negative: dated ahead of it).",
                        }
                    },
                },
            },
        },
    },
    "Replicas": {
        "type": "object",
        "required": ["self", "signed", "trust_digest", "replicas"],
        "properties": {
            "self": {"type": "string"},
            **_SIGNED,
            "replicas": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["url", "status", "clock_offset", "last_seen_age", "trusted"],
                    "properties": {
                        "trusted": {
                            "type": ["boolean", "null"],
                            "description": "Signed mode: whether the trust list names the "
                            "replica (its entries count and it may be a peer); null when "
                            "signed mode is off.",
                        },
                        "url": {"type": ["string", "null"]},
                        "status": _ref("Status"),
                        "clock_offset": {
                            "type": ["number", "null"],
                            "description": "The replica's clock minus this node's, in "
                            "seconds, as last measured by a sync exchange this node started "
                            "(0 for this node, null when never measured).",
                        },
                        "last_seen_age": {
                            "type": ["number", "null"],
                            "minimum": 0,
                            "description": "Seconds since the freshest observation of the "
                            "replica by any replica, on this node's clock (null when it was "
                            "never observed).",
                        },
                    },
                },
            },
        },
    },
    "Change": {
        "type": "object",
        "description": "Data of a `change` event.",
        "required": ["entity", "before", "after", "reason", "at"],
        "properties": {
            "entity": {"type": "string"},
            "before": _ref("Status"),
            "after": _ref("Status"),
            "reason": {"type": "string"},
            "at": {"type": "number", "description": "Seconds since the epoch, this node's clock."},
        },
    },
    "Snapshot": {
        "type": "object",
        "description": "Data of the `snapshot` event that opens every event stream.",
        "required": ["entities", "at"],
        "properties": {
            "entities": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status", "reason"],
                    "properties": {"status": _ref("Status"), "reason": {"type": "string"}},
                },
            },
            "at": {"type": "number", "description": "Seconds since the epoch, this node's clock."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "replica", "signed", "trust_digest"],
        "properties": {"status": {"const": "ok"}, "replica": {"type": "string"}, **_SIGNED},
    },
    "ClockSkew": {
        "description": "The answer of `/healthz` while this node's clock is the outlier.",
        "allOf": [_ref("Error")],
        "required": [
            "status",
            "replica",
            "signed",
            "trust_digest",
            "clock_offset",
            "max_clock_skew",
        ],
        "properties": {
            "status": {"const": "clock-skew"},
            "replica": {"type": "string"},
            **_SIGNED,
            "clock_offset": {
                "type": "number",
                "description": "This node's clock minus the median of its live peers'.",
            },
            "max_clock_skew": {"type": "number"},
        },
    },
}

_EVENTS_DESCRIPTION: Final = """\
A `text/event-stream` of status changes on this replica.

* The stream opens with exactly one `snapshot` event whose data is the current state,
  `{"entities": {ID: {"status", "reason"}}, "at"}` (schema `Snapshot`): a client that
  connects late starts from it. The server subscribes before taking the snapshot, so every
  change after the snapshot is delivered and none before it.
* Then one `change` event per status change, data `{"entity", "before", "after",
  "reason", "at"}` (schema `Change`; `at` is this node's clock, seconds since the epoch).
* `entity`, `prefix` and `kind` keep only the entities they match, in the snapshot and in
  the changes alike.
* An idle stream carries a comment line `: keep-alive` every 15 seconds.
* A client too slow to keep up gets a final `overflow` event (data `{"dropped": true}`)
  and the stream ends; reconnect to start again from a snapshot.

Each event is `event: NAME`, one `data: JSON` line and a blank line."""


def _filter(name: str, description: str, schema: JsonObject | None = None) -> JsonObject:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "minLength": 1},
    }


_ENTITY: Final = _filter("entity", "Only the entity with this id.")
_PREFIX: Final = _filter("prefix", "Only entities whose id starts with this.")
_KIND: Final = _filter("kind", "Only entities of this kind.")
_STATUS: Final = _filter("status", "Only entities with this derived status.", _ref("Status"))
_BAD_FILTER: Final = (
    "An unknown, repeated or empty filter, or an unknown status (`invalid_filter`)."
)


def _paths(metrics_auth: bool) -> JsonObject:
    unauthorized = {"401": _error("Missing or wrong bearer token (`unauthorized`).")}
    not_found = {"404": _error("The entity is not declared (`not_found`).")}
    return {
        "/v1/sync": {
            "post": {
                "operationId": "sync",
                "summary": "One push-pull round trip in y-protocols SYNC messages",
                "description": (
                    "The body is y-protocols SYNC messages back to back, each `0x00, "
                    "sync type, varuint length, payload` as pycrdt's `create_sync_message` "
                    "and `create_update_message` write them: SYNC_STEP1 (the caller's state "
                    "vector), optionally SYNC_UPDATE or SYNC_STEP2 (what the caller "
                    "pushes). The answer is SYNC_STEP2 (what the caller lacks) then "
                    "SYNC_STEP1 (this node's state vector); a caller that lacks nothing "
                    "gets the empty update `00 00`. A body without SYNC_STEP1 is a push "
                    "alone: the answer is one SYNC_STEP1 holding only the clocks of the "
                    "writers the push carried (an acknowledgement, not the whole state "
                    "vector)."
                ),
                "parameters": _PEER_HEADERS,
                "requestBody": {"required": True, **_bytes("y-protocols SYNC messages")},
                "responses": {
                    "200": {
                        **_bytes(
                            "SYNC_STEP2 then SYNC_STEP1; to a push alone, SYNC_STEP1 of the "
                            "pushed writers' clocks"
                        ),
                        "headers": _ANSWER_HEADERS,
                    },
                    "400": _error(
                        "Malformed messages (`invalid_message`), update (`invalid_update`) "
                        "or peer header (`invalid_header`); nothing was merged."
                    ),
                    **_UNVERIFIED,
                    **unauthorized,
                    **_BODY_ERRORS,
                },
            }
        },
        "/v1/updates": {
            "post": {
                "operationId": "pushUpdate",
                "summary": "Merge a raw Yrs v1 update",
                "parameters": _PEER_HEADERS,
                "requestBody": {"required": True, **_bytes("A Yrs v1 update")},
                "responses": {
                    "204": {"description": "Merged."},
                    "400": _error("Not a valid update (`invalid_update`); nothing changed."),
                    **_UNVERIFIED,
                    **unauthorized,
                    **_BODY_ERRORS,
                },
            }
        },
        "/v1/entities": {
            "get": {
                "operationId": "listEntities",
                "summary": "Every declared entity with its derived status",
                "description": "The filters given keep only the entities that match all of them.",
                "parameters": [_PREFIX, _KIND, _STATUS],
                "responses": {
                    "200": _json_body(_ref("Entities"), "Entities by id"),
                    "400": _error(_BAD_FILTER),
                    **unauthorized,
                },
            }
        },
        "/v1/entities/{id}": {
            "parameters": [_ENTITY_ID],
            "get": {
                "operationId": "getEntity",
                "summary": "One entity",
                "responses": {
                    "200": _json_body(_ref("Entity"), "The entity"),
                    **unauthorized,
                    **not_found,
                },
            },
            "put": {
                "operationId": "declareEntity",
                "summary": "Declare (or re-declare) an entity",
                "description": (
                    "States the whole record. `replica:<id>` entities are written by their "
                    "replica only and are refused (422 `invalid_identifier`)."
                ),
                "requestBody": {"required": True, **_json_body(_ref("Declaration"), "")},
                "responses": {
                    "200": _json_body(_ref("Entity"), "Re-declared"),
                    "201": {
                        **_json_body(_ref("Entity"), "Declared"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **unauthorized,
                    **_JSON_ERRORS,
                },
            },
            "patch": {
                "operationId": "updateEntity",
                "summary": "Merge top-level attributes into a declared entity",
                "requestBody": {"required": True, **_json_body(_ref("AttrsPatch"), "")},
                "responses": {
                    "200": _json_body(_ref("Entity"), "The updated entity"),
                    **unauthorized,
                    **not_found,
                    **_JSON_ERRORS,
                },
            },
            "delete": {
                "operationId": "retractEntity",
                "summary": "Retract an entity (it becomes absent everywhere)",
                "responses": {
                    "200": _json_body(_ref("Entity"), "The retracted entity"),
                    "422": _error("A `replica:<id>` entity (`invalid_identifier`)."),
                    **unauthorized,
                    **not_found,
                },
            },
        },
        "/v1/entities/{id}/why": {
            "parameters": [_ENTITY_ID],
            "get": {
                "operationId": "explainEntity",
                "summary": "Why the entity has its status",
                "parameters": [
                    {
                        "name": "depth",
                        "in": "query",
                        "required": False,
                        "description": "How deep `exists` dependencies are explained.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 32, "default": 3},
                    }
                ],
                "responses": {
                    "200": _json_body(_ref("Explanation"), "The explanation tree"),
                    "422": _error("A bad `depth` (`invalid_request`)."),
                    **unauthorized,
                    **not_found,
                },
            },
        },
        "/v1/observations": {
            "get": {
                "operationId": "listObservations",
                "summary": "The latest observation of each observer, with its age",
                "description": "Sorted by subject, then observer. `at` is this node's clock; "
                "each observation's `age` is that minus its `at` (negative when its observer's "
                "clock runs ahead). Whether an observation counts for a constraint depends on "
                "the constraint (`within`, `by`, `ok`): `why` says.",
                "parameters": [_filter("subject", "Only observations of this subject.")],
                "responses": {
                    "200": _json_body(_ref("Observations"), "Observations"),
                    "400": _error(_BAD_FILTER),
                    **unauthorized,
                },
            },
            "post": {
                "operationId": "observe",
                "summary": "Record this replica's observation of a subject",
                "description": "It replaces this replica's previous observation of the subject.",
                "requestBody": {"required": True, **_json_body(_ref("ObservationRequest"), "")},
                "responses": {
                    "200": _json_body(_ref("Observation"), "The observation as stored"),
                    **unauthorized,
                    **_JSON_ERRORS,
                    "503": _error(
                        "This node's clock is more than `--max-clock-skew` away from a "
                        "majority of its live peers (`clock_skew`, the message names the "
                        "offset): it records no observation until its clock is back. "
                        "`Retry-After` says when to try again."
                    ),
                },
            },
        },
        "/v1/replicas": {
            "get": {
                "operationId": "listReplicas",
                "summary": "The replicas known from `replica:<id>` entities",
                "responses": {
                    "200": _json_body(_ref("Replicas"), "Replicas by id"),
                    **unauthorized,
                },
            }
        },
        "/v1/replicas/{id}": {
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "description": "A replica id.",
                    "schema": {"type": "string"},
                }
            ],
            "delete": {
                "operationId": "forgetReplica",
                "summary": "Forget a departed replica on every replica",
                "description": "Its records and observations stop counting and its "
                "containers are dropped from the document, alike on every replica. If it "
                "returns, it starts afresh.",
                "responses": {
                    "200": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "forgotten": {"type": "array", "items": {"type": "string"}}
                            },
                            "required": ["forgotten"],
                        },
                        "The replica ids forgotten",
                    ),
                    "422": _error(
                        "A malformed id (`invalid_identifier`) or this node's own "
                        "(`invalid_request`)."
                    ),
                    **unauthorized,
                    **not_found,
                },
            },
        },
        "/v1/events": {
            "get": {
                "operationId": "events",
                "summary": "Status changes as server-sent events",
                "description": _EVENTS_DESCRIPTION,
                "parameters": [_ENTITY, _PREFIX, _KIND],
                "responses": {
                    "200": {
                        "description": "An endless event stream",
                        "content": {
                            "text/event-stream": {
                                "schema": {"type": "string"},
                                "x-events": {
                                    "snapshot": _ref("Snapshot"),
                                    "change": _ref("Change"),
                                    "overflow": {
                                        "type": "object",
                                        "properties": {"dropped": {"const": True}},
                                    },
                                },
                            }
                        },
                    },
                    "400": _error(_BAD_FILTER),
                    **unauthorized,
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _json_body({"type": "object"}, "OpenAPI 3.1"),
                    **unauthorized,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness of this node; never needs a token",
                "security": [],
                "responses": {
                    "200": _json_body(_ref("Health"), "Serving"),
                    "503": _error(
                        "This node's clock is the outlier: it serves reads and syncs but "
                        "refuses observations. The body also holds `status` "
                        '(`"clock-skew"`), `replica`, `signed`, `trust_digest`, '
                        "`clock_offset` and `max_clock_skew` (schema `ClockSkew`)."
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                **({} if metrics_auth else {"security": []}),
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **(unauthorized if metrics_auth else {}),
                },
            }
        },
        "/": {
            "get": {
                "operationId": "statusPage",
                "summary": "Live status page (HTML)",
                "description": (
                    "A static page whose script reads `/v1`. It needs no token itself; on a "
                    "node with a token, open `/#token=TOKEN` (fragments are never sent to "
                    "the server) or enter the token in the form it shows."
                ),
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def _version() -> str:
    try:
        return metadata.version("sphaera-crdt")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def openapi_document(*, metrics_auth: bool = False) -> JsonObject:
    """The OpenAPI 3.1 document of a node's routes.

    Args:
        metrics_auth: Whether ``/metrics`` needs the token on this node.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "sphaera node",
            "version": _version(),
            "summary": "Replicated state without a coordinator",
            "description": (
                "One replica served over HTTP. Errors are always "
                '`{"error": {"code", "message"}}`; a refused request changes nothing. '
                "With a token (`--token-file` or `SPHAERA_TOKEN`), every `/v1` route needs "
                "`Authorization: Bearer TOKEN`; `/healthz` and `/` never do."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(metrics_auth),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when the node has a token.",
                }
            },
        },
    }
