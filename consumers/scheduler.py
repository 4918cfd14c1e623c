"""scheduler: nova's filters and weighers over host inventory and claims rebuilt from the log.

Inputs: instance.authenticated (first placement) and instance.failed (a retryable spawn failure
goes to the next alternate). The claims made here are the scheduler's view; the spawner of each
host is the single writer that accepts or refuses a claim on its host, so several scheduler
processes deciding at once can never over-commit a host (nova's compute-side claim).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eventsvm.events.builders import failed
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.runtime.service import Output, Rejected, Service, StepContext
from eventsvm.scheduler.claims import claim_for, claim_in
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import SchedulerPolicy
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.select import NoValidHost, select_destinations
from eventsvm.state.server_actions import OFFLOADING_ACTIONS


@dataclass(frozen=True)
class SchedulerSettings:
    """The operator's choices: filter and weigher policy, and nova's max_attempts."""

    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    max_attempts: int = 3


@dataclass
class SchedulerState:
    """Hosts with their claims, where each instance is placed, the inputs answered for each live
    instance, and who is gone."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    placements: dict[str, str] = field(default_factory=dict)
    group_members: dict[str, dict[str, str]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    # each placed instance's request spec, which an unshelve places again
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the ids of the inputs this service answered (the causes of its own outputs), per live instance
    answered: dict[str, set[str]] = field(default_factory=dict)

    def release(self, instance_id: str) -> None:
        """Drop the instance's claim wherever it is."""
        host = self.placements.pop(instance_id, None)
        if host is not None and host in self.hosts:
            self.hosts[host] = self.hosts[host].release(instance_id)
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
        state.hosts[body["name"]] = _host_from(body, state.hosts.get(body["name"]))
    elif kind == EventType.HOST_UPDATED and body["name"] in state.hosts:
        host = state.hosts[body["name"]]
        if body.get("enabled") is not None:
            state.hosts[body["name"]] = replace(
                host, enabled=body["enabled"], disabled_reason=body.get("disabled_reason")
            )
    elif kind == EventType.INSTANCE_SCHEDULED:
        _answered(state, event)
        state.release(instance_id)
        if instance_id in state.gone or body["host"] not in state.hosts:
            return state
        claim = claim_in(body)
        state.hosts[body["host"]] = state.hosts[body["host"]].claim(
            instance_id, claim.vcpus, claim.ram_mb, claim.disk_gb
        )
        state.placements[instance_id] = body["host"]
        state.specs[instance_id] = body["spec"]
        group = body["spec"].get("server_group_id")
        if group:
            state.group_members.setdefault(group, {})[instance_id] = body["host"]
    elif kind == EventType.INSTANCE_FAILED:
        if body["stage"] == "schedule":
            _answered(state, event)
        if body["final"]:
            state.gone.add(instance_id)
            state.release(instance_id)
        elif body.get("host") and state.placements.get(instance_id) == body["host"]:
            state.release(instance_id)
    elif kind == EventType.INSTANCE_DELETED:
        state.gone.add(instance_id)
        state.release(instance_id)
    elif kind == EventType.INSTANCE_ACTION_COMPLETED:
        _offloaded(state, instance_id, body)
    if instance_id in state.gone:
        state.specs.pop(instance_id, None)
        state.answered.pop(instance_id, None)
    return state


def _answered(state: SchedulerState, output: Event) -> None:
    if output.causation_id:
        state.answered.setdefault(output.aggregate_id, set()).add(output.causation_id)


def _request(
    instance_id: str,
    spec: dict[str, Any],
    state: SchedulerState,
    alternates: int,
    ignore: frozenset[str] = frozenset(),
) -> SchedulingRequest:
    claim = claim_for(spec)
    group = spec.get("server_group_id")
    group_hosts = {h for i, h in state.group_members.get(group or "", {}).items() if i != instance_id}
    return SchedulingRequest(
        instance_id=instance_id,
        vcpus=claim.vcpus,
        ram_mb=claim.ram_mb,
        disk_gb=claim.disk_gb,
        availability_zone=spec.get("availability_zone"),
        image_properties=spec.get("image_properties") or {},
        server_group_policy=spec.get("server_group_policy"),
        group_hosts=frozenset(group_hosts),
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
    answered = state.answered.get(event.aggregate_id, set())
    if event.type == EventType.INSTANCE_AUTHENTICATED and not answered:
        return _place(state, event, settings)
    if (event.type == EventType.INSTANCE_FAILED and event.body["retryable"] and event.body.get("spec")
            and event.event_id not in answered):
        return _reschedule(state, event, settings)
    if event.type == EventType.INSTANCE_ACTION_REQUESTED and event.body["action"] == "unshelve":
        return _unshelve(state, event, settings)
    return []


def _place(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    spec = event.body["spec"]
    try:
        request = _request(event.aggregate_id, spec, state, settings.max_attempts - 1)
        selection = select_destinations(state.hosts.values(), request, settings.policy)
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
            Output(
                failed(event, "schedule", exhausted, code=500, host=tried, attempt=attempt, details=details)
            )
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
def _offloaded(state: SchedulerState, instance_id: str, body: dict[str, Any]) -> None:
    # the spec stays: an unshelve places it again
    if body["action"] in OFFLOADING_ACTIONS and state.placements.get(instance_id) == body["host"]:
        state.release(instance_id)


def _unshelve(state: SchedulerState, event: Event, settings: SchedulerSettings) -> Sequence[Output]:
    """Place an unshelved server as a new build of the same spec, from its shelved image (nova's
    conductor unshelve_instance): a new claim, wherever the filters and weighers say. With no
    valid host the action fails and the server stays SHELVED_OFFLOADED, as in nova."""
    instance_id = event.aggregate_id
    spec = state.specs.get(instance_id)
    if spec is None:
        raise Rejected(f"unshelve of {instance_id}, whose request spec this scheduler never placed")
    if instance_id in state.placements:
        return []  # placed already: this command was answered
    if event.body.get("image_id"):
        spec = {**spec, "image_id": event.body["image_id"]}
    try:
        request = _request(instance_id, spec, state, settings.max_attempts - 1)
        selection = select_destinations(state.hosts.values(), request, settings.policy)
    except NoValidHost as exc:
        refused = {"action": "unshelve", "host": "", "vm_state": event.body["vm_state"], "power_state": 0,
                   "reason": f"{exc}: {exc.explanation}"}
        return [Output(new_event(EventType.INSTANCE_ACTION_FAILED, instance_id, refused, cause=event))]
    return [_scheduled(event, spec, request, selection.host, selection.alternates, 1)]


SERVICE: Service[SchedulerState] = Service(
    name="scheduler",
    # action-requested for unshelve only; action outcomes for the claims an offload frees
    inputs=(Topic.AUTHENTICATED, Topic.FAILED, Topic.ACTION_REQUESTED),
    state_topics=(Topic.HOSTS, Topic.SCHEDULED, Topic.FAILED, Topic.DELETED, Topic.ACTION_COMPLETED,
                  Topic.ACTION_FAILED),
    outputs=(Topic.SCHEDULED, Topic.FAILED, Topic.ACTION_FAILED),
    initial_state=SchedulerState,
    evolve=evolve,
    decide=decide,
    description="nova filters and weighers choose a host and alternates",
)
