"""A volume's attachments as the catalog folds them: cinder's states, and the first reservation on
the volume's partition wins (eventsvm.state.volumes)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers import resolver
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event
from eventsvm.state.catalog import CatalogState, evolve_catalog
from eventsvm.state.volumes import (
    boot_attachment_id,
    boot_device,
    detach_refusal,
    next_device,
    server_attachments,
    unavailable_reason,
)
from eventsvm.virt.compute_host import HostCapacity
from tests.unit.test_deciders import VOLUME as DECIDER_VOLUME
from tests.unit.test_deciders import (
    authenticated,
    ctx,
    folded,
    host_registered,
    large_root,
    resolve,
    resolved_for,
    schedule,
    spawn,
)

VOLUME = "5b8e2a1c-4d3f-4e6a-9b7c-2d1e0f3a4b5c"
ONE = "11111111-1111-4111-8111-111111111111"
TWO = "22222222-2222-4222-8222-222222222222"


def catalog_with_volume() -> CatalogState:
    state = CatalogState()
    body = {"id": VOLUME, "name": "data", "size_gb": 1, "owner": "p", "status": "available"}
    return evolve_catalog(state, new_event(EventType.VOLUME_CREATED, VOLUME, body))


def reserve(server: str, attachment: str | None = None) -> Event:
    body = {"volume_id": VOLUME, "attachment_id": attachment or str(uuid.uuid4()), "server_id": server,
            "device": "/dev/vdb", "delete_on_termination": False, "boot_index": None}
    return new_event(EventType.VOLUME_RESERVED, VOLUME, body)


def follow(kind: EventType, reservation: Event, **extra: Any) -> Event:
    body = {k: reservation.body[k] for k in ("volume_id", "attachment_id", "server_id")}
    return new_event(kind, VOLUME, {**body, **extra})


def attached(reservation: Event) -> Event:
    return follow(EventType.VOLUME_ATTACHED, reservation, host="compute-1", device="/dev/vdb")


def detached(reservation: Event, delete_volume: bool = False) -> Event:
    return follow(EventType.VOLUME_DETACHED, reservation, host="compute-1", reason=None,
                  delete_volume=delete_volume)


def fold(state: CatalogState, *events: Event) -> CatalogState:
    for event in events:
        evolve_catalog(state, event)
    return state


def test_a_volume_goes_available_reserved_in_use_detaching_available() -> None:
    state = catalog_with_volume()
    volume = state.volumes[VOLUME]
    first = reserve(ONE)
    seen = []
    for event in (first, attached(first), follow(EventType.VOLUME_DETACHING, first), detached(first)):
        fold(state, event)
        seen.append(volume["status"])
    assert seen == ["reserved", "in-use", "detaching", "available"]
    assert not state.refused and volume["attachments"] == {}


def test_of_two_reservations_only_the_first_on_the_log_wins_whatever_the_order() -> None:
    for order in itertools.permutations([reserve(ONE), reserve(TWO)]):
        state = fold(catalog_with_volume(), *order)
        winner, loser = order
        [(volume, attachment)] = server_attachments(state.volumes, winner.body["server_id"])
        assert attachment["attachment_id"] == winner.body["attachment_id"]
        assert server_attachments(state.volumes, loser.body["server_id"]) == []
        assert state.refused == {loser.event_id}
        assert volume["status"] == "reserved"


def test_an_in_use_volume_refuses_a_second_server_and_names_its_status() -> None:
    first = reserve(ONE)
    state = fold(catalog_with_volume(), first, attached(first))
    second = reserve(TWO)
    fold(state, second)
    assert second.event_id in state.refused
    assert unavailable_reason(state.volumes[VOLUME]) == (
        f"Volume {VOLUME} status must be available or downloading to reserve, "
        "but the current status is in-use.")
    assert unavailable_reason(state.volumes[VOLUME], ONE) == f"volume {VOLUME} already attached"


def test_the_same_reservation_twice_holds_once_and_is_not_refused() -> None:
    first = reserve(ONE)
    again = reserve(ONE, first.body["attachment_id"])
    state = fold(catalog_with_volume(), first, again)
    assert not state.refused
    assert len(state.volumes[VOLUME]["attachments"]) == 1


def test_a_reservation_of_an_unknown_volume_is_refused() -> None:
    event = reserve(ONE)
    state = fold(CatalogState(), event)
    assert state.refused == {event.event_id}


def test_only_an_attached_volume_may_begin_detaching_and_only_once() -> None:
    first = reserve(ONE)
    state = fold(catalog_with_volume(), first)
    early = follow(EventType.VOLUME_DETACHING, first)
    fold(state, early)  # still reserved: the host has not attached it yet
    assert early.event_id in state.refused
    fold(state, attached(first))
    one, two = follow(EventType.VOLUME_DETACHING, first), follow(EventType.VOLUME_DETACHING, first)
    fold(state, one, two)
    assert one.event_id not in state.refused and two.event_id in state.refused
    volume = state.volumes[VOLUME]
    assert detach_refusal(volume, volume["attachments"][first.body["attachment_id"]]) is not None


def test_an_attach_reported_after_the_reservation_ended_changes_nothing() -> None:
    first = reserve(ONE)
    state = fold(catalog_with_volume(), first, detached(first), attached(first))
    assert state.volumes[VOLUME]["status"] == "available"
    assert state.volumes[VOLUME]["attachments"] == {}


def test_delete_on_termination_deletes_the_volume_with_its_attachment() -> None:
    first = reserve(ONE)
    state = fold(catalog_with_volume(), first, attached(first), detached(first, delete_volume=True))
    assert VOLUME not in state.volumes


def test_a_replay_reaches_the_same_verdicts() -> None:
    first, second = reserve(ONE), reserve(TWO)
    events = [first, second, attached(first), follow(EventType.VOLUME_DETACHING, first), detached(first),
              reserve(TWO)]
    one = fold(catalog_with_volume(), *events)
    other = fold(catalog_with_volume(), *events)
    assert one.refused == other.refused == {second.event_id}
    assert one.volumes == other.volumes


def test_device_names_follow_the_root_disk() -> None:
    assert boot_device(0) == "/dev/vdb"
    assert next_device(["/dev/vda", "/dev/vdb", "/dev/vdd"]) == "/dev/vdc"
    server = str(uuid.uuid4())
    assert boot_attachment_id(server, VOLUME) == boot_attachment_id(server, VOLUME)
    assert boot_attachment_id(server, VOLUME) != boot_attachment_id(str(uuid.uuid4()), VOLUME)


# -- the services' steps: the host attaches and detaches, the resolver frees a deleted server's ----
@pytest.fixture
def compute(tmp_path: Path) -> Iterator[Any]:
    """A compute host on libvirt's test driver."""
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=4, ram_mb=1024, disk_gb=10))
    yield host
    host.hypervisor.close()


