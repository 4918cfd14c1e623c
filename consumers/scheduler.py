"""scheduler: nova's filters and weighers over host inventory and claims rebuilt from the log.

Inputs: instance.authenticated (first placement), instance.failed (a retryable spawn failure
goes to the next alternate) and a resize's instance.move_requested (a destination for the new
flavor, claimed here before anything moves; see eventsvm.state.server_moves). The claims made
here are the scheduler's view; the spawner of each host is the single writer that accepts or
refuses a claim on its host, so several scheduler processes deciding at once can never
over-commit a host (nova's compute-side claim).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eventsvm.events.builders import failed, placement_failed, unshelve_failed
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.scheduler.claims import Claim, claim_for, claim_in
from eventsvm.scheduler.host_index import HostIndex
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import SchedulerPolicy
from eventsvm.scheduler.ranked import select_ranked
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.select import NoValidHost, Selection, select_destinations
from eventsvm.state.compact import SHARED, CompactRecord, Departures, remember_answer
from eventsvm.state.server_actions import OFFLOADING_ACTIONS
from eventsvm.state.server_moves import SCHEDULED, MoveClaims, resize_key


@dataclass(frozen=True)
class SchedulerSettings:
    """The operator's choices: filter and weigher policy, and nova's max_attempts."""

    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    max_attempts: int = 3
    # nova's allow_resize_to_same_host, False by default as there
    allow_resize_to_same_host: bool = False
    # False: filter and weigh every host on each decision (select_destinations, the reference the
    # indexed path must equal); for the benchmark's before/after, and a way out if one ever differs
    indexed_selection: bool = True


@dataclass
class SchedulerState:
    """Hosts with their claims, where each instance is placed, and who is gone."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    placements: dict[str, str] = field(default_factory=dict)
    group_members: dict[str, dict[str, str]] = field(default_factory=dict)
    gone: Departures = field(default_factory=Departures)
    # each placed instance's request spec, which an unshelve places again: compact, its flavor,
    # networks and the like shared with every other instance's equal ones
    specs: dict[str, CompactRecord] = field(default_factory=dict)
    # the ids of the inputs this service answered (the causes of its own outputs), per live instance
    answered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    # a resize's destination by instance, while it holds a second claim there
    resizing: dict[str, str] = field(default_factory=dict)
    moves: MoveClaims = field(default_factory=MoveClaims)
    # claims on hosts whose registration is not folded yet: a rebuild reads the hosts topic and the
    # instance topics in no fixed order, so a claim may come first; it is applied at registration
    unregistered: dict[str, dict[str, Claim]] = field(default_factory=dict)
    # `hosts` in order by name and by each weigher's figure; every change to `hosts` goes through
    # `put`, which keeps the two equal
    index: HostIndex = field(default_factory=HostIndex)

    def put(self, host: HostState) -> None:
        """Record the host's new state, in `hosts` and in the index."""
        self.index.put(host, self.hosts.get(host.name))
        self.hosts[host.name] = host

    def select(self, request: SchedulingRequest, settings: SchedulerSettings) -> Selection:
        """The host and alternates nova's filters and weighers choose among the registered hosts."""
        if settings.indexed_selection:
            return select_ranked(self.hosts, self.index, request, settings.policy)
        return select_destinations(self.hosts.values(), request, settings.policy)

    def hold(self, host: str, key: str, claim: Claim) -> None:
        """Claim `claim` under `key` on `host`, registered yet or not."""
        if host in self.hosts:
            self.put(self.hosts[host].claim(key, *claim.as_tuple()))
        else:
            self.unregistered.setdefault(host, {}).setdefault(key, claim)

    def free(self, host: str, key: str) -> None:
        """Give back what `key` holds on `host`, registered yet or not."""
        if host in self.hosts:
            self.put(self.hosts[host].release(key))
        else:
            self.unregistered.get(host, {}).pop(key, None)

    def register(self, host: HostState) -> None:
        """The host as registered, with the claims read before its registration."""
        for key, claim in self.unregistered.pop(host.name, {}).items():
            host = host.claim(key, *claim.as_tuple())
        self.put(host)

    def release(self, instance_id: str, resize_too: bool = True) -> None:
        """Drop the instance's claim wherever it is, and a resize's at its destination unless
        `resize_too` is False (a boot step read late must not end a resize)."""
        host = self.placements.pop(instance_id, None)
        if host is not None:
            self.free(host, instance_id)
        dest = self.resizing.pop(instance_id, None) if resize_too else None
        if dest is not None:
            self.free(dest, resize_key(instance_id))
        for members in self.group_members.values():
            members.pop(instance_id, None)


