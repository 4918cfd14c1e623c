"""spawner: one per compute host; turns resolved instances into running libvirt guests.

It reads only its host's partition of the host-routed topics, and it is the single writer of
claims on its host: a claim that no longer fits (two schedulers chose this host at once) is
refused as a retryable failure, so the scheduler moves the instance to its next alternate. It
checks the claim the scheduler computed (carried in resources-resolved), never one of its own.
Redelivery never makes a second guest: the hypervisor's spawn is idempotent on the UUID.
It also carries out the host side of server actions (stop, start, reboot, pause, suspend ...) and
appends what happened; an action it already answered is not carried out twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eventsvm.events.builders import deleted, failed, flavor_snapshot
from eventsvm.events.model import Event, EventType, Topic, new_event, now_ms
from eventsvm.runtime.service import Output, Rejected, Service, StepContext, Transient
from eventsvm.scheduler.claims import Claim, claim_in, recorded_claim
from eventsvm.state.server_actions import SERVER_ACTIONS
from eventsvm.virt.compute_host import ComputeHost
from eventsvm.virt.hypervisor import DomainState, HypervisorError, HypervisorUnavailable
from eventsvm.virt.xml import InvalidGuestSpec


@dataclass
class SpawnerState:
    """The claims on this host, the latest build attempt it answered for each live instance, the
    instances that are gone, and the actions already answered."""

    host: str = ""
    claims: dict[str, Claim] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)

    def used(self) -> tuple[int, int, int]:
        """vCPUs, RAM MB and disk GB claimed on this host."""
        return (
            sum(c.vcpus for c in self.claims.values()),
            sum(c.ram_mb for c in self.claims.values()),
            sum(c.disk_gb for c in self.claims.values()),
        )


def evolve(state: SpawnerState, event: Event) -> SpawnerState:
    """Fold this host's claims: held from spawned, freed by deleted or failed."""
    kind, body, instance_id = event.type, event.body, event.aggregate_id
    if kind == EventType.INSTANCE_SPAWNED and body["host"] == state.host and instance_id not in state.gone:
        state.claims[instance_id] = recorded_claim(body.get("claim"), body["flavor"])
        state.attempts[instance_id] = max(body["attempt"], state.attempts.get(instance_id, 0))
    elif kind == EventType.INSTANCE_DELETED:
        state.gone.add(instance_id)
        state.claims.pop(instance_id, None)
        state.attempts.pop(instance_id, None)
    elif kind == EventType.INSTANCE_FAILED and (body["final"] or body.get("host") == state.host):
        if body["final"]:
            state.gone.add(instance_id)
            state.attempts.pop(instance_id, None)
        elif body.get("attempt"):
            state.attempts[instance_id] = max(body["attempt"], state.attempts.get(instance_id, 0))
        state.claims.pop(instance_id, None)
    elif kind in _ACTION_OUTCOMES and body["host"] == state.host and event.causation_id:
        state.answered.add(event.causation_id)
    return state


_ACTION_OUTCOMES = (EventType.INSTANCE_ACTION_COMPLETED, EventType.INSTANCE_ACTION_FAILED)


