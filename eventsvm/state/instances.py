"""The instance read model behind the API's GETs: nova's vm_state, task_state, power_state and the
API status of every instance, folded from the instance topics.

The fold does not depend on the order in which topics are read: fields an event owns are set
whenever it arrives, and the state fields come from the event with the highest sequence (a
deletion or a final failure is terminal). So a replay that reads topic after topic and a live
tail that sees events as they happen end in the same model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Generic, TypeVar, overload

from eventsvm.events.model import Event, EventType
from eventsvm.state.compact import SHARED, FrozenRecord, LogClock, frozen_ports

# nova power states
NOSTATE, RUNNING, SHUTDOWN = 0, 1, 4

# (status, vm_state, task_state) after each event type; one constant per row, as the folds below
# read a module global faster than a dict keyed by an enum member
_States = tuple[str, str, str | None]
_REQUESTED_STATES: _States = ("BUILD", "building", "scheduling")
_AUTHENTICATED_STATES: _States = ("BUILD", "building", "scheduling")
_SCHEDULED_STATES: _States = ("BUILD", "building", "networking")
_RESOURCES_RESOLVED_STATES: _States = ("BUILD", "building", "spawning")
_SPAWNED_STATES: _States = ("ACTIVE", "active", None)
# deleting keeps the status and vm_state the server had (nova shows ACTIVE + task deleting)
_DELETE_REQUESTED_STATES: _States = ("", "", "deleting")
_DELETE_DISPATCHED_STATES: _States = ("", "", "deleting")
_DELETED_STATES: _States = ("DELETED", "deleted", None)
# a failure another attempt will retry, and a final one
_RETRYING_STATES: _States = ("BUILD", "building", "scheduling")
_ERROR_STATES: _States = ("ERROR", "error", None)
# an unshelve runs through the boot's stages (its spec says so) but shows nova's states: the
# conductor's placement keeps `unshelving`, the host's _unshelve_instance sets `spawning`, and the
# vm_state stays shelved_offloaded until the guest runs
_UNSHELVE_SCHEDULED_STATES: _States = ("SHELVED_OFFLOADED", "shelved_offloaded", "unshelving")
_UNSHELVE_RESOLVED_STATES: _States = ("SHELVED_OFFLOADED", "shelved_offloaded", "spawning")

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
    # an action's host step is named after the action (compute_stop_instance ...), see action_step_name
    EventType.INSTANCE_ACTION_REQUESTED: "api_action",
    EventType.INSTANCE_ACTION_COMPLETED: "compute_action_instance",
    EventType.INSTANCE_ACTION_FAILED: "compute_action_instance",
    # nova's instance action names for os-volume_attachments
    EventType.INSTANCE_VOLUME_ATTACH_REQUESTED: "attach_volume",
    EventType.INSTANCE_VOLUME_DETACH_REQUESTED: "detach_volume",
}


# an instance's ports (neutron's), each a read-only record
Ports = tuple[FrozenRecord, ...]

# one event of a server's timeline: (event type, occurred_at ms, request id, user id, host, detail)
Action = tuple[str, int, str, str | None, str | None, str | None]


@dataclass(slots=True)
class InstanceExtras:
    """What few servers ever hold (an IPv6 access address, a server group, user data, a lock, a
    fault, a move, the owner's edits): one object, made the first time one of them is set, rather
    than a slot each on every Instance (issue 15: ≤ 2 KB a server)."""

    access_ipv6: str | None = None
    # the server group its create named (scheduler hint `group`): a member until it is deleted
    server_group_id: str | None = None
    # nova's extended attributes (2.3): the user_data given at create (base64), the place in its
    # reservation
    user_data: str | None = None
    launch_index: int = 0
    # the owner's edits (instance.updated / metadata_changed) in log order, as (type, body): they
    # override what the request set, whichever of the two topics a reader folds first
    edits: tuple[tuple[EventType, dict[str, Any]], ...] = ()
    fault: dict[str, Any] | None = None
    # lock / unlock (fold-only): the sequence of the lock event that set them
    locked: bool = False
    locked_reason: str | None = None
    locked_by: str | None = None
    lock_sequence: int = 0
    # the image the newest shelve snapshotted the server into (unshelve spawns from it)
    shelved_image_id: str | None = None
    # a resize in flight or awaiting confirmation (eventsvm.state.server_moves): source and
    # destination, the old flavor and claim; and the sequence of the move event that last set
    # host, flavor, claim or image, which an older event (a spawned read late) must not undo
    move: dict[str, Any] | None = None
    move_sequence: int = 0


# shared by every Instance without extras: what _Extra reads for it (never changed)
_NO_EXTRAS = InstanceExtras()

_T = TypeVar("_T")


class _Extra(Generic[_T]):
    """A field of InstanceExtras read on the Instance, as if it were its own: the Instance's extras'
    value, or the field's default when it has no extras. Read-only: the folds set `more()`'s."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, inst: None, owner: type) -> _Extra[_T]: ...

    @overload
    def __get__(self, inst: Instance, owner: type) -> _T: ...

    def __get__(self, inst: Instance | None, owner: type) -> _Extra[_T] | _T:
        if inst is None:
            return self
        value: _T = getattr(inst.extras or _NO_EXTRAS, self.name)
        return value


@dataclass(slots=True)
class Instance:
    """One instance as the API shows it. Slots: a replay makes one per instance and sets its
    fields once per event, and both are faster without a __dict__. What few servers hold is in
    `extras`, read through attributes of the same names (`_Extra`)."""

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
    # the Claim record the scheduler computed: what the instance holds on its host; None until scheduled
    claim: dict[str, int] | None = None
    image_id: str | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # nova's server tags (2.26), in the order they were added
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    access_ipv4: str | None = None
    # the r-... id of the POST /servers that asked for it (several servers share one)
    reservation_id: str | None = None
    # the hostname made from the name it was created with (nova 2.3; a rename keeps it)
    hostname: str = ""
    host: str | None = None
    # the sequence of the event that set `host`: the newest placement wins in any read order (a
    # replay folds an unshelve's spawn before the shelve that came first)
    host_sequence: int = 0
    attempt: int = 1
    # read-only: a port's record, shared with nothing else, is never changed in place
    ports: Ports = ()
    requested_networks: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = 0
    updated_at: int = 0
    launched_at: int | None = None
    terminated_at: int | None = None
    request_id: str = ""
    # a delete was requested: the task stays `deleting` until the deletion
    deleting: bool = False
    # the event that set the state fields, and the newest event (the API chains deletes to it)
    # its rank (terminal level, sequence, event id) as three slots: a tuple of them is 64 bytes more
    state_level: int = -1
    state_sequence: int = -1
    state_event_id: str = ""
    last_event_id: str | None = None
    last_sequence: int = 0
    # SHA-256 of the newest event's stored bytes, raw (`last_hash` gives it in hex, as events carry it)
    last_digest: bytes | None = None
    # the timeline, flat: one row of _ROW values per event one after the other (`actions` gives
    # each as a tuple), in one tuple grown an event at a time: a tuple per event, or a list with
    # its spare room, was most of what a server cost the model
    timeline: tuple[Any, ...] = ()
    extras: InstanceExtras | None = None

    @property
    def state_rank(self) -> tuple[int, int, str]:
        """The rank of the event that set the state fields: (terminal level, sequence, event id)."""
        return self.state_level, self.state_sequence, self.state_event_id

    @property
    def last_hash(self) -> str | None:
        """The chain hash of the newest event (a new event's prev_hash), in hex."""
        return None if self.last_digest is None else self.last_digest.hex()

    def more(self) -> InstanceExtras:
        """The extras to change, made on first use."""
        if self.extras is None:
            self.extras = InstanceExtras()
        return self.extras

    def __reduce__(self) -> tuple[type[Instance], tuple[Any, ...]]:
        # Its fields in order, given back to the constructor: a replay's second process sends its
        # share of the servers to the first (eventsvm.projections.replay), and pickle's default for
        # a slotted object (a dict of the slots per object) took three times as long to load.
        return Instance, _instance_fields(self)

    # the fields of its extras, read through it (their defaults when it has none)
    access_ipv6 = _Extra[str | None]()
    server_group_id = _Extra[str | None]()
    user_data = _Extra[str | None]()
    launch_index = _Extra[int]()
    edits = _Extra[tuple[tuple[EventType, dict[str, Any]], ...]]()
    fault = _Extra[dict[str, Any] | None]()
    locked = _Extra[bool]()
    locked_reason = _Extra[str | None]()
    locked_by = _Extra[str | None]()
    shelved_image_id = _Extra[str | None]()
    move = _Extra[dict[str, Any] | None]()
    move_sequence = _Extra[int]()

    @property
    def actions(self) -> list[Action]:
        """The timeline, one (event type, occurred_at ms, request id, user id, host, detail) per event."""
        flat = self.timeline
        return [(kind, at, request_id, user_id, host, detail)
                for (kind, host, detail), at, request_id, user_id
                in (flat[i:i + _ROW] for i in range(0, len(flat), _ROW))]

    def name_last_step(self, detail: str) -> None:
        """The detail of the newest event of the timeline (a move's step)."""
        flat = self.timeline
        kind, host, _ = flat[-_ROW]
        step = (kind, host, detail)
        self.timeline = (*flat[:-_ROW], _STEPS.get(step) or _new_step(step), *flat[1 - _ROW:])


# every field of an Instance in the constructor's order (Instance.__reduce__)
_instance_fields: Callable[[Instance], tuple[Any, ...]] = attrgetter(*(f.name for f in fields(Instance)))


# A timeline row: (step, occurred_at ms, request id, user id), the step being (event type, host,
# detail), one tuple for all the events that have the same (every `scheduled` on compute-1): two
# references fewer per event than a row of six. Bounded as Shared is: past the limit (a host
# fleet larger than it, failures' reasons), a step is kept as it comes and not remembered.
_ROW = 4
_STEP_LIMIT = 65_536
_Step = tuple[str, str | None, str | None]
_STEPS: dict[_Step, _Step] = {}


def _new_step(step: _Step) -> _Step:
    """A step not in the table (`_STEPS.get(step) or _new_step(step)`): remembered while there is room."""
    if len(_STEPS) < _STEP_LIMIT:
        _STEPS[step] = step
    return step


# How long (log time) a deleted server stays in the read model: listed by `GET /servers?deleted=true`
# and `changes-since`, its os-instance-actions shown, its name in a usage report. Its events stay in
# the log (`eventsvm history`, a replay); past it, the model forgets it as a nightly nova-manage
# `archive_deleted_rows --before` would (docs/decisions.md, "State memory per instance").
DELETED_RETENTION_MS = 86_400_000


@dataclass
class InstanceProjection:
    """Every instance by id, deleted ones until `deleted_retention_ms` (log time) after their
    deletion; None keeps them for good (nova's soft-deleted rows, never archived)."""

    instances: dict[str, Instance] = field(default_factory=dict)
    events_folded: int = 0
    deleted_retention_ms: int | None = DELETED_RETENTION_MS
    clock: LogClock = field(default_factory=LogClock)

    def forget_deleted(self) -> list[Instance]:
        """Drop the servers deleted, and not changed since, `deleted_retention_ms` before the newest
        log time folded; the servers dropped. Only with every topic folded to its end (ReadModel's
        catch-up): an event of the server a replay reads late must not bring back a partial one."""
        if self.deleted_retention_ms is None:
            return []
        horizon = self.clock.sweep(self.deleted_retention_ms)
        if horizon is None:
            return []
        forgotten = [inst for inst in self.instances.values()
                     if inst.state_level == _DELETION_LEVEL and inst.updated_at <= horizon]
        for inst in forgotten:
            del self.instances[inst.id]
        return forgotten

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
    state: InstanceProjection, event: Event, stored_digest: bytes | None = None
) -> InstanceProjection:
    """Fold one event (`stored_digest`: event_digest of its stored bytes); non-instance events
    leave the model as it is."""
    inst = fold_instance_event(state, event)
    if inst is not None:
        inst.last_digest = stored_digest
    return state


