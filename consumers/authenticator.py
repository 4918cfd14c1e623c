"""authenticator: keystone's token check, nova's policy and quota, as one decision per request.

Input: instance.requested (partitioned by project, so one process decides all of a project's
quota at a time). State: identity and catalog topics, and the quota usage folded from its own
`authenticated` answers minus deletions and final failures.

The servers of one POST /servers (a reservation, min_count/max_count) are admitted all or none:
the first of them decides the quota for all, and its answer holds the others' share until each
is answered, so no request decided in between takes it (docs/decisions.md, "Multi-create").
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from eventsvm.events.builders import failed, flavor_snapshot
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.identity.policy_rules import PolicyEnforcers, credentials, denial_message
from eventsvm.identity.quota import ResourceCount, check_quota
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.compact import SHARED, Departures
from eventsvm.state.identity import IdentityState, quota_for
from eventsvm.state.identity import evolve as evolve_identity
from eventsvm.state.server_moves import volume_backed_image

# nova's rule for POST /servers, the one the API checks too (eventsvm.api.authorization); no create
# sub-rule (forced host, attach volume, attach network...) is checked there, so none is here
CREATE_SERVER = "os_compute_api:servers:create"

# How long (log time, ms) an admitted reservation holds the share of its servers not yet answered.
# They were appended together and are answered within moments; a server deleted before it was
# answered never is, and this bounds how long its share stays held.
RESERVATION_HOLD_MS = 60_000


@dataclass
class Reservation:
    """The servers one request asked for together, as the authenticator has answered them."""

    project_id: str
    size: int
    answered: int = 0
    # the first answer: when the reservation was admitted, or why it was refused
    decided_at: int = 0
    refusal: str | None = None
    refusal_code: int = 403
    # what each server of it holds (vcpus, RAM MB)
    cores: int = 0
    ram_mb: int = 0

    def held(self, at_ms: int) -> ResourceCount:
        """What the unanswered servers of an admitted reservation hold at log time `at_ms`."""
        waiting = self.size - self.answered
        if self.refusal is not None or waiting <= 0 or at_ms - self.decided_at >= RESERVATION_HOLD_MS:
            return ResourceCount()
        return ResourceCount(instances=waiting, cores=waiting * self.cores, ram_mb=waiting * self.ram_mb)


class ProjectHold:
    """What one project's live instances hold: each instance's (vCPUs, RAM MB), one shared tuple
    per flavor size, and their running sums, so a quota check costs the same at ten servers as at
    ten thousand (summing the instances on every request grew with the project)."""

    __slots__ = ("servers", "cores", "ram_mb")

    def __init__(self) -> None:
        self.servers: dict[str, tuple[int, int]] = {}
        self.cores = 0
        self.ram_mb = 0

    def hold(self, instance_id: str, size: tuple[int, int]) -> None:
        """The instance holds `size` (an answer delivered again replaces, never adds twice)."""
        self.release(instance_id)
        self.servers[instance_id] = size
        self.cores += size[0]
        self.ram_mb += size[1]

    def release(self, instance_id: str) -> None:
        """The instance holds nothing any more."""
        size = self.servers.pop(instance_id, None)
        if size is not None:
            self.cores -= size[0]
            self.ram_mb -= size[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProjectHold) and self.servers == other.servers

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass
class AuthenticatorState:
    """Identity, catalog, and what each project's live instances hold against its quota."""

    identity: IdentityState = field(default_factory=IdentityState)
    catalog: CatalogState = field(default_factory=CatalogState)
    # per project, what its live instances hold
    usage: dict[str, ProjectHold] = field(default_factory=dict)
    gone: Departures = field(default_factory=Departures)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def project_usage(self, project_id: str, at_ms: int = 0) -> ResourceCount:
        """Instances, cores and RAM the project's live instances hold, and the share its admitted
        reservations hold for their servers not yet answered (at log time `at_ms`)."""
        held = self.usage.get(project_id)
        total = ResourceCount() if held is None else ResourceCount(
            instances=len(held.servers), cores=held.cores, ram_mb=held.ram_mb)
        for reservation in self.reservations.values():
            if reservation.project_id == project_id:
                share = reservation.held(at_ms)
                total = ResourceCount(total.instances + share.instances, total.cores + share.cores,
                                      total.ram_mb + share.ram_mb)
        return total


def _answered(state: AuthenticatorState, event: Event, refusal: str | None, code: int = 403) -> None:
    """Count an answer to one server of a reservation; the first answer decides it."""
    body = event.body
    reservation_id = body.get("reservation_id")
    if reservation_id is None:
        return
    reservation = state.reservations.get(reservation_id)
    if reservation is None:
        flavor = (body.get("spec") or {}).get("flavor") or {}
        reservation = state.reservations[reservation_id] = Reservation(
            project_id=event.project_id or "",
            size=body.get("reservation_size") or 1,
            decided_at=event.occurred_at,
            refusal=refusal,
            refusal_code=code,
            cores=flavor.get("vcpus", 0),
            ram_mb=flavor.get("ram_mb", 0),
        )
    reservation.answered += 1
    if reservation.answered >= reservation.size:
        del state.reservations[reservation_id]


