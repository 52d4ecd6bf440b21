"""The OpenAPI 3.1 document of the REST API, generated from the route tables, and the
human-readable page the box renders from that same document (GET /api/docs, no internet).

Every route declares its roles and msgspec types (web/routing.py); schemas come from
`msgspec.json.schema_components`, so validation, answers and documentation cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import aiohttp_jinja2
import msgspec
from aiohttp import web

from vrlms_edge import __version__
from vrlms_edge.keys import OPENAPI
from vrlms_edge.web.routing import ANYONE, ApiRegistry, ApiRoute, json_response

routes = ApiRegistry()

REF: Final = "#/components/schemas/{name}"
PATH_PARAM: Final = re.compile(r"\{(\w+)\}")

# Why each error status may be answered; the body is always `Error`.
ERROR_TEXT: Final = {
    400: "Malformed JSON (`invalid_json`) or a bad request (e.g. `org_required`)",
    401: "No valid token (`unauthorized`: missing, expired, revoked); at login: wrong "
    "nickname or secret (`invalid_credentials`)",
    403: "Not allowed: your role (`forbidden`), another teacher's class (`not_your_class`), "
    "or a headset not admitted (`device_pending`, `device_blocked`, `device_bound_to_other`)",
    404: "Unknown id, or an id of another org (`not_found`)",
    409: "Not possible in the current state (e.g. `invalid_transition`, `no_lesson`)",
    413: "Body over the size limit (`body_too_large`)",
    422: "Wrong or missing fields (`validation_error`, detail.path names the field)",
    429: "Too many failed logins (`locked_out`); see Retry-After",
    503: "The box is not ready (e.g. `no_org`)",
}


class ErrorInfo(msgspec.Struct, kw_only=True):
    code: str
    message: str
    detail: Any | msgspec.UnsetType = msgspec.UNSET


class Error(msgspec.Struct, kw_only=True):
    """The body of every 4xx/5xx answer."""

    error: ErrorInfo


def _roles_text(route: ApiRoute) -> str:
    if route.roles is ANYONE:
        return "Anyone (no token needed)."
    names = sorted(role.value for role in route.roles)
    return "Roles: " + ", ".join(names) + "."


def _error_statuses(route: ApiRoute) -> list[int]:
    statuses = set(route.errors)
    if route.roles is not ANYONE:
        statuses |= {401, 403}
    if route.body is not None:
        statuses |= {400, 413, 422}
    if route.query is not None:
        statuses.add(422)
    if PATH_PARAM.search(route.path):
        statuses.add(404)
    return sorted(statuses)


def _struct_types(all_routes: Iterable[ApiRoute]) -> list[Any]:
    types: list[Any] = [Error]
    for route in all_routes:
        for kind in (route.body, route.query, route.response):
            if kind is not None and kind not in types:
                types.append(kind)
    return types


def _query_parameters(schema_ref: dict[str, Any], components: dict[str, Any]) -> list[Any]:
    name = schema_ref["$ref"].rsplit("/", 1)[-1]
    schema = components[name]
    required = set(schema.get("required", []))
    params = []
    for field, field_schema in schema.get("properties", {}).items():
        # A query string cannot carry null: an optional parameter is simply left out.
        options = field_schema.get("anyOf")
        if options:
            kept = [o for o in options if o.get("type") != "null"]
            rest = {k: v for k, v in field_schema.items() if k not in ("anyOf", "default")}
            field_schema = {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
        params.append(
            {
                "name": field,
                "in": "query",
                "required": field in required,
                "schema": field_schema,
            }
        )
    return params


def schema_hook(kind: type) -> dict[str, Any]:
    """JSON schema of types msgspec cannot describe: `msgspec.Raw` is any JSON value."""
    if kind is msgspec.Raw:
        return {}
    raise NotImplementedError


def build_document(registries: Sequence[ApiRegistry]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in `registries`."""
    all_routes = [route for registry in registries for route in registry.routes]
    types = _struct_types(all_routes)
    refs, components = msgspec.json.schema_components(
        types, ref_template=REF, schema_hook=schema_hook
    )
    ref_of = dict(zip(types, refs, strict=True))
    error_ref = ref_of[Error]
    paths: dict[str, dict[str, Any]] = {}
    for route in all_routes:
        op: dict[str, Any] = {
            "operationId": f"{route.method.lower()}_{route.handler.__module__.rsplit('.', 1)[-1]}"
            f"_{route.handler.__name__}",
            "summary": route.summary,
            "description": _roles_text(route),
            "tags": [route.tag],
            "x-roles": None if route.roles is ANYONE else sorted(r.value for r in route.roles),
        }
        if route.roles is ANYONE:
            op["security"] = []
        else:
            op["security"] = [{"bearerAuth": []}]
            if route.token_in_query:
                op["security"].append({"tokenQuery": []})
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in PATH_PARAM.findall(route.path)
        ]
        if route.query is not None:
            params += _query_parameters(ref_of[route.query], components)
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref_of[route.body]}},
            }
        responses: dict[str, Any] = {}
        if route.status == 204:
            responses["204"] = {"description": "Done (no body)"}
        elif route.response is not None:
            responses[str(route.status)] = {
                "description": "OK",
                "content": {route.content_type: {"schema": ref_of[route.response]}},
            }
        else:
            # A document without its own schema (openapi.json, asyncapi.json) or a text body.
            free = {"type": "object"} if route.content_type.endswith("json") else {"type": "string"}
            responses[str(route.status)] = {
                "description": "OK",
                "content": {route.content_type: {"schema": free}},
            }
        for status in _error_statuses(route):
            answer: dict[str, Any] = {
                "description": ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
            if status == 429:
                answer["headers"] = {
                    "Retry-After": {
                        "description": "Seconds until the next attempt may succeed",
                        "schema": {"type": "integer"},
                    }
                }
            responses[str(status)] = answer
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vrlms-edge classroom box API",
            "version": __version__,
            "description": "REST API of the classroom box for VR lessons (PROTOCOL.md). "
            "Errors are `{error:{code,message,detail?}}`. Lists answer "
            "`{<name>:[...], next_cursor}` and page with `?limit=&cursor=`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        "tags": [{"name": tag} for tag in sorted({route.tag for route in all_routes})],
    }


