"""An unshelve through the boot's stages shows nova's states, not a boot's: SHELVED_OFFLOADED with
task_state unshelving while it is placed, spawning once on its host, then ACTIVE; NoValidHost
leaves it SHELVED_OFFLOADED with no task. The events come from the real deciders (scheduler,
resolver, spawner on libvirt's test driver) and are folded by the read model alone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_deciders import authenticated, host_registered, resolve, schedule, spawn
from test_server_shelve import command

from eventsvm.app.cluster import simulated_host
from eventsvm.events.builders import failed
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.state.instances import Instance, evolve_projection, initial_projection
from eventsvm.virt.compute_host import HostCapacity

OFFLOADED_UNSHELVING = ("SHELVED_OFFLOADED", "shelved_offloaded", "unshelving")


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[Any]:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=8, ram_mb=65536, disk_gb=100))
    yield host
    host.hypervisor.close()


def shown(events: list[Event]) -> Instance:
    model = initial_projection()
    for event in events:
        evolve_projection(model, event)
    [inst] = model.instances.values()
    return inst


def states(inst: Instance) -> tuple[str, str, str | None]:
    return inst.status, inst.vm_state, inst.task_state


def only(kind: EventType, outputs: list[Any]) -> Event:
    [event] = [o.event for o in outputs if o.event.type == kind]
    return event


def booted_and_offloaded(compute: Any, hosts: list[Event]) -> list[Event]:
    """A server booted on h0 and shelved (offloaded at once), as the deciders write it."""
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(authenticated(), hosts))
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, hosts))
    spawned = only(EventType.INSTANCE_SPAWNED, spawn(compute, resolved))
    shelve = command(spawned, "shelve", "active", "h0", None)
    offloaded = only(EventType.INSTANCE_ACTION_COMPLETED, spawn(compute, shelve, [spawned]))
    assert offloaded.body["vm_state"] == "shelved_offloaded"
    return [placed, resolved, spawned, shelve, offloaded]


def test_an_unshelve_shows_unshelving_then_spawning_then_active(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = booted_and_offloaded(compute, hosts)
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    assert states(shown([*boot, unshelve])) == OFFLOADED_UNSHELVING
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    assert placed.body["spec"]["unshelve"] is True
    # placed by the scheduler (nova's conductor): still unshelving, not a boot's BUILD / networking
    assert states(shown([*boot, unshelve, placed])) == OFFLOADED_UNSHELVING
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, [*hosts, *boot, unshelve]))
    assert resolved.body["spec"]["unshelve"] is True
    # on its host: nova's compute _unshelve_instance sets spawning, the vm_state stays offloaded
    assert states(shown([*boot, unshelve, placed, resolved])) == (
        "SHELVED_OFFLOADED", "shelved_offloaded", "spawning")
    spawned = only(EventType.INSTANCE_SPAWNED, spawn(compute, resolved, boot))
    inst = shown([*boot, unshelve, placed, resolved, spawned])
    assert states(inst) == ("ACTIVE", "active", None) and inst.power_state == 1 and inst.host == "h0"


def test_the_unshelve_states_do_not_depend_on_the_order_topics_are_read(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = booted_and_offloaded(compute, hosts)
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, [*hosts, *boot, unshelve]))
    log = [*boot, unshelve, placed, resolved]
    live = shown(log)
    rng = random.Random(3)
    for _ in range(20):
        # a replay reads topic after topic: the boot's resolved may come after the unshelve's
        replayed = shown(rng.sample(log, len(log)))
        assert states(replayed) == states(live) == ("SHELVED_OFFLOADED", "shelved_offloaded", "spawning")


def test_a_retried_unshelve_stays_unshelving_and_its_retry_is_still_an_unshelve(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536), host_registered("h1", 1, ram_mb=65536)]
    boot = booted_and_offloaded(compute, hosts[:1])
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, [*hosts, *boot, unshelve]))
    # the spawner's retryable failure carries the spec it was given, as for a boot
    body = resolved.body
    retry = failed(resolved, "spawn", "libvirt refused", retryable=True, host=body["host"],
                   attempt=body["attempt"], alternates=body["alternates"], spec=body["spec"])
    assert states(shown([*boot, unshelve, placed, resolved, retry])) == OFFLOADED_UNSHELVING
    again = only(EventType.INSTANCE_SCHEDULED, schedule(retry, [*hosts, *boot, unshelve, placed]))
    assert again.body["spec"]["unshelve"] is True and again.body["host"] != body["host"]
    assert states(shown([*boot, unshelve, placed, resolved, retry, again])) == OFFLOADED_UNSHELVING


def test_no_valid_host_leaves_the_server_shelved_offloaded_with_no_task(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = booted_and_offloaded(compute, hosts)
    full = host_registered("h0", 0, ram_mb=256)  # re-registered smaller: the server no longer fits
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    refused = only(EventType.INSTANCE_ACTION_FAILED, schedule(unshelve, [*hosts, *boot, full]))
    assert "No valid host was found" in refused.body["reason"]
    inst = shown([*boot, unshelve, refused])
    assert states(inst) == ("SHELVED_OFFLOADED", "shelved_offloaded", None)
    assert inst.host is None and inst.power_state == 0
    # the failure stays on the server's record (os-instance-actions names it, as nova's Error event)
    assert inst.actions[-1][0] == EventType.INSTANCE_ACTION_FAILED.value
    assert "No valid host was found" in (inst.actions[-1][5] or "")


def test_a_placement_written_before_the_flag_reads_as_a_boot() -> None:
    """scheduled v1 carried no unshelve flag: such an event shows the boot's states, as it did."""
    hosts = [host_registered("h0", 0)]
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(authenticated(), hosts))
    spec = {k: v for k, v in placed.body["spec"].items() if k != "unshelve"}
    old = new_event(EventType.INSTANCE_SCHEDULED, placed.aggregate_id, {**placed.body, "spec": spec})
    assert states(shown([old])) == ("BUILD", "building", "networking")
