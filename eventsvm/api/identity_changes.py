"""Keystone v3's changes to what exists: PATCH and DELETE of projects and users, and the removal
of a role assignment (admin only). Each is one identity event; a rename takes its new name as a
create does and a delete frees the name (eventsvm.state.names), so the log decides both."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.identity_admin import (
    NAME_TAKEN,
    find_project,
    find_role,
    find_user,
    project_view,
    user_view,
)
from eventsvm.api.openapi import failures
from eventsvm.api.wire import base_url
from eventsvm.api.writes import append_delete, caller_event, claim_name
from eventsvm.events.model import EventType
from eventsvm.identity.passwords import NUL_REFUSED, acceptable, hash_password

router = APIRouter(prefix="/identity", tags=["identity"])

# keystone's name limits: a project's name is at most 64 characters, a user's 255
_PROJECT_NAME_MAX, _USER_NAME_MAX = 64, 255


def _invalid(field: str, message: str) -> BadRequest:
    """Keystone's schema-validation 400 (keystone.common.validation), the reason cut short."""
    return BadRequest(f"Invalid input for field '{field}': {message[:160]}")


def _changes(raw: Any, wrapper: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get(wrapper), dict):
        raise BadRequest(f"'{wrapper}' is a required property")
    changes: dict[str, Any] = raw[wrapper]
    if not changes:
        raise BadRequest("{} does not have enough properties")
    return changes


def _name(changes: dict[str, Any], longest: int) -> str | None:
    if "name" not in changes:
        return None
    name = changes["name"]
    if not isinstance(name, str):
        raise _invalid("name", f"{name!r} is not of type 'string'")
    if not name.strip():
        raise _invalid("name", f"{name!r} does not match '[\\S]+'" if name else "'' is too short")
    if len(name) > longest:
        raise _invalid("name", f"'{name[:20]}...' is too long")
    return name


def _optional(changes: dict[str, Any], field: str, kind: type, longest: int = 0) -> Any:
    value = changes.get(field)
    # a password is never shown back, not even in part
    shown = "The value" if field == "password" else repr(value)
    if value is not None and not isinstance(value, kind):
        raise _invalid(field, f"{shown} is not of type '{'boolean' if kind is bool else 'string'}'")
    # bounded as the creates bound them: the log keeps what it is given for good
    if isinstance(value, str) and len(value) > longest:
        shown = "The value" if field == "password" else f"'{value[:20]}...'"
        raise _invalid(field, f"{shown} is too long")
    return value


@router.patch("/v3/projects/{project_id}", summary="Update a project (admin)",
              responses=failures(403, 404, 409))
def update_project(
    project_id: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append identity.project_updated (name, description, enabled); 409 when the name is taken."""
    changes = _changes(raw, "project")
    name = _name(changes, _PROJECT_NAME_MAX)
    enabled = _optional(changes, "enabled", bool)
    description = _optional(changes, "description", str, 1024)
    models = ctx.readmodel.models.identity
    with ctx.readmodel.lock:
        project = find_project(models, project_id)
        for fixed, now in (("domain_id", project.domain_id), ("parent_id", project.domain_id),
                           ("is_domain", False)):
            if fixed in changes and changes[fixed] != now:
                raise BadRequest(f"Update of `{fixed}` is not allowed.")
        other = models.project_by_name(name, project.domain_id) if name is not None else None
        if other is not None and other.id != project_id:
            raise Conflict(NAME_TAKEN)
        body = {"id": project_id, "domain_id": project.domain_id, "name": name, "enabled": enabled,
                "description": description}
    claim_name(ctx, caller_event(EventType.PROJECT_UPDATED, project_id, body, request, caller), NAME_TAKEN)
    with ctx.readmodel.lock:
        return {"project": project_view(base_url(request), find_project(models, project_id))}


@router.delete("/v3/projects/{project_id}", status_code=204, summary="Delete a project (admin)",
               responses=failures(403, 404))
def delete_project(
    project_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append identity.project_deleted: its name is free, its grants and its tokens are gone."""
    models = ctx.readmodel.models.identity
    return append_delete(ctx, request, caller, EventType.PROJECT_DELETED, project_id, lambda: {
        "id": project_id, "domain_id": find_project(models, project_id).domain_id}, 204)


@router.patch("/v3/users/{user_id}", summary="Update a user (admin)", responses=failures(403, 404, 409))
def update_user(
    user_id: str,
    request: Request,
    raw: Any = Body(None),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append identity.user_updated (name, enabled, password, default project); 409 on a taken name."""
    changes = _changes(raw, "user")
    name = _name(changes, _USER_NAME_MAX)
    enabled = _optional(changes, "enabled", bool)
    password = _optional(changes, "password", str, 4096)
    if password is not None and not acceptable(password):
        raise _invalid("password", NUL_REFUSED)
    default_project_id = _optional(changes, "default_project_id", str, 255)
    models = ctx.readmodel.models.identity
    with ctx.readmodel.lock:
        user = find_user(models, user_id)
        if "domain_id" in changes and changes["domain_id"] != user.domain_id:
            raise BadRequest("Cannot change Domain ID")
        if default_project_id is not None and models.project(default_project_id) is None:
            raise BadRequest(f"Could not find project: {default_project_id}.")
        other = models.user_by_name(name, user.domain_id) if name is not None else None
        if other is not None and other.id != user_id:
            raise Conflict(NAME_TAKEN)
        domain_id = user.domain_id
    body = {"id": user_id, "domain_id": domain_id, "name": name, "enabled": enabled,
            "password_hash": hash_password(password) if password else None,
            "default_project_id": default_project_id}
    claim_name(ctx, caller_event(EventType.USER_UPDATED, user_id, body, request, caller), NAME_TAKEN)
    with ctx.readmodel.lock:
        return {"user": user_view(base_url(request), find_user(models, user_id))}


@router.delete("/v3/users/{user_id}", status_code=204, summary="Delete a user (admin)",
               responses=failures(403, 404))
def delete_user(
    user_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append identity.user_deleted: its name is free, its grants and its tokens are gone."""
    models = ctx.readmodel.models.identity
    return append_delete(ctx, request, caller, EventType.USER_DELETED, user_id, lambda: {
        "id": user_id, "domain_id": find_user(models, user_id).domain_id}, 204)


@router.delete(
    "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
    status_code=204,
    summary="Remove a user's role on a project (admin)",
    responses=failures(403, 404),
)
def unassign_role(
    project_id: str,
    user_id: str,
    role_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append identity.role_unassigned; tokens that carry the role stop working."""
    models = ctx.readmodel.models.identity
    with ctx.readmodel.lock:
        find_project(models, project_id)
        find_user(models, user_id)
        find_role(role_id)
        if role_id not in models.roles_of(user_id, project_id):
            raise NotFound(f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
                           f"project, domain, or system: {project_id}.")
    grant = {"user_id": user_id, "project_id": project_id, "role": role_id}
    # the assignment's own key, so a grant and its removal keep their order on one partition
    ctx.readmodel.append([caller_event(EventType.ROLE_UNASSIGNED, f"{user_id}:{project_id}", grant, request,
                                       caller)])
    return Response(status_code=204)
