"""Glance v2 under /image: the version list and images, from the catalog."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.models import ImageCreate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize, own_target
from eventsvm.api.responses import Image, ImageList
from eventsvm.api.wire import base_url, is_uuid, iso_z, page, parse_limit
from eventsvm.api.writes import append_in_log_order, caller_event, claim_name
from eventsvm.events.model import EventType
from eventsvm.state.catalog import Body, CatalogState

router = APIRouter(prefix="/image", tags=["image"])

# glance's own attributes: a property may not shadow them
_CORE = frozenset(
    {
        "id",
        "name",
        "status",
        "visibility",
        "owner",
        "protected",
        "os_hidden",
        "checksum",
        "min_disk",
        "min_ram",
        "size",
        "virtual_size",
        "disk_format",
        "container_format",
        "created_at",
        "updated_at",
        "tags",
        "self",
        "file",
        "schema",
        "locations",
        "direct_url",
        "os_hash_algo",
        "os_hash_value",
    }
)


@router.get("", include_in_schema=False)
@router.get("/", summary="Glance's version list (unauthenticated)", status_code=300)
def versions(request: Request) -> JSONResponse:
    """The image API versions; glance answers 300 Multiple Choices."""
    href = f"{base_url(request)}/image/v2/"
    values = [
        {
            "id": v,
            "status": "CURRENT" if v == "v2.16" else "SUPPORTED",
            "links": [{"rel": "self", "href": href}],
        }
        for v in ("v2.16", "v2.0")
    ]
    return JSONResponse({"versions": values}, status_code=300)


def image_view(image: Body, created_ms: int | None) -> dict[str, Any]:
    """An image as glance v2 shows it, custom properties at the top level."""
    created = iso_z(created_ms)
    view: dict[str, Any] = {k: v for k, v in (image.get("properties") or {}).items() if k not in _CORE}
    view.update(
        {
            "id": image["id"],
            "name": image["name"],
            "status": image.get("status", "active"),
            "visibility": image.get("visibility", "public"),
            "owner": image.get("owner"),
            "protected": False,
            "os_hidden": False,
            "checksum": None,
            "os_hash_algo": None,
            "os_hash_value": None,
            "min_disk": image.get("min_disk", 0),
            "min_ram": image.get("min_ram", 0),
            "size": image.get("size_bytes") or None,
            "virtual_size": None,
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "created_at": created,
            "updated_at": created,
            "tags": [],
            "self": f"/v2/images/{image['id']}",
            "file": f"/v2/images/{image['id']}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return view


def _visible(image: Body, caller: Identity, listing: bool) -> bool:
    if caller.sees("glance", image.get("owner")):
        return True
    visibility = image.get("visibility", "public")
    # glance lists community images only when asked for them, but shows them by id
    return visibility == "public" or (visibility == "community" and not listing)


def _newest_first(catalog: CatalogState) -> list[Body]:
    return sorted(catalog.images.values(), key=lambda i: (-catalog.created_at.get(i["id"], 0), i["id"]))


def visible_images(catalog: CatalogState, caller: Identity) -> list[Body]:
    """The images a listing shows the caller, newest first."""
    return [i for i in _newest_first(catalog) if _visible(i, caller, listing=True)]


def visible_image(catalog: CatalogState, caller: Identity, image_id: str) -> Body | None:
    """One image by id if the caller may see it."""
    image = catalog.images.get(image_id)
    return image if image is not None and _visible(image, caller, listing=False) else None


def _in_list(raw: str) -> set[str]:
    values = raw[3:] if raw.startswith("in:") else raw
    return {v.strip().strip('"') for v in values.split(",")}


@router.get(
    "/v2/images", summary="List images",
    response_model=ImageList, response_model_exclude_unset=True, responses=failures(400),
)
@reads_models
def list_images(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Images the caller may see; name is an exact match, id may be `in:a,b`."""
    query = request.query_params
    catalog = ctx.readmodel.models.catalog
    ids = _in_list(query["id"]) if "id" in query else None
    names = _in_list(query["name"]) if query.get("name", "").startswith("in:") else None
    chosen = []
    for image in _newest_first(catalog):
        visibility = query.get("visibility")
        if visibility is not None:
            if image.get("visibility") != visibility or not (
                visibility in ("public", "community") or caller.sees("glance", image.get("owner"))
            ):
                continue
        elif not _visible(image, caller, listing=True):
            continue
        if ids is not None and image["id"] not in ids:
            continue
        if names is not None and image["name"] not in names:
            continue
        if names is None and "name" in query and image["name"] != query["name"]:
            continue
        if "owner" in query and image.get("owner") != query["owner"]:
            continue
        if "status" in query and query["status"] != image.get("status", "active"):
            continue
        chosen.append(image)
    limit = parse_limit(query.get("limit"), ctx.max_page)
    shown = page(chosen, lambda i: str(i["id"]), limit, query.get("marker"))
    return {
        "images": [image_view(i, catalog.created_at.get(i["id"])) for i in shown],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }


