"""Nova's os-server-groups under /compute/v2.1: create, list, show and delete a project's server
groups. A group is a catalog record (catalog.server_group_created / _deleted); its members are not
recorded beside it but read from the servers whose create named it (scheduler hint `group`) and
that are not deleted, so a member joins with its instance.requested and leaves with its delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Forbidden, NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import own_target, permits
from eventsvm.api.wire import parse_limit, truthy
from eventsvm.api.writes import append_delete, caller_event
from eventsvm.events.model import EventType, new_id
from eventsvm.identity.quota import within
from eventsvm.projections.readmodel import Models
from eventsvm.scheduler.request import SERVER_GROUP_POLICIES
from eventsvm.state.catalog import Body
from eventsvm.state.identity import quota_for

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


class ServerGroupSpec(BaseModel):
    """The group nova's 2.1 schema takes: a name and a list of exactly one policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    policies: list[Any]


class ServerGroupCreate(BaseModel):
    """POST /compute/v2.1/os-server-groups."""

    model_config = ConfigDict(extra="forbid")

    server_group: ServerGroupSpec


def group_members(models: Models, group_id: str) -> list[str]:
    """The ids of the servers in a group: those whose create named it, until they are deleted
    (ERROR ones included, as nova keeps them), oldest first."""
    members = [
        inst for inst in models.instances.instances.values()
        if inst.server_group_id == group_id and inst.status != "DELETED"
    ]
    return [inst.id for inst in sorted(members, key=lambda i: (i.created_at, i.id))]


def project_server_groups(models: Models, project_id: str) -> int:
    """How many server groups a project holds (nova's server_groups quota counts them)."""
    return sum(1 for g in models.catalog.server_groups.values() if g.get("project_id") == project_id)


def _view(group: Body, members: list[str], version: tuple[int, int]) -> dict[str, Any]:
    # nova's view: one policy in a list, no rules, empty metadata; its project and user from 2.13
    view = {
        "id": group["id"],
        "name": group["name"],
        "policies": [group["policy"]],
        "members": members,
        "metadata": {},
    }
    if version >= microversion.SERVER_GROUP_OWNERS:
        view.update(project_id=group.get("project_id"), user_id=group.get("user_id"))
    return view


def _checked_policy(policies: list[Any], version: tuple[int, int]) -> str:
    """The one policy of a create, refused as nova's schema refuses it: affinity or
    anti-affinity, and from 2.15 soft-affinity or soft-anti-affinity (the scheduler's weighers)."""
    allowed = SERVER_GROUP_POLICIES if version >= microversion.SOFT_AFFINITY else SERVER_GROUP_POLICIES[:2]
    if len(policies) != 1 or policies[0] not in allowed:
        raise BadRequest(
            f"Invalid input for field/attribute policies. Value: {policies}. "
            f"{policies} is not valid under any of the given schemas"
        )
    return str(policies[0])


@router.post("/os-server-groups", summary="Create a server group", responses=failures(400, 403))
def create_server_group(
    body: ServerGroupCreate, request: Request,
    caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.server_group_created; 403 over the project's server_groups quota."""
    spec = body.server_group
    if spec.name != spec.name.strip():
        raise BadRequest("Invalid input for field/attribute name. Value: "
                         f"{spec.name}. '{spec.name}' does not match '^(?! )[^\\x00-\\x1f]*(?<! )$'")
    version = microversion.served(request)
    group = {"id": new_id(), "name": spec.name, "policy": _checked_policy(spec.policies, version)}
    rm = ctx.readmodel
    with rm.lock:
        # counted against this process's read model: a race between two API processes may pass
        # one group over the limit (docs/decisions.md)
        limit = quota_for(rm.models.identity, caller.project_id).server_groups
        if not within(limit, project_server_groups(rm.models, caller.project_id)):
            raise Forbidden("Quota exceeded, too many server groups.")
    rm.append([caller_event(EventType.SERVER_GROUP_CREATED, group["id"], group, request, caller)])
    owned = {**group, "project_id": caller.project_id, "user_id": caller.user_id}
    return {"server_group": _view(owned, [], version)}


@router.get("/os-server-groups", summary="List server groups (all_projects: admin)", responses=failures(400))
@reads_models
def list_server_groups(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The caller's project's groups, or every project's for an admin asking all_projects; paged
    by limit and offset as nova pages them."""
    query = request.query_params
    # nova checks index:all_projects quietly: a refused caller sees its own project's groups
    everyone = truthy(query.get("all_projects")) and permits(
        ctx, caller, "nova", "os_compute_api:os-server-groups:index:all_projects", own_target(caller))
    models = ctx.readmodel.models
    groups = [g for g in models.catalog.server_groups.values()
              if everyone or g.get("project_id") == caller.project_id]
    raw_offset = query.get("offset")
    if raw_offset is not None and not raw_offset.isdigit():
        raise BadRequest("offset param must be an integer")
    offset = int(raw_offset or 0)
    limit = parse_limit(query.get("limit"), ctx.max_page)
    version = microversion.served(request)
    return {"server_groups": [_view(g, group_members(models, g["id"]), version)
                              for g in groups[offset:offset + limit]]}


def _group(models: Models, group_id: str) -> Body:
    """A group by id, or nova's 404. Its policy (os-server-groups:show / delete, on the group's
    project: another project's group is a 403) is the route table's, checked before the handler."""
    group = models.catalog.server_groups.get(group_id)
    if group is None:
        raise NotFound(f"Instance group {group_id} could not be found.")
    return group


@router.get("/os-server-groups/{group_id}", summary="Show a server group", responses=failures(403, 404))
@reads_models
def show_server_group(
    group_id: str, request: Request, _: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One group with its members."""
    models = ctx.readmodel.models
    group = _group(models, group_id)
    return {"server_group": _view(group, group_members(models, group_id), microversion.served(request))}


@router.delete(
    "/os-server-groups/{group_id}", status_code=204, summary="Delete a server group",
    responses=failures(403, 404),
)
def delete_server_group(
    group_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.server_group_deleted; its servers stay where they are, in no group."""
    models = ctx.readmodel.models
    return append_delete(
        ctx, request, caller, EventType.SERVER_GROUP_DELETED, group_id,
        lambda: {"id": _group(models, group_id)["id"]}, 204,
    )
