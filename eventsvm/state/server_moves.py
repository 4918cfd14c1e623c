"""Nova's moves of a server: resize, confirmResize, revertResize and rebuild, as sagas on the log
(DESIGN §7). Which states each may start from, the task_state it starts in, the steps it takes,
and what each step does to the claims on the hosts: the scheduler and the spawners apply the same
claim changes (`claim_changes`), so both views of a host agree by construction.

A resize holds two claims until it is confirmed or reverted, as nova's placement does (the source
under the migration, the destination under the instance): here the destination's claim is held
under `resize_key(instance)` beside the instance's own claim at the source. Confirming frees the
source and makes the destination's the instance's claim; reverting or any failure frees the
destination's. So no saga ends holding two claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.model import Event, EventType
from eventsvm.scheduler.claims import Claim
from eventsvm.state.server_actions import ActionRefused


@dataclass(frozen=True)
class MoveAction:
    """One move: nova's name, the vm_states it may start from and the task_state it starts in."""

    name: str
    vm_states: frozenset[str]
    task_state: str | None


MOVE_ACTIONS: dict[str, MoveAction] = {
    a.name: a
    for a in (
        # nova.compute.api: resize from ACTIVE or STOPPED, confirm / revert from RESIZED,
        # rebuild from ACTIVE, STOPPED or ERROR; all only while no task runs
        MoveAction("resize", frozenset({"active", "stopped"}), "resize_prep"),
        MoveAction("confirmResize", frozenset({"resized"}), None),
        MoveAction("revertResize", frozenset({"resized"}), "resize_reverting"),
        MoveAction("rebuild", frozenset({"active", "stopped", "error"}), "rebuilding"),
    )
}
# the request key of each move in POST /servers/{id}/action is its name
MOVE_REQUEST_KEYS = frozenset(MOVE_ACTIONS)
RESIZE_FAMILY = frozenset({"resize", "confirmResize", "revertResize"})

# nova's instance-action event names of the steps (os-instance-actions shows them)
SCHEDULED = "conductor_migrate_server"
FINISH_RESIZE = "compute_finish_resize"
RESIZE_INSTANCE = "compute_resize_instance"
CONFIRM_RESIZE = "compute_confirm_resize"
REVERT_RESIZE = "compute_revert_resize"
FINISH_REVERT_RESIZE = "compute_finish_revert_resize"
REBUILD_INSTANCE = "compute_rebuild_instance"

# the request, a step that went well, a step that failed
MOVE_EVENT_TYPES = (
    EventType.INSTANCE_MOVE_REQUESTED, EventType.INSTANCE_MOVE_STEP, EventType.INSTANCE_MOVE_FAILED)


def check_move_state(action: str, vm_state: str, task_state: str | None) -> str | None:
    """The task_state the move starts in, or ActionRefused naming the vm_state or task_state that
    forbids it (vm_state first, as nova's check_instance_state)."""
    rule = MOVE_ACTIONS[action]
    if vm_state not in rule.vm_states:
        raise ActionRefused("vm_state", vm_state)
    if task_state is not None:
        raise ActionRefused("task_state", task_state)
    return rule.task_state


def resize_key(instance_id: str) -> str:
    """The key of a resize's destination claim (beside the instance's own claim at the source)."""
    return f"{instance_id}:resize"


@dataclass(frozen=True)
class ClaimChange:
    """Hold `claim` under `key` on `host`, or free what `key` holds there when `claim` is None."""

    host: str
    key: str
    claim: Claim | None


def _claim(record: Mapping[str, Any] | None) -> Claim | None:
    return None if record is None else Claim.from_record(record)


def claim_changes(event: Event) -> list[ClaimChange]:
    """What one move event does to the claims on the hosts (empty for every other event)."""
    if event.type not in (EventType.INSTANCE_MOVE_STEP, EventType.INSTANCE_MOVE_FAILED):
        return []
    body, instance_id = event.body, event.aggregate_id
    if body["action"] not in RESIZE_FAMILY or not body.get("dest_host"):
        return []
    dest, source, key = body["dest_host"], body.get("source_host") or "", resize_key(instance_id)
    new = _claim(body.get("claim"))
    step = body["step"]
    confirmed = step == CONFIRM_RESIZE or (
        event.type == EventType.INSTANCE_MOVE_FAILED and body["action"] == "confirmResize")
    if confirmed:
        # the source is given up; the destination's claim becomes the instance's own
        return [ClaimChange(source, instance_id, None), ClaimChange(dest, key, None),
                ClaimChange(dest, instance_id, new)]
    if event.type == EventType.INSTANCE_MOVE_FAILED or step in (REVERT_RESIZE, FINISH_REVERT_RESIZE):
        return [ClaimChange(dest, key, None)]
    if step == SCHEDULED:
        return [ClaimChange(dest, key, new)]
    return []


@dataclass
class MoveClaims:
    """The claim changes of the moves folded so far, in whatever order they are read: a move's
    steps ride several partitions (each is routed to its host), and a rebuild of a service's state
    reads partition after partition. A change older (by the instance's sequence) than one already
    applied to the same claim is stale and skipped, so every read order ends in the same claims."""

    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    # the sequence of each instance's newest move that changed its own claim (a confirm): a boot
    # event read after it (on another topic) must not bring back the claim the move gave up
    moved: dict[str, int] = field(default_factory=dict)

    def fresh(self, event: Event) -> list[ClaimChange]:
        """The changes of `event` still to apply (one event may free and take the same key)."""
        changes = []
        for change in claim_changes(event):
            where = (change.host, change.key)
            if self.applied.get(where, -1) > event.sequence:
                continue
            self.applied[where] = event.sequence
            changes.append(change)
        if any(change.key == event.aggregate_id for change in changes):
            self.moved[event.aggregate_id] = max(event.sequence, self.moved.get(event.aggregate_id, 0))
        return changes

    def left(self, instance_id: str, sequence: int) -> None:
        """The instance gave up its own claim at `sequence` (a shelve offload): a boot step older
        than that, read later on another topic, must not bring the claim back."""
        self.moved[instance_id] = max(sequence, self.moved.get(instance_id, 0))

    def moved_since(self, instance_id: str, sequence: int) -> bool:
        """Whether a move after the event of `sequence` already changed the instance's claims."""
        return self.moved.get(instance_id, -1) > sequence


def guest_record(name: str, image: Mapping[str, Any], ports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Guest record of the move events: what a host needs to define the server's guest."""
    return {"name": name, "image": dict(image), "ports": [dict(p) for p in ports]}


def spawn_body(guest: Mapping[str, Any], flavor: Mapping[str, Any]) -> dict[str, Any]:
    """A Guest record and a flavor in the shape a resources-resolved body gives the compute host."""
    return {"spec": {"name": guest["name"], "flavor": dict(flavor)}, "image": guest["image"],
            "ports": guest["ports"]}


def volume_backed_image() -> dict[str, Any]:
    """The Image record of a server booted from a volume with no image (a boot_index 0 volume and
    no imageRef): nova's instance then has no image_ref, shows "image": "" and boots the volume."""
    return {"id": "", "name": "", "disk_format": "raw", "container_format": "bare", "size_bytes": 0,
            "properties": {}, "location": None}


def image_record(image: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog image as the events carry it to a host (the Image record of the schemas)."""
    return {"id": image["id"], "name": image["name"], "disk_format": image["disk_format"],
            "container_format": image["container_format"], "size_bytes": image.get("size_bytes", 0),
            "properties": dict(image.get("properties") or {}), "location": image.get("location")}
