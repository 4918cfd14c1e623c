"""Resize, confirmResize, revertResize and rebuild as plain functions: the state rules, the claim
changes the scheduler and the spawners share, the scheduler's choice of a destination, the
spawners' host steps on libvirt's test driver, and the instance fold of the whole saga."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers import scheduler, spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.scheduler.claims import Claim
from eventsvm.state import server_moves as moves
from eventsvm.state.instances import Instance, evolve_projection, initial_projection
from eventsvm.state.server_actions import ActionRefused
from eventsvm.state.server_moves import ClaimChange, check_move_state, claim_changes, resize_key
from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.hypervisor import DomainState
from tests.factories import move_body
from tests.unit.test_deciders import body_of, ctx, folded, host_registered, resolved_for, spawn

RNG = random.Random(13)


# -- the rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "vm_state", "task_state"), [
    ("resize", "active", "resize_prep"), ("resize", "stopped", "resize_prep"),
    ("confirmResize", "resized", None), ("revertResize", "resized", "resize_reverting"),
    ("rebuild", "active", "rebuilding"), ("rebuild", "stopped", "rebuilding"),
    ("rebuild", "error", "rebuilding"),
])
def test_each_move_starts_from_nova_s_states(action: str, vm_state: str, task_state: str | None) -> None:
    assert check_move_state(action, vm_state, None) == task_state


@pytest.mark.parametrize(("action", "vm_state"), [
    ("resize", "resized"), ("resize", "paused"), ("confirmResize", "active"), ("revertResize", "active"),
    ("rebuild", "paused"), ("rebuild", "building"),
])
def test_a_vm_state_that_forbids_the_move_is_named(action: str, vm_state: str) -> None:
    with pytest.raises(ActionRefused) as refused:
        check_move_state(action, vm_state, None)
    assert (refused.value.attr, refused.value.state) == ("vm_state", vm_state)
    with pytest.raises(ActionRefused, match="task_state deleting"):
        check_move_state("resize", "active", "deleting")


# -- the claims -------------------------------------------------------------------------------------
def move(kind: EventType, instance_id: str = "i-1", **changes: Any) -> Event:
    return new_event(kind, instance_id, move_body(RNG, **changes), user_id="u", project_id="p")


def test_a_resize_holds_a_second_claim_until_it_is_confirmed_or_reverted() -> None:
    new = Claim(2, 4096, 40)
    dest = {"dest_host": "compute-2", "claim": new.as_record()}
    assert claim_changes(move(EventType.INSTANCE_MOVE_REQUESTED)) == []
    assert claim_changes(move(EventType.INSTANCE_MOVE_STEP, step=moves.SCHEDULED, **dest)) == [
        ClaimChange("compute-2", resize_key("i-1"), new)]
    assert claim_changes(move(EventType.INSTANCE_MOVE_STEP, step=moves.FINISH_RESIZE, **dest)) == []
    assert claim_changes(move(EventType.INSTANCE_MOVE_STEP, action="confirmResize", step=moves.CONFIRM_RESIZE,
                              **dest)) == [
        ClaimChange("compute-1", "i-1", None), ClaimChange("compute-2", resize_key("i-1"), None),
        ClaimChange("compute-2", "i-1", new)]
    for step in (moves.REVERT_RESIZE, moves.FINISH_REVERT_RESIZE):
        reverted = move(EventType.INSTANCE_MOVE_STEP, action="revertResize", step=step, **dest)
        assert claim_changes(reverted) == [ClaimChange("compute-2", resize_key("i-1"), None)]
    assert claim_changes(move(EventType.INSTANCE_MOVE_FAILED, step="compute_prep_resize", **dest)) == [
        ClaimChange("compute-2", resize_key("i-1"), None)]
    # a failure before a destination was chosen, and a rebuild, change no claim
    assert claim_changes(move(EventType.INSTANCE_MOVE_FAILED, step=moves.SCHEDULED)) == []
    rebuilt = move(EventType.INSTANCE_MOVE_STEP, action="rebuild", step=moves.REBUILD_INSTANCE)
    assert claim_changes(rebuilt) == []


# -- the scheduler ----------------------------------------------------------------------------------
def placed_on(host: str, instance_id: str) -> Event:
    claim = {"vcpus": 1, "ram_mb": 2048, "disk_gb": 20}
    body = {"spec": {"flavor": move_body(RNG)["old_flavor"]}, "host": host, "alternates": [], "attempt": 1,
            "claim": claim}
    return new_event(EventType.INSTANCE_SCHEDULED, instance_id, body)


def test_the_scheduler_sends_a_resize_to_another_host_and_claims_there() -> None:
    hosts = [host_registered("compute-1", 0, ram_mb=65536), host_registered("compute-2", 1, ram_mb=65536)]
    history = [*hosts, placed_on("compute-1", "i-1")]
    request = move(EventType.INSTANCE_MOVE_REQUESTED)
    [output] = scheduler.decide(folded(scheduler.SERVICE, history), request, ctx())
    body = body_of(EventType.INSTANCE_MOVE_STEP, [output])
    assert (body["step"], body["host"], body["dest_host"], body["dest_slot"], output.route) == (
        moves.SCHEDULED, "compute-2", "compute-2", 1, 1)
    assert body["claim"] == {"vcpus": 2, "ram_mb": 4096, "disk_gb": 40}
    state = folded(scheduler.SERVICE, [*history, output.event])
    assert set(state.hosts["compute-2"].claims) == {resize_key("i-1")}
    assert state.hosts["compute-2"].ram_mb_used == 4096
    # a redelivered request: the destination is chosen already
    assert scheduler.decide(state, request, ctx()) == []
    # confirmed: the source is free, the destination's claim is the instance's own
    confirming = {**body, "action": "confirmResize", "step": moves.CONFIRM_RESIZE}
    confirmed = new_event(EventType.INSTANCE_MOVE_STEP, "i-1", confirming, cause=output.event)
    state = folded(scheduler.SERVICE, [*history, output.event, confirmed])
    assert (set(state.hosts["compute-1"].claims), set(state.hosts["compute-2"].claims)) == (set(), {"i-1"})
    assert state.placements == {"i-1": "compute-2"} and state.resizing == {}
    # read in another order (the steps ride different partitions): the same claims
    state = folded(scheduler.SERVICE, [*hosts, confirmed, output.event, placed_on("compute-1", "i-1")])
    assert (set(state.hosts["compute-1"].claims), set(state.hosts["compute-2"].claims)) == (set(), {"i-1"})


def test_a_resize_stays_on_its_host_only_where_the_operator_allows_it() -> None:
    history = [host_registered("compute-1", 0, ram_mb=65536), placed_on("compute-1", "i-1")]
    request = move(EventType.INSTANCE_MOVE_REQUESTED)
    state = folded(scheduler.SERVICE, history)
    [refused] = scheduler.decide(state, request, ctx())
    body = body_of(EventType.INSTANCE_MOVE_FAILED, [refused])
    assert body["reason"].startswith("No valid host was found.") and body["vm_state"] == "active"
    assert (body["task_state"], refused.route) == (None, 0)
    same = scheduler.SchedulerSettings(allow_resize_to_same_host=True)
    [output] = scheduler.decide(state, request, ctx(same))
    assert body_of(EventType.INSTANCE_MOVE_STEP, [output])["dest_host"] == "compute-1"
    state = folded(scheduler.SERVICE, [*history, output.event])
    # both claims on the one host until the resize ends, as nova's placement holds them
    assert set(state.hosts["compute-1"].claims) == {"i-1", resize_key("i-1")}


# -- the spawners -----------------------------------------------------------------------------------
@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[dict[str, ComputeHost]]:
    made = {name: simulated_host(tmp_path, name, slot, HostCapacity(vcpus=8, ram_mb=8192, disk_gb=100))
            for slot, name in enumerate(("h0", "h1"))}
    yield made
    for host in made.values():
        host.hypervisor.close()


def booted(hosts: dict[str, ComputeHost]) -> tuple[Event, Event]:
    """A server of m1.tiny running on h0: its resources-resolved and spawned events."""
    resolved = resolved_for("h0")
    [output] = spawn(hosts["h0"], resolved)
    return resolved, output.event


def resize_requested(resolved: Event, spawned: Event, dest: str, **changes: Any) -> Event:
    body = resolved.body
    flavor = {**spawned.body["flavor"], "id": "3", "name": "m1.medium", "vcpus": 2, "ram_mb": 4096,
              "disk_gb": 40}
    guest = {"name": body["spec"]["name"], "image": body["image"], "ports": body["ports"]}
    moved = move_body(RNG, host="h0", source_host="h0", source_slot=0, flavor=flavor,
                      old_flavor=spawned.body["flavor"], claim={"vcpus": 2, "ram_mb": 4096, "disk_gb": 40},
                      old_claim=spawned.body["claim"], guest=guest)
    asked = new_event(EventType.INSTANCE_MOVE_REQUESTED, resolved.aggregate_id, moved, cause=spawned)
    step = {**moved, "step": moves.SCHEDULED, "host": dest, "dest_host": dest, "dest_slot": int(dest[1]),
            "task_state": "resize_migrating", **changes}
    return new_event(EventType.INSTANCE_MOVE_STEP, resolved.aggregate_id, step, cause=asked)


def instance_after(events: list[Event]) -> Instance:
    fold = initial_projection()
    for event in events:
        evolve_projection(fold, event)
    return fold.instances[events[-1].aggregate_id]


def verify_resize_on_h1(hosts: dict[str, ComputeHost], vm_state: str = "active") -> list[Event]:
    """A server of m1.tiny booted on h0 and resized to m1.medium on h1, awaiting confirmation: the
    saga's events from the boot's spawned on."""
    resolved, spawned = booted(hosts)
    if vm_state == "stopped":
        hosts["h0"].hypervisor.power_off(resolved.aggregate_id)
    scheduled = resize_requested(resolved, spawned, "h1", vm_state=vm_state)
    history = [spawned, scheduled]
    [finished] = spawn(hosts["h1"], scheduled, history)
    history.append(finished.event)
    [migrated] = spawn(hosts["h0"], finished.event, history)
    return [*history, migrated.event]


def asked(history: list[Event], action: str, host: str, task_state: str | None) -> Event:
    """The API's request of a confirm or a revert after the saga so far."""
    body = {**history[-1].body, "action": action, "step": f"api_{action}", "host": host,
            "vm_state": "resized", "task_state": task_state}
    return new_event(EventType.INSTANCE_MOVE_REQUESTED, history[-1].aggregate_id, body, cause=history[-1])


