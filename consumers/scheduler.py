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


@dataclass(frozen=True)
class SchedulerSettings:
    """The operator's choices: filter and weigher policy, and nova's max_attempts."""

    policy: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    max_attempts: int = 3


@dataclass
class SchedulerState:
    """Hosts with their claims, where each instance is placed, the latest attempt at placing each
    live instance, and who is gone."""

    hosts: dict[str, HostState] = field(default_factory=dict)
    placements: dict[str, str] = field(default_factory=dict)
    group_members: dict[str, dict[str, str]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)

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
        state.release(instance_id)
        if instance_id in state.gone:
            return state
        state.attempts[instance_id] = max(body["attempt"], state.attempts.get(instance_id, 0))
        if body["host"] not in state.hosts:
            return state
        claim = claim_in(body)
        state.hosts[body["host"]] = state.hosts[body["host"]].claim(
            instance_id, claim.vcpus, claim.ram_mb, claim.disk_gb
        )
        state.placements[instance_id] = body["host"]
        group = body["spec"].get("server_group_id")
        if group:
            state.group_members.setdefault(group, {})[instance_id] = body["host"]
    elif kind == EventType.INSTANCE_FAILED:
        if body["final"]:
            state.gone.add(instance_id)
            state.release(instance_id)
            state.attempts.pop(instance_id, None)
        elif body.get("host") and state.placements.get(instance_id) == body["host"]:
            state.release(instance_id)
    elif kind == EventType.INSTANCE_DELETED:
        state.gone.add(instance_id)
        state.release(instance_id)
        state.attempts.pop(instance_id, None)
    return state


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
    placed = state.attempts.get(event.aggregate_id, 0)
    # a record delivered twice is answered once: an instance already placed is not placed again, a
    # failure of an attempt that was already moved on from is not moved on from again (two
    # placements would route its delete to one host and leave its guest on the other)
    if event.type == EventType.INSTANCE_AUTHENTICATED and not placed:
        return _place(state, event, settings)
    if (event.type == EventType.INSTANCE_FAILED and event.body["retryable"] and event.body.get("spec")
            and event.body["attempt"] >= placed):
        return _reschedule(state, event, settings)
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


SERVICE: Service[SchedulerState] = Service(
    name="scheduler",
    inputs=(Topic.AUTHENTICATED, Topic.FAILED),
    state_topics=(Topic.HOSTS, Topic.SCHEDULED, Topic.FAILED, Topic.DELETED),
    outputs=(Topic.SCHEDULED, Topic.FAILED),
    initial_state=SchedulerState,
    evolve=evolve,
    decide=decide,
    description="nova filters and weighers choose a host and alternates",
)
