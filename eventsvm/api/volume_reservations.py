"""Reserving volumes for a server before anything is appended for it: the reservation is decided by
the log (the first one on the volume's partition wins, eventsvm.state.volumes), so of two boots or
attaches racing for one volume, in one API process or several, exactly one gets it and the other
is refused with cinder's InvalidVolume, which nova answers 400."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request

from eventsvm.api.auth import Identity
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest
from eventsvm.api.writes import caller_event, won_on_log
from eventsvm.events.model import Event, EventType
from eventsvm.state.volumes import (
    boot_attachment_id,
    boot_device,
    detached_body,
    status_of,
    unavailable_reason,
)


def reservation(server_id: str, volume_id: str, attachment_id: str, device: str | None,
                delete_on_termination: bool, boot_index: int | None, request: Request,
                caller: Identity) -> Event:
    """A catalog.volume_reserved of `volume_id` for `server_id`, keyed (and so placed) by the volume."""
    body = {"volume_id": volume_id, "attachment_id": attachment_id, "server_id": server_id, "device": device,
            "delete_on_termination": delete_on_termination, "boot_index": boot_index}
    return caller_event(EventType.VOLUME_RESERVED, volume_id, body, request, caller)


def refusal(ctx: ApiContext, volume_id: str, server_id: str | None = None) -> BadRequest:
    """Nova's 400 for a volume that cannot be reserved, naming the volume and what holds it."""
    with ctx.readmodel.lock:
        volume = ctx.readmodel.models.catalog.volumes.get(volume_id)
        reason = None if volume is None else unavailable_reason(volume, server_id)
        status = "deleted" if volume is None else status_of(volume)
    return BadRequest(f"Invalid volume: {reason or f'Volume {volume_id} status is {status}.'}")


def release(ctx: ApiContext, reservations: Sequence[Event], reason: str, request: Request,
            caller: Identity) -> None:
    """End reservations that held after all (the request that made them was refused or failed)."""
    if reservations:
        ctx.readmodel.append([
            caller_event(EventType.VOLUME_DETACHED, r.body["volume_id"],
                         detached_body(r.body["volume_id"], r.body, None, reason), request, caller)
            for r in reservations
        ])


def reserve_boot_volumes(ctx: ApiContext, server_id: str, block_devices: Sequence[dict[str, Any]],
                         request: Request, caller: Identity) -> list[Event]:
    """Reserve every existing volume a boot maps (source_type volume) for the new server, all or
    none: 400 naming the first volume another server holds. The reservations are returned, for
    `release` should the server's own append fail."""
    reservations = [
        reservation(server_id, bdm["uuid"], boot_attachment_id(server_id, bdm["uuid"]), boot_device(index),
                    bool(bdm.get("delete_on_termination")), bdm.get("boot_index"), request, caller)
        for index, bdm in enumerate(block_devices)
        if bdm.get("source_type") == "volume"
    ]
    held: list[Event] = []
    for event in reservations:
        if not won_on_log(ctx, event):
            release(ctx, held, f"the request for server {server_id} was refused", request, caller)
            raise refusal(ctx, event.body["volume_id"])
        held.append(event)
    return held