@routes.route(
    "GET",
    "/api/openapi.json",
    roles=ANYONE,
    summary="This document (OpenAPI 3.1)",
    tag="system",
)
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


# --- the HTML page -----------------------------------------------------------------------------


def type_label(schema: dict[str, Any]) -> str:
    """A short human type name for a JSON schema ("list of LessonRef", "string (date-time)")."""
    if "$ref" in schema:
        return str(schema["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in schema:
        return " | ".join(type_label(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + type_label(schema.get("items", {}))
    if kind == "object" and "additionalProperties" in schema:
        return "object"
    label = str(kind)
    if "format" in schema:
        label += f" ({schema['format']})"
    bounds = [
        f"{word} {schema[key]}"
        for key, word in (
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("maxItems", "max items"),
        )
        if key in schema
    ]
    return label + (f", {', '.join(bounds)}" if bounds else "")


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": type_label(prop),
            "ref": _ref_names(prop),
            "required": name in required,
            "description": prop.get("description", ""),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _ref_names(schema: Any) -> list[str]:
    """Component names referenced anywhere inside a schema (for links)."""
    found: list[str] = []
    if isinstance(schema, dict):
        if "$ref" in schema:
            found.append(str(schema["$ref"]).rsplit("/", 1)[-1])
        for value in schema.values():
            found += _ref_names(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _ref_names(value)
    return found


def code_spans(text: str) -> list[tuple[str, bool]]:
    """`text` split into (segment, is_code) at backticks, for the page to render as <code>."""
    return [(part, i % 2 == 1) for i, part in enumerate(text.split("`")) if part]


def page_context(doc: dict[str, Any]) -> dict[str, Any]:
    """The document reshaped for the template: operations by tag, schemas as field tables."""
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            by_tag.setdefault(op["tags"][0], []).append(
                {
                    "anchor": op["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": op["summary"],
                    "roles": op["description"],
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "type": type_label(p["schema"]),
                            "required": p["required"],
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": _ref_names(body.get("schema", {})),
                    "responses": [
                        {
                            "status": status,
                            "description": code_spans(answer["description"]),
                            "schema": [
                                name
                                for content in answer.get("content", {}).values()
                                for name in _ref_names(content.get("schema", {}))
                            ],
                        }
                        for status, answer in op["responses"].items()
                    ],
                }
            )
    schemas = [
        {
            "name": name,
            "description": schema.get("description", ""),
            "fields": _fields(schema),
            "label": "" if "properties" in schema else type_label(schema),
        }
        for name, schema in sorted(doc["components"]["schemas"].items())
    ]
    info = {**doc["info"], "description": code_spans(doc["info"]["description"])}
    return {"info": info, "tags": sorted(by_tag.items()), "schemas": schemas}


@routes.route(
    "GET",
    "/api/docs",
    roles=ANYONE,
    summary="This API as a readable page (served by the box, no internet needed)",
    tag="system",
    content_type="text/html",
)
async def docs_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template(
        "api_docs.html", request, page_context(request.app[OPENAPI])
    )
