"""Glance's image data: `PUT /image/v2/images/{id}/file` takes an image's bytes, `GET` gives them.

An upload streams into the image store (eventsvm.api.image_store) as it arrives, bounded by
glance's image_size_cap rather than the API's 64 KB bound on JSON bodies (RequestEnvelope leaves
this route's body to it), is inspected before it may become bootable (eventsvm.api.image_format),
and ends with catalog.image_updated: the image active with its size, checksums and location. The
log decides whether that fill wins (a queued image takes one); a losing upload removes its file.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import IO

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, Gone, NotFound, TooLarge, UnsupportedMediaType
from eventsvm.api.image import visible_image
from eventsvm.api.image_format import ImageDataRefused
from eventsvm.api.image_store import HASH_ALGO, StoredData, Upload, gone_meanwhile
from eventsvm.api.openapi import failures
from eventsvm.api.writes import caller_event, won_on_log
from eventsvm.events.model import EventType
from eventsvm.log.port import LogError
from eventsvm.state.catalog import Body
from eventsvm.state.server_snapshot import ACTIVE, QUEUED

log = logging.getLogger(__name__)

router = APIRouter(prefix="/image", tags=["image"])

OCTET_STREAM = "application/octet-stream"
_FILE = re.compile(r"^/image/v2/images/[^/]+/file$")
# what is gathered from the request before a worker thread writes it: few thread hops per upload,
# and never more than this (and one chunk) of it in memory
_WRITE_BYTES = 1 << 20
# the read size of a download
_READ_BYTES = 1 << 20
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def streams_body(scope: Scope) -> bool:
    """Whether a request's body is an upload, read by its handler as it comes rather than whole by
    RequestEnvelope. The handler answers 401 and 404 before it reads any of it, so such a miss
    can still be answered again once caught up with the log (eventsvm.api.peers)."""
    return scope.get("method") == "PUT" and _FILE.match(scope.get("path", "")) is not None


@router.put(
    "/v2/images/{image_id}/file", status_code=204, summary="Upload an image's data", response_class=Response,
    responses=failures(403, 404, 409, 410, 413, 415),
    openapi_extra={"requestBody": {"required": True, "content": {OCTET_STREAM: _BINARY}}},
)
async def upload_image_data(
    image_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Store the body as the image's data and make the image active: 204, as glance answers. The
    owner or an admin may (glance's upload_image), once, while the image is queued."""
    image = await run_in_threadpool(_uploadable, ctx, caller, image_id, request)
    assert ctx.image_store is not None  # _uploadable answered 410 otherwise
    upload = await run_in_threadpool(ctx.image_store.begin, image_id)
    try:
        try:
            stored = await _stored(upload, request, image["disk_format"])
        except BaseException:
            upload.discard()  # a refused, cut or failed upload leaves no file behind
            raise
        await run_in_threadpool(_fill, ctx, request, caller, image, stored, upload)
    finally:
        upload.end()
    return Response(status_code=204)


def _uploadable(ctx: ApiContext, caller: Identity, image_id: str, request: Request) -> Body:
    """The queued image the request may upload to: 404 before anything of the request is looked at
    (as the PATCH), then glance's 415, 410 and 409."""
    with ctx.readmodel.lock:
        image = visible_image(ctx.readmodel.models.catalog, caller, image_id)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != OCTET_STREAM:
        raise UnsupportedMediaType(
            f"Invalid content type {media[:64]!r}: image data is sent as {OCTET_STREAM}.")
    if ctx.image_store is None:
        # a bare API with no data directory (glance's StoreAddDisabled)
        raise Gone("Error in store configuration. Adding images to store is disabled.")
    status = image.get("status", ACTIVE)
    if status != QUEUED:
        raise Conflict(f"Image status transition from {status} to saving is not allowed")
    return dict(image)