def test_a_resize_to_another_host_confirmed(hosts: dict[str, ComputeHost]) -> None:
    history = verify_resize_on_h1(hosts)
    server = history[0].aggregate_id
    scheduled, finished, migrated = history[1:]
    # the destination started the new guest and handed over to the source ...
    assert (finished.body["step"], finished.body["host"], finished.body["task_state"]) == (
        moves.FINISH_RESIZE, "h0", "resize_migrated")
    assert hosts["h1"].hypervisor.state(server) is DomainState.RUNNING
    assert spawn(hosts["h1"], scheduled, history) == []  # answered already
    # ... which powered the old guest off and kept it: VERIFY_RESIZE
    assert (migrated.body["step"], migrated.body["vm_state"], migrated.body["host"]) == (
        moves.RESIZE_INSTANCE, "resized", None)
    assert hosts["h0"].hypervisor.state(server) is DomainState.SHUTDOWN
    assert set(folded(spawner.service_for("h0"), history).claims) == {server}
    assert set(folded(spawner.service_for("h1"), history).claims) == {resize_key(server)}
    # confirmed: the source's guest and claim go
    confirm = asked(history, "confirmResize", "h0", None)
    [confirmed] = spawn(hosts["h0"], confirm, history)
    assert body_of(EventType.INSTANCE_MOVE_STEP, [confirmed])["step"] == moves.CONFIRM_RESIZE
    assert hosts["h0"].hypervisor.state(server) is None
    history += [confirm, confirmed.event]
    assert folded(spawner.service_for("h0"), history).claims == {}
    assert set(folded(spawner.service_for("h1"), history).claims) == {server}
    inst = instance_after(history)
    assert (inst.status, inst.host, inst.flavor["name"] if inst.flavor else None, inst.move) == (
        "ACTIVE", "h1", "m1.medium", None)


