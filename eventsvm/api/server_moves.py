"""Nova's moves of a server (POST /servers/{id}/action: resize, confirmResize, revertResize,
rebuild) as sagas on the log (DESIGN §7, eventsvm.state.server_moves).

The API checks the body, policy, the lock and the server's state, and appends
`instance.move_requested` chained to the server's newest event: a resize goes to the scheduler,
the others to the host that takes their first step (its partition). It answers 202 as nova does,
with the server's body for a rebuild.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api import microversion
from eventsvm.api.auth import Identity
from eventsvm.api.compute import ServerFields, compute_base, server_fields, server_view, visible_server
from eventsvm.api.compute_usage import project_usage
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, Forbidden
from eventsvm.api.server_edits import BASIC_VIEW
from eventsvm.api.server_request import access_ip, described, guest_password, require_active, server_name
from eventsvm.api.writes import chained_event
from eventsvm.events.builders import flavor_snapshot
from eventsvm.events.model import EventType
from eventsvm.identity import policy
from eventsvm.identity.quota import ResourceCount, check_quota
from eventsvm.projections.readmodel import Models
from eventsvm.scheduler.claims import claim_for_flavor
from eventsvm.state.identity import quota_for
from eventsvm.state.instances import Instance, InstanceExtras, server_status
from eventsvm.state.server_actions import ActionRefused
from eventsvm.state.server_moves import MOVE_REQUEST_KEYS, check_move_state, guest_record, image_record

# what nova's rebuild schema (2.1) admits beside imageRef; anything else is a 400
_REBUILD_KEYS = frozenset({"imageRef", "name", "metadata", "adminPass", "accessIPv4", "accessIPv6",
                           "OS-DCF:diskConfig", "preserve_ephemeral", "personality"})
_RESIZE_KEYS = frozenset({"flavorRef", "OS-DCF:diskConfig"})
_MAX_NAME = 255


def is_move_action(key: str) -> bool:
    """Whether a request key of POST /servers/{id}/action is a move run here."""
    return key in MOVE_REQUEST_KEYS


def _args(action: str, args: Any, allowed: frozenset[str], required: str) -> dict[str, Any]:
    if not isinstance(args, dict):
        raise BadRequest(f"Invalid input for field/attribute {action}. Value: {str(args)[:60]}. "
                         f"{str(args)[:60]!r} is not of type 'object'")
    if required not in args:
        raise BadRequest(f"Invalid input for field/attribute {action}. Value: {str(args)[:60]}. "
                         f"'{required}' is a required property")
    extra = sorted(set(args) - allowed)
    if extra:
        raise BadRequest(f"Invalid input for field/attribute {action}. Additional properties are not "
                         f"allowed ({', '.join(repr(k) for k in extra)} were unexpected)")
    return args


def _ref_id(ref: Any, field: str) -> str:
    # nova takes an id or a link to it (common.get_id_from_href)
    if not isinstance(ref, str) or not ref.strip():
        raise BadRequest(f"Invalid input for field/attribute {field}. Value: {str(ref)[:60]}.")
    return ref.rstrip("/").rsplit("/", 1)[-1]


def _optional_str(args: dict[str, Any], key: str, longest: int = _MAX_NAME) -> str | None:
    value = args.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > longest):
        raise BadRequest(f"Invalid input for field/attribute {key}. "
                         f"Value must be a string of at most {longest} characters.")
    return value


def _metadata(args: dict[str, Any]) -> dict[str, str] | None:
    metadata = args.get("metadata")
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 255 and len(v) <= 255
            for k, v in metadata.items()):
        raise BadRequest("Invalid input for field/attribute metadata. Keys and values must be strings of "
                         "at most 255 characters.")
    return dict(metadata)


def _slot(models: Models, host: str | None) -> int | None:
    record = models.hosts.get(host or "")
    return None if record is None else record.get("slot")


def _check(inst: Instance, caller: Identity, action: str) -> str | None:
    # the action's rule (servers:resize ...) is the route table's, checked before the handler;
    # the lock is nova's 409 on the server's state, which no policy rule says
    if policy.lock_holds(inst.locked, caller.admin_of("nova")):
        raise Conflict(f"Instance {inst.id} is locked")
    try:
        return check_move_state(action, inst.vm_state, inst.task_state)
    except ActionRefused as refused:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in "
                       f"{refused.attr} {refused.state}") from None


def _base_body(action: str, inst: Instance, task_state: str | None) -> dict[str, Any]:
    return {"action": action, "step": f"api_{action}", "host": inst.host, "source_host": None,
            "dest_host": None, "source_slot": None, "dest_slot": None, "vm_state": inst.vm_state,
            "task_state": task_state, "power_state": None, "flavor": None, "old_flavor": None, "claim": None,
            "old_claim": None, "guest": None, "old_image": None, "availability_zone": inst.availability_zone,
            "image_properties": {}, "boot_from_volume": False, "name": None, "metadata": None,
            "access_ipv4": None, "access_ipv6": None, "reason": None, "code": None,
            "description": None, "description_set": False}


def _guest(models: Models, inst: Instance, image_id: str | None) -> dict[str, Any]:
    image = models.catalog.images.get(image_id or "")
    if image is None:
        # a server booted from a volume has no image; its guest is defined without one
        image = {"id": image_id or "", "name": "", "disk_format": "raw", "container_format": "bare"}
    return guest_record(inst.name, image_record(image), inst.ports)


def _resize_body(models: Models, inst: Instance, args: Any, task_state: str | None) -> dict[str, Any]:
    flavor_id = _ref_id(args["flavorRef"], "flavorRef")
    flavor = models.catalog.flavor_by_name_or_id(flavor_id)
    if flavor is None:
        raise BadRequest("Unable to locate requested flavor.")
    assert inst.flavor is not None and inst.host is not None
    if flavor["id"] == inst.flavor["id"]:
        raise BadRequest("When resizing, instances must change flavor!")
    boot_from_volume = not inst.image_id
    if int(flavor["disk_gb"]) == 0 and not boot_from_volume:
        raise BadRequest("Server disk was unable to be resized because: Resize to zero disk flavor is not "
                         "allowed.")
    _check_quota(models, inst, flavor)
    image = models.catalog.images.get(inst.image_id or "")
    new = flavor_snapshot(flavor)
    body = _base_body("resize", inst, task_state)
    body.update(source_host=inst.host, source_slot=_slot(models, inst.host), flavor=new,
                old_flavor=inst.flavor,
                claim=claim_for_flavor(new, boot_from_volume).as_record(),
                old_claim=inst.claim or claim_for_flavor(inst.flavor, boot_from_volume).as_record(),
                guest=_guest(models, inst, inst.image_id), boot_from_volume=boot_from_volume,
                image_properties=dict((image or {}).get("properties") or {}))
    return body


def _check_quota(models: Models, inst: Instance, flavor: dict[str, Any]) -> None:
    """Nova's 403 when a larger flavor's extra cores or RAM exceed the project's quota (the
    authoritative count stays the log's; this is the door, as for a create)."""
    assert inst.flavor is not None and inst.project_id is not None
    more = ResourceCount(instances=0, cores=max(0, int(flavor["vcpus"]) - int(inst.flavor["vcpus"])),
                         ram_mb=max(0, int(flavor["ram_mb"]) - int(inst.flavor["ram_mb"])))
    over = check_quota(quota_for(models.identity, inst.project_id), project_usage(models, inst.project_id),
                       more)
    if over is not None:
        raise Forbidden(over)


