"""An unshelve whose spawn fails on its last attempt leaves the server SHELVED_OFFLOADED with no
task and no host, the error on its unshelve action and as its fault, as nova's compute
unshelve_instance leaves it (reverts_task_state, wrap_instance_fault, the allocations deleted): not
ERROR. The claim on the failed host is given up, the server keeps its quota, and a later unshelve
is placed again. The events come from the real deciders (scheduler, resolver, spawner on libvirt's
test driver, authenticator) and are folded by each service and the read model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_deciders import SEED, authenticated, ctx, folded, host_registered, resolve, schedule, spawn
from test_server_shelve import command
from test_unshelve_fold import only, shown, states

from consumers import authenticator, scheduler, spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.virt.compute_host import HostCapacity

OFFLOADED = ("SHELVED_OFFLOADED", "shelved_offloaded", None)


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[Any]:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=8, ram_mb=65536, disk_gb=100))
    yield host
    host.hypervisor.close()


def offloaded(compute: Any, hosts: list[Event]) -> list[Event]:
    """A server authenticated, booted on h0 and shelved (offloaded at once), as the deciders write it."""
    auth = authenticated()
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(auth, hosts))
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, hosts))
    spawned = only(EventType.INSTANCE_SPAWNED, spawn(compute, resolved))
    shelve = command(spawned, "shelve", "active", "h0", None)
    done = only(EventType.INSTANCE_ACTION_COMPLETED, spawn(compute, shelve, [spawned]))
    return [auth, placed, resolved, spawned, shelve, done]


def test_a_spawn_failing_on_the_last_attempt_leaves_the_server_shelved_offloaded(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = offloaded(compute, hosts)
    server = boot[0].aggregate_id
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    assert (placed.body["host"], placed.body["alternates"]) == ("h0", [])  # its last attempt
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, [*hosts, *boot, unshelve]))
    compute.broken = "disk on fire"
    retry = only(EventType.INSTANCE_FAILED, spawn(compute, resolved, boot))
    assert retry.body["retryable"] and not retry.body["final"]
    history = [*hosts, *boot, unshelve, placed, resolved, retry]
    outputs = schedule(retry, history)
    assert [o.event.type for o in outputs] == [EventType.INSTANCE_ACTION_FAILED]  # no final instance.failed
    gave_up = outputs[0].event
    assert (gave_up.body["action"], gave_up.body["vm_state"], gave_up.body["host"]) == (
        "unshelve", "shelved_offloaded", "h0")
    assert "Exceeded maximum number of retries" in gave_up.body["reason"]
    assert "disk on fire" in gave_up.body["reason"]
    history.append(gave_up)

    inst = shown(history[1:])
    assert states(inst) == OFFLOADED and inst.host is None and inst.power_state == 0
    assert inst.fault is not None and "disk on fire" in inst.fault["message"]
    assert inst.actions[-1][0] == EventType.INSTANCE_ACTION_FAILED.value
    # no claim is held anywhere: not by the scheduler, not by the failed host's spawner
    placing = folded(scheduler.SERVICE, history)
    assert server not in placing.placements and placing.hosts["h0"].claims == {}
    assert server not in placing.gone
    assert folded(spawner.service_for("h0"), history).claims == {}
    assert compute.hypervisor.state(server) is None
    # the server keeps its quota: nothing of it is given back, nothing counted twice
    quota = folded(authenticator.SERVICE, [*SEED, *history])
    assert quota.usage[boot[0].project_id or ""].servers == {server: (1, 512)}
    # the same failure delivered again is answered once
    assert schedule(retry, history) == []
    # and a later unshelve is placed again, on the host that works again
    compute.broken = None
    again = command(gave_up, "unshelve", "shelved_offloaded", None, None)
    replaced = only(EventType.INSTANCE_SCHEDULED, schedule(again, history))
    assert replaced.body["host"] == "h0" and replaced.body["spec"]["unshelve"] is True


def test_an_unshelve_the_resolver_refuses_fails_as_the_unshelve_and_frees_its_claim(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = offloaded(compute, hosts)
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    # the image it is to spawn from is gone
    missing = "6f1c2b44-0000-4000-8000-000000000000"
    gone = {**placed.body, "spec": {**placed.body["spec"], "image_id": missing}}
    placed = new_event(EventType.INSTANCE_SCHEDULED, placed.aggregate_id, gone, cause=unshelve)
    history = [*hosts, *boot, unshelve, placed]
    [refused] = [o.event for o in resolve(placed, history)]
    assert refused.type == EventType.INSTANCE_ACTION_FAILED
    assert "could not be found" in refused.body["reason"] and refused.body["host"] == "h0"
    assert folded(scheduler.SERVICE, history).placements == {placed.aggregate_id: "h0"}
    after = folded(scheduler.SERVICE, [*history, refused])
    assert after.placements == {} and after.hosts["h0"].claims == {}
    assert states(shown([*history[1:], refused])) == OFFLOADED


def test_a_boot_failing_on_its_last_attempt_still_ends_in_error() -> None:
    """The converse: only an unshelve stays where it was; a boot has nowhere else to be."""
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(authenticated(), hosts))
    body = placed.body
    retry = new_event(EventType.INSTANCE_FAILED, placed.aggregate_id, {
        "stage": "spawn", "reason": "disk on fire", "code": 500, "retryable": True, "final": False,
        "host": "h0", "attempt": 1, "details": None, "alternates": [], "spec": body["spec"]}, cause=placed)
    [final] = [o.event for o in scheduler.decide(folded(scheduler.SERVICE, [*hosts, placed, retry]), retry,
                                                 ctx(scheduler.SchedulerSettings()))]
    assert final.type == EventType.INSTANCE_FAILED and final.body["final"]
    assert states(shown([placed, retry, final]))[:2] == ("ERROR", "error")
