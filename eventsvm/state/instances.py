"""The instance read model behind the API's GETs: nova's vm_state, task_state, power_state and the
API status of every instance, folded from the instance topics.

The fold does not depend on the order in which topics are read: fields an event owns are set
whenever it arrives, and the state fields come from the event with the highest sequence (a
deletion or a final failure is terminal). So a replay that reads topic after topic and a live
tail that sees events as they happen end in the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.model import Event, EventType

# nova power states
NOSTATE, RUNNING, SHUTDOWN = 0, 1, 4

# (status, vm_state, task_state) after each event type
_STATES: dict[EventType, tuple[str, str, str | None]] = {
    EventType.INSTANCE_REQUESTED: ("BUILD", "building", "scheduling"),
    EventType.INSTANCE_AUTHENTICATED: ("BUILD", "building", "scheduling"),
    EventType.INSTANCE_SCHEDULED: ("BUILD", "building", "networking"),
    EventType.INSTANCE_RESOURCES_RESOLVED: ("BUILD", "building", "spawning"),
    EventType.INSTANCE_SPAWNED: ("ACTIVE", "active", None),
    # deleting keeps the status and vm_state the server had (nova shows ACTIVE + task deleting)
    EventType.INSTANCE_DELETE_REQUESTED: ("", "", "deleting"),
    EventType.INSTANCE_DELETE_DISPATCHED: ("", "", "deleting"),
    EventType.INSTANCE_DELETED: ("DELETED", "deleted", None),
}

# nova's instance-action event names, for os-instance-actions
ACTION_EVENT_NAMES: dict[EventType, str] = {
    EventType.INSTANCE_REQUESTED: "api_create",
    EventType.INSTANCE_AUTHENTICATED: "authenticate",
    EventType.INSTANCE_SCHEDULED: "conductor_schedule_and_build_instances",
    EventType.INSTANCE_RESOURCES_RESOLVED: "compute__build_resources",
    EventType.INSTANCE_SPAWNED: "compute__do_build_and_run_instance",
    EventType.INSTANCE_FAILED: "failed",
    EventType.INSTANCE_DELETE_REQUESTED: "api_delete",
    EventType.INSTANCE_DELETE_DISPATCHED: "conductor_delete",
    EventType.INSTANCE_DELETED: "compute_terminate_instance",
}


@dataclass
class Instance:
    """One instance as the API shows it."""

    id: str
    name: str = ""
    project_id: str | None = None
    user_id: str | None = None
    status: str = "BUILD"
    vm_state: str = "building"
    task_state: str | None = "scheduling"
    power_state: int = NOSTATE
    flavor: dict[str, Any] | None = None
    flavor_ref: str | None = None
    image_id: str | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    host: str | None = None
    attempt: int = 1
    ports: list[dict[str, Any]] = field(default_factory=list)
    requested_networks: list[dict[str, Any]] = field(default_factory=list)
    fault: dict[str, Any] | None = None
    created_at: int = 0
    updated_at: int = 0
    launched_at: int | None = None
    terminated_at: int | None = None
    request_id: str = ""
    # the event that set the state fields, and the newest event (the API chains deletes to it)
    state_rank: tuple[int, int] = (-1, -1)
    last_event_id: str | None = None
    last_sequence: int = 0
    last_hash: str | None = None
    # the timeline, compact: (event type, occurred_at ms, request id, user id, host, detail)
    actions: list[tuple[str, int, str, str | None, str | None, str | None]] = field(default_factory=list)


@dataclass
class InstanceProjection:
    """Every instance by id."""

    instances: dict[str, Instance] = field(default_factory=dict)
    events_folded: int = 0

    def get(self, instance_id: str) -> Instance | None:
        """An instance by id, deleted ones included."""
        return self.instances.get(instance_id)

    def by_status(self) -> dict[str, int]:
        """How many instances are in each API status."""
        counts: dict[str, int] = {}
        for inst in self.instances.values():
            counts[inst.status] = counts.get(inst.status, 0) + 1
        return counts


def initial_projection() -> InstanceProjection:
    """An empty read model."""
    return InstanceProjection()


def evolve_projection(
    state: InstanceProjection, event: Event, stored_hash: str | None = None
) -> InstanceProjection:
    """Fold one event; non-instance events leave the model as it is."""
    kind = event.type
    if not kind.startswith("instance."):
        return state
    inst = state.instances.get(event.aggregate_id)
    if inst is None:
        inst = state.instances[event.aggregate_id] = Instance(id=event.aggregate_id)
    state.events_folded += 1
    body = event.body
    inst.actions.append(
        (kind.value, event.occurred_at, event.request_id, event.user_id, body.get("host"), body.get("reason"))
    )
    if event.occurred_at > inst.updated_at:
        inst.updated_at = event.occurred_at
    # ties (a delete forks the chain: two events share a sequence) go to the larger event id, so
    # a replay and a live tail that read the fork in different orders agree
    if (event.sequence, event.event_id) >= (inst.last_sequence, inst.last_event_id or ""):
        inst.last_sequence = event.sequence
        inst.last_event_id = event.event_id
        inst.last_hash = stored_hash
    _set_owned_fields(inst, event, body)
    _set_state_fields(inst, event, body)
    return state


def _set_owned_fields(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    kind = event.type
    if kind == EventType.INSTANCE_REQUESTED:
        inst.name = body["name"]
        inst.project_id = event.project_id
        inst.user_id = event.user_id
        inst.flavor_ref = body["flavor_id"]
        inst.image_id = body["image_id"]
        inst.key_name = body.get("key_name")
        inst.availability_zone = body.get("availability_zone")
        inst.metadata = dict(body.get("metadata") or {})
        inst.description = body.get("description")
        inst.requested_networks = list(body.get("networks") or [])
        inst.created_at = event.occurred_at
        inst.request_id = event.request_id
    elif kind == EventType.INSTANCE_AUTHENTICATED:
        inst.flavor = body["spec"]["flavor"]
    elif kind in (EventType.INSTANCE_SCHEDULED, EventType.INSTANCE_RESOURCES_RESOLVED):
        if body["attempt"] >= inst.attempt:
            inst.attempt = body["attempt"]
            inst.host = body["host"]
        if kind == EventType.INSTANCE_RESOURCES_RESOLVED:
            inst.ports = list(body.get("ports") or [])
    elif kind == EventType.INSTANCE_SPAWNED:
        inst.host = body["host"]
        inst.launched_at = body["launched_at"]
        inst.flavor = body["flavor"]
        inst.ports = list(body.get("addresses") or inst.ports)
    elif kind == EventType.INSTANCE_DELETED:
        inst.terminated_at = body["terminated_at"]


def _set_state_fields(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    kind = event.type
    if kind == EventType.INSTANCE_FAILED:
        if not body["final"]:
            rank = (0, event.sequence)
            states: tuple[str, str, str | None] = ("BUILD", "building", "scheduling")
        else:
            rank = (1, event.sequence)
            states = ("ERROR", "error", None)
            inst.fault = {
                "code": body["code"],
                "message": body["reason"],
                "details": body.get("details") or "",
                "created": event.occurred_at,
            }
    else:
        terminal = 2 if kind == EventType.INSTANCE_DELETED else 0
        rank = (terminal, event.sequence)
        states = _STATES[kind]
    if rank < inst.state_rank:
        return
    inst.state_rank = rank
    status, vm_state, inst.task_state = states
    if status:
        inst.status, inst.vm_state = status, vm_state
    if kind == EventType.INSTANCE_SPAWNED:
        inst.power_state = body["power_state"]
    elif kind == EventType.INSTANCE_DELETED:
        inst.power_state = NOSTATE
