"""Nova's image proxy under /compute/v2.1/images (deprecated from 2.36, served at 2.1): Glance's
images seen through nova, as tempest's compute image tests and `nova image-*` read them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import compute_base
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import NotFound
from eventsvm.api.image import remove_image, visible_image, visible_images
from eventsvm.api.openapi import failures
from eventsvm.api.wire import iso_z, links
from eventsvm.state.catalog import Body
from eventsvm.state.server_snapshot import COMPUTE_STATUS, PROGRESS

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])


def compute_image_view(image: Body, created_ms: int | None, base: str) -> dict[str, Any]:
    """An image as nova's proxy shows it: nova's status, minRam / minDisk, properties as metadata."""
    status = COMPUTE_STATUS.get(image.get("status", "active"), "UNKNOWN")
    properties = dict(image.get("properties") or {})
    view: dict[str, Any] = {
        "id": image["id"], "name": image["name"], "status": status, "progress": PROGRESS.get(status, 0),
        "minRam": image.get("min_ram", 0), "minDisk": image.get("min_disk", 0),
        "metadata": properties, "created": iso_z(created_ms), "updated": iso_z(created_ms),
        "OS-EXT-IMG-SIZE:size": image.get("size_bytes") or 0,
        "links": [*links(base, f"images/{image['id']}"),
                  {"rel": "alternate", "type": "application/vnd.openstack.image",
                   "href": f"{base.rsplit('/compute', 1)[0]}/image/v2/images/{image['id']}"}],
    }
    server = properties.get("instance_uuid")
    if server:
        view["server"] = {"id": server, "links": links(base, f"servers/{server}")}
    return view


def _matches(image: Body, query: Any) -> bool:
    properties = image.get("properties") or {}
    if "name" in query and image["name"] != query["name"]:
        return False
    if "status" in query and COMPUTE_STATUS.get(image.get("status", "active")) != query["status"].upper():
        return False
    if "server" in query and properties.get("instance_uuid") != query["server"].rsplit("/", 1)[-1]:
        return False
    return "type" not in query or properties.get("image_type") == query["type"]


def _listed(request: Request, caller: Identity, ctx: ApiContext, detail: bool) -> dict[str, Any]:
    base = compute_base(request)
    catalog = ctx.readmodel.models.catalog
    chosen = [i for i in visible_images(catalog, caller) if _matches(i, request.query_params)]
    if detail:
        return {"images": [compute_image_view(i, catalog.created_at.get(i["id"]), base) for i in chosen]}
    return {"images": [{"id": i["id"], "name": i["name"], "links": links(base, f"images/{i['id']}")}
                       for i in chosen]}


@router.get("/images", summary="List images (nova's image proxy)", responses=failures(400))
@reads_models
def list_images(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The images the caller may see: id, name and links."""
    return _listed(request, caller, ctx, detail=False)


@router.get("/images/detail", summary="List images in full (nova's image proxy)", responses=failures(400))
@reads_models
def list_images_detail(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The images the caller may see, each in full."""
    return _listed(request, caller, ctx, detail=True)


@router.get("/images/{image_id}", summary="Show an image (nova's image proxy)", responses=failures(404))
def show_image(
    image_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One image; nova's 404 "Image not found." for one the caller cannot see."""
    catalog = ctx.readmodel.models.catalog
    image = visible_image(catalog, caller, image_id)
    if image is None:
        raise NotFound("Image not found.")
    return {"image": compute_image_view(image, catalog.created_at.get(image_id), compute_base(request))}


@router.delete(
    "/images/{image_id}", status_code=204, summary="Delete an image (nova's image proxy)",
    response_class=Response, responses=failures(403, 404),
)
def delete_image(
    image_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Glance's delete, through nova."""
    try:
        remove_image(image_id, request, caller, ctx)
    except NotFound:
        raise NotFound("Image not found.") from None
    return Response(status_code=204)
