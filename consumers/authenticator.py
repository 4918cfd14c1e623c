"""authenticator: keystone's token check, nova's policy and quota, as one decision per request.

Input: instance.requested (partitioned by project, so one process decides all of a project's
quota at a time). State: identity and catalog topics, and the quota usage folded from its own
`authenticated` answers minus deletions and final failures.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventsvm.events.builders import failed, flavor_snapshot
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.identity.policy import can_create_server
from eventsvm.identity.quota import ResourceCount, check_quota
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.identity import IdentityState, quota_for
from eventsvm.state.identity import evolve as evolve_identity


@dataclass
class AuthenticatorState:
    """Identity, catalog, and what each project's live instances hold against its quota."""

    identity: IdentityState = field(default_factory=IdentityState)
    catalog: CatalogState = field(default_factory=CatalogState)
    usage: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def project_usage(self, project_id: str) -> ResourceCount:
        """Instances, cores and RAM the project's live instances hold."""
        held = self.usage.get(project_id, {})
        return ResourceCount(
            instances=len(held),
            cores=sum(c for c, _ in held.values()),
            ram_mb=sum(r for _, r in held.values()),
        )


def evolve(state: AuthenticatorState, event: Event) -> AuthenticatorState:
    """Fold identity, catalog, and quota usage."""
    kind = event.type
    if kind.startswith("identity."):
        evolve_identity(state.identity, event)
    elif kind.startswith("catalog."):
        evolve_catalog(state.catalog, event)
    elif kind == EventType.INSTANCE_AUTHENTICATED and event.aggregate_id not in state.gone:
        flavor = event.body["spec"]["flavor"]
        state.usage.setdefault(event.project_id or "", {})[event.aggregate_id] = (
            flavor["vcpus"],
            flavor["ram_mb"],
        )
    elif kind == EventType.INSTANCE_DELETED or (kind == EventType.INSTANCE_FAILED and event.body["final"]):
        state.gone.add(event.aggregate_id)
        state.usage.get(event.project_id or "", {}).pop(event.aggregate_id, None)
    return state


def decide(state: AuthenticatorState, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Answer a request with `authenticated`, or a final `failed` saying what was refused."""
    if event.type != EventType.INSTANCE_REQUESTED or event.aggregate_id in state.gone:
        return []
    body = event.body
    if not _is_uuid(event.aggregate_id) or not body["name"].strip():
        raise Rejected(
            f"a request for instance {event.aggregate_id!r} named {body['name']!r} is not a valid server"
        )
    user_id, project_id = event.user_id or "", event.project_id or ""
    refusal = state.identity.check_request(user_id, project_id, body.get("token_audit_id") or "",
                                           body.get("token_chain_audit_id"))
    if refusal is not None:
        return [Output(failed(event, "authenticate", f"Authentication failed: {refusal}.", code=401))]
    roles = state.identity.roles_of(user_id, project_id)
    if not can_create_server(roles, project_id, project_id):
        return [
            Output(
                failed(
                    event,
                    "authenticate",
                    "Policy doesn't allow os_compute_api:servers:create to be performed.",
                    code=403,
                )
            )
        ]
    flavor = state.catalog.flavor_by_name_or_id(body["flavor_id"])
    if flavor is None:
        return [
            Output(failed(event, "authenticate", f"Flavor {body['flavor_id']} could not be found.", code=400))
        ]
    image = state.catalog.images.get(body["image_id"])
    if image is None:
        return [
            Output(failed(event, "authenticate", f"Image {body['image_id']} could not be found.", code=400))
        ]
    over = check_quota(
        quota_for(state.identity, project_id),
        state.project_usage(project_id),
        ResourceCount(instances=1, cores=flavor["vcpus"], ram_mb=flavor["ram_mb"]),
    )
    if over is not None:
        return [Output(failed(event, "authenticate", over, code=403))]
    group = state.catalog.server_groups.get(body.get("server_group_id") or "")
    spec = {
        "name": body["name"],
        "flavor": flavor_snapshot(flavor),
        "image_id": image["id"],
        "image_properties": dict(image.get("properties") or {}),
        "availability_zone": body.get("availability_zone"),
        "server_group_id": group["id"] if group else None,
        "server_group_policy": group["policy"] if group else None,
        "networks": body.get("networks") or [],
        "key_name": body.get("key_name"),
        "block_devices": body.get("block_devices") or [],
        "metadata": body.get("metadata") or {},
    }
    return [
        Output(
            new_event(
                EventType.INSTANCE_AUTHENTICATED,
                event.aggregate_id,
                {"spec": spec, "roles": sorted(roles)},
                cause=event,
            )
        )
    ]


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


SERVICE: Service[AuthenticatorState] = Service(
    name="authenticator",
    inputs=(Topic.REQUESTED,),
    state_topics=(Topic.IDENTITY, Topic.CATALOG, Topic.AUTHENTICATED, Topic.DELETED, Topic.FAILED),
    outputs=(Topic.AUTHENTICATED, Topic.FAILED),
    initial_state=AuthenticatorState,
    evolve=evolve,
    decide=decide,
    description="identity still valid, policy allows it, quota fits",
)
