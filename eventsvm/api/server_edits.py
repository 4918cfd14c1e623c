"""Nova's PUT /servers/{id} (name and access IPs at microversion 2.1): one instance.updated on the
log, chained to the instance's newest event, and the server as it now is.

Nova validates the body with a closed JSON schema, so an unknown field (`description` needs 2.19)
is a 400 rather than ignored; the checks below give nova's messages.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import compute_base, server_fields, server_view, visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest
from eventsvm.api.openapi import failures
from eventsvm.api.responses import UpdatedServerBody
from eventsvm.api.server_request import access_ip, described, invalid, server_name, unexpected
from eventsvm.api.writes import chained_event
from eventsvm.events.model import EventType

router = APIRouter(prefix="/compute", tags=["compute"])

_UPDATE_FIELDS = ("name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig")
# what nova's update and rebuild answer with: its server view without the extensions (no AZ,
# config drive, key name, usage times, extended status or attributes, volumes, security groups)
BASIC_VIEW = frozenset({
    "id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image", "flavor", "created",
    "updated", "addresses", "accessIPv4", "accessIPv6", "links", "OS-DCF:diskConfig", "progress", "fault",
    # what nova's basic view adds from a microversion on (the full view holds it from that version)
    "locked", "description", "tags"})


def wrapped_object(raw: Any, wrapper: str, fields: Collection[str] | None = None) -> dict[str, Any]:
    """The object a nova request body wraps in its one key `wrapper` (`{"server": {...}}`), with
    no key but `fields` (any key when None), as nova's JSON schemas check it."""
    if not isinstance(raw, dict) or wrapper not in raw:
        raise invalid(wrapper, raw, f"'{wrapper}' is a required property")
    extra = sorted(k for k in raw if k != wrapper)
    if extra:
        raise BadRequest(unexpected(extra))
    inner = raw[wrapper]
    if not isinstance(inner, dict):
        raise invalid(wrapper, inner, f"{inner!r} is not of type 'object'")
    unknown = [] if fields is None else sorted(k for k in inner if k not in fields)
    if unknown:
        raise invalid(wrapper, inner, unexpected(unknown))
    return inner


def update_body(raw: Any, version: tuple[int, int]) -> dict[str, Any]:
    """The instance.updated body of a PUT /servers/{id} request body, validated as nova does at
    `version` (the description from 2.19)."""
    fields = (*_UPDATE_FIELDS, "description") if version >= microversion.DESCRIPTION else _UPDATE_FIELDS
    server = wrapped_object(raw, "server", fields)
    disk_config = server.get("OS-DCF:diskConfig")
    if "OS-DCF:diskConfig" in server and disk_config not in ("AUTO", "MANUAL"):
        raise invalid("OS-DCF:diskConfig", disk_config, f"{disk_config!r} is not one of ['AUTO', 'MANUAL']")
    return {
        "name": server_name(server["name"]) if "name" in server else None,
        "access_ipv4": access_ip("accessIPv4", server["accessIPv4"], 4) if "accessIPv4" in server else None,
        "access_ipv6": access_ip("accessIPv6", server["accessIPv6"], 6) if "accessIPv6" in server else None,
        **described(server, version),
    }


@router.put(
    "/v2.1/servers/{server_id}", summary="Update a server (name, access IPs)",
    response_model=UpdatedServerBody, response_model_exclude_unset=True, responses=failures(403, 404),
)
def update_server(
    server_id: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append one instance.updated and answer 200 with the server as nova shows it."""
    body = update_body(raw, microversion.served(request))
    rm = ctx.readmodel
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)  # servers:update: the route table's
        event = chained_event(EventType.INSTANCE_UPDATED, inst, body, request, caller, ctx)
    rm.append([event])
    fields = server_fields(ctx, caller)
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)
        view = server_view(rm.models, compute_base(request), inst, fields, microversion.served(request))
    return {"server": {k: v for k, v in view.items() if k in BASIC_VIEW}}