def _finish_body(models: Models, inst: Instance, action: str, task_state: str | None) -> dict[str, Any]:
    move = inst.move
    if move is None:
        raise BadRequest("Instance has not been resized.")
    body = _base_body(action, inst, task_state)
    # the guest's power tells the host whether the server was stopped before the resize
    body["power_state"] = inst.power_state
    body.update({k: move[k] for k in ("source_host", "dest_host", "source_slot", "dest_slot", "old_flavor",
                                      "old_claim", "claim", "flavor", "guest")})
    # confirm: the source frees the old guest; revert: the destination drops the new one first
    body["host"] = move["source_host"] if action == "confirmResize" else move["dest_host"]
    return body


def _rebuild_body(models: Models, inst: Instance, args: dict[str, Any], task_state: str | None
                  ) -> dict[str, Any]:
    image_id = _ref_id(args["imageRef"], "imageRef")
    if image_id not in models.catalog.images:
        raise BadRequest("Cannot find image for rebuild")
    require_active(models.catalog.images[image_id])
    body = _base_body("rebuild", inst, task_state)
    body.update(flavor=inst.flavor, guest=_guest(models, inst, image_id),
                old_image=image_record(models.catalog.images[inst.image_id])
                if inst.image_id in models.catalog.images else None,
                name=args.get("name"), metadata=_metadata(args),
                access_ipv4=args.get("accessIPv4"), access_ipv6=args.get("accessIPv6"),
                description=args["description"], description_set=args["description_set"])
    if body["name"] is not None:
        assert body["guest"] is not None
        body["guest"]["name"] = body["name"]
    return body


