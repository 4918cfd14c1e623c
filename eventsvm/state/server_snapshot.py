"""The Glance image a server snapshot registers (nova's compute.utils.create_image and
initialize_instance_snapshot_metadata): the server's image properties, minus those nova never
inherits, plus nova's own (image_type=snapshot, instance_uuid, base_image_ref ...) and the caller's
metadata, which wins. Pure: the API builds it, the catalog folds it, tests read it directly."""

from __future__ import annotations

from typing import Any

# nova's [DEFAULT] non_inheritable_image_properties
NON_INHERITABLE = frozenset({
    "cache_in_nova", "bittorrent", "img_signature_hash_method", "img_signature",
    "img_signature_key_type", "img_signature_certificate_uuid",
})
# glance's status of an image with no data yet (a snapshot before the host fills it, an image
# registered before its upload) and of one with its data; nova's compute-API status of each
QUEUED = "queued"
ACTIVE = "active"
COMPUTE_STATUS = {"active": "ACTIVE", "queued": "SAVING", "saving": "SAVING", "deleted": "DELETED",
                  "pending_delete": "DELETED", "killed": "ERROR"}
# nova's image proxy shows an upload's progress by status
PROGRESS = {"ACTIVE": 100, "SAVING": 25}


def snapshot_image(
    image_id: str,
    name: str,
    metadata: dict[str, str],
    server: dict[str, Any],
    base_image: dict[str, Any] | None,
    user_id: str,
) -> dict[str, Any]:
    """The catalog.image_created body of a snapshot of `server` (id, project_id, image_id,
    flavor_disk_gb), queued until the host fills it. `base_image` is None when the server's image is
    gone from the catalog: the snapshot then has nova's properties and the caller's only."""
    base = base_image or {}
    properties = {k: v for k, v in (base.get("properties") or {}).items() if k not in NON_INHERITABLE}
    properties.update({
        "instance_uuid": server["id"],
        "user_id": user_id,
        "image_type": "snapshot",
        "base_image_ref": server["image_id"] or "",
        "owner_id": server["project_id"],
        "image_location": "snapshot",
        "image_state": "available",
    })
    properties.update(metadata)
    return {
        "id": image_id,
        "name": name,
        "disk_format": base.get("disk_format") or "qcow2",
        "container_format": base.get("container_format") or "bare",
        "size_bytes": 0,
        # nova: the flavor's root disk, unless the image asked for more
        "min_disk": max(int(server["flavor_disk_gb"]), int(base.get("min_disk") or 0)),
        "min_ram": int(base.get("min_ram") or 0),
        "visibility": "private",
        "owner": server["project_id"],
        "properties": properties,
        "location": None,
        "status": QUEUED,
    }
