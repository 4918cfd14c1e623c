"""Who may do what: nova's default policy (secure RBAC) as small pure functions.

Roles imply each other as keystone bootstraps them: admin implies member, member implies reader.
A reader of a project may look at its servers, a member may also create and delete them, and an
admin may do anything to any project's resources. Roles come from a project-scoped token, so a
non-admin only ever acts inside the token's project.
"""

from __future__ import annotations

from collections.abc import Iterable

ADMIN = "admin"
MEMBER = "member"
READER = "reader"

_IMPLIES: dict[str, frozenset[str]] = {
    ADMIN: frozenset({ADMIN, MEMBER, READER}),
    MEMBER: frozenset({MEMBER, READER}),
    # the pre-Queens default role name, still assigned by old deployments
    "_member_": frozenset({MEMBER, READER}),
    READER: frozenset({READER}),
}


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    """The assigned roles plus every role they imply; names compare case-insensitively."""
    result: set[str] = set()
    for role in roles:
        name = role.lower()
        result |= _IMPLIES.get(name, {name})
    return frozenset(result)


def is_admin(roles: Iterable[str]) -> bool:
    """True for a cloud administrator (the admin role, on whichever project the token is for)."""
    return ADMIN in effective_roles(roles)


def _project_role(roles: Iterable[str], role: str, token_project_id: str, target_project_id: str) -> bool:
    granted = effective_roles(roles)
    return ADMIN in granted or (role in granted and token_project_id == target_project_id)


def can_view_server(roles: Iterable[str], token_project_id: str, server_project_id: str) -> bool:
    """os_compute_api:servers:show / index: a reader of the server's project, or an admin."""
    return _project_role(roles, READER, token_project_id, server_project_id)


def can_list_all_projects(roles: Iterable[str]) -> bool:
    """os_compute_api:servers:index:get_all_tenants (`all_tenants=1`): admin only."""
    return is_admin(roles)


def can_manage_flavors(roles: Iterable[str]) -> bool:
    """os_compute_api:os-flavor-manage:create / delete: admin only (everyone may list flavors)."""
    return is_admin(roles)


def can_view_hypervisors(roles: Iterable[str]) -> bool:
    """os_compute_api:os-hypervisors: admin only, since it shows the cloud's hosts."""
    return is_admin(roles)


def can_view_usage(roles: Iterable[str], token_project_id: str, target_project_id: str) -> bool:
    """os_compute_api:os-simple-tenant-usage:show: a reader of that project, or an admin."""
    return _project_role(roles, READER, token_project_id, target_project_id)


def can_view_quota(roles: Iterable[str], token_project_id: str, target_project_id: str) -> bool:
    """os_compute_api:os-quota-sets:show: a reader of that project, or an admin."""
    return _project_role(roles, READER, token_project_id, target_project_id)


def can_set_quota(roles: Iterable[str]) -> bool:
    """os_compute_api:os-quota-sets:update: admin only."""
    return is_admin(roles)


def denied_message(rule: str) -> str:
    """Nova's 403 message for a policy rule, e.g. "os_compute_api:servers:create"."""
    return f"Policy doesn't allow {rule} to be performed."


# Who may run a server action is the route table's (eventsvm.api.authorization.ACTION_RULES, through
# oslo.policy), so an operator's policy.yaml decides it; the lock is a state, not a rule:
def lock_holds(locked: bool, roles: Iterable[str]) -> bool:
    """nova's check_instance_lock: a locked server refuses a change from anyone but an admin."""
    return locked and not is_admin(roles)