async def _stored(upload: Upload, request: Request, disk_format: str) -> StoredData:
    """The request's body, written through `upload` as it arrives, and judged once whole."""
    declared = _declared_size(request)
    if declared is not None and declared > upload.store.size_cap:
        raise TooLarge(f"The incoming image is too large: the limit is {upload.store.size_cap} bytes.")
    pending = bytearray()
    try:
        async for chunk in request.stream():
            pending += chunk
            if len(pending) >= _WRITE_BYTES:
                await run_in_threadpool(upload.write, bytes(pending))
                pending.clear()
    except ClientDisconnect:
        raise BadRequest("The upload was cut short: the client went away before sending it all.") from None
    if pending:
        await run_in_threadpool(upload.write, bytes(pending))
    try:
        return await run_in_threadpool(upload.finish, disk_format)
    except ImageDataRefused as exc:
        # glance's InvalidImageData (a format mismatch, a failed safety check) is a 415
        raise UnsupportedMediaType(str(exc)) from None


def _declared_size(request: Request) -> int | None:
    """The size the client says it sends (the SDK's X-OpenStack-Image-Size, else Content-Length)."""
    for header in ("x-openstack-image-size", "content-length"):
        value = request.headers.get(header, "").strip()
        if value.isdigit():
            return int(value)
    return None


def _fill(ctx: ApiContext, request: Request, caller: Identity, image: Body, stored: StoredData,
          upload: Upload) -> None:
    """Append catalog.image_updated for the stored data and wait for the log's verdict: a loser (the
    image filled by another upload first, or deleted) removes its file and answers 409 or 410."""
    image_id = image["id"]
    body = {"id": image_id, "status": ACTIVE, "size_bytes": stored.size, "disk_format": image["disk_format"],
            "container_format": image["container_format"], "location": stored.location,
            "checksum": stored.checksum, "os_hash_algo": HASH_ALGO, "os_hash_value": stored.os_hash_value,
            "virtual_size": stored.virtual_size}
    event = caller_event(EventType.IMAGE_UPDATED, image_id, body, request, caller)
    try:
        # a late verdict (503) keeps the file: the fill may yet win, and a deleted image's files go
        # with it
        if won_on_log(ctx, event):
            return
    except LogError:
        upload.discard()  # not recorded: nothing names the file
        raise
    upload.discard()
    with ctx.readmodel.lock:
        now = ctx.readmodel.models.catalog.images.get(image_id)
    if now is None:
        raise gone_meanwhile(image_id)
    raise Conflict(f"Image status transition from {now.get('status', ACTIVE)} to saving is not allowed")


@router.get(
    "/v2/images/{image_id}/file", summary="Download an image's data", response_class=Response,
    responses={200: {"description": "The image's data", "content": {OCTET_STREAM: _BINARY}},
               204: {"description": "The image has no data"}, **failures(403, 404)},
)
def download_image_data(
    image_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> Response:
    """The image's data, streamed (glance's download_image: a member of the owning project, or of
    any project for a public image, or an admin); 204 for an image with no data."""
    with ctx.readmodel.lock:
        image = visible_image(ctx.readmodel.models.catalog, caller, image_id)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    data = _opened(image)
    if data is None:
        return Response(status_code=204)
    headers = {"Content-Length": str(os.fstat(data.fileno()).st_size)}
    if image.get("checksum"):
        # glance sends its checksum (hex) here, and the SDK compares it with the data's hexdigest
        headers["Content-MD5"] = image["checksum"]
    return StreamingResponse(_chunks(data), media_type=OCTET_STREAM, headers=headers)


def _opened(image: Body) -> IO[bytes] | None:
    """The image's data file, open; None when it has none (queued, no location, the file gone:
    glance's 204 for a store that no longer finds the data)."""
    location = image.get("location")
    if image.get("status", ACTIVE) != ACTIVE or not location:
        return None
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme != "file":
        return None
    try:
        return open(urllib.parse.unquote(parsed.path), "rb")  # closed by _chunks
    except OSError as exc:
        log.warning("image %s has no readable data: %s", image["id"], exc.strerror)
        return None


def _chunks(data: IO[bytes]) -> Iterator[bytes]:
    """The file's bytes, a chunk at a time (Starlette reads a plain iterator on a worker thread)."""
    with data:
        while chunk := data.read(_READ_BYTES):
            yield chunk
