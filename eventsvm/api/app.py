"""The OpenStack API as one FastAPI application, with devstack's path prefixes (issue 5, §1)."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventsvm.api import (
    compute,
    compute_actions,
    compute_catalog,
    compute_images,
    compute_networks,
    compute_usage,
    identity,
    identity_admin,
    identity_changes,
    identity_domains,
    image,
    image_data,
    microversion,
    network,
    server_edits,
    server_groups,
    server_ips,
    server_metadata,
    server_tags,
    server_volumes,
    volume,
)
from eventsvm.api.authorization import enforce_route_policy, policy_may_refuse
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import error_body, install_error_handlers, service_of
from eventsvm.api.openapi import install_openapi
from eventsvm.api.peers import answer_caught_up, replayed
from eventsvm.projections.readmodel import ReadModel

log = logging.getLogger(__name__)


def _has_unencodable_text(value: Any) -> bool:
    """True when a parsed JSON value holds a lone surrogate (legal in JSON, not in UTF-8 or Avro)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class RequestEnvelope:
    """Gives every answer its request id, refuses oversized bodies before anything parses them
    (but an image upload's, which its handler streams to disk under glance's image_size_cap), and
    turns an unexpected exception into OpenStack's 500 body rather than a bare text page."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, readmodel: ReadModel | None = None,
                 peers: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # with a read model, a miss is answered only once caught up with the log (eventsvm.api.peers)
        self.readmodel = readmodel
        self.peers = peers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = request_id
        service = service_of(scope.get("path", ""))
        extra = [(b"x-openstack-request-id", request_id.encode())]
        version_refusal = None
        if service == "compute":
            extra.append((b"x-compute-request-id", request_id.encode()))
            asked = microversion.requested_version(scope["headers"])
            version, version_refusal = microversion.negotiate(asked)
            scope["state"][microversion.STATE_KEY] = version
            extra.extend(microversion.response_headers(version))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        async def reply(status: int, text: str) -> None:
            await JSONResponse(error_body(service, status, text), status_code=status)(
                scope, receive, send_with_id
            )

        body: bytes | None = None  # an upload's: its handler reads it as it comes, with its own bound
        refusal = version_refusal
        if not image_data.streams_body(scope):
            body, refusal = await self._read_body(scope, receive)
            refusal = refusal or version_refusal
        if refusal is not None:
            await reply(*refusal)
            return
        try:
            if self.readmodel is None:
                await self.app(scope, receive if body is None else replayed(body, receive), send_with_id)
            else:
                await answer_caught_up(self.app, scope, body, receive, send_with_id, self.readmodel,
                                       self.peers)
        except Exception:
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await reply(500, "An unexpected error occurred; it has been logged.")

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
        too_large = (413, f"Request body is larger than {self.max_body_bytes} bytes.")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    return b"", (400, "Content-Length is not a number.")
                if int(value) > self.max_body_bytes:
                    return b"", too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                return body, None  # FastAPI reports unparsable JSON itself, as a 400
            if _has_unencodable_text(parsed):
                return b"", (400, "The request body holds text that is not valid Unicode.")
        return body, None


def create_app(ctx: ApiContext) -> FastAPI:
    """The API over `ctx`: Keystone, Nova, Glance, Neutron and Cinder routers on one app."""
    app = FastAPI(
        title="eventsvm OpenStack API",
        version="2.1",
        description="Keystone v3, Nova v2.1, Glance v2, Neutron v2.0 and Cinder v3, event-sourced.",
        redoc_url=None,
        # every route's policy, from one table (eventsvm.api.authorization)
        dependencies=[Depends(enforce_route_policy)],
    )
    app.state.ctx = ctx
    app.state.public_url = ctx.public_url
    install_error_handlers(app)
    install_openapi(app, policy_may_refuse)
    for module in (identity, identity_admin, compute, compute_actions, compute_catalog, compute_usage, image,
                   image_data, network, volume, server_edits, server_metadata, server_volumes,
                   identity_changes, identity_domains, server_ips):
        app.include_router(module.router)
    app.include_router(compute_images.router)
    app.include_router(compute_networks.router)
    app.include_router(server_groups.router)
    app.include_router(server_tags.router)
    app.add_middleware(RequestEnvelope, max_body_bytes=ctx.max_body_bytes, readmodel=ctx.readmodel,
                       peers=ctx.peers)
    return app
