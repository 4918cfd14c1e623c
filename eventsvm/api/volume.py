"""Cinder v3 under /volume: the version list and volumes, from the catalog.

The catalog URL carries the project id (`/volume/v3/{project_id}`) as devstack's does; the
volumes listed are always the token's project's (all projects for an admin with all_tenants).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Body as JsonBody
from fastapi.responses import JSONResponse

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, NotFound
from eventsvm.api.models import VolumeCreate, VolumeMetadataBody, VolumeMetaItem, VolumeUpdate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import own_target, permits
from eventsvm.api.responses import VolumeBody, VolumeList
from eventsvm.api.wire import (
    base_url,
    boolean_word,
    iso_micro,
    next_link,
    page,
    parse_limit,
    truthy,
    wants_detail,
)
from eventsvm.api.writes import caller_event, won_on_log
from eventsvm.events.model import EventType
from eventsvm.projections.readmodel import Models
from eventsvm.state.catalog import Body
from eventsvm.state.volumes import DELETE_REFUSED, attachments_of, unavailable_reason

router = APIRouter(prefix="/volume", tags=["volume"])


def _versions(request: Request) -> dict[str, Any]:
    href = f"{base_url(request)}/volume/v3/"
    return {"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.0", "min_version": "3.0",
                          "updated": "2016-02-08T12:20:21Z", "links": [{"rel": "self", "href": href}],
                          "media-types": [{"base": "application/json",
                                           "type": "application/vnd.openstack.volume+json;version=3"}]}]}


@router.get("", include_in_schema=False)
@router.get("/", summary="Cinder's version list (unauthenticated)", status_code=300)
def versions(request: Request) -> JSONResponse:
    """The block-storage API versions; cinder answers 300 Multiple Choices."""
    return JSONResponse(_versions(request), status_code=300)


@router.get("/v3", include_in_schema=False)
@router.get("/v3/", summary="Cinder v3 version document (unauthenticated)")
def version(request: Request) -> dict[str, Any]:
    """The v3 version document (microversion 3.0)."""
    return _versions(request)


# The one volume type, as every volume shows it and cinder names its default type.
DEFAULT_VOLUME_TYPE = "__DEFAULT__"


def _metadata(volume: Body) -> dict[str, str]:
    # a copy: the fold replaces a volume's metadata rather than changing it, but an answer is the
    # caller's to change
    return dict(volume.get("metadata") or {})


def _shown_metadata(volume: Body) -> dict[str, str]:
    # cinder shows its visible admin metadata among the volume's: the read-only flag once set
    metadata = _metadata(volume)
    if "readonly" in volume:
        metadata["readonly"] = "True" if volume["readonly"] else "False"
    return metadata


def volume_view(models: Models, base: str, volume: Body, tenant_shown: bool, detail: bool = True
                ) -> dict[str, Any]:
    """A volume as cinder v3 shows it."""
    owner = volume.get("owner")
    path = f"{base}/volume/v3/{owner}/volumes/{volume['id']}"
    view: dict[str, Any] = {
        "id": volume["id"],
        "name": volume["name"] or None,
        "links": [{"rel": "self", "href": path}],
    }
    if detail:
        created = iso_micro(models.catalog.created_at.get(volume["id"]))
        view.update(
            {
                "status": volume.get("status", "available"),
                "size": volume["size_gb"],
                "availability_zone": "nova",
                "created_at": created,
                "updated_at": iso_micro(volume["updated_ms"]) if "updated_ms" in volume else created,
                "attachments": _attachments(volume),
                "bootable": "true" if volume.get("bootable") else "false",
                "encrypted": False,
                "multiattach": False,
                "volume_type": DEFAULT_VOLUME_TYPE,
                "description": volume.get("description"),
                "metadata": _shown_metadata(volume),
                "user_id": volume.get("user_id"),
                "snapshot_id": None,
                "source_volid": None,
                "replication_status": None,
                "consistencygroup_id": None,
            }
        )
        if tenant_shown:
            view["os-vol-tenant-attr:tenant_id"] = owner
    return view


def _tenant_shown(ctx: ApiContext, caller: Identity) -> bool:
    """Whether cinder's volume_tenant_attribute rule shows the caller os-vol-tenant-attr:tenant_id."""
    return permits(ctx, caller, "cinder", "volume_extension:volume_tenant_attribute", own_target(caller))