def test_the_host_attaches_then_detaches_a_volume_and_answers_each_request_once(compute: Any) -> None:
    spawned = spawn(compute, resolved_for())[0].event
    server = spawned.aggregate_id
    ask = {"host": "h0", "volume_id": VOLUME, "attachment_id": str(uuid.uuid4()), "device": "/dev/vdc"}
    attach = new_event(EventType.INSTANCE_VOLUME_ATTACH_REQUESTED, server, {**ask, "size_gb": 1},
                       cause=spawned)
    [out] = spawn(compute, attach, [spawned])
    assert out.event.type == EventType.VOLUME_ATTACHED and out.event.aggregate_id == VOLUME
    assert out.event.body == {"volume_id": VOLUME, "attachment_id": ask["attachment_id"], "server_id": server,
                              "host": "h0", "device": "/dev/vdc"}
    assert "vdc" in compute.hypervisor.disk_targets(server)
    assert spawn(compute, attach, [spawned, out.event]) == []  # a redelivery: answered already
    detach = new_event(EventType.INSTANCE_VOLUME_DETACH_REQUESTED, server, ask, cause=attach)
    [out] = spawn(compute, detach, [spawned])
    assert out.event.type == EventType.VOLUME_DETACHED and out.event.body["reason"] is None
    assert "vdc" not in compute.hypervisor.disk_targets(server)


def test_an_attach_to_a_guest_that_is_gone_frees_the_volume(compute: Any) -> None:
    server = str(uuid.uuid4())
    ask = {"host": "h0", "volume_id": VOLUME, "attachment_id": str(uuid.uuid4()), "device": "/dev/vdb",
           "size_gb": 1}
    [out] = spawn(compute, new_event(EventType.INSTANCE_VOLUME_ATTACH_REQUESTED, server, ask))
    assert out.event.type == EventType.VOLUME_DETACHED
    assert out.event.body["reason"].startswith(f"attach of volume {VOLUME} failed")


