"""A volume's attachments, decided by the log: cinder's states available → reserved → in-use →
detaching → available, one attachment at most (no volume is multiattach here).

Every event that changes a volume's attachments is keyed by the volume's id, as its create is, so
all of one volume's events share one partition of the catalog topic and the log gives them one
order that every reader sees. The fold below is the single writer's rule: a reservation of a volume
that is not `available` changes nothing and is recorded as refused (as a name claim is, see
eventsvm.state.names), so of two boots or attaches racing for one volume exactly one wins, in
every API process, consumer and replay alike. The API appends a reservation and waits for the
fold's verdict before it appends anything for the server (eventsvm.api.writes.claim_name).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from eventsvm.events.model import Event, EventType

Body = dict[str, Any]

AVAILABLE = "available"
RESERVED = "reserved"
IN_USE = "in-use"
DETACHING = "detaching"
ATTACHED = "attached"  # an attachment's attach_status once a host (or cinder alone) connected it

# The guest's disk names: vda is the root disk, volumes follow (nova's libvirt get_disk_info).
_DISK_LETTERS = "bcdefghijklmnopqrstuvwxyz"
ROOT_DEVICE = "/dev/vda"

VOLUME_EVENT_TYPES = frozenset({
    EventType.VOLUME_RESERVED, EventType.VOLUME_ATTACHED, EventType.VOLUME_DETACHING,
    EventType.VOLUME_DETACHED, EventType.VOLUME_DELETED, EventType.VOLUME_UPDATED,
})

# cinder's InvalidVolume for a delete of a volume in use
DELETE_REFUSED = ("Volume status must be available or error or error_restoring or error_extending or "
                  "error_managing and must not be migrating, attached, belong to a group, have snapshots, "
                  "awaiting a transfer, or be disassociated from snapshots after volume transfer.")


# cinder's InvalidVolume for a detach of a volume that is not attached (or already detaching)
DETACH_REFUSED = ("Unable to detach volume. Volume status must be 'in-use' and attach_status must be "
                  "'attached' to detach.")


class VolumeUnavailable(Exception):
    """A volume cannot be reserved or detached in the state it is in: cinder's InvalidVolume."""


def boot_attachment_id(server_id: str, volume_id: str) -> str:
    """The attachment id of a volume a server boots with, derived from both, so the API that
    reserves it and the host that attaches it name the same attachment without asking each other."""
    return str(uuid.uuid5(uuid.UUID(server_id), f"volume-{volume_id}"))


def boot_device(index: int) -> str:
    """The device of the `index`th entry of a boot's block_device_mapping_v2 (vda is the root)."""
    return f"/dev/vd{_DISK_LETTERS[index % len(_DISK_LETTERS)]}"


def next_device(taken: Iterable[str | None]) -> str:
    """The first free /dev/vdX after the root disk (nova's libvirt driver picks the name itself)."""
    used = set(taken)
    for letter in _DISK_LETTERS:
        device = f"/dev/vd{letter}"
        if device not in used:
            return device
    raise VolumeUnavailable("No free disk device names for prefix 'vd'")


def status_of(volume: Mapping[str, Any]) -> str:
    """The volume's cinder status."""
    return str(volume.get("status") or AVAILABLE)


def attachments_of(volume: Mapping[str, Any]) -> dict[str, Body]:
    """The volume's attachments by attachment id."""
    return volume.get("attachments") or {}


def attachment_to(volume: Mapping[str, Any], server_id: str) -> Body | None:
    """The volume's attachment to `server_id`, if it has one."""
    return next((a for a in attachments_of(volume).values() if a["server_id"] == server_id), None)


def unavailable_reason(volume: Mapping[str, Any], server_id: str | None = None) -> str | None:
    """Why the volume cannot be reserved now (cinder's and nova's InvalidVolume), None when it can."""
    if server_id is not None and attachment_to(volume, server_id) is not None:
        return f"volume {volume['id']} already attached"
    status = status_of(volume)
    if status != AVAILABLE or attachments_of(volume):
        return (f"Volume {volume['id']} status must be available or downloading to reserve, "
                f"but the current status is {status}.")
    return None


def detach_refusal(volume: Mapping[str, Any], attachment: Mapping[str, Any] | None) -> str | None:
    """Why the attachment cannot begin detaching now, None when it can (cinder's begin_detaching)."""
    if attachment is None or status_of(volume) != IN_USE or attachment.get("attach_status") != "attached":
        return DETACH_REFUSED
    return None


def _update(volume: Body, body: Body) -> None:
    """A volume's new name or description (None: unchanged) and its metadata changes, applied to
    a copy of its metadata: the created event's body may hold the old one."""
    if body.get("name") is not None:
        volume["name"] = body["name"]
    if body.get("description") is not None:
        volume["description"] = body["description"]
    if body.get("readonly") is not None:  # v2: cinder's read-only flag, kept apart from the metadata
        volume["readonly"] = body["readonly"]
    if body.get("bootable") is not None:  # v2: cinder's bootable flag
        volume["bootable"] = body["bootable"]
    changes: dict[str, str] = body.get("set") or {}
    removed = body.get("removed") or ()
    if not changes and not removed and not body.get("replace"):
        return
    metadata = {} if body.get("replace") else dict(volume.get("metadata") or {})
    metadata.update(changes)
    for key in removed:
        metadata.pop(key, None)
    volume["metadata"] = metadata


