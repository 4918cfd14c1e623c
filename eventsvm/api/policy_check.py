"""`authorize`: one policy check with the 403 of the service, for the route table
(eventsvm.api.authorization) and for the few checks a handler makes on what the body or the query
asks (a shared network, a public image, all_tenants)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventsvm.api.auth import Identity
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import Forbidden
from eventsvm.identity.policy_rules import credentials, denial_message

Target = dict[str, Any]


def authorize(ctx: ApiContext, caller: Identity, service: str, rule: str, target: Mapping[str, Any]) -> None:
    """403 in the shape of the request's service unless `service`'s policy allows `rule` on `target`."""
    if not permits(ctx, caller, service, rule, target):
        kind = "PolicyNotAuthorized" if service == "neutron" else None
        raise Forbidden(denial_message(service, rule), kind=kind)


def permits(ctx: ApiContext, caller: Identity, service: str, rule: str, target: Mapping[str, Any]) -> bool:
    """Whether `service`'s policy allows `rule` on `target`, for the checks a service makes without
    refusing (an admin-only filter dropped, an admin-only field left out of a view)."""
    creds = credentials(caller.user_id, caller.project_id, caller.roles, caller.admin_of(service))
    return ctx.policy.allows(service, rule, target, creds)


def own_target(caller: Identity) -> Target:
    """The target of a create or a list: the caller's own project and user (under each name the
    services' rules use for the owning project)."""
    own = caller.project_id
    return {"project_id": own, "tenant_id": own, "owner": own, "network:project_id": own,
            "user_id": caller.user_id}
