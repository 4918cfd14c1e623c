"""A volume's attachments as the catalog folds them: cinder's states, and the first reservation on
the volume's partition wins (eventsvm.state.volumes)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

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
