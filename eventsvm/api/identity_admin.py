"""Keystone v3's projects, users, roles and role assignments under /identity/v3: reads of the
identity read model, and the admin-only writes that append identity events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.models import ProjectCreate, UserCreate
from eventsvm.api.openapi import failures
from eventsvm.api.wire import base_url
from eventsvm.api.writes import caller_event, claim_name
from eventsvm.events.model import Event, EventType
from eventsvm.identity import policy
from eventsvm.identity.passwords import hash_password
from eventsvm.state.identity import IdentityState, Project, User, domain_name

router = APIRouter(prefix="/identity", tags=["identity"])

ROLES = (policy.ADMIN, policy.MEMBER, policy.READER)
NAME_TAKEN = "Conflict occurred attempting to store the entity: the name is already taken."


def project_view(base: str, project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": project.domain_id,
        "enabled": project.enabled,
        "description": project.description,
        "is_domain": False,
        "parent_id": project.domain_id,
        "tags": [],
        "options": {},
        "links": {"self": f"{base}/identity/v3/projects/{project.id}"},
    }


def user_view(base: str, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "domain_id": user.domain_id,
        "enabled": user.enabled,
        "default_project_id": user.default_project_id,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base}/identity/v3/users/{user.id}"},
    }


def find_project(models: IdentityState, project_id: str) -> Project:
    """The project, or keystone's 404."""
    project = models.project(project_id)
    if project is None:
        raise NotFound(f"Could not find project: {project_id}.")
    return project


def find_user(models: IdentityState, user_id: str) -> User:
    """The user, or keystone's 404."""
    user = models.user(user_id)
    if user is None:
        raise NotFound(f"Could not find user: {user_id}.")
    return user


def find_role(role_id: str) -> str:
    """The role (its id is its name), or keystone's 404."""
    if role_id not in ROLES:
        raise NotFound(f"Could not find role: {role_id}.")
    return role_id


