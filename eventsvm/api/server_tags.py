"""Nova's server tags under /compute/v2.1/servers/{id}/tags (microversion 2.26): list, replace
all, delete all, and one tag: check, add, delete. Every change is one instance.tags_changed on the
log, folded by the read model beside the metadata (eventsvm.state.instances); nova keeps no
instance action for tags, so none is made. Below 2.26 the routes are 404, as nova's are."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import compute_base, visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.server_request import invalid
from eventsvm.api.writes import chained_event
from eventsvm.events.model import EventType
from eventsvm.state.instances import Instance

router = APIRouter(prefix="/compute/v2.1/servers", tags=["compute"])

# nova's objects.instance.MAX_TAG_COUNT and parameter_types.tag (at most 60 characters, no '/' or ',')
MAX_TAGS = 50
MAX_TAG_LENGTH = 60
# the states nova's server tags controller changes tags in (_check_instance_in_valid_state)
_EDITABLE_VM_STATES = frozenset({"active", "paused", "suspended", "stopped", "shelved", "shelved_offloaded"})
# what a change may answer beside its success
_CHANGES = failures(403, 404, 409)


def _served(request: Request) -> None:
    """Nova has no tag routes below 2.26."""
    if microversion.served(request) < microversion.SERVER_TAGS:
        raise NotFound("The resource could not be found.")


def _tag_problem(tag: Any) -> str | None:
    """Why `tag` is no tag nova takes, None when it is one."""
    if not isinstance(tag, str):
        return f"{tag!r} is not of type 'string'"
    if len(tag) > MAX_TAG_LENGTH:
        return f"{tag!r} is too long"
    if "/" in tag or "," in tag:
        return f"{tag!r} does not match '^[^,/]*$'"
    return None


def _tags_body(raw: Any) -> list[str]:
    """The tag list of PUT /tags, validated as nova's update_all schema does."""
    if not isinstance(raw, dict) or "tags" not in raw:
        raise invalid("tags", raw, "'tags' is a required property")
    extra = sorted(k for k in raw if k != "tags")
    if extra:
        raise invalid("tags", raw, f"Additional properties are not allowed ({', '.join(map(repr, extra))} "
                                   "was unexpected)")
    tags = raw["tags"]
    if not isinstance(tags, list):
        raise invalid("tags", tags, f"{tags!r} is not of type 'array'")
    if len(tags) > MAX_TAGS:
        raise invalid("tags", tags, f"{tags!r} is too long")
    for index, tag in enumerate(tags):
        problem = _tag_problem(tag)
        if problem is not None:
            raise invalid(f"tags/{index}", tag, problem)
    return list(dict.fromkeys(tags))


def _editable(inst: Instance, action: str) -> None:
    if inst.vm_state not in _EDITABLE_VM_STATES:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in vm_state {inst.vm_state}")
    if inst.task_state is not None:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in task_state {inst.task_state}")


def _change(request: Request, caller: Identity, ctx: ApiContext, server_id: str, action: str,
            added: list[str], removed: list[str], replace: bool) -> list[str] | None:
    """Check and append one change of the server's tags; the tags after it, or None when the
    change changes nothing (a tag the server has already)."""
    rm = ctx.readmodel
    with rm.lock:
        # its os-server-tags rule is the route table's, checked before the handler; the state is
        # nova's 409 below
        inst = visible_server(rm.models, caller, server_id)
        _editable(inst, action)
        if removed and not replace and removed[0] not in inst.tags:
            raise NotFound(f"Instance {inst.id} has no tag '{removed[0]}'.")
        # nova counts before it looks for the tag: a full server refuses even one it has
        if not replace and len(inst.tags) + len(added) > MAX_TAGS:
            raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
        if not replace and added and added[0] in inst.tags:
            return None
        event = chained_event(EventType.INSTANCE_TAGS_CHANGED, inst,
                              {"added": added, "removed": removed, "replace": replace}, request, caller, ctx)
    rm.append([event])
    with rm.lock:
        return list(visible_server(rm.models, caller, server_id).tags)


@router.get("/{server_id}/tags", summary="A server's tags (2.26)", responses=failures(404))
def list_tags(
    server_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Every tag of the server."""
    _served(request)
    with ctx.readmodel.lock:
        return {"tags": list(visible_server(ctx.readmodel.models, caller, server_id).tags)}


@router.put("/{server_id}/tags", summary="Replace all tags (2.26)", responses=failures(400, 403, 404, 409))
def replace_tags(
    server_id: str, request: Request, raw: Any = Body(None), caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Make the server's tags exactly the ones given; answer with them."""
    _served(request)
    tags = _tags_body(raw)
    _change(request, caller, ctx, server_id, "update tags", tags, [], True)
    return {"tags": tags}


@router.delete("/{server_id}/tags", status_code=204, summary="Delete all tags", responses=_CHANGES)
def delete_tags(
    server_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Remove every tag."""
    _served(request)
    _change(request, caller, ctx, server_id, "delete tags", [], [], True)
    return Response(status_code=204)


@router.get("/{server_id}/tags/{tag}", status_code=204, summary="Check a tag (2.26)", responses=failures(404))
def check_tag(
    server_id: str, tag: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """204 when the server has the tag, 404 when it has not."""
    _served(request)
    with ctx.readmodel.lock:
        inst = visible_server(ctx.readmodel.models, caller, server_id)
        if tag not in inst.tags:
            raise NotFound(f"Server {server_id} has no tag '{tag}'")
    return Response(status_code=204)


@router.put("/{server_id}/tags/{tag}", status_code=201, summary="Add a tag (2.26)",
            responses={204: {"description": "The server had the tag already"},
                       **failures(400, 403, 404, 409)})
def add_tag(
    server_id: str, tag: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Add one tag: 201 with its Location, 204 when the server has it already."""
    _served(request)
    problem = _tag_problem(tag)
    if problem is not None:
        raise BadRequest(f"Tag '{tag[:80]}' is invalid. It must be a non empty string without characters "
                         f"'/' and ','. Validation error message: {problem}")
    if _change(request, caller, ctx, server_id, "update tag", [tag], [], False) is None:
        return Response(status_code=204)
    location = f"{compute_base(request)}/servers/{server_id}/tags/{tag}"
    return Response(status_code=201, headers={"Location": location})


@router.delete("/{server_id}/tags/{tag}", status_code=204, summary="Delete a tag", responses=_CHANGES)
def delete_tag(
    server_id: str, tag: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Remove one tag; 404 when the server has no such tag."""
    _served(request)
    _change(request, caller, ctx, server_id, "delete tag", [], [tag], False)
    return Response(status_code=204)
