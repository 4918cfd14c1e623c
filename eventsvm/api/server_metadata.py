"""Nova's server metadata under /compute/v2.1/servers/{id}/metadata: list, merge, replace, and one
item by key. Every change is one instance.metadata_changed on the log; the read model's fold of it
is what GET and the server view show. Nova keeps no instance action for metadata, so none is made.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, Forbidden, NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.server_edits import wrapped_object
from eventsvm.api.server_request import invalid, unexpected
from eventsvm.api.writes import chained_event
from eventsvm.events.model import EventType
from eventsvm.identity import policy
from eventsvm.identity.quota import METADATA_ITEMS
from eventsvm.state.instances import Instance

router = APIRouter(prefix="/compute/v2.1/servers", tags=["compute"])

# nova's parameter_types.metadata: keys of these characters, string values of at most 255
_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
# the states nova's compute API lets metadata change in (check_instance_state, task_state None)
_EDITABLE_VM_STATES = frozenset({"active", "paused", "suspended", "stopped"})


def _metadata(raw: Any, wrapper: str, one_item: bool = False) -> dict[str, str]:
    """The `wrapper` object of a request body, validated as nova's server_metadata schemas do."""
    items = wrapped_object(raw, wrapper)
    bad_keys = sorted(k for k in items if not _KEY.match(k))
    if bad_keys:
        raise invalid(wrapper, items, unexpected(bad_keys))
    for key, value in items.items():
        if not isinstance(value, str):
            raise invalid(f"{wrapper}.{key}", value, f"{value!r} is not of type 'string'")
        if len(value) > 255:
            raise invalid(f"{wrapper}.{key}", value, f"{value[:20]!r}... is too long")
    if one_item and len(items) != 1:
        raise invalid(wrapper, items, "does not have exactly one property" if not items
                      else f"{items!r} has too many properties")
    return items


def _check_state(inst: Instance, caller: Identity, action: str) -> None:
    """Nova's compute API changes metadata only of an unlocked server (check_instance_lock) in a
    settled state (check_instance_state)."""
    if policy.lock_holds(inst.locked, caller.admin_of("nova")):
        raise Conflict(f"Instance {inst.id} is locked")
    if inst.vm_state not in _EDITABLE_VM_STATES:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in vm_state {inst.vm_state}")
    if inst.task_state is not None:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in task_state {inst.task_state}")


def _change(request: Request, caller: Identity, ctx: ApiContext, server_id: str, action: str,
            set_items: dict[str, str], removed: list[str], replace: bool) -> dict[str, str]:
    """Check the change against the server and the quota, append it, and return the new metadata."""
    rm = ctx.readmodel
    with rm.lock:
        # who may change it is the route table's (server-metadata:create / update / update_all /
        # delete), checked before the handler; the lock and the state are nova's 409s below
        inst = visible_server(rm.models, caller, server_id)
        # nova looks the key up before it asks the compute API, which checks the state
        if removed and removed[0] not in inst.metadata:
            raise NotFound("Metadata item was not found")
        _check_state(inst, caller, action)
        after = set_items if replace else {**inst.metadata, **set_items}
        if set_items and len(after) > METADATA_ITEMS:
            raise Forbidden(f"Maximum number of metadata items exceeds {METADATA_ITEMS}")
        event = chained_event(EventType.INSTANCE_METADATA_CHANGED, inst,
                               {"set": dict(set_items), "removed": removed, "replace": replace},
                               request, caller, ctx)
    rm.append([event])
    with rm.lock:
        return dict(visible_server(rm.models, caller, server_id).metadata)


@router.get("/{server_id}/metadata", summary="A server's metadata", responses=failures(404))
def list_metadata(
    server_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Every metadata item of the server."""
    with ctx.readmodel.lock:
        return {"metadata": dict(visible_server(ctx.readmodel.models, caller, server_id).metadata)}


@router.post("/{server_id}/metadata", summary="Add or change metadata items",
             responses=failures(403, 404, 409))
def update_metadata(
    server_id: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Merge the items given into the server's metadata; answer with all of it."""
    items = _metadata(raw, "metadata")
    return {"metadata": _change(request, caller, ctx, server_id, "update metadata", items, [], False)}


@router.put("/{server_id}/metadata", summary="Replace all metadata", responses=failures(403, 404, 409))
def replace_metadata(
    server_id: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Make the server's metadata exactly the items given (none: empty it)."""
    items = _metadata(raw, "metadata")
    _change(request, caller, ctx, server_id, "update metadata", items, [], True)
    return {"metadata": items}


@router.get("/{server_id}/metadata/{key}", summary="One metadata item", responses=failures(404))
def show_metadata_item(
    server_id: str, key: str, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One item as {"meta": {key: value}}; 404 when the server has no such key."""
    with ctx.readmodel.lock:
        metadata = visible_server(ctx.readmodel.models, caller, server_id).metadata
        if key not in metadata:
            raise NotFound("Metadata item was not found")
        return {"meta": {key: metadata[key]}}


@router.put("/{server_id}/metadata/{key}", summary="Set one metadata item",
            responses=failures(403, 404, 409))
def set_metadata_item(
    server_id: str,
    key: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Set the one item the body names, which must be the key of the URL."""
    meta = _metadata(raw, "meta", one_item=True)
    if key not in meta:
        raise BadRequest("Request body and URI mismatch")
    _change(request, caller, ctx, server_id, "update metadata", meta, [], False)
    return {"meta": meta}


@router.delete("/{server_id}/metadata/{key}", status_code=204, summary="Delete one metadata item",
               responses=failures(403, 404, 409))
def delete_metadata_item(
    server_id: str, key: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Remove the item; 404 when the server has no such key."""
    _change(request, caller, ctx, server_id, "delete metadata", {}, [key], False)
    return Response(status_code=204)
