"""Server actions (stop, start, reboot, pause, suspend, lock ...) as plain functions: the state
rules, the spawner's host step on libvirt's test driver, and the instance fold of their events."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from consumers import spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.state.instances import InstanceProjection, evolve_projection, initial_projection, server_status
from eventsvm.state.server_actions import ActionRefused, check_state
from eventsvm.virt.compute_host import HostCapacity
from eventsvm.virt.hypervisor import DomainState
from tests.unit.test_deciders import folded, resolved_for, spawn


# -- the rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "vm_state", "task_state"), [
    ("stop", "active", "powering-off"), ("start", "stopped", "powering-on"), ("pause", "active", "pausing"),
    ("unpause", "paused", "unpausing"), ("suspend", "active", "suspending"),
    ("resume", "suspended", "resuming"),
    ("reboot", "active", "rebooting"),
])
def test_each_action_starts_from_its_vm_state(action: str, vm_state: str, task_state: str) -> None:
    assert check_state(action, vm_state, None, "SOFT") == task_state


@pytest.mark.parametrize(("action", "vm_state"), [
    ("stop", "stopped"), ("stop", "building"), ("start", "active"), ("pause", "paused"), ("pause", "stopped"),
    ("unpause", "active"), ("suspend", "paused"), ("resume", "active"), ("reboot", "stopped"),
])
def test_a_vm_state_that_forbids_the_action_is_named(action: str, vm_state: str) -> None:
    with pytest.raises(ActionRefused) as refused:
        check_state(action, vm_state, None, "SOFT")
    assert (refused.value.attr, refused.value.state) == ("vm_state", vm_state)


def test_a_hard_reboot_starts_from_any_powered_state_but_not_during_a_task() -> None:
    for vm_state in ("active", "stopped", "paused", "suspended"):
        assert check_state("reboot", vm_state, None, "HARD") == "rebooting_hard"
    with pytest.raises(ActionRefused, match="vm_state building"):
        check_state("reboot", "building", None, "HARD")
    with pytest.raises(ActionRefused, match="task_state deleting"):
        check_state("reboot", "active", "deleting", "HARD")
    with pytest.raises(ActionRefused, match="task_state powering-off"):
        check_state("stop", "active", "powering-off")


def test_lock_and_unlock_have_no_state_rule() -> None:
    assert check_state("lock", "building", "spawning") is None
    assert check_state("unlock", "error", None) is None


# -- the spawner's host step ------------------------------------------------------------------------
@pytest.fixture
def compute(tmp_path: Path) -> Any:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=4, ram_mb=1024, disk_gb=10))
    yield host
    host.hypervisor.close()


def action(cause: Event, name: str, vm_state: str, reboot_type: str | None = None, host: str = "h0") -> Event:
    task = None if name in ("lock", "unlock") else check_state(name, vm_state, None, reboot_type)
    body = {"action": name, "host": host, "vm_state": vm_state, "task_state": task,
            "reboot_type": reboot_type, "locked_reason": None, "locked_by": None}
    return new_event(EventType.INSTANCE_ACTION_REQUESTED, cause.aggregate_id, body, cause=cause)


def act(compute: Any, event: Event, history: list[Event]) -> dict[str, Any]:
    [output] = spawn(compute, event, history)
    return {"type": output.event.type, **output.event.body, "event": output.event}


def test_each_action_drives_the_domain_and_reports_where_it_left_the_server(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    iid, hv = resolved.aggregate_id, compute.hypervisor
    history, last = [spawned], spawned
    steps = [("stop", "active", None, "stopped", DomainState.SHUTDOWN),
             ("start", "stopped", None, "active", DomainState.RUNNING),
             ("pause", "active", None, "paused", DomainState.PAUSED),
             ("unpause", "paused", None, "active", DomainState.RUNNING),
             ("suspend", "active", None, "suspended", DomainState.SHUTDOWN),
             ("resume", "suspended", None, "active", DomainState.RUNNING),
             ("reboot", "active", "SOFT", "active", DomainState.RUNNING),
             ("reboot", "active", "HARD", "active", DomainState.RUNNING)]
    for name, before, reboot_type, after, power in steps:
        request = action(last, name, before, reboot_type)
        outcome = act(compute, request, history)
        assert outcome["type"] == EventType.INSTANCE_ACTION_COMPLETED, outcome
        assert (outcome["action"], outcome["vm_state"], outcome["power_state"]) == (name, after, int(power))
        assert outcome["detail"] is None
        assert hv.state(iid) is power
        if name == "suspend":
            assert hv.has_saved_memory(iid)
        last = outcome["event"]
        assert last.sequence == request.sequence + 1 and last.causation_id == request.event_id
        history += [request, last]
    # a redelivered action that was answered is not carried out again
    assert spawn(compute, request, history) == []


def test_a_hard_reboot_of_a_suspended_server_boots_afresh(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    suspended = act(compute, action(spawned, "suspend", "active"), [spawned])["event"]
    outcome = act(compute, action(suspended, "reboot", "suspended", "HARD"), [spawned, suspended])
    assert outcome["vm_state"] == "active"
    assert compute.hypervisor.state(resolved.aggregate_id) is DomainState.RUNNING
    assert not compute.hypervisor.has_saved_memory(resolved.aggregate_id)


class _DeafGuest:
    """A guest that ignores the ACPI shutdown request (a hung or ACPI-less OS)."""

    def __init__(self, hypervisor: Any) -> None:
        self._hypervisor = hypervisor

    def shutdown(self, instance_uuid: str) -> None:
        self.asked = instance_uuid

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hypervisor, name)


def test_a_soft_reboot_the_guest_ignores_falls_back_to_hard(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    deaf = replace(compute, hypervisor=_DeafGuest(compute.hypervisor), soft_reboot_timeout_s=0.2)
    outcome = act(deaf, action(spawned, "reboot", "active", "SOFT"), [spawned])
    assert outcome["type"] == EventType.INSTANCE_ACTION_COMPLETED and outcome["vm_state"] == "active"
    assert outcome["detail"] == "the guest did not shut down within 0.2 s; rebooted hard"
    assert compute.hypervisor.state(resolved.aggregate_id) is DomainState.RUNNING


def test_a_stop_the_guest_ignores_powers_it_off_after_the_timeout(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    deaf = replace(compute, hypervisor=_DeafGuest(compute.hypervisor), shutdown_timeout_s=0.2)
    outcome = act(deaf, action(spawned, "stop", "active"), [spawned])
    assert outcome["vm_state"] == "stopped" and outcome["power_state"] == int(DomainState.SHUTDOWN)
    assert "did not shut down within 0.2 s; powered off" in outcome["detail"]


def test_an_action_on_a_missing_guest_fails_and_leaves_the_vm_state(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    compute.hypervisor.destroy(resolved.aggregate_id)  # gone behind the cloud's back
    outcome = act(compute, action(spawned, "pause", "active"), [spawned])
    assert outcome["type"] == EventType.INSTANCE_ACTION_FAILED
    assert (outcome["vm_state"], outcome["power_state"]) == ("active", 0)
    assert "no domain for instance" in outcome["reason"]


def test_an_action_for_a_deleted_instance_or_another_host_or_a_lock_is_not_the_hosts(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    deleted = new_event(EventType.INSTANCE_DELETED, resolved.aggregate_id,
                        {"host": "h0", "terminated_at": 1, "stage": "spawner"}, cause=spawned)
    assert spawn(compute, action(spawned, "stop", "active"), [spawned, deleted]) == []
    assert spawn(compute, action(spawned, "stop", "active", host="h1"), [spawned]) == []
    assert spawn(compute, action(spawned, "lock", "active"), [spawned]) == []
    assert compute.hypervisor.state(resolved.aggregate_id) is DomainState.RUNNING


def test_the_spawner_remembers_only_its_own_hosts_answers() -> None:
    cause = new_event(EventType.INSTANCE_ACTION_REQUESTED, "i-1", {"action": "stop"})
    mine = new_event(EventType.INSTANCE_ACTION_COMPLETED, "i-1", {"host": "h0"}, cause=cause)
    other = new_event(EventType.INSTANCE_ACTION_FAILED, "i-1", {"host": "h1"}, cause=cause)
    assert folded(spawner.service_for("h0"), [mine]).answered == {"i-1": {cause.event_id}}
    assert folded(spawner.service_for("h0"), [other]).answered == {}


# -- the fold ------------------------------------------------------------------------------------------
def _fold(events: list[Event]) -> InstanceProjection:
    state = initial_projection()
    for event in events:
        evolve_projection(state, event)
    return state


def _done(cause: Event, vm_state: str, power: int, failed: bool = False) -> Event:
    body: dict[str, Any] = {"action": cause.body["action"], "host": "h0", "vm_state": vm_state,
                            "power_state": power}
    if failed:
        body["reason"] = "it broke"
        return new_event(EventType.INSTANCE_ACTION_FAILED, cause.aggregate_id, body, cause=cause)
    body["detail"] = None
    return new_event(EventType.INSTANCE_ACTION_COMPLETED, cause.aggregate_id, body, cause=cause)


def spawn_free_spawned() -> Event:
    """A `spawned` event, without a hypervisor."""
    body = {"host": "h0", "domain_name": "instance-1", "power_state": 1, "launched_at": 1, "attempt": 1,
            "flavor": {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram_mb": 512, "disk_gb": 1},
            "addresses": [], "claim": None}
    return new_event(EventType.INSTANCE_SPAWNED, "5f1d3c4e-0000-4000-8000-000000000001", body, sequence=5)


@pytest.mark.parametrize(
    ("name", "vm_state", "reboot_type", "status", "task", "after", "after_status", "power"), [
    ("stop", "active", None, "ACTIVE", "powering-off", "stopped", "SHUTOFF", 4),
    ("start", "stopped", None, "SHUTOFF", "powering-on", "active", "ACTIVE", 1),
    ("pause", "active", None, "ACTIVE", "pausing", "paused", "PAUSED", 3),
    ("unpause", "paused", None, "PAUSED", "unpausing", "active", "ACTIVE", 1),
    ("suspend", "active", None, "ACTIVE", "suspending", "suspended", "SUSPENDED", 4),
    ("resume", "suspended", None, "SUSPENDED", "resuming", "active", "ACTIVE", 1),
    ("reboot", "active", "SOFT", "REBOOT", "rebooting", "active", "ACTIVE", 1),
    ("reboot", "active", "HARD", "HARD_REBOOT", "rebooting_hard", "active", "ACTIVE", 1),
    ("reboot", "stopped", "HARD", "SHUTOFF", "rebooting_hard", "active", "ACTIVE", 1),
])
def test_the_fold_shows_the_task_then_the_outcome(
    name: str, vm_state: str, reboot_type: str | None, status: str, task: str, after: str, after_status: str,
    power: int,
) -> None:
    spawned = spawn_free_spawned()
    request = action(spawned, name, vm_state, reboot_type)
    inst = _fold([spawned, request]).instances[spawned.aggregate_id]
    assert (inst.status, inst.vm_state, inst.task_state) == (status, vm_state, task)
    done = _done(request, after, power)
    for order in ([spawned, request, done], [done, request, spawned], [request, spawned, done]):
        inst = _fold(order).instances[spawned.aggregate_id]
        shown = (inst.status, inst.vm_state, inst.task_state, inst.power_state)
        assert shown == (after_status, after, None, power)


def test_a_failed_action_ends_the_task_where_the_server_was() -> None:
    spawned = spawn_free_spawned()
    request = action(spawned, "pause", "active")
    inst = _fold([spawned, request, _done(request, "active", 4, failed=True)]).instances[spawned.aggregate_id]
    assert (inst.status, inst.vm_state, inst.task_state, inst.power_state) == ("ACTIVE", "active", None, 4)


def test_a_delete_during_an_action_ends_deleted_in_any_read_order() -> None:
    spawned = spawn_free_spawned()
    request = action(spawned, "stop", "active")
    iid = spawned.aggregate_id
    delete = new_event(EventType.INSTANCE_DELETE_REQUESTED, iid, {"host": "h0"}, cause=request)
    done = _done(request, "stopped", 4)
    done.event_id = "ffffffff-ffff-4fff-8fff-ffffffffffff"  # the outcome wins the fork with the delete
    gone = new_event(EventType.INSTANCE_DELETED, spawned.aggregate_id,
                     {"host": "h0", "terminated_at": 9, "stage": "spawner"}, cause=delete)
    before = [spawned, request, delete, done]
    for seed in range(8):
        random.Random(seed).shuffle(before)
        # whichever of the fork (the delete, the stop's outcome) wins, the task is deleting
        assert _fold(before).instances[iid].task_state == "deleting"
    events = [spawned, request, delete, done, gone]
    for seed in range(5):
        random.Random(seed).shuffle(events)
        inst = _fold(events).instances[spawned.aggregate_id]
        shown = (inst.status, inst.vm_state, inst.task_state, inst.power_state)
        assert shown == ("DELETED", "deleted", None, 0)


def test_lock_and_unlock_are_folded_at_once_and_the_newest_wins() -> None:
    spawned = spawn_free_spawned()
    lock = action(spawned, "lock", "active")
    lock.body.update(locked_reason="maintenance", locked_by="admin")
    unlock = action(lock, "unlock", "active")
    inst = _fold([spawned, lock]).instances[spawned.aggregate_id]
    assert (inst.locked, inst.locked_reason, inst.locked_by) == (True, "maintenance", "admin")
    assert (inst.status, inst.task_state) == ("ACTIVE", None)  # a lock is no task
    for order in ([spawned, lock, unlock], [unlock, lock, spawned]):
        inst = _fold(order).instances[spawned.aggregate_id]
        assert (inst.locked, inst.locked_reason, inst.locked_by) == (False, None, None)


def test_nova_status_of_vm_and_task_states() -> None:
    assert server_status("active", "rebooting") == "REBOOT"
    assert server_status("active", "rebooting_hard") == "HARD_REBOOT"
    assert server_status("active", "deleting") == "ACTIVE"
    assert server_status("stopped", "rebooting_hard") == "SHUTOFF"
    assert server_status("suspended", None) == "SUSPENDED"


def test_the_shutdown_timeouts_are_flags_of_up_and_run() -> None:
    from eventsvm.app.cli import build_parser

    up = build_parser().parse_args(["up", "--shutdown-timeout", "2", "--soft-reboot-timeout", "3"])
    assert (up.shutdown_timeout, up.soft_reboot_timeout) == (2.0, 3.0)
    run = build_parser().parse_args(["run", "spawner", "--host", "h0"])
    assert (run.shutdown_timeout, run.soft_reboot_timeout) == (60.0, 120.0)  # nova's defaults


def test_history_reads_the_same_actions_from_the_log_and_from_the_model() -> None:
    from eventsvm.projections.history import Stage, instance_actions, timeline_lines
    from eventsvm.projections.readmodel import Models

    spawned = spawn_free_spawned()
    spawned.request_id = "req-create"
    reboot = action(spawned, "reboot", "active", "HARD")
    reboot.request_id = "req-reboot"
    done = _done(reboot, "active", 1)
    done.body["detail"] = "the guest did not shut down within 1 s; rebooted hard"
    pause = action(done, "pause", "active")
    pause.request_id = "req-pause"
    failed = _done(pause, "active", 1, failed=True)
    lock = action(failed, "lock", "active")
    lock.request_id = "req-lock"
    events = [spawned, reboot, done, pause, failed, lock]
    for i, event in enumerate(events):
        event.occurred_at = 1_000 * (i + 1)
    models = Models(instances=_fold(events))
    for source in (events, models):
        actions = {a["action"]: a for a in instance_actions(source, spawned.aggregate_id)}
        assert [(e["event"], e["result"]) for e in actions["reboot"]["events"]] == [
            ("compute_reboot_instance", "Success")]
        assert [(e["event"], e["result"]) for e in actions["pause"]["events"]] == [
            ("compute_pause_instance", "Error")]
        assert actions["pause"]["message"] == "Error" and actions["reboot"]["message"] is None
        assert [e["event"] for e in actions["lock"]["events"]] == ["api_lock"]
    lines = "\n".join(timeline_lines([Stage(e, "t", 0, i, e.occurred_at, "d") for i, e in enumerate(events)]))
    assert "action=reboot (HARD)" in lines and "rebooted hard" in lines
    assert "pause failed: it broke" in lines


def test_trigger_crash_dump_sends_the_guest_an_nmi_and_leaves_its_state(compute: Any) -> None:
    resolved = resolved_for()
    spawned = spawn(compute, resolved)[0].event
    request = action(spawned, "trigger_crash_dump", "active")
    assert request.body["task_state"] is None  # nova sets no task for it
    outcome = act(compute, request, [spawned])
    assert outcome["type"] == EventType.INSTANCE_ACTION_COMPLETED, outcome
    assert (outcome["vm_state"], outcome["power_state"]) == ("active", int(DomainState.RUNNING))
    # a guest that is not running cannot take one: the action fails, the server stays as it was
    compute.hypervisor.power_off(resolved.aggregate_id)
    again = action(outcome["event"], "trigger_crash_dump", "active")
    failed = act(compute, again, [spawned, request, outcome["event"]])
    assert failed["type"] == EventType.INSTANCE_ACTION_FAILED and failed["vm_state"] == "active"
    assert "trigger crash dump" in failed["reason"]
    with pytest.raises(ActionRefused):
        check_state("trigger_crash_dump", "stopped", None)