def evolve(state: AuthenticatorState, event: Event) -> AuthenticatorState:
    """Fold identity, catalog, and quota usage."""
    kind = event.type
    if kind.startswith("identity."):
        evolve_identity(state.identity, event)
    elif kind.startswith("catalog."):
        evolve_catalog(state.catalog, event)
    elif kind == EventType.INSTANCE_AUTHENTICATED:
        _answered(state, event, None)
        if event.aggregate_id not in state.gone:
            flavor = event.body["spec"]["flavor"]
            project = state.usage.get(event.project_id or "")
            if project is None:
                project = state.usage[event.project_id or ""] = ProjectHold()
            project.hold(event.aggregate_id, SHARED((flavor["vcpus"], flavor["ram_mb"])))
    elif kind == EventType.INSTANCE_DELETED or (kind == EventType.INSTANCE_FAILED and event.body["final"]):
        if kind == EventType.INSTANCE_FAILED and event.body.get("stage") == "authenticate":
            _answered(state, event, event.body["reason"], event.body["code"])
        state.gone.add(event.aggregate_id, event.occurred_at)
        held = state.usage.get(event.project_id or "")
        if held is not None:
            held.release(event.aggregate_id)
            if not held.servers:  # a project with no live instance holds nothing: its entry goes too
                del state.usage[event.project_id or ""]
    state.gone.saw(event.occurred_at)
    return state


def settle(state: AuthenticatorState) -> AuthenticatorState:
    """Forget the instances gone an hour (log time) ago: a request of theirs still waiting would
    have been answered long since (Service.settle: every state topic is folded to its end)."""
    state.gone.forget()
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
    reservation_id = body.get("reservation_id")
    reservation = state.reservations.get(reservation_id) if reservation_id else None

    def refuse(reason: str, code: int) -> list[Output]:
        return [Output(failed(event, "authenticate", reason, code=code, reservation_id=reservation_id))]

    if reservation is not None and reservation.refusal is not None:
        # all or none: another server of the same request was refused
        return refuse(reservation.refusal, reservation.refusal_code)
    refusal = state.identity.check_request(user_id, project_id, body.get("token_audit_id") or "",
                                           body.get("token_chain_audit_id"))
    if refusal is not None:
        return refuse(f"Authentication failed: {refusal}.", 401)
    roles = state.identity.roles_of(user_id, project_id)
    # the operator's nova-policy.yaml as the API reads it, against the roles the log holds now
    target = {"project_id": project_id, "user_id": user_id,
              "availability_zone": body.get("availability_zone")}
    if not _policy(ctx).allows("nova", CREATE_SERVER, target, credentials(user_id, project_id, roles)):
        return refuse(denial_message("nova", CREATE_SERVER), 403)
    flavor = state.catalog.flavor_by_name_or_id(body["flavor_id"])
    if flavor is None:
        return refuse(f"Flavor {body['flavor_id']} could not be found.", 400)
    # no image only for a boot from a volume (the API takes no imageRef for nothing else)
    image = state.catalog.images.get(body["image_id"]) if body["image_id"] else volume_backed_image()
    if image is None:
        return refuse(f"Image {body['image_id']} could not be found.", 400)
    if reservation is None:
        asking = body.get("reservation_size") or 1  # the first of its request: quota for all, or none
    elif reservation.held(event.occurred_at).instances:
        asking = 0  # its share is held since the first of its request was admitted
    else:
        asking = 1  # the hold lapsed: this server is counted on its own
    if asking:
        over = check_quota(
            quota_for(state.identity, project_id),
            state.project_usage(project_id, event.occurred_at),
            ResourceCount(instances=asking, cores=asking * flavor["vcpus"], ram_mb=asking * flavor["ram_mb"]),
        )
        if over is not None:
            return refuse(over, 403)
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
                {"spec": spec, "roles": sorted(roles), "reservation_id": reservation_id,
                 "reservation_size": body.get("reservation_size") or 1},
                cause=event,
            )
        )
    ]


@cache
def _default_policy() -> PolicyEnforcers:
    return PolicyEnforcers()


def _policy(ctx: StepContext) -> PolicyEnforcers:
    """The cloud's policy (its enforcers read DATA_DIR/policy), or nova's defaults when the
    authenticator runs with none (a unit test's decider)."""
    return ctx.deps if isinstance(ctx.deps, PolicyEnforcers) else _default_policy()


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
    settle=settle,
)