def _host_from(body: dict[str, Any], previous: HostState | None) -> HostState:
    """The host as its latest registration describes it, keeping the claims it already holds."""
    inventory: dict[str, Any] = {
        "name": body["name"],
        "vcpus": body["vcpus"],
        "ram_mb": body["ram_mb"],
        "disk_gb": body["disk_gb"],
        "availability_zone": body["availability_zone"],
        "enabled": body["enabled"],
        "cpu_allocation_ratio": body["cpu_allocation_ratio"],
        "ram_allocation_ratio": body["ram_allocation_ratio"],
        "disk_allocation_ratio": body["disk_allocation_ratio"],
        "cpu_arch": body["cpu_arch"],
        "hypervisor_type": body["hypervisor_type"],
    }
    return replace(previous, **inventory) if previous else HostState(**inventory)


def evolve(state: SchedulerState, event: Event) -> SchedulerState:
    """Fold host inventory and claims."""
    kind, body, instance_id = event.type, event.body, event.aggregate_id
    if kind == EventType.HOST_REGISTERED:
        state.register(_host_from(body, state.hosts.get(body["name"])))
        state.slots[body["name"]] = body["slot"]
    elif kind == EventType.HOST_UPDATED and body["name"] in state.hosts:
        host = state.hosts[body["name"]]
        if body.get("enabled") is not None:
            state.put(replace(host, enabled=body["enabled"], disabled_reason=body.get("disabled_reason")))
    elif kind == EventType.INSTANCE_SCHEDULED:
        _answered(state, event)
        if state.moves.moved_since(instance_id, event.sequence):
            # a boot step read after a resize or an offload that moved the instance on: its claim
            # is stale, its spec is still what an unshelve places again
            if instance_id not in state.gone:
                state.specs.setdefault(instance_id, CompactRecord.of(body["spec"]))
            return state
        state.release(instance_id, resize_too=False)
        if instance_id in state.gone:
            return state
        host = SHARED(body["host"])
        state.hold(host, instance_id, claim_in(body))
        state.placements[instance_id] = host
        state.specs[instance_id] = CompactRecord.of(body["spec"])
        group = body["spec"].get("server_group_id")
        if group:
            state.group_members.setdefault(group, {})[instance_id] = host
    elif kind == EventType.INSTANCE_FAILED:
        if body["stage"] == "schedule":
            _answered(state, event)
        if body["final"]:
            state.gone.add(instance_id, event.occurred_at)
            state.release(instance_id)
        elif body.get("host") and state.placements.get(instance_id) == body["host"]:
            state.release(instance_id)
    elif kind == EventType.INSTANCE_DELETED:
        state.gone.add(instance_id, event.occurred_at)
        state.release(instance_id)
    elif kind == EventType.INSTANCE_ACTION_COMPLETED:
        _offloaded(state, event)
    elif kind == EventType.INSTANCE_ACTION_FAILED and body["action"] == "unshelve":
        _unshelve_failed(state, event)
    elif kind in _MOVE_OUTCOMES and instance_id not in state.gone:
        _apply_moves(state, event)
    if instance_id in state.gone:
        state.specs.pop(instance_id, None)
        state.answered.pop(instance_id, None)
    state.gone.saw(event.occurred_at)
    return state


def settle(state: SchedulerState) -> SchedulerState:
    """Forget the instances gone an hour (log time) ago: no input of theirs is still in flight
    (Service.settle: every state topic is folded to its end, so none is read late)."""
    state.gone.forget()
    return state


def _answered(state: SchedulerState, output: Event) -> None:
    if output.causation_id:
        remember_answer(state.answered, output.aggregate_id, output.causation_id)


_MOVE_OUTCOMES = (EventType.INSTANCE_MOVE_STEP, EventType.INSTANCE_MOVE_FAILED)


def _apply_moves(state: SchedulerState, event: Event) -> None:
    """A resize's claim changes, the same the spawners apply (server_moves.claim_changes)."""
    instance_id = event.aggregate_id
    for change in state.moves.fresh(event):
        state.free(change.host, change.key)
        if change.claim is not None:
            state.hold(change.host, change.key, change.claim)
        own = change.key == instance_id
        if own and change.claim is not None:
            state.placements[instance_id] = change.host
        elif own and state.placements.get(instance_id) == change.host:
            state.placements.pop(instance_id)
        elif not own and change.claim is not None:
            state.resizing[instance_id] = change.host
        elif not own:
            state.resizing.pop(instance_id, None)