@router.get(
    "/v2/images/{image_id}", summary="Show an image",
    response_model=Image, response_model_exclude_unset=True, responses=failures(404),
)
def show_image(
    image_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """One image, unwrapped as glance answers; a name is not an id and answers 404."""
    catalog = ctx.readmodel.models.catalog
    image = visible_image(catalog, caller, image_id)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    return image_view(image, catalog.created_at.get(image_id))


@router.get("/v2/images/", include_in_schema=False)
@router.delete("/v2/images/", include_in_schema=False)
def image_without_id(caller: Identity = Depends(current_identity)) -> None:
    """An image path with an empty id names no image: glance's 404, not the list (GET) or a 405."""
    raise NotFound("No image found with ID ")


@router.post(
    "/v2/images", status_code=201, summary="Register an image",
    response_model=Image, response_model_exclude_unset=True, responses=failures(400, 403, 409),
)
def create_image(
    body: ImageCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.image_created owned by the caller's project; public images are for admins."""
    if body.visibility == "public":
        authorize(ctx, caller, "glance", "publicize_image", own_target(caller))
    image_id = body.id or str(uuid.uuid4())
    if not is_uuid(image_id):
        raise BadRequest(f"Invalid image id {image_id}: it must be a UUID.")
    properties: dict[str, str] = {}
    for key, value in (body.model_extra or {}).items():
        if key in _CORE:
            continue
        if not isinstance(value, str) or len(key) > 255 or len(value) > 65535:
            raise BadRequest(f"Property {key[:255]} must be a string of at most 65535 characters.")
        properties[key] = value
    image = {
        "id": image_id,
        "name": body.name,
        "disk_format": body.disk_format,
        "container_format": body.container_format,
        "size_bytes": 0,
        "min_disk": body.min_disk,
        "min_ram": body.min_ram,
        "visibility": body.visibility,
        "owner": caller.project_id,
        "properties": properties,
        "location": None,
    }
    taken = f"Image with identifier {image_id} already exists!"
    rm = ctx.readmodel
    with rm.lock:
        if image_id in rm.models.catalog.images:
            raise Conflict(taken)
    event = caller_event(EventType.IMAGE_CREATED, image_id, image, request, caller)
    claim_name(ctx, event, taken)
    return image_view(image, rm.models.catalog.created_at.get(image_id))


@router.delete(
    "/v2/images/{image_id}", status_code=204, summary="Delete an image", response_class=Response,
    responses=failures(403, 404),
)
def delete_image(
    image_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.image_deleted; glance lets the owner or an admin delete, in any status (a
    snapshot still queued included: its host then finds the image gone and keeps nothing)."""
    remove_image(image_id, request, caller, ctx)
    return Response(status_code=204)


def remove_image(image_id: str, request: Request, caller: Identity, ctx: ApiContext) -> None:
    """Delete an image for glance's DELETE and nova's image proxy: NotFound when the caller cannot
    see it. Whether it may delete one it sees (glance's delete_image) is the route table's."""
    with ctx.readmodel.lock:
        image = visible_image(ctx.readmodel.models.catalog, caller, image_id)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    # in log order, so an answer of 204 means this process no longer shows the image
    deleted = caller_event(EventType.IMAGE_DELETED, image_id, {"id": image_id}, request, caller)
    append_in_log_order(ctx, deleted)
