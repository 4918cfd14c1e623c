"""The OpenAPI document with the error answers this API really sends.

FastAPI advertises a 422 on every operation that takes parameters; this API never sends one (its
validation errors are OpenStack's 400s, errors.py). `install_openapi` drops the 422 and documents
each error code in the body shape of the service the path belongs to. Codes that follow from how a
route is built are added here; the rest a route declares with `failures(...)`:

- 400 and 413 where a body is read (validation; RequestEnvelope's size limit), and 400 where a
  parameter is more than a string (only then can FastAPI's validation refuse one);
- 401 on every operation that takes X-Auth-Token;
- 403 on every operation the policy table gives a rule (`may_refuse`): an operator's policy file
  may deny any of them, and the route's own rule denies the callers it names;
- 503 on operations that append to the log (every write but issuing a token), when it is down;
- 403, 404, 409 and other 400s: `responses=failures(...)` on the route, where the handler raises them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from eventsvm.api.errors import error_body, service_of

_DESCRIPTIONS = {
    400: "Bad request: the body, a parameter or a name in it is invalid",
    401: "No token, or one that is invalid, expired or revoked",
    403: "Policy does not allow the caller this",
    404: "No such resource, or not one the caller may see",
    409: "Conflicts with what exists (a duplicate name, a resource in use)",
    410: "Glance cannot take the data: no image store is configured, or the image went meanwhile",
    413: "The request body is larger than the API accepts, or asks for more than a limit allows",
    415: "The body is not of the media type the call takes",
    429: "Too much of the caller's work is in flight (nova's overLimit); retry after Retry-After seconds",
    503: "The event log is unavailable; nothing was recorded. Retry later",
}
_WRITES = frozenset({"post", "put", "patch", "delete"})
_APPENDS_NOTHING = frozenset({("post", "/identity/v3/auth/tokens")})

_FAULT: dict[str, Any] = {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
}


def _strings(*names: str) -> dict[str, Any]:
    """An object whose named properties are all required strings."""
    return {"type": "object", "required": list(names), "properties": {n: {"type": "string"} for n in names}}


_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "KeystoneError": {
        "type": "object", "required": ["error"],
        "description": "keystone's error body; every service answers a 401 this way (keystonemiddleware)",
        "properties": {"error": {**_FAULT, "required": ["code", "title", "message"],
                                 "properties": {**_FAULT["properties"], "title": {"type": "string"}}}},
    },
    "NovaFault": {**_FAULT, "description": "nova's and cinder's fault, under its name (itemNotFound...); "
                                           "an overLimit repeats Retry-After as retryAfter",
                  "properties": {**_FAULT["properties"], "retryAfter": {"type": "string"}}},
    "GlanceError": {**_FAULT, "description": "glance's error body",
                    "properties": {**_FAULT["properties"], "title": {"type": "string"}}},
    "NeutronError": {
        "type": "object", "required": ["NeutronError"], "description": "neutron's error body",
        "properties": {"NeutronError": _strings("type", "message", "detail")},
    },
}


def failures(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the error codes its handler raises; install_openapi gives
    each the body schema of the route's service."""
    return {code: {"description": _DESCRIPTIONS[code]} for code in codes}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_schema(service: str, status: int) -> dict[str, Any]:
    """The JSON schema of error_body(service, status, ...)."""
    if status == 401 or service in ("identity", ""):
        return _ref("KeystoneError")
    if service == "network":
        return _ref("NeutronError")
    if service == "image":
        return _ref("GlanceError")
    [name] = error_body(service, status, "")  # nova's fault name for the status
    return {"type": "object", "required": [name], "properties": {name: _ref("NovaFault")}}


def _error_response(service: str, status: int, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {
            "schema": _error_schema(service, status),
            "example": error_body(service, status, description + "."),
        }},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {
            "description": 'Keystone uri="<identity endpoint>"', "schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait before trying again", "schema": {"type": "string"}}}
    return response


def _any_string(schema: dict[str, Any]) -> bool:
    """True when every value a parameter may take passes validation (a string, or no value)."""
    kinds = [s.get("type") for s in schema.get("anyOf", [schema])]
    return all(kind in ("string", "null") for kind in kinds)


PolicyRefuses = Callable[[str, str], bool]
"""(HTTP method, route path) → whether a policy rule may refuse the caller there."""


def _error_codes(path: str, method: str, operation: dict[str, Any], may_refuse: PolicyRefuses) -> set[int]:
    codes = {int(code) for code in operation["responses"] if code.isdigit() and int(code) >= 400}
    if "requestBody" in operation:
        codes |= {400, 413}
    if not all(_any_string(p.get("schema", {})) for p in operation.get("parameters", [])):
        codes.add(400)
    if operation.get("security"):
        codes.add(401)
    if may_refuse(method.upper(), path):
        codes.add(403)
    if method in _WRITES and (method, path) not in _APPENDS_NOTHING:
        codes.add(503)
    return codes


def _refuses_nothing(method: str, path: str) -> bool:
    return False


def with_real_errors(
    document: dict[str, Any], may_refuse: PolicyRefuses = _refuses_nothing
) -> dict[str, Any]:
    """`document` (FastAPI's) without the 422s and with every error code in its service's shape."""
    for path, operations in document.get("paths", {}).items():
        service = service_of(path)
        for method, operation in operations.items():
            responses = operation["responses"]
            responses.pop("422", None)
            for status in sorted(_error_codes(path, method, operation, may_refuse)):
                declared = responses.get(str(status), {}).get("description")
                responses[str(status)] = _error_response(service, status, declared or _DESCRIPTIONS[status])
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(_ERROR_SCHEMAS)
    return document


def install_openapi(app: FastAPI, may_refuse: PolicyRefuses = _refuses_nothing) -> None:
    """Serve `with_real_errors` of FastAPI's document at /openapi.json."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_real_errors(generate(), may_refuse)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