def evolve_volume(volumes: dict[str, Body], refused: set[str], event: Event) -> None:
    """Fold one attachment event into `volumes` (volume id → its body, updated in place). A
    reservation or detach the volume's state forbids changes nothing and lands in `refused`."""
    body = event.body
    volume = volumes.get(body["volume_id"])
    kind = event.type
    if volume is None:
        if kind in (EventType.VOLUME_RESERVED, EventType.VOLUME_DETACHING, EventType.VOLUME_DELETED,
                    EventType.VOLUME_UPDATED):
            refused.add(event.event_id)
        return
    if kind == EventType.VOLUME_UPDATED:
        _update(volume, body)
        volume["updated_ms"] = event.occurred_at
        return
    if kind == EventType.VOLUME_DELETED:
        # a delete racing an attach: whichever the volume's partition has first wins
        if unavailable_reason(volume) is not None:
            refused.add(event.event_id)
        else:
            del volumes[body["volume_id"]]
        return
    attachments: dict[str, Body] = volume.setdefault("attachments", {})
    attachment = attachments.get(body["attachment_id"])
    if kind == EventType.VOLUME_RESERVED:
        if attachment is not None and attachment["server_id"] == body["server_id"]:
            return  # the same reservation again (a retried request): it holds already
        if unavailable_reason(volume) is not None:
            refused.add(event.event_id)
            return
        attachments[body["attachment_id"]] = {
            "attachment_id": body["attachment_id"], "server_id": body["server_id"],
            "device": body.get("device"), "host_name": None, "attached_at": None,
            "attach_status": RESERVED, "delete_on_termination": bool(body.get("delete_on_termination")),
            "boot_index": body.get("boot_index"),
        }
        volume["status"] = RESERVED
    elif kind == EventType.VOLUME_ATTACHED:
        # from reserved: the host attached it; from detaching: the host could not detach it and it
        # stays attached (cinder's roll_detaching); from attached: an unshelve connected it on the
        # server's new host (cinder's attachment_update with the new host's connector)
        if attachment is None or attachment["attach_status"] not in (RESERVED, DETACHING, ATTACHED):
            return  # detached (or its server deleted) before the host reported: nothing to attach
        # host "": attached in cinder alone, to a shelved-offloaded server (nova 2.20)
        attachment.update(attach_status="attached", host_name=body["host"] or None,
                          attached_at=event.occurred_at,
                          device=body.get("device") or attachment["device"])
        volume["status"] = IN_USE
    elif kind == EventType.VOLUME_DETACHING:
        if detach_refusal(volume, attachment) is not None:
            refused.add(event.event_id)
            return
        assert attachment is not None
        attachment["attach_status"] = DETACHING
        volume["status"] = DETACHING
    elif kind == EventType.VOLUME_DETACHED:
        if attachments.pop(body["attachment_id"], None) is None:
            return
        if body.get("delete_volume"):
            del volumes[body["volume_id"]]
            return
        volume["status"] = IN_USE if attachments else AVAILABLE


def server_attachments(volumes: Mapping[str, Body], server_id: str) -> list[tuple[Body, Body]]:
    """(volume, attachment) of every volume reserved for or attached to `server_id`."""
    return attachments_by_server(volumes).get(server_id, [])


def attachments_by_server(volumes: Mapping[str, Body]) -> dict[str, list[tuple[Body, Body]]]:
    """server_attachments of every server, from one pass over the volumes (a page of a server
    list shows a thousand servers: one pass, not one a server)."""
    found: dict[str, list[tuple[Body, Body]]] = {}
    for volume in volumes.values():
        servers = set()
        for attachment in attachments_of(volume).values():
            if attachment["server_id"] not in servers:  # the first one, as attachment_to
                servers.add(attachment["server_id"])
                found.setdefault(attachment["server_id"], []).append((volume, attachment))
    return found


def reconnected_volumes(volumes: Mapping[str, Body], server_id: str) -> list[Body]:
    """The volumes an unshelve connects on the server's new host: every attachment the server
    holds now (nova's block device mappings: those it booted with, those attached since, also
    while it was shelved), with its device and attachment id, in device order."""
    held = [(volume, attachment) for volume, attachment in server_attachments(volumes, server_id)
            if attachment["attach_status"] == ATTACHED]
    return [{"volume_id": volume["id"], "size_gb": volume["size_gb"], "device": attachment["device"],
             "attachment_id": attachment["attachment_id"]}
            for volume, attachment in sorted(held, key=lambda held: str(held[1]["device"]))]


def detached_body(volume_id: str, attachment: Mapping[str, Any], host: str | None, reason: str | None,
                  delete_volume: bool = False) -> Body:
    """The body of a catalog.volume_detached ending `attachment`."""
    return {"volume_id": volume_id, "attachment_id": attachment["attachment_id"],
            "server_id": attachment["server_id"], "host": host, "reason": reason,
            "delete_volume": delete_volume}
