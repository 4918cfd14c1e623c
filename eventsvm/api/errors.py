"""OpenStack's error bodies: each service family answers in its own shape (contract §3).

Routers raise the exceptions below where the cause is known; the handlers installed by
`install_error_handlers` render them in the shape of the service the path belongs to. The message
is written by this code, never derived from a token or a password.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventsvm.events.codec import CodecError
from eventsvm.log.port import LogError

log = logging.getLogger(__name__)

UNAUTHORIZED_MESSAGE = "The request you have made requires authentication."

# Seconds a client is told to wait (Retry-After) while the log cannot be reached: about one
# pause of the runners' backoff, so a retry lands soon after the broker is back.
LOG_RETRY_AFTER_S = 5

# nova's fault names (nova/api/openstack/wsgi.py); cinder uses the same.
_NOVA_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
    409: "conflictingRequest", 413: "overLimit", 415: "badMediaType", 429: "overLimit",
    501: "notImplemented", 503: "serviceUnavailable",
}
_NEUTRON_TYPES = {
    400: "HTTPBadRequest", 403: "HTTPForbidden", 404: "HTTPNotFound", 405: "HTTPMethodNotAllowed",
    409: "HTTPConflict", 413: "HTTPRequestEntityTooLarge", 414: "HTTPRequestURITooLong",
    431: "HTTPRequestHeaderFieldsTooLarge",
    503: "HTTPServiceUnavailable",
}


class ApiError(Exception):
    """An answer other than success; `kind` names the error for Neutron (e.g. NetworkNotFound)."""

    status = 500

    def __init__(self, message: str, kind: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.headers = headers or {}


class BadRequest(ApiError):
    """400: the request is malformed or names something that does not exist."""

    status = 400


class Unauthorized(ApiError):
    """401: no token, a bad one, or failed authentication."""

    status = 401

    def __init__(self, message: str = UNAUTHORIZED_MESSAGE) -> None:
        super().__init__(message)


class Forbidden(ApiError):
    """403: policy does not allow it."""

    status = 403


class NotFound(ApiError):
    """404: no such thing (or not one the caller may see)."""

    status = 404


class Conflict(ApiError):
    """409: the request clashes with what exists (a duplicate name, a state that forbids it)."""

    status = 409


class Gone(ApiError):
    """410: glance's answer for data it cannot take: no store to add it to, or the image deleted
    while its data came in."""

    status = 410


class TooLarge(ApiError):
    """413: more than a limit allows (glance: an image's tags past its quota)."""

    status = 413


class UnsupportedMediaType(ApiError):
    """415: a body of a type the call does not take (glance's PATCH takes JSON patch only)."""

    status = 415


class NotImplementedHere(ApiError):
    """501: nova's answer for a feature the hypervisor or this cloud does not offer."""

    status = 501


class TooManyRequests(ApiError):
    """429: the caller has too much in flight (nova's overLimit); Retry-After says when to retry."""

    status = 429


class ServiceUnavailable(ApiError):
    """503: the answer is not known yet (e.g. the log's verdict on a name); the caller retries."""

    status = 503


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def service_of(path: str) -> str:
    """The OpenStack service a path belongs to: identity, compute, image, network, volume or ''."""
    first = path.lstrip("/").split("/", 1)[0]
    return first if first in ("identity", "compute", "image", "network", "volume") else ""


def error_body(service: str, status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """The JSON body OpenStack's `service` sends for an error."""
    title = _phrase(status)
    if status == 401 or service in ("identity", ""):
        return {"error": {"code": status, "title": title, "message": message}}
    if service == "network":
        return {"NeutronError": {"type": kind or _NEUTRON_TYPES.get(status, "HTTPError"),
                                 "message": message, "detail": ""}}
    if service == "image":
        return {"code": status, "title": title, "message": message}
    name = _NOVA_NAMES.get(status, "computeFault")
    return {name: {"code": status, "message": message}}


def auth_url(request: Request, public_url: str | None) -> str:
    """The identity endpoint named in WWW-Authenticate."""
    base = (public_url or str(request.base_url)).rstrip("/")
    return f"{base}/identity"


def error_response(request: Request, status: int, message: str, kind: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in the shape of the service the request went to."""
    all_headers = dict(headers or {})
    if status == 401:
        public_url = getattr(request.app.state, "public_url", None)
        all_headers["WWW-Authenticate"] = f'Keystone uri="{auth_url(request, public_url)}"'
    body = error_body(service_of(request.url.path), status, message, kind)
    if status in (413, 429) and "Retry-After" in all_headers and "overLimit" in body:
        # nova's Fault repeats the header in the body of its overLimit answers
        body["overLimit"]["retryAfter"] = all_headers["Retry-After"]
    return JSONResponse(body, status_code=status, headers=all_headers)


def validation_message(exc: RequestValidationError) -> str:
    """A readable one-line account of what pydantic rejected; never the rejected values."""
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "Invalid input for field/attribute " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Render ApiError, FastAPI's validation errors, routing errors and log failures as OpenStack does."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc.status, exc.message, exc.kind, exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, 400, validation_message(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        messages = {401: UNAUTHORIZED_MESSAGE, 404: "The resource could not be found.",
                    405: "The method is not allowed for this resource."}
        message = messages.get(exc.status_code, _phrase(exc.status_code))
        return error_response(request, exc.status_code, message, headers=dict(exc.headers or {}))

    async def log_down(request: Request, exc: Exception) -> JSONResponse:
        # a pause, not a fault: 503 with Retry-After, which the openstack clients honour
        log.warning("log unavailable for %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(
            request, 503, "The event log is unavailable; nothing was recorded. Retry later.",
            headers={"Retry-After": str(LOG_RETRY_AFTER_S)},
        )

    async def unrecordable(request: Request, exc: Exception) -> JSONResponse:
        # validation should have caught it; refuse the request rather than answer 500
        log.warning("refused %s %s: %s", request.method, request.url.path, exc)
        return error_response(request, 400, "The request holds a value this cloud cannot record.")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(CodecError, unrecordable)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(LogError, log_down)