def _attachments(volume: Body) -> list[dict[str, Any]]:
    """Cinder's `attachments` of a volume: those its host has attached (a reservation shows none)."""
    return [
        {"server_id": a["server_id"], "attachment_id": a["attachment_id"],
         "attached_at": iso_micro(a["attached_at"]), "host_name": a["host_name"], "volume_id": volume["id"],
         "device": a["device"], "id": volume["id"]}
        for a in attachments_of(volume).values()
        if a["attach_status"] in ("attached", "detaching")
    ]


@router.get(
    "/v3/{project_id}/volumes", summary="List volumes",
    response_model=VolumeList, response_model_exclude_unset=True, responses=failures(400, 403),
)
@router.get(
    "/v3/{project_id}/volumes/detail", summary="List volumes with details",
    response_model=VolumeList, response_model_exclude_unset=True, responses=failures(400, 403),
)
@reads_models
def list_volumes(
    project_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """The project's volumes: id, name and links, or in full at /detail."""
    query = request.query_params
    # cinder's get_all: every project's for an admin context asking all_tenants, else quietly its own
    everyone = caller.admin_of("cinder") and truthy(query.get("all_tenants"))
    models = ctx.readmodel.models
    chosen = [
        v
        for v in models.catalog.volumes.values()
        if (everyone or v.get("owner") == caller.project_id)
        and ("name" not in query or v["name"] == query["name"])
        and ("status" not in query or v.get("status", "available") == query["status"])
    ]
    _sort(chosen, _sort_order(query), models.catalog.created_at)
    limit = parse_limit(query.get("limit"), ctx.max_page)
    shown = page(chosen, lambda v: str(v["id"]), limit, query.get("marker"))
    base, detail = base_url(request), wants_detail(request)
    tenant_shown = _tenant_shown(ctx, caller)
    answer: dict[str, Any] = {"volumes": [volume_view(models, base, v, tenant_shown, detail) for v in shown]}
    collection = f"{base}/volume/v3/{project_id}/volumes" + ("/detail" if detail else "")
    links = next_link(collection, answer["volumes"], limit, dict(query))
    if links:
        answer["volumes_links"] = links
    return answer


# What a volume list may be sorted by (cinder's sort keys that mean something here), and how a
# volume's value for each is found.
_SORT_KEYS: dict[str, Callable[[Body, dict[str, int]], Any]] = {
    "id": lambda v, _created: str(v["id"]),
    "name": lambda v, _created: v.get("name") or "",
    "created_at": lambda v, created: created.get(v["id"], 0),
    "updated_at": lambda v, created: v.get("updated_ms", created.get(v["id"], 0)),
    "size": lambda v, _created: v["size_gb"],
    "status": lambda v, _created: v.get("status", "available"),
}


def _sort_order(query: Mapping[str, str]) -> list[tuple[str, bool]]:
    """cinder's `sort=key[:dir],...`, or `sort_key` and `sort_dir`, as (key, descending) pairs;
    by default the newest first (created_at, then id, descending). 400 for a key or direction
    cinder would not take."""
    if "sort" in query:
        pairs = [part.partition(":")[::2] for part in query["sort"].split(",") if part.strip()]
    elif "sort_key" in query or "sort_dir" in query:
        pairs = [(query.get("sort_key", "created_at"), query.get("sort_dir", "desc"))]
    else:
        pairs = [("created_at", "desc")]
    order: list[tuple[str, bool]] = []
    for key, direction in pairs:
        key, direction = key.strip(), (direction or "desc").strip().lower()
        if key not in _SORT_KEYS:
            raise BadRequest(f"Invalid input received: Invalid sort key {key}")
        if direction not in ("asc", "desc"):
            raise BadRequest("Invalid input received: Unknown sort direction, must be 'desc' or 'asc': "
                             f"{direction}")
        order.append((key, direction == "desc"))
    if all(key != "id" for key, _ in order):
        order.append(("id", order[-1][1]))  # ties broken by id, so a marker names one place
    return order


def _sort(volumes: list[Body], order: list[tuple[str, bool]], created: dict[str, int]) -> None:
    # stable sorts, least significant key first
    for key, descending in reversed(order):
        value = _SORT_KEYS[key]
        volumes.sort(key=lambda v: value(v, created), reverse=descending)


@router.get(
    "/v3/{project_id}/volumes/{volume_id}", summary="Show a volume",
    response_model=VolumeBody, response_model_exclude_unset=True, responses=failures(403, 404),
)
def show_volume(
    project_id: str,
    volume_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One volume of the project."""
    volume = _visible_volume(ctx, caller, volume_id)
    shown = volume_view(ctx.readmodel.models, base_url(request), volume, _tenant_shown(ctx, caller))
    return {"volume": shown}


def _refuse_missing_sources(ctx: ApiContext, caller: Identity, body: VolumeCreate) -> None:
    """Cinder's 404 for a snapshot, a source volume or a volume type that does not exist: there
    are no volume snapshots here, a source volume must be one the caller sees, and the one type
    is the default."""
    spec = body.volume
    if spec.snapshot_id is not None:
        raise NotFound(f"Snapshot {spec.snapshot_id} could not be found.")
    if spec.source_volid is not None:
        source = ctx.readmodel.models.catalog.volumes.get(spec.source_volid)
        if source is None or not caller.sees("cinder", source.get("owner")):
            raise NotFound(f"Volume {spec.source_volid} could not be found.")
    if spec.volume_type is not None and spec.volume_type != DEFAULT_VOLUME_TYPE:
        raise NotFound(f"Volume type with name {spec.volume_type} could not be found.")


@router.get("/v3/{project_id}/volumes/", include_in_schema=False)
@router.put("/v3/{project_id}/volumes/", include_in_schema=False)
@router.delete("/v3/{project_id}/volumes/", include_in_schema=False)
def volume_without_id(project_id: str, caller: Identity = Depends(current_identity)) -> None:
    """A volume path with an empty id names no volume: cinder's 404, not the list (GET) or a 405."""
    raise NotFound("Volume  could not be found.")


@router.post(
    "/v3/{project_id}/volumes", status_code=202, summary="Create a volume",
    response_model=VolumeBody, response_model_exclude_unset=True, responses=failures(403, 404),
)
def create_volume(
    project_id: str,
    body: VolumeCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.volume_created; the volume is available at once (there is no backend to wait for)."""
    _refuse_missing_sources(ctx, caller, body)
    volume_id = str(uuid.uuid4())
    volume = {
        "id": volume_id,
        "name": body.volume.name or "",
        "size_gb": body.volume.size,
        "owner": caller.project_id,
        "status": "available",
        "description": body.volume.description,
        "metadata": dict(body.volume.metadata or {}),
    }
    rm = ctx.readmodel
    rm.append([caller_event(EventType.VOLUME_CREATED, volume_id, volume, request, caller)])
    # the creator is the event's actor, which the catalog keeps beside the body
    shown = {**volume, "user_id": caller.user_id}
    return {"volume": volume_view(rm.models, base_url(request), shown, _tenant_shown(ctx, caller))}


@router.delete(
    "/v3/{project_id}/volumes/{volume_id}", status_code=202, summary="Delete a volume",
    response_class=Response, responses=failures(400, 403, 404),
)
def delete_volume(
    project_id: str,
    volume_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.volume_deleted and wait for the log's verdict: a volume reserved or attached
    (perhaps by an attach that reached the volume's partition first) is not deleted, cinder's 400."""
    rm = ctx.readmodel
    with rm.lock:
        volume = rm.models.catalog.volumes.get(volume_id)
        if volume is None or not caller.sees("cinder", volume.get("owner")):
            raise NotFound(f"Volume {volume_id} could not be found.")
        busy = unavailable_reason(volume) is not None
    event = caller_event(EventType.VOLUME_DELETED, volume_id, {"volume_id": volume_id}, request, caller)
    if busy or not won_on_log(ctx, event):
        raise BadRequest(f"Invalid volume: {DELETE_REFUSED}")
    return Response(status_code=202)


def _visible_volume(ctx: ApiContext, caller: Identity, volume_id: str) -> Body:
    """The volume, read under the model's lock; cinder's 404 when the caller does not see it."""
    with ctx.readmodel.lock:
        volume = ctx.readmodel.models.catalog.volumes.get(volume_id)
        if volume is None or not caller.sees("cinder", volume.get("owner")):
            raise NotFound(f"Volume {volume_id} could not be found.")
        return volume


def _change(ctx: ApiContext, request: Request, caller: Identity, volume_id: str,
            change: dict[str, Any]) -> Body:
    """Append catalog.volume_updated for a volume the caller sees and wait for the log's verdict;
    the volume as changed. A delete that reached the volume's partition first makes it a 404."""
    _visible_volume(ctx, caller, volume_id)
    body = {"volume_id": volume_id, "name": None, "description": None, "set": {}, "removed": [],
            "replace": False, "readonly": None, "bootable": None, **change}
    event = caller_event(EventType.VOLUME_UPDATED, volume_id, body, request, caller)
    if not won_on_log(ctx, event):
        raise NotFound(f"Volume {volume_id} could not be found.")
    return _visible_volume(ctx, caller, volume_id)


@router.put(
    "/v3/{project_id}/volumes/{volume_id}", summary="Update a volume's name, description or metadata",
    response_model=VolumeBody, response_model_exclude_unset=True, responses=failures(400, 403, 404),
)
def update_volume(
    project_id: str,
    volume_id: str,
    body: VolumeUpdate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """cinder's update: the fields given change, metadata given replaces the volume's."""
    spec = body.volume
    change: dict[str, Any] = {"name": spec.name, "description": spec.description}
    if spec.metadata is not None:
        change.update({"set": dict(spec.metadata), "replace": True})
    volume = _change(ctx, request, caller, volume_id, change)
    shown = volume_view(ctx.readmodel.models, base_url(request), volume, _tenant_shown(ctx, caller))
    return {"volume": shown}


@router.get("/v3/{project_id}/volumes/{volume_id}/metadata", summary="A volume's metadata",
            responses=failures(403, 404))
def show_volume_metadata(project_id: str, volume_id: str, caller: Identity = Depends(current_identity),
                         ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """{"metadata": {...}}."""
    return {"metadata": _metadata(_visible_volume(ctx, caller, volume_id))}


@router.post("/v3/{project_id}/volumes/{volume_id}/metadata", summary="Add to a volume's metadata",
             responses=failures(400, 403, 404))
def add_volume_metadata(project_id: str, volume_id: str, body: VolumeMetadataBody, request: Request,
                        caller: Identity = Depends(current_identity),
                        ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """The items given are added or replaced; the volume's whole metadata is answered."""
    return {"metadata": _metadata(_change(ctx, request, caller, volume_id, {"set": dict(body.metadata)}))}


@router.put("/v3/{project_id}/volumes/{volume_id}/metadata", summary="Replace a volume's metadata",
            responses=failures(400, 403, 404))
def replace_volume_metadata(project_id: str, volume_id: str, body: VolumeMetadataBody, request: Request,
                            caller: Identity = Depends(current_identity),
                            ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """The metadata becomes exactly the items given."""
    change = {"set": dict(body.metadata), "replace": True}
    return {"metadata": _metadata(_change(ctx, request, caller, volume_id, change))}


@router.get("/v3/{project_id}/volumes/{volume_id}/metadata/{key}", summary="One metadata item of a volume",
            responses=failures(403, 404))
def show_volume_metadata_item(project_id: str, volume_id: str, key: str,
                              caller: Identity = Depends(current_identity),
                              ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """{"meta": {key: value}}; 404 when the volume has no such key."""
    metadata = _metadata(_visible_volume(ctx, caller, volume_id))
    if key not in metadata:
        raise NotFound(f"Volume {volume_id} has no metadata with key {key}.")
    return {"meta": {key: metadata[key]}}


@router.put("/v3/{project_id}/volumes/{volume_id}/metadata/{key}",
            summary="Set one metadata item of a volume", responses=failures(400, 403, 404))
def set_volume_metadata_item(project_id: str, volume_id: str, key: str, body: VolumeMetaItem,
                             request: Request, caller: Identity = Depends(current_identity),
                             ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """One item, whose key the body must name as the path does (cinder's 400 otherwise)."""
    if list(body.meta) != [key]:
        raise BadRequest("Request body and URI mismatch")
    _change(ctx, request, caller, volume_id, {"set": dict(body.meta)})
    return {"meta": dict(body.meta)}


@router.delete("/v3/{project_id}/volumes/{volume_id}/metadata/{key}", summary="Remove a metadata item",
               response_class=Response, responses=failures(403, 404))
def delete_volume_metadata_item(project_id: str, volume_id: str, key: str, request: Request,
                                caller: Identity = Depends(current_identity),
                                ctx: ApiContext = Depends(api_context)) -> Response:
    """200 with no body, as cinder; 404 when the volume has no such key."""
    if key not in _metadata(_visible_volume(ctx, caller, volume_id)):
        raise NotFound(f"Volume {volume_id} has no metadata with key {key}.")
    _change(ctx, request, caller, volume_id, {"removed": [key]})
    return Response(status_code=200)


@router.get("/v3/{project_id}/limits", summary="The project's block-storage limits", responses=failures(403))
@reads_models
def volume_limits(
    project_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Cinder's absolute limits (its default quotas) with what the project's volumes use."""
    mine = [v for v in ctx.readmodel.models.catalog.volumes.values() if v.get("owner") == project_id]
    return {
        "limits": {
            "rate": [],
            "absolute": {
                "maxTotalVolumes": 10,
                "maxTotalSnapshots": 10,
                "maxTotalVolumeGigabytes": 1000,
                "maxTotalBackups": 10,
                "maxTotalBackupGigabytes": 1000,
                "totalVolumesUsed": len(mine),
                "totalGigabytesUsed": sum(v["size_gb"] for v in mine),
                "totalSnapshotsUsed": 0,
                "totalBackupsUsed": 0,
                "totalBackupGigabytesUsed": 0,
            },
        }
    }


@router.get("/v3/{project_id}/os-availability-zone", summary="The block-storage availability zones")
def volume_availability_zones(project_id: str, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """One zone, `nova`, where every volume is (cinder's default storage_availability_zone)."""
    return {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}}]}


# cinder's API extensions that this block-storage API serves, by alias
VOLUME_EXTENSIONS: dict[str, tuple[str, str]] = {
    "os-availability-zone": ("AvailabilityZones", "Describe Availability Zones."),
    "os-vol-tenant-attr": ("VolumeTenantAttribute",
                           "Expose the internal project_id as an attribute of a volume."),
    "os-used-limits": ("UsedLimits", "Provide data on limited resources that are being used."),
}


@router.get("/v3/{project_id}/extensions", summary="The block-storage API extensions")
def volume_extensions(project_id: str, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """What this block-storage API offers beyond its core, as cinder lists it."""
    return {"extensions": [
        {"alias": alias, "name": name, "description": description, "updated": "2013-01-01T00:00:00+00:00",
         "links": []}
        for alias, (name, description) in sorted(VOLUME_EXTENSIONS.items())]}


def _boolean(value: Any, name: str) -> bool:
    """cinder's parameter_types.boolean: a JSON boolean, or one of bool_from_string's words."""
    if isinstance(value, bool):
        return value
    word = boolean_word(value) if isinstance(value, str) else None
    if word is not None:
        return word
    raise BadRequest(f"Invalid input for field/attribute {name}. Value: {str(value)[:32]}. "
                     "It is not a boolean.")


@router.post(
    "/v3/{project_id}/volumes/{volume_id}/action", summary="A volume action (read-only and bootable flags)",
    response_class=Response,
    responses={200: {"description": "os-set_bootable was applied (no body)"},
               202: {"description": "os-update_readonly_flag was accepted (no body)"},
               **failures(400, 403, 404)},
)
def volume_action(
    project_id: str,
    volume_id: str,
    request: Request,
    body: dict[str, Any] = JsonBody(...),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """cinder's `os-update_readonly_flag` (`openstack volume set --read-only / --read-write`): 202,
    and the volume shows `readonly` among its metadata; only an available volume's flag changes,
    as cinder's (400 otherwise). `os-set_bootable` (`openstack volume set --bootable`, `volume
    create --bootable`): 200, and the volume shows `bootable` "true". Other actions are not offered."""
    if len(body) != 1:
        raise BadRequest("A volume action body names exactly one action.")
    ((action, args),) = body.items()
    flag = {"os-update_readonly_flag": "readonly", "os-set_bootable": "bootable"}.get(action)
    if flag is None:
        raise BadRequest(f"There is no such action: {action[:60]}")
    if not isinstance(args, dict) or set(args) != {flag}:
        raise BadRequest(f"Invalid input for {action}: it takes exactly '{flag}'.")
    value = _boolean(args[flag], flag)
    if flag == "readonly":
        status = _visible_volume(ctx, caller, volume_id).get("status", "available")
        if status != "available":
            raise BadRequest(f"Invalid volume: Volume {volume_id} status must be available to update "
                             f"readonly flag, but current status is: {status}.")
    _change(ctx, request, caller, volume_id, {flag: value})
    return Response(status_code=202 if flag == "readonly" else 200)
