"""Nova's createImage (POST /servers/{id}/action) as a saga on the log (DESIGN §7).

The API registers the snapshot as a queued Glance image (catalog.image_created, with the server's
image properties: eventsvm.state.server_snapshot) and appends `instance.action_requested` naming
it, both in one append, so neither exists without the other. The host's spawner takes the snapshot
and fills the image (catalog.image_updated, active), or deletes it when the snapshot failed or the
server went first. Nova answers 202 with the image's URL in Location (this API serves 2.1; the
`image_id` body is 2.45's).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from eventsvm.api.auth import Identity
from eventsvm.api.compute import compute_base, visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest
from eventsvm.api.server_actions import host_action_body, host_partition
from eventsvm.api.writes import caller_event, chained_event
from eventsvm.events.model import EventType, Topic
from eventsvm.state.instances import Instance
from eventsvm.state.names import IMAGES
from eventsvm.state.server_snapshot import snapshot_image

_MAX_NAME = 255
_MAX_META = 255


def _text(value: Any, field: str, min_length: int) -> str:
    # nova's name / metadata string types; glance's database refuses 4-byte UTF-8 (nova answers 400)
    if not isinstance(value, str) or not min_length <= len(value) <= _MAX_NAME:
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {str(value)[:40]}. "
                         f"It must be a string of {min_length} to {_MAX_NAME} characters.")
    if any(ord(ch) > 0xFFFF for ch in value):
        raise BadRequest(f"Invalid input for field/attribute {field}. "
                         "Characters outside the Basic Multilingual Plane are not allowed.")
    return value


def snapshot_args(args: Any) -> tuple[str, dict[str, str]]:
    """The image name and metadata of a createImage body, or nova's 400."""
    if not isinstance(args, dict) or "name" not in args:
        raise BadRequest(f"Invalid input for field/attribute createImage. Value: {str(args)[:80]}. "
                         "'name' is a required property")
    unknown = sorted(set(args) - {"name", "metadata"})
    if unknown:
        raise BadRequest(f"Invalid input for field/attribute createImage. Additional properties are not "
                         f"allowed ({', '.join(repr(k) for k in unknown)} were unexpected)")
    name = _text(args["name"], "name", 1)
    if name.strip() != name:
        raise BadRequest("Invalid input for field/attribute name. "
                         "Leading or trailing whitespace is not allowed.")
    metadata = args.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRequest(f"Invalid input for field/attribute metadata. Value: {str(metadata)[:40]}. "
                         "It must be an object.")
    for key, value in metadata.items():
        _text(key, "metadata key", 1)
        if not isinstance(value, str) or len(value) > _MAX_META:
            raise BadRequest(f"Invalid input for field/attribute {key[:40]}. "
                             f"Metadata values must be strings of at most {_MAX_META} characters.")
    return name, dict(metadata)


def request_snapshot(
    server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext
) -> Response:
    """Register the queued image and append the snapshot command; 202 with its Location."""
    name, metadata = snapshot_args(args)
    image_id = append_with_image(server_id, "createImage", lambda _inst: name, metadata, request, caller, ctx)
    assert image_id is not None
    return Response(status_code=202, headers={"Location": f"{compute_base(request)}/images/{image_id}"})


def append_with_image(
    server_id: str,
    action: str,
    image_name: Callable[[Instance], str | None],
    metadata: dict[str, str],
    request: Request,
    caller: Identity,
    ctx: ApiContext,
) -> str | None:
    """Check `action` on the server and append its command, with the queued snapshot image it
    fills when `image_name` names one (None: no image, e.g. shelving a volume-backed server).
    The image's id, or None."""
    rm = ctx.readmodel
    image_id = str(uuid.uuid4())
    with rm.lock:
        # the action's rule is the route table's (eventsvm.api.authorization.ACTION_RULES)
        inst = visible_server(rm.models, caller, server_id)
        body = host_action_body(inst, caller, action, None)
        name = image_name(inst)
        body["image_id"] = image_id if name is not None else None
        server = {"id": inst.id, "project_id": inst.project_id, "image_id": inst.image_id,
                  "flavor_disk_gb": (inst.flavor or {}).get("disk_gb", 0)}
        base = rm.models.catalog.images.get(inst.image_id or "")
        image = None if name is None else snapshot_image(
            image_id, name, metadata, server, base, caller.user_id)
        command = chained_event(EventType.INSTANCE_ACTION_REQUESTED, inst, body, request, caller, ctx)
        partition = host_partition(rm, inst)
    if image is None:
        rm.append([command], [partition])
        return None
    registered = caller_event(EventType.IMAGE_CREATED, image_id, image, request, caller)
    # one append: the image and the command that fills it exist together or not at all
    rm.append([registered, command], [rm.partition_by(Topic.CATALOG, IMAGES), partition])
    return image_id

