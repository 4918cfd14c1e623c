"""Glance's image data, as `openstack image create --file` and `openstack image save` use it:
`PUT /v2/images/{id}/file` streams the bytes into the store (past the API's 64 KB bound on JSON
bodies, under glance's image_size_cap), refuses data that may not be booted as its disk_format says,
and makes the image active with glance's checksums; `GET` gives the same bytes back. The log
decides an upload: a second fill of an image is refused by the fold, and its uploader removes its
file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api_support import Cloud, cloud_fixture, running_cloud  # noqa: F401

from eventsvm.api.errors import Conflict
from eventsvm.api.image_store import ImageStore
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, new_event
from eventsvm.projections.replay import model_differences, replay
from eventsvm.state.catalog import evolve_catalog, initial_catalog
from eventsvm.virt.images import ImageBackend
from tests.factories import sample_event

IMAGES = "/image/v2/images"
OCTET = {"Content-Type": "application/octet-stream"}
CAP = 4 << 20
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture(name="stored")
def stored_fixture(tmp_path: Path) -> Iterator[Cloud]:
    """A cloud whose API keeps uploads in tmp_path/data/images, capped at CAP bytes."""
    with running_cloud(tmp_path, image_store=ImageStore.under(tmp_path / "data", CAP)) as cloud:
        yield cloud


def image_store(cloud: Cloud) -> ImageStore:
    store = cloud.client.app.state.ctx.image_store  # type: ignore[attr-defined]
    assert isinstance(store, ImageStore)
    return store


def store_files(cloud: Cloud) -> list[Path]:
    store = image_store(cloud)
    return sorted(store.directory.iterdir()) if store.directory.exists() else []


def register(cloud: Cloud, user: str = "demo", **fields: Any) -> str:
    made = cloud.client.post(IMAGES, json={"name": "upload", "disk_format": "raw", **fields},
                             headers=cloud.headers(user))
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "queued" and made.json()["size"] is None
    return str(made.json()["id"])


def upload(cloud: Cloud, image_id: str, data: Any, user: str = "demo", **headers: str) -> Any:
    return cloud.client.put(f"{IMAGES}/{image_id}/file", content=data,
                            headers={**cloud.headers(user), **OCTET, **headers})


def show(cloud: Cloud, image_id: str, user: str = "demo") -> dict[str, Any]:
    answer = cloud.client.get(f"{IMAGES}/{image_id}", headers=cloud.headers(user))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def qcow2(path: Path, *options: str, size: str = "64M") -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), size], check=True)
    return path.read_bytes()


def test_an_upload_makes_the_image_active_with_glance_checksums_and_gives_back_its_bytes(
        stored: Cloud) -> None:
    image_id = register(stored)
    data = os.urandom(3 << 20)  # far past the 64 KB bound of JSON bodies
    answer = upload(stored, image_id, data)
    assert answer.status_code == 204 and answer.content == b"", answer.text

    image = show(stored, image_id)
    assert (image["status"], image["size"], image["virtual_size"]) == ("active", len(data), len(data))
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert (image["os_hash_algo"], image["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())
    assert "location" not in image and "locations" not in image  # the store's paths are not shown
    [filled] = stored.events(EventType.IMAGE_UPDATED)
    assert filled.body["checksum"] == image["checksum"] and filled.body["location"].startswith("file://")
    assert [p.read_bytes() == data for p in store_files(stored)] == [True]  # one file, no .part left

    saved = stored.client.get(f"{IMAGES}/{image_id}/file", headers=stored.headers())
    assert saved.status_code == 200
    assert saved.content == data
    assert saved.headers["content-type"] == "application/octet-stream"
    # glance's Content-MD5 is its checksum, as the SDK compares it with the data's hexdigest
    assert saved.headers["content-md5"] == image["checksum"]
    assert saved.headers["content-length"] == str(len(data))


def test_an_upload_sent_in_chunks_without_a_length_is_taken_whole(stored: Cloud) -> None:
    image_id = register(stored)
    pieces = [os.urandom(70_000) for _ in range(20)]  # as a client streaming its standard input
    assert upload(stored, image_id, iter(pieces)).status_code == 204
    assert show(stored, image_id)["checksum"] == hashlib.md5(b"".join(pieces)).hexdigest()


def asgi_put(cloud: Cloud, path: str, chunks: Iterator[bytes]) -> int:
    """PUT `chunks` to the app as a server hands a body over, one message a chunk (the TestClient
    reads a whole body before the app sees any of it); the answer's status."""
    headers = [(b"x-auth-token", cloud.token().encode()), (b"content-type", b"application/octet-stream")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": headers, "server": ("testserver", 80), "client": ("127.0.0.1", 1)}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(cloud.client.app(scope, receive, send))  # type: ignore[arg-type]
    return statuses[0]


def test_an_upload_is_written_as_it_comes_never_held_whole(stored: Cloud) -> None:
    image_id = register(stored)
    image_store(stored).size_cap = 64 << 20
    chunk = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        assert asgi_put(stored, f"{IMAGES}/{image_id}/file", iter([chunk] * 32)) == 204
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert show(stored, image_id)["size"] == 32 << 20
    assert peak < 8 << 20, f"{peak} bytes at the peak of a 32 MiB upload"


def test_a_second_upload_is_refused_and_the_first_data_stays(stored: Cloud) -> None:
    image_id = register(stored)
    assert upload(stored, image_id, b"first" * 1000).status_code == 204
    again = upload(stored, image_id, b"second" * 1000)
    assert again.status_code == 409, again.text
    assert again.json() == {"code": 409, "title": "Conflict",
                            "message": "Image status transition from active to saving is not allowed"}
    assert stored.client.get(f"{IMAGES}/{image_id}/file", headers=stored.headers()).content == b"first" * 1000
    assert len(store_files(stored)) == 1


def test_an_upload_losing_to_another_process_s_fill_removes_its_file(stored: Cloud) -> None:
    image_id = register(stored)

    def body() -> Iterator[bytes]:
        yield b"mine" * 1000
        # another API process finishes its upload of the image first: the log holds its fill
        stored.readmodel.append([new_event(EventType.IMAGE_UPDATED, image_id, {
            "id": image_id, "status": "active", "size_bytes": 6, "location": "file:///elsewhere",
            "checksum": hashlib.md5(b"theirs").hexdigest()})])
        yield b"mine" * 1000

    lost = upload(stored, image_id, body())
    assert lost.status_code == 409, lost.text
    assert show(stored, image_id)["checksum"] == hashlib.md5(b"theirs").hexdigest()
    assert store_files(stored) == []
    [theirs, mine] = stored.events(EventType.IMAGE_UPDATED)
    assert mine.event_id in stored.readmodel.models.catalog.refused
    # and a replay of the log reaches the same verdict as the live read model
    replayed, _ = replay(stored.readmodel.log, Codec())
    with stored.readmodel.lock:
        assert model_differences(replayed, stored.readmodel.models) == []
    assert replayed.catalog.images[image_id]["checksum"] == hashlib.md5(b"theirs").hexdigest()


def test_an_image_deleted_during_its_upload_answers_410_and_keeps_nothing(stored: Cloud) -> None:
    image_id = register(stored)
    store = image_store(stored)

    def body() -> Iterator[bytes]:
        yield os.urandom(2 << 20)
        # what DELETE /v2/images/{id} does, through another connection
        stored.readmodel.append([new_event(EventType.IMAGE_DELETED, image_id, {"id": image_id})])
        store.remove(image_id)
        yield os.urandom(1000)

    gone = upload(stored, image_id, body())
    assert gone.status_code == 410, gone.text
    assert "deleted during the upload" in gone.json()["message"]
    assert store_files(stored) == []


@pytest.mark.parametrize("sent", ["length", "chunks"])
def test_data_past_the_image_size_cap_is_refused_and_nothing_is_kept(stored: Cloud, sent: str) -> None:
    image_id = register(stored)
    data = os.urandom(CAP + 1)
    # with a Content-Length the cap refuses at once; streamed, once it is passed
    body: Any = data if sent == "length" else iter([data[:CAP // 2], data[CAP // 2:]])
    refused = upload(stored, image_id, body)
    assert refused.status_code == 413, refused.text
    assert refused.json()["message"] == f"The incoming image is too large: the limit is {CAP} bytes."
    assert show(stored, image_id)["status"] == "queued"
    assert store_files(stored) == []
    assert upload(stored, image_id, data[:CAP]).status_code == 204  # exactly the cap is taken


def test_data_of_another_media_type_is_refused(stored: Cloud) -> None:
    image_id = register(stored)
    refused = stored.client.put(f"{IMAGES}/{image_id}/file", json={"data": "x"}, headers=stored.headers())
    assert refused.status_code == 415, refused.text
    assert refused.json()["code"] == 415 and "application/octet-stream" in refused.json()["message"]
    assert show(stored, image_id)["status"] == "queued" and store_files(stored) == []


@needs_qemu_img
def test_a_qcow2_upload_is_active_with_its_virtual_size(stored: Cloud, tmp_path: Path) -> None:
    image_id = register(stored, disk_format="qcow2")
    data = qcow2(tmp_path / "disk.qcow2")
    assert upload(stored, image_id, data).status_code == 204
    image = show(stored, image_id)
    assert (image["status"], image["size"], image["virtual_size"]) == ("active", len(data), 64 << 20)


@needs_qemu_img
@pytest.mark.parametrize(("disk_format", "options", "message"), [
    # the classic attack on QEMU hosts: the guest would read the host's file through its disk
    ("qcow2", ("-b", "/etc/hostname", "-F", "raw"), "Image failed safety checks: backing_file"),
    ("qcow2", ("-o", "data_file={tmp}/external.raw"), "Image failed safety checks: data_file"),
    ("raw", (), "Image disk_format raw does not match stream data qcow2"),
    ("iso", (), "Image disk_format iso does not match stream data qcow2"),
])
def test_a_qcow2_that_may_not_be_booted_as_declared_is_refused_and_the_image_stays_queued(
        stored: Cloud, tmp_path: Path, disk_format: str, options: tuple[str, ...], message: str) -> None:
    image_id = register(stored, disk_format=disk_format)
    data = qcow2(tmp_path / "bad.qcow2", *(o.format(tmp=tmp_path) for o in options), size="1M")
    refused = upload(stored, image_id, data)
    assert refused.status_code == 415, refused.text
    assert refused.json() == {"code": 415, "title": "Unsupported Media Type", "message": message}
    assert show(stored, image_id)["status"] == "queued"
    assert store_files(stored) == []
    assert stored.events(EventType.IMAGE_UPDATED) == []


def test_data_that_is_not_the_declared_format_is_refused(stored: Cloud) -> None:
    image_id = register(stored, disk_format="qcow2")
    # an empty body is no qcow2 (`openstack image create` from a script with nothing on stdin)
    refused = upload(stored, image_id, b"")
    assert refused.status_code == 415
    assert refused.json()["message"] == "Image disk_format qcow2 does not match stream data raw"
    assert show(stored, image_id)["status"] == "queued"
    raw_image = register(stored)
    assert upload(stored, raw_image, b"").status_code == 204  # an empty raw image is an image
    assert (show(stored, raw_image)["size"], show(stored, raw_image)["checksum"]) == (
        0, hashlib.md5(b"").hexdigest())


def test_another_project_sees_no_private_image_and_only_the_owner_uploads(stored: Cloud) -> None:
    private = register(stored)
    for method in ("put", "get"):
        answer = stored.client.request(method, f"{IMAGES}/{private}/file", content=b"x",
                                       headers={**stored.headers("alice"), **OCTET})
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["message"] == f"No image found with ID {private}"
    public = register(stored, user="admin", visibility="public")
    refused = upload(stored, public, b"x", user="demo")
    assert refused.status_code == 403, refused.text
    assert refused.json()["message"] == "You are not authorized to complete upload_image action."
    # glance's download_image asks a member: a reader of the owning project sees the image only
    assert upload(stored, private, b"mine").status_code == 204
    read_only = stored.client.get(f"{IMAGES}/{private}/file", headers=stored.headers("reader"))
    assert read_only.status_code == 403
    assert stored.client.get(f"{IMAGES}/{private}/file", headers=stored.headers("admin")).content == b"mine"
    assert show(stored, public)["status"] == "queued"


def test_an_image_with_no_data_downloads_as_204(stored: Cloud) -> None:
    queued = register(stored)
    for image_id in (queued, stored.ids["image"]):  # registered only; the seed's, with no location
        answer = stored.client.get(f"{IMAGES}/{image_id}/file", headers=stored.headers())
        assert answer.status_code == 204 and answer.content == b"", answer.text


def test_deleting_an_image_removes_its_data(stored: Cloud) -> None:
    image_id = register(stored)
    assert upload(stored, image_id, b"data" * 100).status_code == 204
    assert len(store_files(stored)) == 1
    assert stored.client.delete(f"{IMAGES}/{image_id}", headers=stored.headers()).status_code == 204
    assert store_files(stored) == []
    assert stored.client.get(f"{IMAGES}/{image_id}/file", headers=stored.headers()).status_code == 404


def test_a_server_is_not_booted_or_rebuilt_from_an_image_with_no_data(stored: Cloud, active: str) -> None:
    image_id = register(stored)
    refused = stored.client.post("/compute/v2.1/servers", json=stored.server_request(imageRef=image_id),
                                 headers=stored.headers())
    assert refused.status_code == 400
    assert refused.json()["badRequest"]["message"] == f"Image {image_id} is not active."
    rebuild = stored.client.post(f"/compute/v2.1/servers/{active}/action",
                                 json={"rebuild": {"imageRef": image_id}}, headers=stored.headers())
    assert rebuild.status_code == 400 and "is not active" in rebuild.json()["badRequest"]["message"]
    assert upload(stored, image_id, b"\0" * 4096).status_code == 204
    assert stored.create_server("from-upload", imageRef=image_id)


@pytest.fixture(name="active")
def active_fixture(stored: Cloud) -> str:
    server_id = stored.create_server()
    stored.advance(server_id, "active")
    return server_id


def test_a_bare_api_with_no_image_store_takes_no_upload(cloud: Cloud) -> None:
    image_id = register(cloud)
    refused = upload(cloud, image_id, b"data")
    assert refused.status_code == 410, refused.text
    assert refused.json()["message"] == "Error in store configuration. Adding images to store is disabled."
    assert show(cloud, image_id)["status"] == "queued"


def test_one_process_takes_one_upload_of_an_image_at_a_time(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    image_id = str(uuid.uuid4())
    first = store.begin(image_id)
    with pytest.raises(Conflict):
        store.begin(image_id)
    first.discard()
    first.end()
    store.begin(image_id).end()  # over: the image may take another
    assert [p.name.endswith(".part") for p in store.directory.iterdir()] == [True]
    store.remove(image_id)
    assert list(store.directory.iterdir()) == []


@needs_qemu_img
def test_a_server_booted_from_an_upload_keeps_its_disk_when_the_image_goes(
        stored: Cloud, tmp_path: Path) -> None:
    image_id = register(stored, disk_format="qcow2")
    assert upload(stored, image_id, qcow2(tmp_path / "disk.qcow2", size="1M")).status_code == 204
    [filled] = stored.events(EventType.IMAGE_UPDATED)
    backend = ImageBackend(tmp_path / "hosts" / "h0" / "instances", {})
    server = str(uuid.uuid4())
    disk = backend.create_disk(server, filled.body, 1)
    assert stored.client.delete(f"{IMAGES}/{image_id}", headers=stored.headers()).status_code == 204
    assert store_files(stored) == []
    # the overlay backs onto the server's own link to the uploaded file, which outlives the image
    info = subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", str(disk)], check=True,
                          capture_output=True, text=True)
    chain = json.loads(info.stdout)
    assert [Path(layer["filename"]).parent for layer in chain] == [disk.parent, disk.parent], chain
    assert chain[1]["format"] == "qcow2" and chain[1]["virtual-size"] == 1 << 20


# -- the fold: live equals replay ----------------------------------------------------------------
def test_a_fill_written_with_or_without_the_v2_checksums_folds_as_its_replay() -> None:
    codec = Codec()
    created = sample_event(EventType.IMAGE_CREATED)
    created.body["status"] = "queued"
    written = sample_event(EventType.IMAGE_UPDATED)
    v1_shaped = sample_event(EventType.IMAGE_UPDATED)
    for name in ("checksum", "os_hash_algo", "os_hash_value", "virtual_size"):
        del v1_shaped.body[name]  # as the spawner's snapshot fill (or a v1 writer) writes it
    for fill in (written, v1_shaped):
        live = evolve_catalog(evolve_catalog(initial_catalog(), created), fill)
        replayed = evolve_catalog(evolve_catalog(initial_catalog(), codec.decode(codec.encode(created))),
                                  codec.decode(codec.encode(fill)))
        assert live.images == replayed.images
        assert live.images[created.body["id"]]["status"] == "active"
    assert "checksum" not in evolve_catalog(evolve_catalog(initial_catalog(), created), v1_shaped).images[
        created.body["id"]]


def test_an_image_takes_one_fill() -> None:
    created = sample_event(EventType.IMAGE_CREATED)
    created.body["status"] = "queued"
    first, second = sample_event(EventType.IMAGE_UPDATED), sample_event(EventType.IMAGE_UPDATED)
    second.body["checksum"] = "0" * 32
    catalog = evolve_catalog(evolve_catalog(evolve_catalog(initial_catalog(), created), first), second)
    assert catalog.images[created.body["id"]]["checksum"] == first.body["checksum"]
    assert second.event_id in catalog.refused and first.event_id not in catalog.refused