def fold_instance_event(state: InstanceProjection, event: Event) -> Instance | None:
    """Fold one event but its hash: the instance when the event is now its newest (the caller
    then owes it `last_digest`), else None, also for non-instance events."""
    named = _NAMED_FOLDS.get(event.type)
    if named is None:
        return None
    name, owned = named
    aggregate_id = event.aggregate_id
    inst = state.instances.get(aggregate_id)
    if inst is None:
        inst = state.instances[aggregate_id] = Instance(id=aggregate_id)
    state.events_folded += 1
    body = event.body
    occurred_at = event.occurred_at
    # One string per id the instance's events repeat: each event read from the log brings its own
    # copy of the request id and the user id (most often its previous event's); five copies of
    # each were a third of a server's bytes. (Not the process-wide SHARED table: user ids are as
    # many as a cloud's users, and would crowd out the flavors and networks it is bounded for.)
    request_id, user_id = event.request_id, event.user_id
    timeline = inst.timeline
    if timeline:
        if timeline[-2] == request_id:
            request_id = timeline[-2]
        if timeline[-1] == user_id:
            user_id = timeline[-1]
    # detail: a failure's reason, else the server action's name (None for the boot's steps); the
    # row and LogClock.saw written out here, as a replay pays each call for every event
    step = (name, body.get("host"), body.get("reason") or body.get("action"))
    inst.timeline += (_STEPS.get(step) or _new_step(step), occurred_at, request_id, user_id)
    if occurred_at > inst.updated_at:
        inst.updated_at = occurred_at
    clock = state.clock
    if occurred_at > clock.log_time_ms:
        clock.log_time_ms = occurred_at
    owned(inst, event, body)
    # ties (a delete forks the chain: two events share a sequence) go to the larger event id, so
    # a replay and a live tail that read the fork in different orders agree
    sequence = event.sequence
    if sequence > inst.last_sequence or (
        sequence == inst.last_sequence and event.event_id >= (inst.last_event_id or "")
    ):
        inst.last_sequence = sequence
        inst.last_event_id = event.event_id
        return inst
    return None


