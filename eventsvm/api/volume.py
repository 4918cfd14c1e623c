"""Cinder v3 under /volume: the version list and volumes, from the catalog.

The catalog URL carries the project id (`/volume/v3/{project_id}`) as devstack's does; the
volumes listed are always the token's project's (all projects for an admin with all_tenants).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, NotFound
from eventsvm.api.models import VolumeCreate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import own_target, permits
from eventsvm.api.responses import VolumeBody, VolumeList
from eventsvm.api.wire import base_url, iso_micro, page, parse_limit, truthy, wants_detail
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
                "updated_at": created,
                "attachments": _attachments(volume),
                "bootable": "false",
                "encrypted": False,
                "multiattach": False,
                "volume_type": DEFAULT_VOLUME_TYPE,
                "description": None,
                "metadata": {},
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
    shown = page(
        chosen, lambda v: str(v["id"]), parse_limit(query.get("limit"), ctx.max_page), query.get("marker")
    )
    base, detail = base_url(request), wants_detail(request)
    tenant_shown = _tenant_shown(ctx, caller)
    return {"volumes": [volume_view(models, base, v, tenant_shown, detail) for v in shown]}


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
    models = ctx.readmodel.models
    volume = models.catalog.volumes.get(volume_id)
    if volume is None or not caller.sees("cinder", volume.get("owner")):
        raise NotFound(f"Volume {volume_id} could not be found.")
    return {"volume": volume_view(models, base_url(request), volume, _tenant_shown(ctx, caller))}


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
    response_model=VolumeBody, response_model_exclude_unset=True, responses=failures(403),
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