def test_a_stopped_server_stays_stopped_through_a_resize_and_its_confirm(
    hosts: dict[str, ComputeHost],
) -> None:
    history = verify_resize_on_h1(hosts, vm_state="stopped")
    server = history[0].aggregate_id
    assert hosts["h1"].hypervisor.state(server) is DomainState.SHUTDOWN
    assert instance_after(history).power_state == int(DomainState.SHUTDOWN)
    confirm = asked(history, "confirmResize", "h0", None)
    confirm.body["power_state"] = instance_after(history).power_state  # as the API carries it
    [confirmed] = spawn(hosts["h0"], confirm, history)
    inst = instance_after([*history, confirm, confirmed.event])
    assert (inst.status, inst.vm_state, inst.host) == ("SHUTOFF", "stopped", "h1")


def test_a_resize_to_another_host_reverted(hosts: dict[str, ComputeHost]) -> None:
    history = verify_resize_on_h1(hosts)
    server = history[0].aggregate_id
    assert (instance_after(history).status, instance_after(history).host) == ("VERIFY_RESIZE", "h1")
    revert = asked(history, "revertResize", "h1", "resize_reverting")
    [dropped] = spawn(hosts["h1"], revert, [*history, revert])
    body = body_of(EventType.INSTANCE_MOVE_STEP, [dropped])
    assert (body["step"], body["host"], dropped.route) == (moves.REVERT_RESIZE, "h0", 0)
    assert hosts["h1"].hypervisor.state(server) is None
    history += [revert, dropped.event]
    [back] = spawn(hosts["h0"], dropped.event, history)
    assert body_of(EventType.INSTANCE_MOVE_STEP, [back])["step"] == moves.FINISH_REVERT_RESIZE
    assert hosts["h0"].hypervisor.state(server) is DomainState.RUNNING
    history.append(back.event)
    assert folded(spawner.service_for("h1"), history).claims == {}
    assert set(folded(spawner.service_for("h0"), history).claims) == {server}
    inst = instance_after(history)
    assert (inst.status, inst.host, inst.flavor["name"] if inst.flavor else None, inst.task_state) == (
        "ACTIVE", "h0", "m1.tiny", None)


