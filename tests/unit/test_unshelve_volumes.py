"""An unshelve reconnects the volumes the server holds (nova's block device mappings) on the host it
lands on: the resolver carries every attachment the server has now, under its own attachment id and
device, the spawner attaches each to the new guest, and the catalog's fold moves each attachment to
the new host. The events come from the real deciders (scheduler, resolver, spawner on libvirt's test
driver)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_deciders import host_registered, resolve, schedule, spawn
from test_server_shelve import command
from test_unshelve_fold import booted_and_offloaded, only

from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.volumes import reconnected_volumes
from eventsvm.virt.compute_host import HostCapacity

DATA, GONE = "5b8e2a1c-4d3f-4e6a-9b7c-2d1e0f3a4b5c", "6c9f3b2d-5e4a-4f7b-8c8d-3e2f1a4b5c6d"


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[Any]:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=8, ram_mb=65536, disk_gb=100))
    yield host
    host.hypervisor.close()


def attachment_life(server: str, volume: str, device: str, detach: bool = False) -> list[Event]:
    """A volume created, reserved for `server`, attached on its first host (and detached since)."""
    created = new_event(EventType.VOLUME_CREATED, volume, {"id": volume, "name": "data", "size_gb": 1,
                                                           "owner": "p", "status": "available"})
    ends = {"volume_id": volume, "attachment_id": str(uuid.uuid4()), "server_id": server}
    reservation = {**ends, "device": device, "delete_on_termination": False, "boot_index": None}
    reserved = new_event(EventType.VOLUME_RESERVED, volume, reservation)
    attached = new_event(EventType.VOLUME_ATTACHED, volume, {**ends, "host": "compute-old", "device": device})
    life = [created, reserved, attached]
    if detach:
        life += [new_event(EventType.VOLUME_DETACHING, volume, ends),
                 new_event(EventType.VOLUME_DETACHED, volume, {**ends, "host": None, "reason": None,
                                                                "delete_volume": False})]
    return life


def catalog(events: list[Event]) -> CatalogState:
    state = CatalogState()
    for event in events:
        evolve_catalog(state, event)
    return state


def test_an_unshelve_reconnects_what_the_server_holds_on_its_new_host(compute: Any) -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    boot = booted_and_offloaded(compute, hosts)
    server = boot[0].aggregate_id
    # attached after the boot (os-volume_attachments), and another attached then detached again
    volumes = [*attachment_life(server, DATA, "/dev/vdc"), *attachment_life(server, GONE, "/dev/vdd", True)]
    [held] = catalog(volumes).volumes[DATA]["attachments"].values()
    unshelve = command(boot[-1], "unshelve", "shelved_offloaded", None, None)
    placed = only(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, *boot]))
    history = [*hosts, *boot, unshelve, *volumes]
    resolved = only(EventType.INSTANCE_RESOURCES_RESOLVED, resolve(placed, history))
    assert resolved.body["volumes"] == [{"volume_id": DATA, "size_gb": 1, "device": "/dev/vdc",
                                         "attachment_id": held["attachment_id"]}]
    outputs = spawn(compute, resolved, boot)
    spawned = only(EventType.INSTANCE_SPAWNED, outputs)
    assert spawned.body["host"] == "h0"
    reattached = only(EventType.VOLUME_ATTACHED, outputs)
    assert (reattached.aggregate_id, reattached.body["attachment_id"], reattached.body["host"]) == (
        DATA, held["attachment_id"], "h0")
    assert "vdc" in compute.hypervisor.disk_targets(server)
    assert "vdd" not in compute.hypervisor.disk_targets(server)  # detached while shelved: not its own
    # the catalog moves the attachment to the new host; the volume stays in-use throughout
    after = catalog([*volumes, reattached]).volumes[DATA]
    [moved] = after["attachments"].values()
    assert after["status"] == "in-use"
    assert (moved["attachment_id"], moved["host_name"], moved["device"]) == (
        held["attachment_id"], "h0", "/dev/vdc")


def test_a_boot_s_resolve_still_reads_its_block_device_mapping_not_the_catalog() -> None:
    """Only an unshelve reconnects what the server holds; a boot attaches what it asked for."""
    server = str(uuid.uuid4())
    volumes = catalog(attachment_life(server, DATA, "/dev/vdc")).volumes
    assert reconnected_volumes(volumes, server)[0]["volume_id"] == DATA
    assert reconnected_volumes(volumes, str(uuid.uuid4())) == []


def test_a_reserved_attachment_is_not_reconnected_until_attached() -> None:
    server = str(uuid.uuid4())
    volumes = catalog(attachment_life(server, DATA, "/dev/vdc")[:2]).volumes
    assert volumes[DATA]["status"] == "reserved"
    assert reconnected_volumes(volumes, server) == []