@router.get("/v3/projects", summary="List projects (admin)", responses=failures(403))
@reads_models
def list_projects(
    request: Request,
    name: str | None = None,
    domain_id: str | None = None,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Every project, filtered by exact name and domain; keystone's list_projects decides who may
    (a user lists its own at /v3/auth/projects or /v3/users/{id}/projects)."""
    base = base_url(request)
    projects = [
        p
        for p in ctx.readmodel.models.identity.projects.values()
        if (name is None or p.name == name) and (domain_id is None or p.domain_id == domain_id)
    ]
    return {
        "projects": [project_view(base, p) for p in projects],
        "links": {"self": f"{base}/identity/v3/projects", "next": None, "previous": None},
    }


@router.get("/v3/auth/projects", summary="Projects the caller has a role on", responses=failures(403))
@router.get("/v3/users/{user_id}/projects", summary="Projects a user has a role on", responses=failures(403))
@reads_models
def user_projects(
    request: Request,
    user_id: str | None = None,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """The projects of the caller, or of the user named (list_user_projects: the route table's)."""
    target = user_id or caller.user_id
    models = ctx.readmodel.models.identity
    base = base_url(request)
    return {
        "projects": [
            project_view(base, p) for p in models.projects.values() if models.roles_of(target, p.id)
        ],
        "links": {"self": str(request.url), "next": None, "previous": None},
    }


@router.get("/v3/projects/{project_id}", summary="Show a project", responses=failures(403, 404))
@reads_models
def show_project(
    project_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One project (get_project: the route table's, the token's own project or an admin)."""
    models = ctx.readmodel.models.identity
    return {"project": project_view(base_url(request), find_project(models, project_id))}


def _claim_identity_name(ctx: ApiContext, event: Event, taken: Callable[[], bool]) -> None:
    with ctx.readmodel.lock:
        # answered here when this process already knows; otherwise the log decides (claim_name)
        if taken():
            raise Conflict(NAME_TAKEN)
    claim_name(ctx, event, NAME_TAKEN)


@router.post(
    "/v3/projects", status_code=201, summary="Create a project (admin)",
    responses=failures(403, 409),
)
def create_project(
    body: ProjectCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append identity.project_created; 409 when the name exists in the domain."""
    spec = body.project
    models = ctx.readmodel.models.identity
    project_id = uuid.uuid4().hex
    fields = {
        "id": project_id,
        "name": spec.name,
        "domain_id": spec.domain_id,
        "enabled": spec.enabled,
        "description": spec.description,
    }
    _claim_identity_name(
        ctx,
        caller_event(EventType.PROJECT_CREATED, project_id, fields, request, caller),
        lambda: models.project_by_name(spec.name, spec.domain_id) is not None,
    )
    project = models.project(project_id)
    assert project is not None
    return {"project": project_view(base_url(request), project)}


@router.get("/v3/users", summary="List users (admin)", responses=failures(403))
@reads_models
def list_users(
    request: Request,
    name: str | None = None,
    domain_id: str | None = None,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Every user, filtered by exact name and domain."""
    base = base_url(request)
    users = [
        u
        for u in ctx.readmodel.models.identity.users.values()
        if (name is None or u.name == name) and (domain_id is None or u.domain_id == domain_id)
    ]
    return {
        "users": [user_view(base, u) for u in users],
        "links": {"self": f"{base}/identity/v3/users", "next": None, "previous": None},
    }


@router.get("/v3/users/{user_id}", summary="Show a user (admin, or the user)", responses=failures(403, 404))
def show_user(
    user_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One user."""
    return {"user": user_view(base_url(request), find_user(ctx.readmodel.models.identity, user_id))}


@router.post("/v3/users", status_code=201, summary="Create a user (admin)", responses=failures(400, 403, 409))
def create_user(
    body: UserCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append identity.user_created with a salted hash of the password (never the password)."""
    spec = body.user
    models = ctx.readmodel.models.identity
    if spec.default_project_id is not None and models.project(spec.default_project_id) is None:
        raise BadRequest(f"Could not find project: {spec.default_project_id}.")
    user_id = uuid.uuid4().hex
    fields = {
        "id": user_id,
        "name": spec.name,
        "domain_id": spec.domain_id,
        "default_project_id": spec.default_project_id,
        "enabled": spec.enabled,
        "password_hash": hash_password(spec.password),
    }
    _claim_identity_name(
        ctx,
        caller_event(EventType.USER_CREATED, user_id, fields, request, caller),
        lambda: models.user_by_name(spec.name, spec.domain_id) is not None,
    )
    user = models.user(user_id)
    assert user is not None
    return {"user": user_view(base_url(request), user)}


@router.get("/v3/roles", summary="List roles")
def list_roles(request: Request, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """The three roles keystone bootstraps; a role's id is its name."""
    base = base_url(request)
    return {"roles": [_role_view(base, r) for r in ROLES], "links": {"self": f"{base}/identity/v3/roles"}}


def _role_view(base: str, role: str) -> dict[str, Any]:
    return {
        "id": role,
        "name": role,
        "domain_id": None,
        "description": None,
        "options": {},
        "links": {"self": f"{base}/identity/v3/roles/{role}"},
    }


@router.get("/v3/roles/{role_id}", summary="Show a role", responses=failures(404))
def show_role(role_id: str, request: Request, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """One role."""
    return {"role": _role_view(base_url(request), find_role(role_id))}


@router.put(
    "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}",
    status_code=204,
    summary="Assign a role to a user on a project (admin)",
    responses=failures(403, 404, 409),
)
def assign_role(
    project_id: str,
    user_id: str,
    role_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append identity.role_assigned."""
    models = ctx.readmodel.models.identity
    with ctx.readmodel.lock:
        find_project(models, project_id)
        find_user(models, user_id)
        find_role(role_id)
        assigned = role_id in models.roles_of(user_id, project_id)
    if not assigned:
        grant = {"user_id": user_id, "project_id": project_id, "role": role_id}
        event = caller_event(EventType.ROLE_ASSIGNED, f"{user_id}:{project_id}", grant, request, caller)
        ctx.readmodel.append([event])
    return Response(status_code=204)


def query_flag(request: Request, name: str) -> bool:
    """Keystone's boolean query parameter: present and not `0` is true (`?include_names` too)."""
    return name in request.query_params and request.query_params[name] != "0"


@router.get("/v3/role_assignments", summary="List role assignments", responses=failures(403))
@reads_models
def role_assignments(
    request: Request,
    user_id: str | None = Query(None, alias="user.id"),
    project_id: str | None = Query(None, alias="scope.project.id"),
    domain_id: str | None = Query(None, alias="scope.domain.id"),
    role_id: str | None = Query(None, alias="role.id"),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Who has which role where, with keystone's filters; a non-admin may only ask about themselves.
    `effective` adds the roles the assigned ones imply (each linked to its prior role); roles are
    assigned on projects only, so a `scope.domain.id` or `group.id` filter matches none."""
    models = ctx.readmodel.models.identity
    base = base_url(request)
    include_names, effective = query_flag(request, "include_names"), query_flag(request, "effective")
    on_projects = domain_id is None and "group.id" not in request.query_params
    users = [u for u in models.users.values() if user_id is None or u.id == user_id]
    projects = [p for p in models.projects.values() if project_id is None or p.id == project_id]
    assignments = []
    for user in users if on_projects else []:
        for project in projects:
            direct = models.roles_of(user.id, project.id)
            # (role, the assigned role it is implied by, or None for an assigned one)
            found: list[tuple[str, str | None]] = [(r, None) for r in sorted(direct)]
            if effective:
                found += [(implied, prior) for prior in sorted(direct)
                          for implied in sorted(policy.effective_roles([prior]) - {prior} - direct)]
            seen: set[str] = set()
            for role, prior in found:
                if role in seen or (role_id is not None and role != role_id):
                    continue
                seen.add(role)
                link = f"{base}/identity/v3/projects/{project.id}/users/{user.id}/roles/{prior or role}"
                item: dict[str, Any] = {
                    "role": {"id": role},
                    "user": {"id": user.id},
                    "scope": {"project": {"id": project.id}},
                    "links": {"assignment": link},
                }
                if prior is not None:
                    item["links"]["prior_role"] = f"{base}/identity/v3/roles/{prior}"
                if include_names:
                    item["role"]["name"] = role
                    item["user"].update(name=user.name, domain={"id": user.domain_id,
                                                                "name": domain_name(user.domain_id)})
                    item["scope"]["project"].update(name=project.name, domain={
                        "id": project.domain_id, "name": domain_name(project.domain_id)})
                assignments.append(item)
    return {
        "role_assignments": assignments,
        "links": {"self": str(request.url), "next": None, "previous": None},
    }