def decide(state: SpawnerState, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Spawn or destroy on this host; work routed here for another host is not ours."""
    host: ComputeHost = ctx.deps
    if event.body.get("host") != host.name:
        return []
    try:
        if event.type == EventType.INSTANCE_DELETE_DISPATCHED:
            host.destroy(event.aggregate_id)
            return [Output(deleted(event, host.name, "spawner"))]
        if event.type == EventType.INSTANCE_RESOURCES_RESOLVED:
            return _spawn(state, event, host)
        if event.type == EventType.INSTANCE_ACTION_REQUESTED:
            return _act(state, event, host)
    except HypervisorUnavailable as exc:
        # says nothing about the instance: decide it again once the hypervisor answers
        raise Transient(f"hypervisor of {host.name} out of reach: {exc}") from exc
    return []


def _spawn(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    instance_id, body = event.aggregate_id, event.body
    if instance_id in state.gone or instance_id in state.claims or body["attempt"] <= state.attempts.get(
            instance_id, 0):
        # gone, already spawned here (its `spawned` is folded), or an attempt this host already
        # answered (a record delivered twice, after the instance moved on): nothing changes
        return []
    flavor = body["spec"]["flavor"]
    if flavor["vcpus"] < 1 or flavor["ram_mb"] < 1 or body["attempt"] < 1:
        raise Rejected(
            f"impossible build: {flavor['vcpus']} vCPU, {flavor['ram_mb']} MB, attempt {body['attempt']}"
        )

    def failure(stage: str, reason: str, retryable: bool = True) -> Sequence[Output]:
        # the spec and the alternates travel with it, so the scheduler can place it elsewhere
        return [
            Output(
                failed(
                    event,
                    stage,
                    reason,
                    code=500,
                    retryable=retryable,
                    host=host.name,
                    attempt=body["attempt"],
                    alternates=body["alternates"],
                    spec=body["spec"],
                )
            )
        ]

    claim = claim_in(body)
    refusal = host.capacity.fits(state.used(), claim.as_tuple())
    if refusal is not None:
        return failure("claim", refusal)
    if host.broken:
        return failure("spawn", f"Build of instance {instance_id} aborted on {host.name}: {host.broken}")
    try:
        domain = host.spawn(instance_id, body, event.user_id or "", event.project_id or "", event.occurred_at)
    except HypervisorError as exc:
        host.destroy(instance_id)
        return failure("spawn", f"Build of instance {instance_id} aborted: {exc}", exc.retryable)
    except InvalidGuestSpec as exc:
        return failure("spawn", f"Build of instance {instance_id} aborted: {exc}", retryable=False)
    spawned = {
        "host": host.name,
        "domain_name": domain.name,
        "power_state": int(domain.state),
        "launched_at": now_ms(),
        "attempt": body["attempt"],
        "flavor": flavor_snapshot(flavor),
        "addresses": body["ports"],
        "claim": claim.as_record(),
    }
    return [Output(new_event(EventType.INSTANCE_SPAWNED, instance_id, spawned, cause=event))]


def _act(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    """A server action's host step: its outcome, or its failure with the guest as found (the
    server stays in the vm_state it had, as nova reverts the task_state of a failed action)."""
    instance_id, body = event.aggregate_id, event.body
    rule = SERVER_ACTIONS.get(body["action"])
    if rule is None or not rule.on_host or instance_id in state.gone or event.event_id in state.answered:
        return []
    try:
        domain, note = host.act(instance_id, rule.name, body.get("reboot_type"))
    except HypervisorError as exc:
        found = host.hypervisor.state(instance_id)
        outcome = {"action": rule.name, "host": host.name, "vm_state": body["vm_state"],
                   "power_state": int(found if found is not None else DomainState.NOSTATE),
                   "reason": f"{rule.name} of instance {instance_id} failed: {exc}"}
        return [Output(new_event(EventType.INSTANCE_ACTION_FAILED, instance_id, outcome, cause=event))]
    done = {"action": rule.name, "host": host.name, "vm_state": rule.vm_state_after,
            "power_state": int(domain.state), "detail": note}
    return [Output(new_event(EventType.INSTANCE_ACTION_COMPLETED, instance_id, done, cause=event))]


def service_for(host_name: str) -> Service[SpawnerState]:
    """The spawner of one host (its state only counts that host's claims)."""
    return Service(
        name=f"spawner.{host_name}",
        inputs=(Topic.RESOURCES_RESOLVED, Topic.DELETE_DISPATCHED, Topic.ACTION_REQUESTED),
        state_topics=(
            Topic.SPAWNED, Topic.DELETED, Topic.FAILED, Topic.ACTION_COMPLETED, Topic.ACTION_FAILED),
        outputs=(Topic.SPAWNED, Topic.DELETED, Topic.FAILED, Topic.ACTION_COMPLETED, Topic.ACTION_FAILED),
        initial_state=lambda: SpawnerState(host=host_name),
        evolve=evolve,
        decide=decide,
        description=f"libvirt guests on {host_name}",
    )