def test_a_deleted_server_s_volumes_are_freed_or_deleted_as_its_mapping_says() -> None:
    kept, dropped = reserve(ONE), reserve(ONE)
    other = {"id": TWO, "name": "scratch", "size_gb": 1, "owner": "p", "status": "available"}
    dropped.body.update(volume_id=TWO, delete_on_termination=True)
    history = [new_event(EventType.VOLUME_CREATED, VOLUME, {"id": VOLUME, "name": "data", "size_gb": 1,
                                                            "owner": "p", "status": "available"}),
               new_event(EventType.VOLUME_CREATED, TWO, other), kept, attached(kept), dropped]
    state = folded(resolver.SERVICE, history)
    deleted = new_event(EventType.INSTANCE_DELETED, ONE,
                        {"host": None, "terminated_at": 1, "stage": "resolver"})
    evolved = resolver.evolve(state, deleted)  # the runner may have folded it before deciding
    outputs = resolver.decide(evolved, deleted, ctx())
    bodies = {o.event.body["volume_id"]: o.event.body for o in outputs}
    assert {v: b["delete_volume"] for v, b in bodies.items()} == {VOLUME: False, TWO: True}
    for output in outputs:
        resolver.evolve(evolved, output.event)
    assert evolved.catalog.volumes[VOLUME]["status"] == "available" and TWO not in evolved.catalog.volumes
    assert resolver.decide(evolved, deleted, ctx()) == []  # delivered again: nothing left to free


def test_a_boot_with_a_volume_another_server_holds_fails_naming_the_volume() -> None:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    placed = schedule(large_root(authenticated(), boot_from_volume=True), hosts)
    history = [*hosts, new_event(EventType.VOLUME_CREATED, DECIDER_VOLUME["id"], DECIDER_VOLUME)]
    taken = reserve(TWO)
    taken.body["volume_id"] = DECIDER_VOLUME["id"]
    [out] = resolve(placed[0].event, [*history, taken])
    assert out.event.type == EventType.INSTANCE_FAILED
    assert out.event.body["reason"] == (
        f"Invalid volume: Volume {DECIDER_VOLUME['id']} status must be available or downloading to reserve, "
        "but the current status is reserved.")
    # reserved for this very server (the API's reservation won): it resolves
    mine = reserve(placed[0].event.aggregate_id)
    mine.body["volume_id"] = DECIDER_VOLUME["id"]
    [out] = resolve(placed[0].event, [*history, mine])
    assert out.event.type == EventType.INSTANCE_RESOURCES_RESOLVED


def test_a_delete_racing_an_attach_loses_when_the_reservation_came_first() -> None:
    first = reserve(ONE)
    delete = new_event(EventType.VOLUME_DELETED, VOLUME, {"volume_id": VOLUME})
    state = fold(catalog_with_volume(), first, delete)
    assert delete.event_id in state.refused and VOLUME in state.volumes
    delete_first = new_event(EventType.VOLUME_DELETED, VOLUME, {"volume_id": VOLUME})
    late = reserve(ONE)
    state = fold(catalog_with_volume(), delete_first, late)
    assert VOLUME not in state.volumes and state.refused == {late.event_id}


def test_a_volume_update_changes_a_copy_and_is_refused_once_the_volume_is_gone() -> None:
    """The fold every reader runs: an update's metadata changes never reach the created event's
    body (which other readers share), and an update that reaches a deleted volume's partition
    after its delete changes nothing and is refused (the API answers 404)."""
    volume_id = str(uuid.uuid4())
    created = new_event(EventType.VOLUME_CREATED, volume_id, {
        "id": volume_id, "name": "db", "size_gb": 1, "owner": "p", "status": "available",
        "description": None, "metadata": {"tier": "gold"}})
    state = evolve_catalog(CatalogState(), created)

    def update(**change: Any) -> Event:
        body = {"volume_id": volume_id, "name": None, "description": None, "set": {}, "removed": [],
                "replace": False, **change}
        return new_event(EventType.VOLUME_UPDATED, volume_id, body)

    state = evolve_catalog(state, update(name="db-2", set={"zone": "b"}, removed=["tier"]))
    volume = state.volumes[volume_id]
    assert (volume["name"], volume["metadata"]) == ("db-2", {"zone": "b"})
    assert created.body["metadata"] == {"tier": "gold"}, "the event's body is left as it was written"
    state = evolve_catalog(state, update(description="orders", set={"only": "this"}, replace=True))
    assert (volume["name"], volume["description"], volume["metadata"]) == ("db-2", "orders", {"only": "this"})

    state = evolve_catalog(state, new_event(EventType.VOLUME_DELETED, volume_id, {"volume_id": volume_id}))
    late = update(name="after")
    state = evolve_catalog(state, late)
    assert volume_id not in state.volumes and late.event_id in state.refused