# One function per instance event type: the fields it owns, then the state fields it sets when
# it is the newest state-bearing event (see _advance). Dispatch by type keeps the fold to one
# dict lookup per event, which a full replay pays a hundred thousand times.
def _advance(inst: Instance, level: int, event: Event, states: _States) -> bool:
    """Take the state fields of `states` unless a higher-ranked event already set them. Rank is
    (terminal level, sequence, event id): the id settles a fork (two events answering one event,
    e.g. a delete requested while a build is in flight) the same way in every read order."""
    sequence, event_id = event.sequence, event.event_id
    held = inst.state_level
    # the rank compared field by field: two tuples built for each event cost a replay more
    if level < held or level == held and (sequence < inst.state_sequence or sequence == inst.state_sequence
                                          and event_id < inst.state_event_id):
        return False
    inst.state_level, inst.state_sequence, inst.state_event_id = level, sequence, event_id
    status, vm_state, inst.task_state = states
    if status:
        inst.status, inst.vm_state = status, vm_state
    if inst.deleting and level == 0:
        inst.task_state = "deleting"
    return True


def _requested(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    inst.name = body["name"]
    inst.project_id = event.project_id
    inst.user_id = inst.timeline[-1]  # the timeline's copy (recorded just before)
    # values many servers hold alike are shared (eventsvm.state.compact), never changed in place
    inst.flavor_ref = SHARED(body["flavor_id"])
    inst.image_id = SHARED(body["image_id"])
    inst.key_name = SHARED(body.get("key_name"))
    inst.availability_zone = SHARED(body.get("availability_zone"))
    # shared with every server created with the same ones: an edit makes a new dict or list
    inst.metadata = SHARED(dict(body.get("metadata") or {}))
    inst.tags = SHARED(list(body.get("tags") or []))
    inst.description = body.get("description")
    inst.access_ipv4 = body.get("access_ipv4")
    inst.reservation_id = body.get("reservation_id")
    rare = (body.get("access_ipv6"), body.get("server_group_id"), body.get("user_data"),
            body.get("launch_index") or 0)
    if inst.extras is not None or rare != (None, None, None, 0):
        extras = inst.more()
        extras.access_ipv6, extras.server_group_id, extras.user_data, extras.launch_index = rare
    hostname = sanitized_hostname(body["name"], event.aggregate_id)
    inst.hostname = inst.name if hostname == inst.name else hostname  # most often one string for both
    inst.requested_networks = SHARED(list(body.get("networks") or []))
    inst.created_at = event.occurred_at
    inst.request_id = inst.timeline[-2]  # the timeline's copy (recorded just before)
    if inst.extras is not None:
        for kind, edit in inst.extras.edits:
            _EDITS[kind](inst, edit)
    _advance(inst, 0, event, _REQUESTED_STATES)


# compiled once: a replay names every server it folds (re.sub would look the pattern up each time)
_HOSTNAME_DASHES = re.compile(r"[ _.]")
_HOSTNAME_DROPPED = re.compile(r"[^\w.-]+")


def sanitized_hostname(name: str, instance_id: str) -> str:
    """The hostname nova gives a new server (utils.sanitize_hostname): its name in lower case,
    spaces, dots and underscores as dashes, nothing but word characters, dots and dashes, at most
    63 characters; `Server-<uuid>` when nothing is left."""
    hostname = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    hostname = _HOSTNAME_DASHES.sub("-", hostname)
    hostname = _HOSTNAME_DROPPED.sub("", hostname).lower().strip(".-")
    return hostname or f"Server-{instance_id}"[:63]


def _authenticated(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    inst.flavor = SHARED(body["spec"]["flavor"])
    _advance(inst, 0, event, _AUTHENTICATED_STATES)


def _take_attempt(inst: Instance, body: dict[str, Any]) -> None:
    """The latest scheduling attempt (a reschedule's events may arrive out of order)."""
    if body["attempt"] >= inst.attempt:
        inst.attempt = body["attempt"]


def _place(inst: Instance, host: str | None, sequence: int) -> None:
    """Where the instance is, as the newest event that placed (or offloaded) it says."""
    if sequence >= inst.host_sequence:
        inst.host_sequence = sequence
        inst.host = SHARED(host)


def _unshelving(body: dict[str, Any]) -> bool:
    """Whether a boot stage's event carries out an unshelve (its spec says so since scheduled v2,
    resources_resolved v3 and failed v3; older events read False)."""
    spec = body.get("spec")
    return bool(spec and spec.get("unshelve"))


def _scheduled(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    _take_attempt(inst, body)
    _place(inst, body["host"], event.sequence)
    inst.claim = SHARED(body["claim"])
    states = _UNSHELVE_SCHEDULED_STATES if _unshelving(body) else _SCHEDULED_STATES
    _advance(inst, 0, event, states)


def _resources_resolved(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    _take_attempt(inst, body)
    _place(inst, body["host"], event.sequence)
    inst.ports = _kept_ports(body.get("ports") or [], inst.ports)
    states = _UNSHELVE_RESOLVED_STATES if _unshelving(body) else _RESOURCES_RESOLVED_STATES
    _advance(inst, 0, event, states)


def _kept_ports(ports: Sequence[Mapping[str, Any]], held: Ports) -> Ports:
    """The ports as the model keeps them: the ones it holds when equal (a spawn reports the ports
    its resolution chose), else compact copies sharing what many ports repeat."""
    if ports is held or (len(ports) == len(held) and all(a == b for a, b in zip(ports, held, strict=True))):
        return held
    return frozen_ports(ports)


def _spawned(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    if inst.move_sequence > event.sequence:
        # a move after the boot already set where the server is and what it runs (read first)
        inst.launched_at = body["launched_at"]
        return
    _place(inst, body["host"], event.sequence)
    inst.launched_at = body["launched_at"]
    # most often the flavor and claim the instance already holds (shared): an equal dict is kept,
    # which is cheaper to compare than to share again
    flavor, claim = body["flavor"], body.get("claim")
    if flavor != inst.flavor:
        inst.flavor = SHARED(flavor)
    if claim and claim != inst.claim:
        inst.claim = SHARED(claim)
    inst.ports = _kept_ports(body.get("addresses") or inst.ports, inst.ports)
    if _advance(inst, 0, event, _SPAWNED_STATES):
        inst.power_state = body["power_state"]


def _failed(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    if not body["final"]:
        states = _UNSHELVE_SCHEDULED_STATES if _unshelving(body) else _RETRYING_STATES
        _advance(inst, 0, event, states)
        return
    # the fault is the final failure's even when a deletion outranks it
    inst.more().fault = {
        "code": body["code"],
        "message": body["reason"],
        "details": body.get("details") or "",
        "created": event.occurred_at,
    }
    _advance(inst, 1, event, _ERROR_STATES)


def _delete_requested(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    _mark_deleting(inst)
    _advance(inst, 0, event, _DELETE_REQUESTED_STATES)


def _delete_dispatched(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    _mark_deleting(inst)
    _advance(inst, 0, event, _DELETE_DISPATCHED_STATES)


def _mark_deleting(inst: Instance) -> None:
    # Once a delete is asked for, the task is deleting until the deletion (or a final failure),
    # whatever event of the same sequence (an action's outcome, a build step) wins the fork.
    inst.deleting = True
    if inst.state_level == 0:
        inst.task_state = "deleting"


# the terminal level (state_level) of a deletion: it outranks every other event
_DELETION_LEVEL = 2


def _deleted(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    inst.terminated_at = body["terminated_at"]
    # a deletion is terminal: it outranks every other event, a final failure included
    if _advance(inst, _DELETION_LEVEL, event, _DELETED_STATES):
        inst.power_state = NOSTATE


# The owner's edits live on one topic keyed by the instance, so they arrive in the order they were
# made; the request they edit lives on another and may be folded after them (a replay reads topic
# by topic), so each edit is kept and applied again on top of the request when it arrives.
def _apply_update(inst: Instance, body: dict[str, Any]) -> None:
    if body.get("name") is not None:
        inst.name = body["name"]
    if body.get("access_ipv4") is not None:
        inst.access_ipv4 = body["access_ipv4"]
    if body.get("access_ipv6") is not None:
        inst.more().access_ipv6 = body["access_ipv6"]
    if body.get("description_set"):
        inst.description = body["description"]


def _apply_metadata_change(inst: Instance, body: dict[str, Any]) -> None:
    # a new dict: the one a server was created with may be shared with others (SHARED)
    metadata = {} if body["replace"] else dict(inst.metadata)
    metadata.update(body["set"])
    for key in body["removed"]:
        metadata.pop(key, None)
    inst.metadata = metadata


def _apply_tags_change(inst: Instance, body: dict[str, Any]) -> None:
    tags = [] if body["replace"] else inst.tags
    removed = set(body["removed"])
    inst.tags = [t for t in dict.fromkeys([*tags, *body["added"]]) if t not in removed]


_EDITS: dict[EventType, Callable[[Instance, dict[str, Any]], None]] = {
    EventType.INSTANCE_UPDATED: _apply_update,
    EventType.INSTANCE_METADATA_CHANGED: _apply_metadata_change,
    EventType.INSTANCE_TAGS_CHANGED: _apply_tags_change,
}
# what the owner changes on a server without an instance action in nova (os-instance-actions skips them)
EDIT_EVENT_TYPES: frozenset[EventType] = frozenset(_EDITS)


def _edited(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    extras = inst.more()
    extras.edits = (*extras.edits, (event.type, body))
    _EDITS[event.type](inst, body)
# -- server actions (DESIGN §7) --------------------------------------------------------------------
# nova's API status of a (vm_state, task_state) pair, as nova.api.openstack.common._STATE_MAP has it
_STATUS_OF_VM_STATE = {"resized": "VERIFY_RESIZE",
                       "active": "ACTIVE", "stopped": "SHUTOFF", "paused": "PAUSED", "suspended": "SUSPENDED",
                       "building": "BUILD", "error": "ERROR", "deleted": "DELETED", "shelved": "SHELVED",
                       "shelved_offloaded": "SHELVED_OFFLOADED"}
_STATUS_OF_ACTIVE_TASK = {"rebooting": "REBOOT", "reboot_pending": "REBOOT", "reboot_started": "REBOOT",
                          "rebooting_hard": "HARD_REBOOT"}


def server_status(vm_state: str, task_state: str | None) -> str:
    """Nova's API status of a vm_state and task_state (REBOOT and HARD_REBOOT only from active)."""
    if task_state is not None and vm_state in _MOVE_TASK_VM_STATES and task_state in _STATUS_OF_MOVE_TASK:
        return _STATUS_OF_MOVE_TASK[task_state]
    if vm_state == "active" and task_state is not None:
        return _STATUS_OF_ACTIVE_TASK.get(task_state, "ACTIVE")
    return _STATUS_OF_VM_STATE.get(vm_state, "UNKNOWN")


# the host steps whose nova event name is not compute_<action>_instance
_STEP_NAMES = {"createImage": "compute_snapshot_instance", "shelveOffload": "compute_shelve_offload_instance",
               "trigger_crash_dump": "compute_trigger_crash_dump"}


def action_step_name(action: str) -> str:
    """Nova's instance-action event name of an action's host step, e.g. compute_stop_instance."""
    return _STEP_NAMES.get(action) or f"compute_{action}_instance"


def _action_requested(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    action = body["action"]
    if action in ("lock", "unlock"):
        # no host step: the lock is in place once it is on the log; the newest lock event wins
        extras = inst.more()
        if event.sequence >= extras.lock_sequence:
            extras.lock_sequence = event.sequence
            extras.locked = action == "lock"
            extras.locked_reason = body.get("locked_reason") if extras.locked else None
            extras.locked_by = body.get("locked_by") if extras.locked else None
        return
    vm_state, task_state = body["vm_state"], body.get("task_state")
    states = (server_status(vm_state, task_state), vm_state, task_state)
    _advance(inst, 0, event, states)
    if action == "shelve":
        inst.more().shelved_image_id = body.get("image_id")


def _action_finished(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    # completed and failed both end the task; the body says where the server is now
    vm_state = body["vm_state"]
    if _advance(inst, 0, event, (server_status(vm_state, None), vm_state, None)):
        inst.power_state = body["power_state"]
    if vm_state == "shelved_offloaded":
        # offloaded, or an unshelve that failed: no host until an unshelve spawns it somewhere
        _place(inst, None, event.sequence)
    if event.type == EventType.INSTANCE_ACTION_FAILED and body.get("host"):
        # a host's failure is the instance's fault, as nova's wrap_instance_fault records it (shown
        # only while the server is in ERROR, as nova shows it)
        inst.more().fault = {"code": 500, "message": body["reason"], "details": "",
                             "created": event.occurred_at}


def _volume_requested(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    # an attach or detach changes neither vm_state nor task_state (nova keeps them too); the
    # volume's own state is the catalog's (eventsvm.state.volumes)
    return None


# -- moves: resize, confirmResize, revertResize, rebuild (eventsvm.state.server_moves) -------------
# nova's _STATE_MAP for the move tasks: RESIZE while a resize runs (from active or stopped),
# REVERT_RESIZE while one is reverted, REBUILD while a rebuild runs (from active, stopped or error)
_MOVE_TASK_VM_STATES = frozenset({"active", "stopped", "resized", "error"})
_STATUS_OF_MOVE_TASK = {"resize_prep": "RESIZE", "resize_migrating": "RESIZE", "resize_migrated": "RESIZE",
                        "resize_finish": "RESIZE", "resize_reverting": "REVERT_RESIZE",
                        "rebuilding": "REBUILD", "rebuild_spawning": "REBUILD"}


def _move_states(body: dict[str, Any]) -> _States:
    vm_state, task_state = body["vm_state"], body.get("task_state")
    return server_status(vm_state, task_state), vm_state, task_state


def _newest_move(inst: Instance, event: Event) -> bool:
    """Whether this move event is the newest to set where the server is and what it runs."""
    extras = inst.more()
    if event.sequence < extras.move_sequence:
        return False
    extras.move_sequence = event.sequence
    return True


def _move_requested(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    if body["action"] == "rebuild" and _newest_move(inst, event):
        # nova sets what the rebuild request changes on the instance at once, in the API: the name,
        # access addresses and description as an edit sets them, and the metadata
        _apply_update(inst, body)
        if body.get("metadata") is not None:
            inst.metadata = dict(body["metadata"])
        if body.get("guest"):
            inst.image_id = body["guest"]["image"]["id"]
    _advance(inst, 0, event, _move_states(body))


def _move_step(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    # os-instance-actions names the step (compute_finish_resize ...), not the action
    inst.name_last_step(body["step"])
    step = body["step"]
    # only the steps that move the server or change what it runs are checked against (and set)
    # the newest such move, so a step read before the boot's spawned does not hold that back
    if body["vm_state"] == "resized" and body["action"] == "resize" and _newest_move(inst, event):
        inst.host, inst.flavor = body["dest_host"], body["flavor"]
        inst.more().move = {k: body.get(k) for k in ("source_host", "dest_host", "source_slot", "dest_slot",
                                                "old_flavor", "old_claim", "claim", "flavor", "guest")}
    elif step == "compute_confirm_resize" and _newest_move(inst, event):
        inst.claim, inst.more().move = body.get("claim") or inst.claim, None
    elif step == "compute_finish_revert_resize" and _newest_move(inst, event):
        inst.host, inst.flavor = body["source_host"], body.get("old_flavor") or inst.flavor
        inst.claim, inst.more().move = body.get("old_claim") or inst.claim, None
    if _advance(inst, 0, event, _move_states(body)) and \
            body.get("power_state") is not None:
        inst.power_state = body["power_state"]


def _move_failed(inst: Instance, event: Event, body: dict[str, Any]) -> None:
    inst.name_last_step(body["step"])
    inst.more().fault = {"code": body.get("code") or 500, "message": body.get("reason") or "",
                  "details": "", "created": event.occurred_at}
    if body["action"] in ("resize", "revertResize") and _newest_move(inst, event):
        # the server stays (or is put back) where it was before the resize
        inst.more().move = None
    if _advance(inst, 0, event, _move_states(body)) and \
            body.get("power_state") is not None:
        inst.power_state = body["power_state"]


_FOLDS: dict[EventType, Callable[[Instance, Event, dict[str, Any]], None]] = {
    EventType.INSTANCE_REQUESTED: _requested,
    EventType.INSTANCE_AUTHENTICATED: _authenticated,
    EventType.INSTANCE_SCHEDULED: _scheduled,
    EventType.INSTANCE_RESOURCES_RESOLVED: _resources_resolved,
    EventType.INSTANCE_SPAWNED: _spawned,
    EventType.INSTANCE_FAILED: _failed,
    EventType.INSTANCE_DELETE_REQUESTED: _delete_requested,
    EventType.INSTANCE_DELETE_DISPATCHED: _delete_dispatched,
    EventType.INSTANCE_DELETED: _deleted,
    EventType.INSTANCE_UPDATED: _edited,
    EventType.INSTANCE_METADATA_CHANGED: _edited,
    EventType.INSTANCE_TAGS_CHANGED: _edited,
    EventType.INSTANCE_ACTION_REQUESTED: _action_requested,
    EventType.INSTANCE_ACTION_COMPLETED: _action_finished,
    EventType.INSTANCE_ACTION_FAILED: _action_finished,
    EventType.INSTANCE_VOLUME_ATTACH_REQUESTED: _volume_requested,
    EventType.INSTANCE_VOLUME_DETACH_REQUESTED: _volume_requested,
    EventType.INSTANCE_MOVE_REQUESTED: _move_requested,
    EventType.INSTANCE_MOVE_STEP: _move_step,
    EventType.INSTANCE_MOVE_FAILED: _move_failed,
}
# each type's fold with the plain string the timeline keeps (reading `.value` off the enum costs a
# property call), found in one lookup an event
_NAMED_FOLDS: dict[EventType, tuple[str, Callable[[Instance, Event, dict[str, Any]], None]]] = {
    kind: (kind.value, owned) for kind, owned in _FOLDS.items()}
# Every instance event type must have its fold: one without would be dropped from the model silently.
_UNFOLDED = {kind for kind in EventType if kind.startswith("instance.")} - _FOLDS.keys()
if _UNFOLDED:
    raise RuntimeError(f"instance event types without a fold: {sorted(_UNFOLDED)}")
# The event types this projection folds: every `instance.*` type (a replay dispatches on it).
INSTANCE_EVENT_TYPES: frozenset[EventType] = frozenset(_FOLDS)

# The body fields the folds above read, per type (None: the whole value): a replay decodes just
# these (Codec.projected) and steps over the rest, such as the spec a scheduled event repeats.
# Reading a field not listed here fails the replay-equals-live tests, which fold whole events.
# The envelope fields the folds never read come as None in such a decode.
UNFOLDED_ENVELOPE_FIELDS = ("causation_id", "prev_hash")
_MOVE_FOLDED = ("action", "step", "host", "source_host", "dest_host", "source_slot", "dest_slot", "vm_state",
                "task_state", "power_state", "flavor", "old_flavor", "claim", "old_claim", "guest", "name",
                "metadata", "access_ipv4", "access_ipv6", "reason", "code")
FOLDED_BODY_FIELDS: dict[EventType, dict[str, Any]] = {
    EventType.INSTANCE_REQUESTED: dict.fromkeys((
        "name", "flavor_id", "image_id", "key_name", "availability_zone", "metadata", "description",
        "networks", "access_ipv4", "access_ipv6", "reservation_id", "server_group_id", "user_data",
        "launch_index", "tags")),
    EventType.INSTANCE_AUTHENTICATED: {"spec": {"flavor": None}},
    EventType.INSTANCE_SCHEDULED: {**dict.fromkeys(("host", "attempt", "claim")), "spec": {"unshelve": None}},
    EventType.INSTANCE_RESOURCES_RESOLVED: {**dict.fromkeys(("host", "attempt", "ports")),
                                            "spec": {"unshelve": None}},
    EventType.INSTANCE_SPAWNED: dict.fromkeys(
        ("host", "launched_at", "flavor", "addresses", "power_state", "claim")),
    EventType.INSTANCE_FAILED: {**dict.fromkeys(("host", "reason", "final", "code", "details")),
                                "spec": {"unshelve": None}},
    EventType.INSTANCE_DELETE_REQUESTED: {"host": None},
    EventType.INSTANCE_DELETE_DISPATCHED: {"host": None},
    EventType.INSTANCE_DELETED: dict.fromkeys(("host", "terminated_at")),
    EventType.INSTANCE_UPDATED: dict.fromkeys(
        ("name", "access_ipv4", "access_ipv6", "description", "description_set")),
    EventType.INSTANCE_METADATA_CHANGED: dict.fromkeys(("set", "removed", "replace")),
    EventType.INSTANCE_TAGS_CHANGED: dict.fromkeys(("added", "removed", "replace")),
    EventType.INSTANCE_ACTION_REQUESTED: dict.fromkeys(
        ("action", "host", "vm_state", "task_state", "locked_reason", "locked_by", "image_id")),
    EventType.INSTANCE_ACTION_COMPLETED: dict.fromkeys(("action", "host", "vm_state", "power_state")),
    EventType.INSTANCE_ACTION_FAILED: dict.fromkeys(("action", "host", "vm_state", "power_state", "reason")),
    EventType.INSTANCE_VOLUME_ATTACH_REQUESTED: {"host": None},
    EventType.INSTANCE_VOLUME_DETACH_REQUESTED: {"host": None},
    **dict.fromkeys(
        (EventType.INSTANCE_MOVE_REQUESTED, EventType.INSTANCE_MOVE_STEP, EventType.INSTANCE_MOVE_FAILED),
        dict.fromkeys(_MOVE_FOLDED)),
    # a rebuild's description (nova 2.19) is on its request only
    EventType.INSTANCE_MOVE_REQUESTED: dict.fromkeys((*_MOVE_FOLDED, "description", "description_set")),
}
