"""Nova's os-volume_attachments under /compute/v2.1/servers/{id}: list, show, attach, detach.

An attach is a saga on the log (DESIGN §7): the API reserves the volume (catalog.volume_reserved,
decided on the volume's partition, see eventsvm.state.volumes), then appends
instance.volume_attach_requested on the server's host's partition; the host's spawner attaches
the disk through libvirt and appends catalog.volume_attached (the volume is in-use), or
catalog.volume_detached with the reason when it could not. A detach begins with
catalog.volume_detaching (the first one wins) and ends with the host's catalog.volume_detached.
The attach answers 200 at once with the attachment, as nova does before its compute host is done.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.server_edits import wrapped_object
from eventsvm.api.server_request import invalid
from eventsvm.api.volume_reservations import refusal, release, reservation
from eventsvm.api.wire import is_uuid
from eventsvm.api.writes import caller_event, chained_event, won_on_log
from eventsvm.events.model import Event, EventType, new_id
from eventsvm.identity import policy
from eventsvm.projections.readmodel import Models
from eventsvm.state.instances import Instance
from eventsvm.state.volumes import (
    DETACH_REFUSED,
    ROOT_DEVICE,
    VolumeUnavailable,
    attachment_to,
    detach_refusal,
    detached_body,
    next_device,
    server_attachments,
    unavailable_reason,
)

router = APIRouter(prefix="/compute/v2.1/servers", tags=["compute"])

# nova's attach_volume / detach_volume check_instance_state, reduced to the states eventsvm has
_VOLUME_VM_STATES = frozenset({"active", "paused", "stopped"})
SHELVED_OFFLOADED = "shelved_offloaded"
# nova's parameter_types.device_name for a 2.1 attach
_DEVICE = re.compile(r"^(/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$")


def attachment_view(server_id: str, volume_id: str, device: str | None) -> dict[str, Any]:
    """One volumeAttachment as nova 2.1 shows it: its id is the volume's."""
    return {"id": volume_id, "serverId": server_id, "volumeId": volume_id, "device": device}


def _attachments(models: Models, inst: Instance) -> list[dict[str, Any]]:
    # nova lists the server's block device mappings, which it makes at reservation
    return [attachment_view(inst.id, volume["id"], attachment["device"])
            for volume, attachment in server_attachments(models.catalog.volumes, inst.id)]


@router.get("/{server_id}/os-volume_attachments", summary="List a server's volume attachments",
            responses=failures(404))
