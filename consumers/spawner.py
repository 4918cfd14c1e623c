"""spawner: turns resolved instances into running libvirt guests, for one compute host or a pool.

It reads only its hosts' partition of the host-routed topics, and it is the single writer of
claims on its hosts: a claim that no longer fits (two schedulers chose a host at once) is
refused as a retryable failure, so the scheduler moves the instance to its next alternate. It
checks the claim the scheduler computed (carried in resources-resolved), never one of its own.
Redelivery never makes a second guest: the hypervisor's spawn is idempotent on the UUID.
It also carries out the host side of server actions (stop, start, reboot, pause, suspend ...) and
of moves (rebuild, resize, confirm, revert), and appends what happened; an action it already
answered is not carried out twice. What it answered for a deleted instance is forgotten an hour
(of log time) after the deletion, so its memory is bounded by the recent deletions.

A pool is every host whose work lands on the same partitions (`eventsvm.runtime.host_routing`),
served by one reader: ten thousand simulated hosts are a handful of readers, each folding the
shared topics once rather than once per host. A spawner of one host is a pool of one.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvm.events.builders import deleted, failed, flavor_snapshot, unshelve_failed
from eventsvm.events.model import Event, EventType, Topic, new_event, now_ms
from eventsvm.runtime.service import Output, Rejected, Service, StepContext, Transient
from eventsvm.scheduler.claims import Claim, claim_in, recorded_claim
from eventsvm.state.compact import Departures
from eventsvm.state.instances import sanitized_hostname
from eventsvm.state.names import IMAGES
from eventsvm.state.server_actions import OFFLOADING_ACTIONS, SERVER_ACTIONS
from eventsvm.state.server_moves import (
    CONFIRM_RESIZE,
    FINISH_RESIZE,
    FINISH_REVERT_RESIZE,
    REBUILD_INSTANCE,
    RESIZE_INSTANCE,
    REVERT_RESIZE,
    SCHEDULED,
    MoveClaims,
    resize_key,
    spawn_body,
)
from eventsvm.state.volumes import boot_attachment_id
from eventsvm.virt.compute_host import ComputeHost
from eventsvm.virt.hypervisor import DomainNotFound, DomainState, HypervisorError, HypervisorUnavailable
from eventsvm.virt.volumes import attach_volume, detach_volume
from eventsvm.virt.xml import InvalidGuestSpec


@dataclass
class SpawnerState:
    """The claims on these hosts (keyed by instance, or by a resize's destination key) and the host
    each is placed on, the instances that are gone (with when they went, in log time), and the
    builds and actions already answered, per instance (the ids of the inputs its outcomes were
    caused by). A deleted instance's entries are dropped `forget_after_ms` after its deletion, as
    the log's time goes on, so a long-running host remembers what is recent, not all it answered."""

    hosts: frozenset[str] = frozenset()
    claims: dict[str, Claim] = field(default_factory=dict)
    # where each claim key was last placed; kept past a deletion (until it is forgotten) so that
    # a pool knows which of its hosts may still hold a deleted instance's guest
    placed: dict[str, str] = field(default_factory=dict)
    gone: Departures = field(default_factory=Departures)
    answered: dict[str, set[str]] = field(default_factory=dict)
    moves: MoveClaims = field(default_factory=MoveClaims)
    # how long (log time) a deleted instance is remembered: past it no input for it is in flight
    # (docs/decisions.md, "The spawner forgets deleted instances"); None: the process's setting
    forget_after_ms: int | None = None

    def was_answered(self, event: Event) -> bool:
        """This host appended an outcome caused by `event` (an input for its instance)."""
        return event.event_id in self.answered.get(event.aggregate_id, ())

    # what the claims placed on each host add up to, (vCPUs, RAM MB, disk GB): kept as claims come
    # and go, so a spawn's capacity check costs the same at ten guests as at ten thousand (summing
    # every claim of the pool on each one grew with the pool). A claim counts on the host it is
    # placed on while both it and its placement are remembered; `used` is that, nothing else.
    totals: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def used(self, host: str, leaving_out: str = "") -> tuple[int, int, int]:
        """vCPUs, RAM MB and disk GB claimed on `host` (but the claim under `leaving_out`)."""
        vcpus, ram_mb, disk_gb = self.totals.get(host, (0, 0, 0))
        left = self.claims.get(leaving_out) if leaving_out else None
        if left is not None and self.placed.get(leaving_out) == host:
            return vcpus - left.vcpus, ram_mb - left.ram_mb, disk_gb - left.disk_gb
        return vcpus, ram_mb, disk_gb

    def _count(self, key: str, sign: int) -> None:
        """Add (1) or take away (-1) what `key` counts on its host, if it counts anywhere."""
        claim, host = self.claims.get(key), self.placed.get(key)
        if claim is None or host is None:
            return
        vcpus, ram_mb, disk_gb = self.totals.get(host, (0, 0, 0))
        now = (vcpus + sign * claim.vcpus, ram_mb + sign * claim.ram_mb, disk_gb + sign * claim.disk_gb)
        if now == (0, 0, 0):
            self.totals.pop(host, None)
        else:
            self.totals[host] = now

    def hold(self, host: str, key: str, claim: Claim) -> None:
        """`claim` is held under `key` on `host`."""
        self._count(key, -1)
        self.claims[key] = claim
        self.placed[key] = host
        self._count(key, 1)

    def free(self, key: str, host: str | None = None) -> None:
        """What `key` holds goes (only if it is held on `host`, when named)."""
        if host is None or self.placed.get(key) == host:
            self._count(key, -1)
            self.claims.pop(key, None)

    def unplace(self, key: str) -> None:
        """Where `key` was last placed is forgotten (and what it held there no longer counts)."""
        self._count(key, -1)
        self.placed.pop(key, None)

    def guest_hosts(self, instance_id: str) -> set[str]:
        """The hosts of this pool the instance's guests were last placed on (either end of a resize)."""
        return {h for h in (self.placed.get(instance_id), self.placed.get(resize_key(instance_id))) if h}


def evolve(state: SpawnerState, event: Event) -> SpawnerState:
    """Fold these hosts' claims: held from spawned, freed by deleted, failed or an offload."""
    kind, body, instance_id = event.type, event.body, event.aggregate_id
    # An outcome whose cause is answered already is a record folded twice (the log holds it twice):
    # it changes no claim, or a claim taken since (the instance built here again) would be lost.
    again = event.causation_id in state.answered.get(instance_id, ())
    host = body.get("host")
    ours = host in state.hosts
    if kind == EventType.INSTANCE_SPAWNED and ours and instance_id not in state.gone \
            and not state.moves.moved_since(instance_id, event.sequence):
        if not again:
            state.hold(body["host"], instance_id, recorded_claim(body.get("claim"), body["flavor"]))
        _answer(state, event)
    elif kind == EventType.INSTANCE_DELETED:
        _gone(state, event)
        state.free(instance_id)
        state.free(resize_key(instance_id))
    elif kind == EventType.INSTANCE_FAILED and (body["final"] or ours):
        if body["final"]:
            _gone(state, event)
            state.free(instance_id)
        elif not again:
            state.free(instance_id, host)
        if ours:
            _answer(state, event)
    elif kind in _ACTION_OUTCOMES and ours and event.causation_id:
        # a volume's outcome is keyed by the volume; its input, by the server
        _answer(state, event, body["server_id"] if kind in _VOLUME_OUTCOMES else instance_id)
        if kind == EventType.INSTANCE_ACTION_COMPLETED and body.get("action") in OFFLOADING_ACTIONS:
            state.free(instance_id, host)  # shelved and offloaded: the guest left this host
            state.moves.left(instance_id, event.sequence)  # its spawned, read late, is stale
    elif kind in _MOVE_OUTCOMES:
        _answer(state, event)
        if instance_id not in state.gone:
            _apply_moves(state, event)
    state.gone.saw(event.occurred_at)
    return state


def _answer(state: SpawnerState, outcome: Event, instance_id: str | None = None) -> None:
    if outcome.causation_id:
        state.answered.setdefault(instance_id or outcome.aggregate_id, set()).add(outcome.causation_id)


def _gone(state: SpawnerState, event: Event) -> None:
    state.gone.add(event.aggregate_id, event.occurred_at)


def forget_the_long_gone(state: SpawnerState) -> SpawnerState:
    """Drop the instances deleted `forget_after_ms` before the newest log time folded, and what was
    answered for them. Their inputs were decided long since: a redelivery comes within a step's
    retry, a record the log holds twice is appended by the same step, and a build routed here
    after its deletion comes from a service that had not folded the deletion yet, within moments.
    Called by the runner only once the state topics are folded to their end (Service.settle), so
    a record of the instance that a replay reads late (its `spawned` after its `deleted`) still
    finds it gone."""
    for instance_id in state.gone.forget(state.forget_after_ms):
        state.answered.pop(instance_id, None)
        state.unplace(instance_id)
        state.unplace(resize_key(instance_id))
    return state


# what this host answered: an action's outcome, or a volume it attached or detached
_VOLUME_OUTCOMES = (EventType.VOLUME_ATTACHED, EventType.VOLUME_DETACHED)
_ACTION_OUTCOMES = (EventType.INSTANCE_ACTION_COMPLETED, EventType.INSTANCE_ACTION_FAILED, *_VOLUME_OUTCOMES)


def decide(state: SpawnerState, event: Event, ctx: StepContext) -> Sequence[Output]:
    """Spawn or destroy on the host the work is for; work routed here for another host is not ours."""
    pool = host_pool(ctx.deps)
    if event.type == EventType.INSTANCE_DELETED:
        return _leftover(state, event, pool)
    if event.type == EventType.IMAGE_DELETED:
        return _snapshot_dropped(event, pool)
    named = event.body.get("host")
    host = pool.get(named) if isinstance(named, str) else None
    if host is None:
        return []
    try:
        if event.type == EventType.INSTANCE_DELETE_DISPATCHED:
            host.destroy(event.aggregate_id)
            return [Output(deleted(event, host.name, "spawner"))]
        if event.type == EventType.INSTANCE_RESOURCES_RESOLVED:
            return _spawn(state, event, host)
        if event.type == EventType.INSTANCE_ACTION_REQUESTED:
            return _act(state, event, host)
        if event.type in _VOLUME_REQUESTS:
            return _volume_step(state, event, host)
        if event.type in _MOVE_INPUTS and not state.was_answered(event) \
                and event.aggregate_id not in state.gone:
            return _move(state, event, host)
    except HypervisorUnavailable as exc:
        # says nothing about the instance: decide it again once the hypervisor answers
        raise Transient(f"hypervisor of {host.name} out of reach: {exc}") from exc
    return []


# A pool up to this size looks for a deleted instance's guest on every host it serves (a lookup by
# UUID each), so a guest whose `spawned` was never appended (its spawner died first) goes too; a
# larger pool (thousands of simulated hosts) looks only where its claims placed the instance.
SEARCHED_POOL = 8


def host_pool(deps: ComputeHost | Mapping[str, ComputeHost]) -> Mapping[str, ComputeHost]:
    """The hosts a spawner serves, by name: its collaborators are one host or a pool of them."""
    return {deps.name: deps} if isinstance(deps, ComputeHost) else deps


def _leftover(state: SpawnerState, event: Event, pool: Mapping[str, ComputeHost]) -> Sequence[Output]:
    """A deleted server's guest on these hosts goes too, wherever the delete was routed: a resize
    in flight or awaiting its confirmation has a guest on each of its two hosts (nova's delete
    cleans up the migration's other end too). Nothing to say: the deletion is already recorded."""
    instance_id = event.aggregate_id
    names = pool.keys() if len(pool) <= SEARCHED_POOL else state.guest_hosts(instance_id) & pool.keys()
    for name in sorted(names):
        _destroy_or_reject(pool[name], instance_id, "the guest of deleted instance")
    return []


def _snapshot_dropped(event: Event, pool: Mapping[str, ComputeHost]) -> Sequence[Output]:
    """A deleted image's snapshot file on these hosts goes with it (glance deletes the image's
    data); a server booted from it keeps its own link (eventsvm.virt.images). Nothing to say."""
    for host in pool.values():
        try:
            host.drop_snapshot(event.aggregate_id)
        except OSError as exc:
            left = f"the file of deleted image {event.aggregate_id} is left on {host.name}: {exc}"
            raise Rejected(left) from exc
    return []


def _destroy_or_reject(host: ComputeHost, instance_id: str, what: str) -> None:
    """Destroy a guest no event will answer for; one that cannot go is a dead letter naming it."""
    try:
        host.destroy(instance_id)
    except HypervisorError as exc:
        raise Rejected(f"{what} {instance_id} is left on {host.name}: {exc}") from exc


def _spawn(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    instance_id, body = event.aggregate_id, event.body
    if instance_id in state.gone or instance_id in state.claims or state.was_answered(event):
        # gone, already spawned here (its `spawned` is folded), or a build this host answered
        # already (a record delivered twice, after the instance moved on): nothing changes
        return []
    flavor = body["spec"]["flavor"]
    if flavor["vcpus"] < 1 or flavor["ram_mb"] < 1 or body["attempt"] < 1:
        raise Rejected(
            f"impossible build: {flavor['vcpus']} vCPU, {flavor['ram_mb']} MB, attempt {body['attempt']}"
        )

    def failure(stage: str, reason: str, retryable: bool = True) -> Sequence[Output]:
        if not retryable and body["spec"].get("unshelve"):
            return [Output(unshelve_failed(event, host.name, reason))]  # it stays offloaded
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
    refusal = host.capacity.fits(state.used(host.name), claim.as_tuple())
    if refusal is not None:
        return failure("claim", refusal)
    if host.broken:
        return failure("spawn", f"Build of instance {instance_id} aborted on {host.name}: {host.broken}")
    try:
        domain = host.spawn(instance_id, body, event.user_id or "", event.project_id or "", event.occurred_at,
                            hostname=sanitized_hostname(body["spec"]["name"], instance_id))
        volumes = _boot_volumes(event, host)
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
    outputs = [Output(new_event(EventType.INSTANCE_SPAWNED, instance_id, spawned, cause=event)), *volumes]
    image = body["image"]
    if (image.get("properties") or {}).get("instance_uuid") == instance_id:
        # a server booted from a snapshot of itself is an unshelve (a build cannot boot from an image
        # taken of the server it builds): nova deletes the shelved image once the server runs again
        outputs.append(_image_event(EventType.IMAGE_DELETED, {"id": image["id"]}, event))
    return outputs


def _act(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    """A server action's host step: its outcome, or its failure with the guest as found (the
    server stays in the vm_state it had, as nova reverts the task_state of a failed action)."""
    instance_id, body = event.aggregate_id, event.body
    rule = SERVER_ACTIONS.get(body["action"])
    if rule is None or not rule.on_host or state.was_answered(event):
        return []
    if rule.name in _IMAGING_ACTIONS:
        return _imaging(state, event, host)
    if instance_id in state.gone:
        return []
    try:
        domain, note = host.act(instance_id, rule.name, body.get("reboot_type"))
    except HypervisorError as exc:
        found = host.hypervisor.state(instance_id)
        outcome = {"action": rule.name, "host": host.name, "vm_state": body["vm_state"],
                   "power_state": int(found if found is not None else DomainState.NOSTATE),
                   "reason": f"{rule.name} of instance {instance_id} failed: {exc}"}
        return [Output(new_event(EventType.INSTANCE_ACTION_FAILED, instance_id, outcome, cause=event))]
    done = {"action": rule.name, "host": host.name, "vm_state": rule.vm_state_after or body["vm_state"],
            "power_state": int(domain.state), "detail": note}
    return [Output(new_event(EventType.INSTANCE_ACTION_COMPLETED, instance_id, done, cause=event))]


# -- volumes (os-volume_attachments, and the volumes a server boots with) ----------------------------
_VOLUME_REQUESTS = (EventType.INSTANCE_VOLUME_ATTACH_REQUESTED, EventType.INSTANCE_VOLUME_DETACH_REQUESTED)


def _volume_ends(event: Event) -> dict[str, str]:
    return {"volume_id": event.body["volume_id"], "attachment_id": event.body["attachment_id"],
            "server_id": event.aggregate_id}


def _volume_step(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    """Attach or detach a volume on the guest; the volume's new state goes to the catalog, on the
    volume's partition (keyed by its id): attached (in-use), or detached (available again) when
    the attach failed; a detach that failed leaves it attached (cinder's roll_detaching)."""
    instance_id, body = event.aggregate_id, event.body
    if instance_id in state.gone or state.was_answered(event):
        return []
    volume_id, ends = body["volume_id"], _volume_ends(event)
    if event.type == EventType.INSTANCE_VOLUME_ATTACH_REQUESTED:
        try:
            attach_volume(host, instance_id, volume_id, body["device"], body["size_gb"])
        except HypervisorError as exc:
            ended = {**ends, "host": host.name, "reason": f"attach of volume {volume_id} failed: {exc}",
                     "delete_volume": False}
            return [Output(new_event(EventType.VOLUME_DETACHED, volume_id, ended, cause=event))]
        attached = {**ends, "host": host.name, "device": body["device"]}
        return [Output(new_event(EventType.VOLUME_ATTACHED, volume_id, attached, cause=event))]
    try:
        detach_volume(host, instance_id, body["device"] or "")
    except DomainNotFound:
        pass  # no guest holds it any more: detached all the same
    except HypervisorError:
        kept = {**ends, "host": host.name, "device": body["device"]}
        return [Output(new_event(EventType.VOLUME_ATTACHED, volume_id, kept, cause=event))]
    detached = {**ends, "host": host.name, "reason": None, "delete_volume": False}
    return [Output(new_event(EventType.VOLUME_DETACHED, volume_id, detached, cause=event))]


def _boot_volumes(event: Event, host: ComputeHost) -> list[Output]:
    """Attach the volumes a spawned server booted with (the API reserved them), or those an unshelved
    one holds; each is in-use on this host."""
    outputs: list[Output] = []
    instance_id = event.aggregate_id
    for volume in event.body.get("volumes") or []:
        attach_volume(host, instance_id, volume["volume_id"], volume["device"], volume["size_gb"])
        attached = {"volume_id": volume["volume_id"], "server_id": instance_id, "host": host.name,
                    # an unshelve reconnects the attachment the server holds; a boot's derives
                    "attachment_id": volume.get("attachment_id")
                    or boot_attachment_id(instance_id, volume["volume_id"]),
                    "device": volume["device"]}
        event_ = new_event(EventType.VOLUME_ATTACHED, volume["volume_id"], attached, cause=event)
        outputs.append(Output(event_))
    return outputs


# -- createImage and shelve: a snapshot fills its queued Glance image, or the image is dropped ----------
_IMAGING_ACTIONS = frozenset({"createImage", *OFFLOADING_ACTIONS})
# the partition of the catalog topic that holds every image's life (eventsvm.state.names.IMAGES), so
# the fill or the drop is folded after the image's create
_IMAGES_ROUTE = zlib.crc32(IMAGES.encode())


def _imaging(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    """createImage, shelve and shelveOffload (nova's snapshot_instance and shelve_instance): the
    snapshot fills its queued image; shelving stops the guest first and offloads it after (guest,
    disk and claim go). When the guest is gone or a step fails, the image is deleted (as nova
    deletes it) and the action fails with the server in the vm_state it had."""
    instance_id, body = event.aggregate_id, event.body
    rule = SERVER_ACTIONS[body["action"]]
    image_id: str | None = body.get("image_id")
    filled: dict[str, Any] = {}
    reason = None
    if instance_id in state.gone:
        reason = f"instance {instance_id} was deleted before its {rule.name} was carried out"
    else:
        try:
            if rule.name in OFFLOADING_ACTIONS:
                host.act(instance_id, "stop")  # nova shelves a cleanly stopped guest
            if image_id is not None:
                filled = host.snapshot(instance_id, image_id)
            if rule.name in OFFLOADING_ACTIONS:
                host.destroy(instance_id)
        except HypervisorError as exc:
            reason = f"{rule.name} of instance {instance_id} failed: {exc}"
    found = None if instance_id in state.gone else host.hypervisor.state(instance_id)
    outcome: dict[str, Any] = {"action": rule.name, "host": host.name, "vm_state": body["vm_state"],
                               "power_state": int(found if found is not None else DomainState.NOSTATE)}
    if reason is not None:
        dropped = [] if image_id is None else [_image_event(EventType.IMAGE_DELETED, {"id": image_id}, event)]
        return [*dropped, Output(new_event(EventType.INSTANCE_ACTION_FAILED, instance_id,
                                           {**outcome, "reason": reason}, cause=event))]
    done = {**outcome, "vm_state": rule.vm_state_after or body["vm_state"],
            "detail": None if image_id is None else f"image {image_id}"}
    image = [] if image_id is None else [
        _image_event(EventType.IMAGE_UPDATED, {"id": image_id, "status": "active", **filled}, event)]
    return [*image, Output(new_event(EventType.INSTANCE_ACTION_COMPLETED, instance_id, done, cause=event))]


def _image_event(kind: EventType, body: dict[str, Any], cause: Event) -> Output:
    """An image's fill or drop, on the catalog partition that holds the image's whole life."""
    return Output(new_event(kind, body["id"], body, cause=cause), route=_IMAGES_ROUTE)


# -- moves: rebuild, resize, confirmResize, revertResize (eventsvm.state.server_moves) -------------
# Each step is routed to the host that takes the next one (`host` and its slot); the destination
# starts the new guest before the source powers the old one off, so a failure at any step leaves a
# guest to go back to. A failure appends instance.move_failed, which frees the destination's claim.
_MOVE_OUTCOMES = (EventType.INSTANCE_MOVE_STEP, EventType.INSTANCE_MOVE_FAILED)
_MOVE_INPUTS = (EventType.INSTANCE_MOVE_REQUESTED, *_MOVE_OUTCOMES)


def _apply_moves(state: SpawnerState, event: Event) -> None:
    """This host's part of a resize's claim changes, the same the scheduler applies."""
    for change in state.moves.fresh(event):
        if change.host not in state.hosts:
            continue
        state.free(change.key, change.host)
        if change.claim is not None:
            state.hold(change.host, change.key, change.claim)


def _step(event: Event, step: str, host: str | None, route: int | None, **changes: object) -> Output:
    body = {**event.body, "step": step, "host": host, **changes}
    return Output(new_event(EventType.INSTANCE_MOVE_STEP, event.aggregate_id, body, cause=event), route=route)


def _failure(event: Event, step: str, reason: str, vm_state: str, host: str | None = None,
             route: int | None = None, power_state: int | None = None) -> Output:
    body = {**event.body, "step": step, "host": host, "vm_state": vm_state, "task_state": None,
            "power_state": power_state, "reason": reason, "code": 500}
    failure = new_event(EventType.INSTANCE_MOVE_FAILED, event.aggregate_id, body, cause=event)
    return Output(failure, route=route)


def _move(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    body, kind = event.body, event.type
    action, step = body["action"], body["step"]
    if kind == EventType.INSTANCE_MOVE_REQUESTED:
        if action == "rebuild":
            return _rebuild(event, host)
        if action == "confirmResize":
            return _confirm(event, host)
        if action == "revertResize":
            return _revert(event, host)
        return []
    if kind == EventType.INSTANCE_MOVE_FAILED:
        if step == RESIZE_INSTANCE:
            # the source could not hand over: the new guest goes (its claim went with the failure)
            _destroy_or_reject(host, event.aggregate_id, "the new guest of instance")
        return []
    if step == SCHEDULED:
        return _finish_resize(state, event, host)
    if step == FINISH_RESIZE:
        return _resize_instance(event, host)
    if step == REVERT_RESIZE:
        return _finish_revert(event, host)
    return []


def _spawn_guest(event: Event, host: ComputeHost, flavor: dict[str, object], stopped: bool = False) -> int:
    """Define and start the server's guest (from the event's Guest record) with `flavor`; a
    stopped server's guest is powered off again, as nova leaves it."""
    resolved = spawn_body(event.body["guest"], flavor)
    domain = host.spawn(event.aggregate_id, resolved, event.user_id or "", event.project_id or "",
                        event.occurred_at,
                        hostname=sanitized_hostname(resolved["spec"]["name"], event.aggregate_id))
    if stopped:
        domain = host.hypervisor.power_off(event.aggregate_id)
    return int(domain.state)


def _was_stopped(body: dict[str, object]) -> bool:
    # a resize keeps a stopped server stopped: its vm_state on the request, its guest's power after
    return body["vm_state"] == "stopped" or body.get("power_state") == int(DomainState.SHUTDOWN)


def _finish_resize(state: SpawnerState, event: Event, host: ComputeHost) -> Sequence[Output]:
    """The destination: check the claim (this spawner is its host's single writer), start the
    guest with the new flavor; on the source's own host, the old guest is replaced in place."""
    body, instance_id = event.body, event.aggregate_id
    claim = Claim.from_record(body["claim"])
    refusal = host.capacity.fits(state.used(host.name, leaving_out=resize_key(instance_id)),
                                    claim.as_tuple())
    if refusal is not None:
        return [_failure(event, "compute_prep_resize", refusal, body["vm_state"])]
    same_host, stopped = body["source_host"] == host.name, _was_stopped(body)
    try:
        if same_host:
            host.hypervisor.destroy(instance_id)
        power = _spawn_guest(event, host, body["flavor"], stopped)
    except (HypervisorError, InvalidGuestSpec) as exc:
        reason = f"Resize of instance {instance_id} failed on {host.name}: {exc}"
        try:
            host.destroy(instance_id)
            if same_host:
                # put the old guest back, as nova's finish_revert_migration would
                _spawn_guest(event, host, body["old_flavor"], stopped)
        except (HypervisorError, InvalidGuestSpec) as again:
            return [_failure(event, FINISH_RESIZE, f"{reason}; and the guest could not be put back: {again}",
                             "error")]
        return [_failure(event, FINISH_RESIZE, reason, body["vm_state"])]
    if same_host:
        return [_step(event, FINISH_RESIZE, None, None, vm_state="resized", task_state=None,
                      power_state=power)]
    return [_step(event, FINISH_RESIZE, body["source_host"], body["source_slot"],
                  task_state="resize_migrated", power_state=power)]


def _resize_instance(event: Event, host: ComputeHost) -> Sequence[Output]:
    """The source, once the destination runs the new guest: power the old one off and keep it
    defined, for a revert to start again (nova keeps the source disk until the confirm)."""
    body, instance_id = event.body, event.aggregate_id
    try:
        host.hypervisor.power_off(instance_id)
    except HypervisorError as exc:
        reason = f"Resize of instance {instance_id} failed on {host.name}: {exc}"
        return [_failure(event, RESIZE_INSTANCE, reason, body["vm_state"], body["dest_host"],
                         body["dest_slot"], power_state=int(DomainState.RUNNING))]
    return [_step(event, RESIZE_INSTANCE, None, None, vm_state="resized", task_state=None)]


def _confirm(event: Event, host: ComputeHost) -> Sequence[Output]:
    """The source gives up the old guest and its claim (nova's confirm_resize)."""
    body, instance_id = event.body, event.aggregate_id
    try:
        if body["dest_host"] != host.name:
            host.destroy(instance_id)
    except HypervisorError as exc:
        # nova leaves the instance in ERROR; the source's claim is given up all the same
        reason = f"Confirm of the resize of instance {instance_id} failed on {host.name}: {exc}"
        return [_failure(event, CONFIRM_RESIZE, reason, "error")]
    after = "stopped" if _was_stopped(body) else "active"
    return [_step(event, CONFIRM_RESIZE, None, None, vm_state=after, task_state=None)]


def _revert(event: Event, host: ComputeHost) -> Sequence[Output]:
    """The destination drops the new guest; on the source's own host it starts the old one."""
    body, instance_id = event.body, event.aggregate_id
    if body["source_host"] != host.name:
        try:
            host.destroy(instance_id)
        except HypervisorError as exc:
            reason = f"Revert of instance {instance_id} failed: {exc}"
            return [_failure(event, REVERT_RESIZE, reason, "error")]
        return [_step(event, REVERT_RESIZE, body["source_host"], body["source_slot"])]
    stopped = _was_stopped(body)
    try:
        host.hypervisor.destroy(instance_id)
        power = _spawn_guest(event, host, body["old_flavor"], stopped)
    except (HypervisorError, InvalidGuestSpec) as exc:
        reason = f"Revert of instance {instance_id} failed: {exc}"
        return [_failure(event, FINISH_REVERT_RESIZE, reason, "error")]
    return [_step(event, FINISH_REVERT_RESIZE, None, None, vm_state="stopped" if stopped else "active",
                  task_state=None, power_state=power)]


def _finish_revert(event: Event, host: ComputeHost) -> Sequence[Output]:
    """The source starts the old guest again (nova's finish_revert_resize)."""
    instance_id, stopped = event.aggregate_id, _was_stopped(event.body)
    try:
        # a server that was stopped is left stopped, its old guest as it was kept
        domain = host.hypervisor.power_off(instance_id) if stopped else host.hypervisor.power_on(instance_id)
    except HypervisorError as exc:
        reason = f"Revert of instance {instance_id} failed: {exc}"
        return [_failure(event, FINISH_REVERT_RESIZE, reason, "error")]
    return [_step(event, FINISH_REVERT_RESIZE, None, None, vm_state="stopped" if stopped else "active",
                  task_state=None, power_state=int(domain.state))]


def _rebuild(event: Event, host: ComputeHost) -> Sequence[Output]:
    """Same host, same ports: the guest is destroyed and defined again from the new image with a
    new root disk (nova's rebuild_instance); a stopped server is left stopped, as in nova."""
    body, instance_id = event.body, event.aggregate_id
    try:
        host.destroy(instance_id)
        power = _spawn_guest(event, host, body["flavor"], body["vm_state"] == "stopped")
    except (HypervisorError, InvalidGuestSpec) as exc:
        reason = f"Rebuild of instance {instance_id} failed: {exc}"
        return [_failure(event, REBUILD_INSTANCE, reason, "error")]
    after = "stopped" if body["vm_state"] == "stopped" else "active"
    return [_step(event, REBUILD_INSTANCE, None, None, vm_state=after, task_state=None, power_state=power)]


def service_for(host_name: str) -> Service[SpawnerState]:
    """The spawner of one host (its state only counts that host's claims)."""
    return pool_service(host_name, [host_name])


def pool_service(name: str, host_names: Sequence[str]) -> Service[SpawnerState]:
    """One spawner for the hosts `host_names`, named `spawner.<name>` (its state counts their claims)."""
    hosts = frozenset(host_names)
    if not hosts:
        raise ValueError("a spawner serves at least one host")
    served = host_names[0] if len(hosts) == 1 else f"{len(hosts)} hosts ({', '.join(sorted(hosts)[:3])}, ...)"
    return Service(
        name=f"spawner.{name}",
        # deleted: every partition (eventsvm.runtime.host_routing), for the guests a delete
        # routed elsewhere leaves here; the catalog: the images' partition, for the snapshot files
        # a deleted image leaves here
        inputs=(Topic.RESOURCES_RESOLVED, Topic.DELETE_DISPATCHED, Topic.ACTION_REQUESTED, Topic.DELETED,
                Topic.CATALOG),
        # the catalog for the snapshots it fills (its evolve steps over catalog events)
        state_topics=(
            Topic.SPAWNED, Topic.DELETED, Topic.FAILED, Topic.ACTION_COMPLETED, Topic.ACTION_FAILED,
            Topic.CATALOG, Topic.ACTION_REQUESTED),
        outputs=(Topic.SPAWNED, Topic.DELETED, Topic.FAILED, Topic.ACTION_COMPLETED, Topic.ACTION_FAILED,
                 Topic.CATALOG, Topic.ACTION_REQUESTED),
        initial_state=lambda: SpawnerState(hosts=hosts),
        evolve=evolve,
        decide=decide,
        settle=forget_the_long_gone,
        description=f"libvirt guests on {served}",
    )