def _rebuild_args(args: Any, version: tuple[int, int]) -> dict[str, Any]:
    """The rebuild request checked as nova's schema checks it at `version`, before any state: the
    name and the access addresses follow a create's rules (the addresses kept in their canonical
    form), the description is taken from 2.19."""
    keys = _REBUILD_KEYS | {"description"} if version >= microversion.DESCRIPTION else _REBUILD_KEYS
    args = _args("rebuild", args, keys, "imageRef")
    _optional_str(args, "adminPass")
    checked = dict(args)
    if "name" in args:
        checked["name"] = server_name(args["name"])
    for field, ip_version in (("accessIPv4", 4), ("accessIPv6", 6)):
        value = args.get(field)
        checked[field] = None if value is None or value == "" else access_ip(field, value, ip_version)
    checked.update(described(args, version))
    return checked


def request_move(
    server_id: str, key: str, args: Any, request: Request, caller: Identity, ctx: ApiContext
) -> Response:
    """Check and append one move; 202 (with the server for a rebuild), or nova's 400 / 403 / 404 / 409."""
    if key == "resize":
        args = _args(key, args, _RESIZE_KEYS, "flavorRef")
    elif key == "rebuild":
        args = _rebuild_args(args, microversion.served(request))
    fields = server_fields(ctx, caller)
    rm = ctx.readmodel
    with rm.lock:
        models = rm.models
        inst = visible_server(models, caller, server_id)
        task_state = _check(inst, caller, key)
        if key == "resize":
            body = _resize_body(models, inst, args, task_state)
        elif key == "rebuild":
            body = _rebuild_body(models, inst, args, task_state)
        else:
            body = _finish_body(models, inst, key, task_state)
        event = chained_event(EventType.INSTANCE_MOVE_REQUESTED, inst, body, request, caller, ctx)
        slot = _slot(models, body["host"])
        shown = _rebuilt_view(models, inst, body, request, fields) if key == "rebuild" else None
    # the host's partition, which its spawner reads (the scheduler reads them all)
    rm.append([event], [None if slot is None else slot % rm.log.partitions(str(event.topic))])
    if shown is None:
        # nova answers a confirm with 204, a resize and a revert with 202
        return Response(status_code=204 if key == "confirmResize" else 202)
    if ctx.enable_instance_password:
        # nova answers the rebuild's guest password, as for a create; the log never holds it
        shown["adminPass"] = guest_password(args.get("adminPass"))
    return JSONResponse({"server": shown}, status_code=202)


def _rebuilt_view(models: Models, inst: Instance, body: dict[str, Any], request: Request,
                  fields: ServerFields) -> dict[str, Any]:
    """The server as nova answers a rebuild: with what the request changed, in REBUILD."""
    changed = dataclasses.replace(
        inst, image_id=body["guest"]["image"]["id"], name=body["name"] or inst.name,
        metadata=body["metadata"] if body["metadata"] is not None else dict(inst.metadata),
        access_ipv4=body["access_ipv4"] or inst.access_ipv4,
        extras=dataclasses.replace(inst.extras or InstanceExtras(),
                                   access_ipv6=body["access_ipv6"] or inst.access_ipv6),
        description=body["description"] if body["description_set"] else inst.description,
        task_state=body["task_state"], status=server_status(inst.vm_state, body["task_state"]))
    view = server_view(models, compute_base(request), changed, fields, microversion.served(request))
    shown = {k: v for k, v in view.items() if k in BASIC_VIEW}
    # nova's rebuild shows the addresses without their extensions (extend_address=False)
    shown["addresses"] = {net: [{"version": a["version"], "addr": a["addr"]} for a in addresses]
                          for net, addresses in view["addresses"].items()}
    return shown
