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


# Who may run a server action is the route table's (eventsvm.api.authorization.ACTION_RULES, through
# oslo.policy), so an operator's policy.yaml decides it; the lock is a state, not a rule:
def lock_holds(locked: bool, admin: bool) -> bool:
    """nova's check_instance_lock: a locked server refuses a change from anyone but an admin (nova's
    context.is_admin: its context_is_admin rule, eventsvm.api.auth.Identity.admin_of)."""
    return locked and not admin
