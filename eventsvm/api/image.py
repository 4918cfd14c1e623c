"""Glance v2 under /image: the version list and images, from the catalog."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge, UnsupportedMediaType
from eventsvm.api.models import ImageCreate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize, own_target
from eventsvm.api.responses import Image, ImageList
from eventsvm.api.wire import base_url, is_uuid, iso_z, page, parse_limit
from eventsvm.api.writes import append_in_log_order, caller_event, claim_name
from eventsvm.events.model import EventType
from eventsvm.state.catalog import Body, CatalogState
from eventsvm.state.server_snapshot import QUEUED

log = logging.getLogger(__name__)

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
    # an uploaded image's size, 0 included; before its data glance shows none
    size = image.get("size_bytes") if image.get("checksum") else image.get("size_bytes") or None
    view: dict[str, Any] = {k: v for k, v in (image.get("properties") or {}).items() if k not in _CORE}
    view.update(
        {
            "id": image["id"],
            "name": image["name"],
            "status": image.get("status", "active"),
            "visibility": image.get("visibility", "public"),
            "owner": image.get("owner"),
            "protected": image.get("protected", False),
            "os_hidden": False,
            # what an upload recorded (a snapshot or the seed's image has no checksums)
            "checksum": image.get("checksum"),
            "os_hash_algo": image.get("os_hash_algo"),
            "os_hash_value": image.get("os_hash_value"),
            "min_disk": image.get("min_disk", 0),
            "min_ram": image.get("min_ram", 0),
            "size": size,
            "virtual_size": image.get("virtual_size"),
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "created_at": created,
            "updated_at": iso_z(image["updated_at"]) if "updated_at" in image else created,
            "tags": list(image.get("tags", [])),
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
        # glance's: no data yet; PUT /v2/images/{id}/file makes it active (eventsvm.api.image_data)
        "status": QUEUED,
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
    if image.get("protected"):
        raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
    # in log order, so an answer of 204 means this process no longer shows the image
    deleted = caller_event(EventType.IMAGE_DELETED, image_id, {"id": image_id}, request, caller)
    append_in_log_order(ctx, deleted)
    if ctx.image_store is not None:
        # glance deletes the data with the image; a server booted from it keeps its own link
        # (eventsvm.virt.images), and a snapshot's file goes with its host's spawner
        try:
            ctx.image_store.remove(image_id)
        except OSError as exc:
            log.warning("the data of deleted image %s is left in the image store: %s", image_id, exc.strerror)


# -- changes: glance's JSON patch and its tag calls -------------------------------------------
DRAFT_PATCH = "application/openstack-images-v2.0-json-patch"
PATCH_MEDIA_TYPES = ("application/openstack-images-v2.1-json-patch", DRAFT_PATCH)
# what a patch may set besides custom properties (glance's other base attributes are read-only;
# glance lets a queued image's disk and container formats change, which this one does not)
_EDITABLE = ("name", "visibility", "min_disk", "min_ram", "protected", "tags")
# glance's image_tag_quota
MAX_TAGS = 128


def _editable_value(name: str, value: Any) -> Any:
    """A base attribute's new value, as glance's schema accepts it (400 otherwise)."""
    if name == "name" and (value is None or isinstance(value, str) and len(value) <= 255):
        return value if value is not None else ""
    if name == "visibility" and value in ("public", "private", "shared", "community"):
        return value
    if name in ("min_disk", "min_ram") and type(value) is int and value >= 0:
        return value
    if name == "protected" and isinstance(value, bool):
        return value
    if name == "tags" and isinstance(value, list) and all(
            isinstance(t, str) and 0 < len(t) <= 255 for t in value):
        tags = list(dict.fromkeys(value))
        if len(tags) > MAX_TAGS:
            raise TooLarge(f"Maximum number of tags exceeded: {len(tags)} of {MAX_TAGS}.")
        return tags
    raise BadRequest(f"Invalid value for {name}: {str(value)[:64]!r}.")


_VERBS = ("add", "replace", "remove")


def _draft_operations(operations: Any) -> Any:
    """Operations of glance's v2.0 patch media type (what tempest's images client sends) as RFC
    6902's, which v2.1 takes: the older draft names the path under the verb, `{"replace": "/name",
    "value": ...}`, where RFC 6902 says `{"op": "replace", "path": "/name", "value": ...}`."""
    if not isinstance(operations, list):
        return operations  # refused by _patched as any other non-list
    converted: list[Any] = []
    for operation in operations:
        if isinstance(operation, dict):
            verbs = [verb for verb in _VERBS if verb in operation]
            if len(verbs) != 1:
                raise BadRequest('Operation objects must contain exactly one member named "add", '
                                 '"remove", or "replace".')
            rest = {k: v for k, v in operation.items() if k != verbs[0]}
            operation = {**rest, "op": verbs[0], "path": operation[verbs[0]]}
        converted.append(operation)
    return converted


def _patched(image: Body, operations: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The image's editable attributes and custom properties after glance's JSON patch."""
    if not isinstance(operations, list):
        raise BadRequest("The request body must be a JSON array of patch operations.")
    values: dict[str, Any] = {
        "name": image["name"], "visibility": image.get("visibility", "public"),
        "min_disk": image.get("min_disk", 0), "min_ram": image.get("min_ram", 0),
        "protected": image.get("protected", False), "tags": list(image.get("tags", [])),
    }
    properties = dict(image.get("properties") or {})
    for operation in operations:
        if (not isinstance(operation, dict) or operation.get("op") not in _VERBS
                or not isinstance(operation.get("path"), str) or not operation["path"].startswith("/")):
            raise BadRequest(f"Unable to parse operation {str(operation)[:128]}.")
        if operation["op"] != "remove" and "value" not in operation:
            raise BadRequest(f"Operation {operation['op']} on {operation['path'][:64]} needs a value.")
        # a JSON pointer of one segment: ~1 is a slash, ~0 a tilde
        name = operation["path"][1:].replace("~1", "/").replace("~0", "~")
        if "/" in operation["path"][1:]:
            raise BadRequest(f"Nested paths are not allowed: {operation['path'][:64]}.")
        if name in _EDITABLE:
            if operation["op"] == "remove":
                raise Forbidden(f"Attribute '{name}' cannot be removed.")
            values[name] = _editable_value(name, operation["value"])
        elif name in _CORE:
            raise Forbidden(f"Attribute '{name}' is read-only.")
        elif operation["op"] == "remove" or operation["op"] == "replace" and name not in properties:
            if name not in properties:
                raise Conflict(f"Property {name[:255]} does not exist.")
            del properties[name]
        else:
            value = operation["value"]
            if not isinstance(value, str) or not 0 < len(name) <= 255 or len(value) > 65535:
                raise BadRequest(f"Property {name[:255]} must be a string of at most 65535 characters.")
            properties[name] = value
    return values, properties


def _change_image(ctx: ApiContext, request: Request, caller: Identity, image_id: str,
                  edit: Callable[[Body], tuple[dict[str, Any], dict[str, str]]]) -> Body:
    """Append catalog.image_changed with what `edit` changes of the image (nothing when nothing
    does) and return the image as it stands after. Making an image public (or community) is as
    glance's policy says; being allowed to change it at all is the route table's modify_image."""
    rm = ctx.readmodel
    with rm.lock:
        image = visible_image(rm.models.catalog, caller, image_id)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    values, properties = edit(image)
    if values["visibility"] != image.get("visibility", "public"):
        rule = {"public": "publicize_image", "community": "communitize_image"}.get(values["visibility"])
        if rule is not None:
            authorize(ctx, caller, "glance", rule, {**own_target(caller), "project_id": image.get("owner")})
    before, held = _patched(image, [])
    changed = [name for name in _EDITABLE if values[name] != before[name]]
    set_properties = {k: v for k, v in properties.items() if held.get(k) != v}
    removed = sorted(set(held) - set(properties))
    if set_properties or removed:
        changed.append("properties")
    if changed:
        body = {"id": image_id, "changed": changed, **values, "set": set_properties, "removed": removed}
        rm.append([caller_event(EventType.IMAGE_CHANGED, image_id, body, request, caller)])
    with rm.lock:
        found = rm.models.catalog.images.get(image_id)
    if found is None:  # deleted meanwhile
        raise NotFound(f"No image found with ID {image_id}")
    return found



@router.patch(
    "/v2/images/{image_id}", summary="Change an image (JSON patch)",
    response_model=Image, response_model_exclude_unset=True, responses=failures(400, 403, 404, 409, 413, 415),
)
async def update_image(
    image_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Glance's PATCH: `add`, `replace` and `remove` of the name, visibility, minimums,
    protection, tags and custom properties, as application/openstack-images-v2.1-json-patch (RFC
    6902) or v2.0-json-patch (the older draft's operations)."""
    body = await request.body()
    # the read model's lock and the append are for a worker thread, not the event loop
    return await run_in_threadpool(_patch_image, ctx, request, caller, image_id, body)


def _patch_image(ctx: ApiContext, request: Request, caller: Identity, image_id: str,
                 body: bytes) -> dict[str, Any]:
    with ctx.readmodel.lock:
        if visible_image(ctx.readmodel.models.catalog, caller, image_id) is None:
            raise NotFound(f"No image found with ID {image_id}")  # before its body says anything
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in PATCH_MEDIA_TYPES:
        raise UnsupportedMediaType(f"Unsupported Content-Type {media[:64]!r}: send "
                                   f"{PATCH_MEDIA_TYPES[0]}.")
    try:
        operations = json.loads(body)
    except ValueError:
        raise BadRequest("The request body is not valid JSON.") from None
    if media == DRAFT_PATCH:
        operations = _draft_operations(operations)
    image = _change_image(ctx, request, caller, image_id, lambda held: _patched(held, operations))
    with ctx.readmodel.lock:
        return image_view(image, ctx.readmodel.models.catalog.created_at.get(image_id))


def _with_tag(tag: str, present: bool) -> Callable[[Body], tuple[dict[str, Any], dict[str, str]]]:
    def edit(image: Body) -> tuple[dict[str, Any], dict[str, str]]:
        values, properties = _patched(image, [])
        tags = [t for t in values["tags"] if t != tag]
        if not present and len(tags) == len(values["tags"]):
            raise NotFound(f"Tag {tag[:255]} not found.")
        values["tags"] = _editable_value("tags", [*tags, tag] if present else tags)
        return values, properties
    return edit


@router.put(
    "/v2/images/{image_id}/tags/{tag}", status_code=204, summary="Tag an image", response_class=Response,
    responses=failures(400, 403, 404, 413),
)
def add_image_tag(
    image_id: str, tag: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Add a tag (one the image already has changes nothing)."""
    _change_image(ctx, request, caller, image_id, _with_tag(tag, present=True))
    return Response(status_code=204)


@router.delete(
    "/v2/images/{image_id}/tags/{tag}", status_code=204, summary="Untag an image", response_class=Response,
    responses=failures(403, 404),
)
def delete_image_tag(
    image_id: str, tag: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Remove a tag; 404 when the image does not have it."""
    _change_image(ctx, request, caller, image_id, _with_tag(tag, present=False))
    return Response(status_code=204)