def _request(
    instance_id: str,
    spec: dict[str, Any],
    state: SchedulerState,
    alternates: int,
    ignore: frozenset[str] = frozenset(),
) -> SchedulingRequest:
    claim = claim_for(spec)
    group = spec.get("server_group_id")
    member_hosts = [h for i, h in state.group_members.get(group or "", {}).items() if i != instance_id]
    return SchedulingRequest(
        instance_id=instance_id,
        vcpus=claim.vcpus,
        ram_mb=claim.ram_mb,
        disk_gb=claim.disk_gb,
        availability_zone=spec.get("availability_zone"),
        image_properties=spec.get("image_properties") or {},
        server_group_policy=spec.get("server_group_policy"),
        group_hosts=frozenset(member_hosts),
        group_member_counts=Counter(member_hosts),
        ignore_hosts=ignore,
        num_alternates=alternates,
    )


def _scheduled(
    cause: Event,
    spec: dict[str, Any],
    request: SchedulingRequest,
    host: str,
    alternates: list[str],
    attempt: int,
) -> Output:
    body = {
        "spec": spec, "host": host, "alternates": alternates, "attempt": attempt,
        "claim": request.claim.as_record(),
    }
    return Output(new_event(EventType.INSTANCE_SCHEDULED, cause.aggregate_id, body, cause=cause))


