"""The OpenAPI 3.1 document of the API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ERROR, "the body or every event in it is invalid"),
    "401": _json(_ERROR, "missing or invalid bearer token"),
    "403": _json(_ERROR, "the token lacks the ingest scope"),
    "413": _json(_ERROR, "body, batch or event over the configured limits"),
    "415": _json(_ERROR, "unsupported Content-Type or Content-Encoding"),
    "429": _json(_ERROR, "the ingest queue is full; see Retry-After"),
    "502": _json(_ERROR, "Kafka refused the events for another reason than being unreachable"),
    "503": _json(_ERROR, "Kafka did not acknowledge; retry (events dedup by event_id)"),
    "504": _json(_ERROR, "?wait=true: stored, but not all in profiles within wait_timeout_ms"),
}

_READ_ERRORS = {
    "400": _json(_ERROR, "a request the server cannot read (e.g. a URL over api_max_line_bytes)"),
    "401": _json(_ERROR, "missing or invalid bearer token (GET also takes ?token=)"),
    "403": _json(_ERROR, "the token lacks the read scope"),
}

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/Event"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}]}},
        "application/x-ndjson": {"schema": {"type": "string", "description": "one event per line"}},
    },
}

_ADMIN_ERRORS = {"401": _READ_ERRORS["401"], "403": _json(_ERROR, "the token lacks the admin scope")}
_BITMAPS_503 = _json(_ERROR, "no warehouse, it is unavailable, or it keeps no bitmaps "
                            "(error bitmaps_off: warehouse_bitmaps is false)")
_BITMAPS_504 = _json(_ERROR, "the events of after= are not loaded within wait_timeout_ms")
_BITMAP_QUERY = {"type": "object", "required": ["expr"], "properties": {
    "expr": {"$ref": "#/components/schemas/BitmapExpr"},
    "count": {"type": "boolean", "default": True},
    "contains": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 4294967295}},
    "members": {"type": "object", "properties": {"after": {"type": "integer", "minimum": -1},
                                                 "limit": {"type": "integer", "minimum": 1}}}}}
_BITMAP_ANSWER = {"type": "object", "properties": {
    "count": {"type": "integer"}, "contains": {"type": "array", "items": {"type": "boolean"}},
    "members": {"type": "array", "items": {"type": "integer"}}, "next": {"type": ["integer", "null"]}}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "cardflow API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Event": {
                "type": "object", "required": ["uid", "event"],
                "properties": {
                    "uid": {"type": ["string", "integer"]},
                    "event": {"type": "string"},
                    "ts": {"description": "ISO-8601, RFC 2822 or epoch s/ms; default: receive time"},
                    "event_id": {"type": "string", "description": "derived from the content when absent"},
                    "properties": {"type": "object"},
                    "$set": {"type": "object"},
                    "$set_once": {"type": "object"},
                    "source": {"type": "string"},
                },
            },
            "Accepted": {
                "type": "object",
                "properties": {
                    "accepted": {"type": "integer"},
                    "event_ids": {"type": "array", "items": {"type": "string"}},
                    "offsets": {"type": "string", "description": (
                        "partition:offset pairs (comma-separated) the events got in `events`: "
                        "GET /v1/cards/{id}?after=<offsets> waits for the result including them")},
                    "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}},
                },
            },
            "Rejected": {
                "type": "object",
                "properties": {"index": {"type": "integer"}, "reason": {"type": "string"},
                               "message": {"type": "string"}},
            },
            "Card": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"}, "version": {"type": "string"}, "title": {"type": "string"},
                    "summary": {"type": "string"},
                    "widgets": {"type": "array", "description": "see cardflow.widgets.widget_schema()"},
                    "generated_at": {"type": "integer", "description": "epoch ms"},
                    "max_ts": {"type": "integer", "description": "latest event time the result includes"},
                    "offsets": {"type": "object", "additionalProperties": {"type": "integer"},
                                "description": "events partition → last offset included"},
                    "run_ms": {"type": "number"}, "error": {"type": ["string", "null"]},
                    "config": {"type": "string", "description": "digest of the card's class, version and "
                               "parameters: a result never mixes two configurations"},
                    "complete": {"type": "boolean", "description": "false until every partition has a "
                                 "partial of this configuration (the widgets then cover only `partitions`)"},
                    "partitions": {"type": "integer", "description": "partitions the result covers"},
                    "lag_s": {"type": ["number", "null"],
                              "description": "seconds from the newest event the result includes to now"},
                },
            },
            "BitmapExpr": {
                "type": "object",
                "description": "a stored bitmap {event, period: hour|day|week|month|year|unique, year, "
                               "month, week, day, hour} (bitmapist's periods; weeks are ISO), an operation "
                               "{op: and|or|xor|not, args: [BitmapExpr]}, or {ref: i} (query i's expr)",
                "properties": {
                    "event": {"type": "string"}, "period": {"type": "string", "enum": [
                        "hour", "day", "week", "month", "year", "unique"]},
                    "year": {"type": "integer"}, "month": {"type": "integer"}, "week": {"type": "integer"},
                    "day": {"type": "integer"}, "hour": {"type": "integer"},
                    "op": {"type": "string", "enum": ["and", "or", "xor", "not"]},
                    "args": {"type": "array", "items": {"$ref": "#/components/schemas/BitmapExpr"}},
                    "ref": {"type": "integer", "minimum": 0}},
            },
            "Query": {
                "type": "object",
                "properties": {
                    "kind": {"enum": ["trend", "retention", "funnel"]},
                    "event": {"type": ["string", "null"]},
                    "aggregation": {"enum": ["count", "unique_users", "sum", "avg", "min", "max", "median",
                                             "p90"]},
                    "property": {"type": "string"},
                    "period": {"enum": ["hour", "day", "week", "month"]},
                    "from": {"type": "string"}, "to": {"type": "string"},
                    "filters": {"type": "array", "items": {"type": "object", "properties": {
                        "property": {"type": "string"},
                        "on": {"enum": ["event", "user"]},
                        "op": {"enum": ["eq", "neq", "gt", "gte", "lt", "lte", "contains", "in", "is_set",
                                        "is_not_set"]}, "value": {}}}},
                    "breakdown": {"type": ["string", "object"]},
                    "limit": {"type": "integer"},
                    "steps": {"type": "array", "items": {"type": "string"}},
                    "window_seconds": {"type": "integer"},
                    "cohort_event": {"type": ["string", "null"]},
                    "return_event": {"type": ["string", "null"]},
                    "periods": {"type": "integer"}, "after": {"type": "integer"},
                    "form": {"enum": ["first", "every"]}, "start_date": {"type": "string"},
                    "as_of": {"type": "string"},
                },
            },
            "Error": {
                "type": "object", "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "paths": {
        "/v1/events": {"post": {
            "summary": "Ingest one event or a batch (JSON array or NDJSON, optionally gzip)",
            "security": [{"bearer": []}],
            "requestBody": _BODY,
            "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"},
                                       "every listed event is stored (broker-acknowledged)"), **_ERRORS},
        }},
        "/v1/users": {"post": {
            "summary": "Set user properties: {uid, $set} or a list of them",
            "security": [{"bearer": []}],
            "requestBody": _BODY,
            "responses": {"202": _json({"$ref": "#/components/schemas/Accepted"}, "stored"), **_ERRORS},
        }},
        "/v1/profiles/{uid}": {"get": {
            "summary": "A user's profile, from the worker that owns it",
            "security": [{"bearer": []}],
            "parameters": [{"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the profile and its bookkeeping"},
                          "404": _json(_ERROR, "unknown uid"),
                          "503": _json(_ERROR, "no people worker answered"), **_READ_ERRORS},
        }},
        "/v1/profiles": {"get": {
            "summary": "A sample of user ids, from every people worker's own partitions",
            "security": [{"bearer": []}],
            "parameters": [{"name": "sample", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200}}],
            "responses": {"200": _json({"type": "object", "properties": {
                "uids": {"type": "array", "items": {"type": "string"}}}}, "user ids"),
                **_READ_ERRORS, "400": _json(_ERROR, "sample is not an integer from 1 to 200")},
        }},
        "/v1/users/{uid}/views": {"get": {
            "summary": "Every per-user view of the user, drawn (a view's failure is in its own entry)",
            "security": [{"bearer": []}],
            "parameters": [{"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "uid and views: name, title, widgets, error"},
                          "404": _json(_ERROR, "unknown uid"),
                          "503": _json(_ERROR, "no people worker answered"), **_READ_ERRORS},
        }},
        "/v1/users/{uid}/views/{name}": {"get": {
            "summary": "One per-user view of the user: its widgets (query parameters reach it as params)",
            "security": [{"bearer": []}],
            "parameters": [{"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "uid, name, title, widgets"},
                          "404": _json(_ERROR, "unknown uid or view"),
                          "500": {"description": "the view raised or took too long: its error"},
                          "503": _json(_ERROR, "no people worker answered"), **_READ_ERRORS},
        }},
        "/v1/users/{uid}/events": {"get": {
            "summary": "The user's latest events in the warehouse, newest first",
            "security": [{"bearer": []}],
            "parameters": [{"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
            "responses": {"200": {"description": "uid and events: event_id, event, ts, properties, source"},
                          "503": _json(_ERROR, "no warehouse, or it did not answer"),
                          **_READ_ERRORS, "400": _json(_ERROR, "a bad limit")},
        }},
        "/v1/cards": {"get": {
            "summary": "Every card's latest result; complete is false while the results are still loading",
            "security": [{"bearer": []}],
            "responses": {"200": _json({"type": "object", "properties": {
                "cards": {"type": "array", "items": {"$ref": "#/components/schemas/Card"}},
                "complete": {"type": "boolean"}}}, "the cards"), **_READ_ERRORS},
        }},
        "/v1/cards/{id}": {"get": {
            "summary": "One card's latest result; with ?after=, the first result that includes those events",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "partition:offset pairs as POST /v1/events answers them, or the id of an "
                                "event this replica accepted lately: wait (up to wait_timeout_ms) for the "
                                "result that includes it"}],
            "responses": {"200": _json({"$ref": "#/components/schemas/Card"}, "the card"),
                          "404": _json(_ERROR, "unknown card"),
                          "504": _json(_ERROR, "no result included it within wait_timeout_ms"),
                          **_READ_ERRORS,
                          "400": _json(_ERROR, "after= is neither offsets nor a known event id, or a "
                                               "request the server cannot read")},
        }},
        "/v1/cards/{id}/stream": {"get": {
            "summary": "Server-sent events: the card's result now and on every change (event: result)",
            "security": [{"bearer": []}],
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "text/event-stream"}, **_READ_ERRORS},
        }},
        "/v1/cards/stream": {"get": {
            "summary": "Server-sent events for every card (what the dashboard uses)",
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "text/event-stream"}, **_READ_ERRORS},
        }},
        "/v1/query": {"post": {
            "summary": "An insights query on the warehouse: trend, retention or funnel (README: Warehouse)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/Query"}}}},
            "responses": {"200": _json({"type": "object"}, "the answer (X-Cardflow-Cache: hit or miss)"),
                          "400": _json(_ERROR, "a field is wrong: error bad_query, field names it"),
                          "413": _json(_ERROR, "body over query_max_body_bytes"),
                          "503": _json(_ERROR, "no warehouse, or it is unavailable"),
                          "401": _READ_ERRORS["401"], "403": _READ_ERRORS["403"]},
        }},
        "/v1/sql": {"post": {
            "summary": "One read-only SELECT on the warehouse (admin scope)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "columns": {"type": "array", "items": {"type": "string"}}, "rows": {"type": "array"}}},
                "columns and rows"),
                "400": _json(_ERROR, "refused or failed: ClickHouse's message"),
                "413": _json(_ERROR, "body over query_max_body_bytes"),
                "503": _json(_ERROR, "no warehouse, or it is unavailable"),
                "401": _READ_ERRORS["401"], "403": _json(_ERROR, "the token lacks the admin scope")},
        }},
        "/v1/warehouse/schema": {"get": {
            "summary": "Event names, event property names and user property names in the warehouse",
            "security": [{"bearer": []}],
            "responses": {"200": _json({"type": "object"}, "the names, most used first"),
                          "503": _json(_ERROR, "no warehouse, or it is unavailable"), **_READ_ERRORS},
        }},
        "/v1/bitmaps/ops": {"post": {
            "summary": "bitmapist's bitmaps: counts, membership and members of bitmaps and bit operations "
                       "(README: bitmapist)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["queries"], "properties": {
                    "after": {"type": "string", "description": "partition:offset pairs (POST /v1/events' "
                              "offsets): answer once those events are loaded"},
                    "queries": {"type": "array", "items": _BITMAP_QUERY}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {"results": {
                "type": "array", "items": _BITMAP_ANSWER}}}, "one answer per query"),
                "400": _json(_ERROR, "a field is wrong: error bad_query, field names it"),
                "413": _json(_ERROR, "body over query_max_body_bytes"),
                "503": _BITMAPS_503, "504": _BITMAPS_504,
                "401": _READ_ERRORS["401"], "403": _READ_ERRORS["403"]},
        }},
        "/v1/bitmaps/delete": {"post": {
            "summary": "Delete one stored bitmap ({expr}) or all of them ({all: true}) (admin scope)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"all": {"type": "boolean"}, "after": {"type": "string"},
                                                 "expr": {"$ref": "#/components/schemas/BitmapExpr"}}}}}},
            "responses": {"200": _json({"type": "object"}, "what was deleted"),
                          "400": _json(_ERROR, "not one stored bitmap"),
                          "413": _json(_ERROR, "body over query_max_body_bytes"),
                          "503": _BITMAPS_503, "504": _BITMAPS_504, **_ADMIN_ERRORS},
        }},
        "/v1/bitmaps/import": {"post": {
            "summary": "One slice of a bitmapist key from Redis (sent by `cardflow import bitmapist`; admin)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["expr", "offset", "length", "bits"], "properties": {
                    "expr": {"$ref": "#/components/schemas/BitmapExpr"},
                    "offset": {"type": "integer", "minimum": 0}, "length": {"type": "integer", "minimum": 0},
                    "bits": {"type": "string", "description": "base64 of the key's bytes from offset"}}}}}},
            "responses": {"200": _json({"type": "object"}, "how many ids were imported"),
                          "400": _json(_ERROR, "a field is wrong"),
                          "413": _json(_ERROR, "body over query_max_body_bytes"),
                          "503": _BITMAPS_503, "504": _BITMAPS_504, **_ADMIN_ERRORS},
        }},
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "readiness: the broker answers",
                            "responses": {"200": {"description": "ready"},
                                          "503": _json(_ERROR, "broker unreachable")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format"}}}},
    },
}


def add_openapi_route(app: web.Application) -> None:
    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    async def index(_: web.Request) -> web.Response:
        return web.json_response({"service": "cardflow", "dashboard": "/", "openapi": "/openapi.json",
                                  "endpoints": sorted(DOCUMENT["paths"])})

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/v1", index)