def test_a_destination_without_room_refuses_and_the_server_stays(hosts: dict[str, ComputeHost]) -> None:
    resolved, spawned = booted(hosts)
    server = resolved.aggregate_id
    scheduled = resize_requested(resolved, spawned, "h1", claim={"vcpus": 2, "ram_mb": 9000, "disk_gb": 40})
    [refused] = spawn(hosts["h1"], scheduled, [spawned, scheduled])
    body = body_of(EventType.INSTANCE_MOVE_FAILED, [refused])
    assert (body["step"], body["vm_state"], body["task_state"]) == ("compute_prep_resize", "active", None)
    assert "Insufficient compute resources: Free memory" in body["reason"]
    assert hosts["h1"].hypervisor.state(server) is None
    history = [spawned, scheduled, refused.event]
    assert folded(spawner.service_for("h1"), history).claims == {}
    inst = instance_after([resolved, *history])
    assert (inst.status, inst.host, inst.fault is not None) == ("ACTIVE", "h0", True)


def test_a_resize_on_the_same_host_replaces_the_guest_in_one_step(hosts: dict[str, ComputeHost]) -> None:
    resolved, spawned = booted(hosts)
    server = resolved.aggregate_id
    scheduled = resize_requested(resolved, spawned, "h0")
    [finished] = spawn(hosts["h0"], scheduled, [spawned, scheduled])
    body = body_of(EventType.INSTANCE_MOVE_STEP, [finished])
    assert (body["step"], body["vm_state"], body["host"]) == (moves.FINISH_RESIZE, "resized", None)
    assert hosts["h0"].hypervisor.list_instances() == [server]
    assert hosts["h0"].hypervisor.state(server) is DomainState.RUNNING


def test_a_rebuild_defines_the_guest_again_on_its_host(hosts: dict[str, ComputeHost]) -> None:
    resolved, spawned = booted(hosts)
    server = resolved.aggregate_id
    body = resolved.body
    guest = {"name": "renamed", "image": body["image"], "ports": body["ports"]}
    request = new_event(EventType.INSTANCE_MOVE_REQUESTED, server, move_body(
        RNG, action="rebuild", step="api_rebuild", host="h0", flavor=spawned.body["flavor"], guest=guest,
        task_state="rebuilding", name="renamed", source_host=None, source_slot=None), cause=spawned)
    [rebuilt] = spawn(hosts["h0"], request, [spawned, request])
    done = body_of(EventType.INSTANCE_MOVE_STEP, [rebuilt])
    assert (done["step"], done["vm_state"], done["task_state"]) == (moves.REBUILD_INSTANCE, "active", None)
    assert hosts["h0"].hypervisor.state(server) is DomainState.RUNNING
    inst = instance_after([resolved, spawned, request])
    assert (inst.status, inst.name) == ("REBUILD", "renamed")
    inst = instance_after([resolved, spawned, request, rebuilt.event])
    assert (inst.status, inst.host) == ("ACTIVE", "h0")
    assert [a[5] for a in inst.actions[-2:]] == ["rebuild", moves.REBUILD_INSTANCE]


@pytest.mark.parametrize("dest", ["h0", "h1"])
def test_a_guest_the_destination_cannot_start_leaves_the_server_as_it_was(
    hosts: dict[str, ComputeHost], dest: str,
) -> None:
    resolved, spawned = booted(hosts)
    server = resolved.aggregate_id
    scheduled = resize_requested(resolved, spawned, dest)
    scheduled.body["flavor"] = {**scheduled.body["flavor"], "ram_mb": 0}  # no guest can have it
    [failed] = spawn(hosts[dest], scheduled, [spawned, scheduled])
    body = body_of(EventType.INSTANCE_MOVE_FAILED, [failed])
    assert (body["step"], body["vm_state"], body["host"]) == (moves.FINISH_RESIZE, "active", None)
    assert "at least 1 vCPU and 1 MiB" in body["reason"]
    # the old guest runs where it ran; no new one anywhere
    assert hosts["h0"].hypervisor.state(server) is DomainState.RUNNING
    assert hosts["h1"].hypervisor.list_instances() == []
    history = [spawned, scheduled, failed.event]
    assert folded(spawner.service_for(dest), history).claims == (
        {server: Claim.from_record(spawned.body["claim"])} if dest == "h0" else {})
    inst = instance_after([resolved, *history])
    assert (inst.status, inst.host, inst.flavor == spawned.body["flavor"]) == ("ACTIVE", "h0", True)