def decide(state: SchedulerState, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Place an authenticated instance, or move a failed build to its next alternate."""
    settings: SchedulerSettings = ctx.deps or SchedulerSettings()
    if event.aggregate_id in state.gone:
        return []
    # A record delivered twice is answered once: a build is placed once, a failure moved on from
    # once. Answering again would place the instance twice, its delete routed to one host and its
    # guest left on the other. (An unshelve is a new command, so a new placement.)
    answered = state.answered.get(event.aggregate_id, ())
    if event.type == EventType.INSTANCE_AUTHENTICATED and not answered:
        return _place(state, event, settings)
    if (event.type == EventType.INSTANCE_FAILED and event.body["retryable"] and event.body.get("spec")
            and event.event_id not in answered):
        return _reschedule(state, event, settings)
    if event.type == EventType.INSTANCE_ACTION_REQUESTED and event.body["action"] == "unshelve":
        return _unshelve(state, event, settings)
    if event.type == EventType.INSTANCE_MOVE_REQUESTED and event.body["action"] == "resize":
        return _place_resize(state, event, settings)
    return []


def _place_resize(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    """A destination for a resize's new flavor, claimed there (nova's conductor migrate_server and
    select_destinations); the source is left out unless allow_resize_to_same_host, as in nova."""
    body, instance_id = event.body, event.aggregate_id
    if instance_id in state.resizing:
        return []  # a redelivered request: its destination is already chosen
    source = body["source_host"]
    spec = {"flavor": body["flavor"], "availability_zone": body.get("availability_zone"),
            "image_properties": body.get("image_properties") or {},
            "block_devices": [{"boot_index": 0, "destination_type": "volume"}] if body["boot_from_volume"]
            else []}
    ignore = frozenset() if settings.allow_resize_to_same_host else frozenset({source})
    try:
        request = _request(instance_id, spec, state, 0, ignore)
        selection = state.select(request, settings)
    except NoValidHost as exc:
        failure = {**body, "step": SCHEDULED, "host": None, "vm_state": body["vm_state"], "task_state": None,
                   "reason": str(exc), "code": 500}
        return [Output(new_event(EventType.INSTANCE_MOVE_FAILED, instance_id, failure, cause=event),
                       route=body.get("source_slot"))]
    dest = selection.host
    step = {**body, "step": SCHEDULED, "host": dest, "dest_host": dest, "dest_slot": state.slots.get(dest, 0),
            "task_state": "resize_migrating", "claim": request.claim.as_record()}
    return [Output(new_event(EventType.INSTANCE_MOVE_STEP, instance_id, step, cause=event),
                   route=step["dest_slot"])]


def _place(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    spec = event.body["spec"]
    try:
        request = _request(event.aggregate_id, spec, state, settings.max_attempts - 1)
        selection = state.select(request, settings)
    except NoValidHost as exc:
        return [Output(failed(event, "schedule", str(exc), code=500, details=exc.explanation))]
    except ValueError as exc:
        # a schema-valid request no stage should ever have let through (a flavor of 0 vCPUs...)
        raise Rejected(f"impossible request spec: {exc}") from exc
    return [_scheduled(event, spec, request, selection.host, selection.alternates, 1)]


def _reschedule(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    body = event.body
    spec, attempt, tried = body["spec"], body["attempt"], body.get("host") or ""
    candidates = [state.hosts[name] for name in body.get("alternates") or [] if name in state.hosts]
    exhausted = (
        f"Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures "
        f"for instance {event.aggregate_id}."
    )

    def give_up(why: str = "") -> Sequence[Output]:
        details = f"last failure on {tried}: {body['reason']}{why}"
        return [
            Output(placement_failed(event, "schedule", exhausted, spec=spec, code=500, host=tried,
                                    attempt=attempt, details=details))
        ]

    if attempt >= settings.max_attempts or not candidates:
        return give_up()
    request = _request(event.aggregate_id, spec, state, len(candidates) - 1, frozenset({tried}))
    try:
        selection = select_destinations(candidates, request, settings.policy)
    except NoValidHost as exc:
        return give_up(f"; alternates: {exc.explanation}")
    return [_scheduled(event, spec, request, selection.host, selection.alternates, attempt + 1)]


# -- shelve / unshelve: an offload frees the claim, an unshelve is placed again ------------------------
def _offloaded(state: SchedulerState, event: Event) -> None:
    instance_id, body = event.aggregate_id, event.body
    # the spec stays: an unshelve places it again
    if body["action"] not in OFFLOADING_ACTIONS:
        return
    state.moves.left(instance_id, event.sequence)
    if state.placements.get(instance_id) == body["host"]:
        state.release(instance_id)


def _unshelve_failed(state: SchedulerState, event: Event) -> None:
    """A failed unshelve gives up the placement it was given, and a boot step of it read late
    must not claim again (nova's compute deletes the unshelve's allocations when the spawn fails)."""
    _answered(state, event)
    state.moves.left(event.aggregate_id, event.sequence)
    if state.placements.get(event.aggregate_id) == (event.body["host"] or None):
        state.release(event.aggregate_id)


def _unshelve(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    """Place an unshelved server as a new build of the same spec, from its shelved image (nova's
    conductor unshelve_instance): a new claim, wherever the filters and weighers say. With no
    valid host the action fails and the server stays SHELVED_OFFLOADED, as in nova."""
    instance_id = event.aggregate_id
    placed = state.specs.get(instance_id)
    if placed is None:
        raise Rejected(f"unshelve of {instance_id}, whose request spec this scheduler never placed")
    if instance_id in state.placements or event.event_id in state.answered.get(instance_id, ()):
        return []  # placed already, or refused: this command was answered
    # the spec says this placement is an unshelve, so every later stage (and a reschedule) carries
    # it and the read model shows nova's unshelving / spawning instead of a boot's states
    spec = {**placed.as_dict(), "unshelve": True}
    if event.body.get("image_id"):
        spec["image_id"] = event.body["image_id"]
    try:
        request = _request(instance_id, spec, state, settings.max_attempts - 1)
        selection = state.select(request, settings)
    except NoValidHost as exc:
        return [Output(unshelve_failed(event, None, f"{exc}: {exc.explanation}"))]
    return [_scheduled(event, spec, request, selection.host, selection.alternates, 1)]


SERVICE: Service[SchedulerState] = Service(
    name="scheduler",
    # action-requested: unshelve places a server again, a resize places its new flavor; the
    # action outcomes free what an offload held
    inputs=(Topic.AUTHENTICATED, Topic.FAILED, Topic.ACTION_REQUESTED),
    state_topics=(Topic.HOSTS, Topic.SCHEDULED, Topic.FAILED, Topic.DELETED, Topic.ACTION_REQUESTED,
                  Topic.ACTION_COMPLETED, Topic.ACTION_FAILED),
    outputs=(Topic.SCHEDULED, Topic.FAILED, Topic.ACTION_REQUESTED, Topic.ACTION_FAILED),
    initial_state=SchedulerState,
    evolve=evolve,
    decide=decide,
    description="nova filters and weighers choose a host and alternates",
    settle=settle,
)