def list_attachments(server_id: str, caller: Identity = Depends(current_identity),
                     ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """Every volume reserved for or attached to the server."""
    rm = ctx.readmodel
    with rm.lock:
        return {"volumeAttachments": _attachments(rm.models, visible_server(rm.models, caller, server_id))}


@router.get("/{server_id}/os-volume_attachments/{volume_id}", summary="Show a volume attachment",
            responses=failures(404))
def show_attachment(server_id: str, volume_id: str, caller: Identity = Depends(current_identity),
                    ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """The server's attachment of one volume."""
    rm = ctx.readmodel
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)
        found = _attachment(rm.models, inst, volume_id)
        return {"volumeAttachment": attachment_view(inst.id, volume_id, found["device"])}


def _attachment(models: Models, inst: Instance, volume_id: str) -> dict[str, Any]:
    volume = models.catalog.volumes.get(volume_id)
    attachment = None if volume is None else attachment_to(volume, inst.id)
    if attachment is None:
        raise NotFound(f"Instance {inst.id} is not attached to volume {volume_id}.")
    return attachment


def _acting_on(models: Models, caller: Identity, server_id: str, action: str,
               version: tuple[int, int]) -> Instance:
    """The server, when the caller may attach to or detach from it in the state it is in (from
    2.20 a shelved-offloaded one too, which has no host)."""
    # os-volumes-attachments:create / delete are the route table's, checked before the handler;
    # the lock is nova's 409 on the server's state, which no policy rule says
    inst = visible_server(models, caller, server_id)
    if policy.lock_holds(inst.locked, caller.admin_of("nova")):
        raise Conflict(f"Instance {inst.id} is locked")
    refused = f"Cannot '{action}_volume' instance {inst.id} while it is in"
    offloaded = inst.vm_state == SHELVED_OFFLOADED and version >= microversion.SHELVED_VOLUMES
    if not offloaded and (inst.vm_state not in _VOLUME_VM_STATES or inst.host is None):
        raise Conflict(f"{refused} vm_state {inst.vm_state}")
    if inst.task_state is not None:
        raise Conflict(f"{refused} task_state {inst.task_state}")
    return inst


def _attach_request(raw: Any) -> tuple[str, str | None]:
    """(volumeId, device) of a 2.1 attach body, validated as nova's volumes schema does."""
    body = wrapped_object(raw, "volumeAttachment", ("volumeId", "device"))
    volume_id = body.get("volumeId")
    if not isinstance(volume_id, str) or not is_uuid(volume_id):
        raise invalid("volumeAttachment.volumeId", volume_id, "'volumeId' must be a volume UUID")
    device = body.get("device")
    if device is not None and (not isinstance(device, str) or not _DEVICE.match(device)):
        raise invalid("volumeAttachment.device", device, "is not a device name such as /dev/vdb")
    return volume_id, device


def _routed(ctx: ApiContext, inst: Instance, event: Event) -> None:
    """Append a command for the server's host on the host's partition, which its spawner reads."""
    rm = ctx.readmodel
    with rm.lock:
        host = rm.models.hosts.get(inst.host or "")
        slot = host.get("slot") if host is not None else None
    rm.append([event], [None if slot is None else slot % rm.log.partitions(str(event.topic))])


@router.post("/{server_id}/os-volume_attachments", summary="Attach a volume to a server",
             responses=failures(400, 403, 404, 409))
def attach_volume(server_id: str, request: Request, raw: Any = Body(None),
                  caller: Identity = Depends(current_identity),
                  ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """Reserve the volume on the log, then have the server's host attach it; 200 with the attachment."""
    volume_id, asked_device = _attach_request(raw)
    rm = ctx.readmodel
    with rm.lock:
        inst = _acting_on(rm.models, caller, server_id, "attach", microversion.served(request))
        volume = rm.models.catalog.volumes.get(volume_id)
        if volume is None or (volume.get("owner") != inst.project_id and not caller.admin_of("cinder")):
            raise NotFound(f"Volume {volume_id} could not be found.")
        reason = unavailable_reason(volume, inst.id)
        if reason is not None:
            raise BadRequest(f"Invalid volume: {reason}")
        held = server_attachments(rm.models.catalog.volumes, inst.id)
        taken = [ROOT_DEVICE, *(attachment["device"] for _, attachment in held)]
        try:
            # nova's libvirt driver picks the name itself; a free one asked for is kept
            device = asked_device if asked_device and asked_device not in taken else next_device(taken)
        except VolumeUnavailable as exc:
            raise BadRequest(str(exc)) from None
        size_gb = int(volume["size_gb"])
    reserved = reservation(inst.id, volume_id, new_id(), device, False, None, request, caller)
    if not won_on_log(ctx, reserved):
        raise refusal(ctx, volume_id, inst.id)
    if inst.host is None:
        # shelved-offloaded (2.20): no guest to plug it into; nova attaches it in cinder alone,
        # on no host (the event's host is "" then: the field was never nullable)
        attached = {"volume_id": volume_id, "attachment_id": reserved.body["attachment_id"],
                    "server_id": inst.id, "host": "", "device": device}
        rm.append([caller_event(EventType.VOLUME_ATTACHED, volume_id, attached, request, caller)])
        return {"volumeAttachment": attachment_view(inst.id, volume_id, device)}
    with rm.lock:
        inst = rm.models.instances.get(inst.id) or inst  # its newest event, to chain onto
        asked = {"host": inst.host, "volume_id": volume_id, "attachment_id": reserved.body["attachment_id"],
                 "device": device, "size_gb": size_gb}
        command = chained_event(EventType.INSTANCE_VOLUME_ATTACH_REQUESTED, inst, asked, request, caller, ctx)
    try:
        _routed(ctx, inst, command)
    except BaseException:
        release(ctx, [reserved], "the attach request could not be recorded", request, caller)
        raise
    return {"volumeAttachment": attachment_view(inst.id, volume_id, device)}


@router.delete("/{server_id}/os-volume_attachments/{volume_id}", status_code=202,
               summary="Detach a volume from a server", responses=failures(400, 403, 404, 409))
def detach_volume(server_id: str, volume_id: str, request: Request,
                  caller: Identity = Depends(current_identity),
                  ctx: ApiContext = Depends(api_context)) -> Response:
    """Begin detaching on the log (the first detach wins), then have the host detach it; 202."""
    rm = ctx.readmodel
    with rm.lock:
        inst = _acting_on(rm.models, caller, server_id, "detach", microversion.served(request))
        attachment = dict(_attachment(rm.models, inst, volume_id))
        if attachment.get("boot_index") == 0:
            raise BadRequest("Cannot detach a root device volume")
        refused = detach_refusal(rm.models.catalog.volumes[volume_id], attachment)
        if refused is not None:
            raise BadRequest(f"Invalid volume: {refused}")
    ends = {"volume_id": volume_id, "attachment_id": attachment["attachment_id"], "server_id": inst.id}
    if not won_on_log(ctx, caller_event(EventType.VOLUME_DETACHING, volume_id, ends, request, caller)):
        raise BadRequest(f"Invalid volume: {DETACH_REFUSED}")
    if inst.host is None:
        # shelved-offloaded (2.20): nothing on a host to unplug; cinder's detach alone
        gone = detached_body(volume_id, attachment, None, None)
        rm.append([caller_event(EventType.VOLUME_DETACHED, volume_id, gone, request, caller)])
        return Response(status_code=202)
    with rm.lock:
        inst = rm.models.instances.get(inst.id) or inst  # its newest event, to chain onto
        asked = {"host": inst.host, "volume_id": volume_id, "attachment_id": attachment["attachment_id"],
                 "device": attachment["device"]}
        command = chained_event(EventType.INSTANCE_VOLUME_DETACH_REQUESTED, inst, asked, request, caller, ctx)
    _routed(ctx, inst, command)
    return Response(status_code=202)
