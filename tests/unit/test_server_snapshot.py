"""createImage as a saga: the API registers a queued Glance image with the server's image
properties and appends the snapshot command in one append; the host's spawner fills the image (or
drops it when the server is gone); Glance and nova's image proxy show it and delete it."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_api_server_actions import host_step, post
from test_api_support import Cloud, active_fixture, cloud_fixture  # noqa: F401
from test_deciders import folded, resolved_for, spawn

from consumers import spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.runtime.service import Output
from eventsvm.state.catalog import evolve_catalog, initial_catalog
from eventsvm.state.names import IMAGES, namespace_of
from eventsvm.state.server_actions import ActionRefused, check_state
from eventsvm.state.server_snapshot import snapshot_image
from eventsvm.virt.compute_host import HostCapacity
from eventsvm.virt.images import ImageBackend, SnapshotError

SERVERS = "/compute/v2.1/servers"
IMAGES_PROXY = "/compute/v2.1/images"


# -- the pure parts --------------------------------------------------------------------------------
def test_a_snapshot_inherits_the_image_properties_but_the_uninheritable_and_the_caller_wins() -> None:
    base = {"id": "base", "disk_format": "raw", "min_disk": 2, "min_ram": 64,
            "properties": {"kernel_id": "k", "img_signature": "sig", "image_type": "base",
                           "os_distro": "cirros"}}
    server = {"id": "srv", "project_id": "p1", "image_id": "base", "flavor_disk_gb": 1}
    image = snapshot_image("img", "snap-1", {"image_type": "test"}, server, base, "u1")
    props = image["properties"]
    assert props["kernel_id"] == "k" and props["os_distro"] == "cirros" and "img_signature" not in props
    assert props["instance_uuid"] == "srv" and props["base_image_ref"] == "base" and props["user_id"] == "u1"
    assert props["image_type"] == "test"  # the caller's metadata overrides nova's image_type=snapshot
    assert (image["status"], image["visibility"], image["owner"]) == ("queued", "private", "p1")
    assert (image["min_disk"], image["min_ram"]) == (2, 64)  # the image asked for more than the flavor
    bigger = snapshot_image("img", "s", {}, {**server, "flavor_disk_gb": 20}, None, "u1")
    assert bigger["min_disk"] == 20 and bigger["properties"]["image_type"] == "snapshot"


@pytest.mark.parametrize("vm_state", ["active", "stopped", "paused", "suspended"])
def test_create_image_starts_from_every_powered_state(vm_state: str) -> None:
    assert check_state("createImage", vm_state, None) == "image_snapshot"


@pytest.mark.parametrize(("vm_state", "task_state", "attr"), [
    ("building", "spawning", "vm_state"), ("error", None, "vm_state"),
    ("active", "image_snapshot", "task_state"), ("active", "powering-off", "task_state")])
def test_create_image_is_refused_elsewhere(vm_state: str, task_state: str | None, attr: str) -> None:
    with pytest.raises(ActionRefused) as refused:
        check_state("createImage", vm_state, task_state)
    assert refused.value.attr == attr


def test_the_catalog_fills_and_drops_an_image_and_ignores_a_fill_after_the_drop() -> None:
    created = new_event(EventType.IMAGE_CREATED, "img", {"id": "img", "name": "s", "status": "queued",
                                                          "size_bytes": 0, "location": None})
    filled = new_event(EventType.IMAGE_UPDATED, "img", {"id": "img", "status": "active", "size_bytes": 9,
                                                         "location": None, "disk_format": "qcow2"})
    state = evolve_catalog(evolve_catalog(initial_catalog(), created), filled)
    assert state.images["img"]["status"] == "active" and state.images["img"]["size_bytes"] == 9
    dropped = new_event(EventType.IMAGE_DELETED, "img", {"id": "img"})
    state = evolve_catalog(state, dropped)
    assert "img" not in state.images
    assert "img" not in evolve_catalog(state, filled).images
    # one partition holds an image's whole life
    assert {namespace_of(e) for e in (created, filled, dropped)} == {IMAGES}


def body_of(kind: EventType, outputs: list[Output]) -> dict[str, Any]:
    [body] = [o.event.body for o in outputs if o.event.type == kind]
    return dict(body)


# -- the spawner's step ----------------------------------------------------------------------------
@pytest.fixture
def compute(tmp_path: Path) -> Any:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=4, ram_mb=1024, disk_gb=10))
    yield host
    host.hypervisor.close()


def snapshot_command(spawned: Event, vm_state: str = "active") -> Event:
    body = {"action": "createImage", "host": "h0", "vm_state": vm_state, "task_state": "image_snapshot",
            "reboot_type": None, "locked_reason": None, "locked_by": None, "image_id": str(uuid.uuid4())}
    return new_event(EventType.INSTANCE_ACTION_REQUESTED, spawned.aggregate_id, body, cause=spawned)


def test_the_spawner_fills_the_image_on_the_images_partition_and_ends_the_task(compute: Any) -> None:
    spawned = spawn(compute, resolved_for())[0].event
    command = snapshot_command(spawned)
    outputs = spawn(compute, command, [spawned])
    filled = body_of(EventType.IMAGE_UPDATED, outputs)
    assert filled["id"] == command.body["image_id"] and filled["status"] == "active"
    # the test driver has no disk: a record of the guest, with no file behind it
    assert filled["location"] is None
    [image_out] = [o for o in outputs if o.event.type == EventType.IMAGE_UPDATED]
    assert image_out.event.topic == Topic.CATALOG
    assert image_out.route is not None and image_out.route % 7 == _partition_of_images(7)
    done = body_of(EventType.INSTANCE_ACTION_COMPLETED, outputs)
    assert (done["action"], done["vm_state"], done["power_state"]) == ("createImage", "active", 1)
    # answered: a redelivery takes no second snapshot
    assert spawn(compute, command, [spawned, *(o.event for o in outputs)]) == []


def _partition_of_images(partitions: int) -> int:
    from eventsvm.log.port import partition_for
    return partition_for(IMAGES.encode(), partitions)


def test_a_snapshot_of_a_server_deleted_first_drops_its_image(compute: Any) -> None:
    spawned = spawn(compute, resolved_for())[0].event
    delete = new_event(EventType.INSTANCE_DELETE_DISPATCHED, spawned.aggregate_id,
                       {"host": "h0", "domain_name": "x"}, cause=spawned)
    [deleted] = spawn(compute, delete, [spawned])
    command = snapshot_command(spawned)
    outputs = spawn(compute, command, [spawned, deleted.event])
    assert body_of(EventType.IMAGE_DELETED, outputs) == {"id": command.body["image_id"]}
    assert "deleted before its createImage" in body_of(EventType.INSTANCE_ACTION_FAILED, outputs)["reason"]


def test_a_snapshot_of_a_guest_the_hypervisor_lost_fails_and_drops_its_image(compute: Any) -> None:
    spawned = spawn(compute, resolved_for())[0].event
    compute.hypervisor.destroy(spawned.aggregate_id)
    outputs = spawn(compute, snapshot_command(spawned, "stopped"), [spawned])
    failed = body_of(EventType.INSTANCE_ACTION_FAILED, outputs)
    assert failed["vm_state"] == "stopped" and "createImage of instance" in failed["reason"]
    assert [o.event.type for o in outputs][0] == EventType.IMAGE_DELETED


def test_the_spawner_folds_the_catalog_it_writes_to() -> None:
    service = spawner.service_for("h0")
    assert Topic.CATALOG in service.outputs and Topic.CATALOG in service.state_topics
    state = folded(service, [new_event(EventType.IMAGE_UPDATED, "img", {"id": "img", "status": "active"})])
    assert state.claims == {} and state.answered == {}


# -- the API ---------------------------------------------------------------------------------------
def create_image(cloud: Cloud, server_id: str, body: dict[str, Any] | None = None, user: str = "demo") -> str:
    body = body or {"name": "snap-1", "metadata": {"image_type": "test"}}
    answer = post(cloud, server_id, {"createImage": body}, user)
    assert answer.status_code == 202, answer.text
    assert answer.content == b""  # microversion 2.1: the id is in Location only
    return str(answer.headers["location"].rsplit("/", 1)[-1])


def fill(cloud: Cloud, server_id: str) -> None:
    """What the spawner appends: the image filled, then the action's outcome."""
    command = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    image_id = command.body["image_id"]
    cloud.readmodel.append([new_event(EventType.IMAGE_UPDATED, image_id,
                                      {"id": image_id, "status": "active", "size_bytes": 0}, cause=command)])
    host_step(cloud, server_id)


def test_create_image_registers_a_queued_image_and_the_command_in_one_append(
    cloud: Cloud, active: str
) -> None:
    image_id = create_image(cloud, active)
    [registered] = [e for e in cloud.events(EventType.IMAGE_CREATED) if e.aggregate_id == image_id]
    command = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    assert command.body["image_id"] == image_id and command.body["task_state"] == "image_snapshot"
    assert command.request_id == registered.request_id
    server = cloud.client.get(f"{SERVERS}/{active}", headers=cloud.headers()).json()["server"]
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", "image_snapshot")
    glance = cloud.client.get(f"/image/v2/images/{image_id}", headers=cloud.headers()).json()
    assert (glance["status"], glance["visibility"], glance["name"]) == ("queued", "private", "snap-1")
    assert glance["instance_uuid"] == active and glance["image_type"] == "test"
    assert glance["hw_machine_type"] == "q35"  # the server's image property, inherited
    assert glance["base_image_ref"] == cloud.ids["image"]
    proxy = cloud.client.get(f"{IMAGES_PROXY}/{image_id}", headers=cloud.headers()).json()["image"]
    assert (proxy["status"], proxy["server"]["id"]) == ("SAVING", active)
    # one snapshot at a time: nova's 409 on the task_state
    again = post(cloud, active, {"createImage": {"name": "snap-2"}})
    assert again.status_code == 409 and "task_state image_snapshot" in again.text

    fill(cloud, active)
    proxy = cloud.client.get(f"{IMAGES_PROXY}/{image_id}", headers=cloud.headers()).json()["image"]
    base = cloud.client.get(f"{IMAGES_PROXY}/{cloud.ids['image']}", headers=cloud.headers()).json()["image"]
    assert (proxy["status"], proxy["progress"], proxy["metadata"]["image_type"]) == ("ACTIVE", 100, "test")
    assert proxy["minRam"] == base["minRam"] and proxy["minDisk"] in (base["minDisk"], 1)
    server = cloud.client.get(f"{SERVERS}/{active}", headers=cloud.headers()).json()["server"]
    assert server["OS-EXT-STS:task_state"] is None
    listed = cloud.client.get(f"{IMAGES_PROXY}/detail?server={active}", headers=cloud.headers()).json()
    assert [i["id"] for i in listed["images"]] == [image_id]


def test_os_instance_actions_names_create_image_and_its_snapshot_step(cloud: Cloud, active: str) -> None:
    create_image(cloud, active)
    fill(cloud, active)
    actions = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions", headers=cloud.headers()).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["createImage", "create"]
    request_id = actions["instanceActions"][0]["request_id"]
    one = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions/{request_id}",
                           headers=cloud.headers()).json()["instanceAction"]
    assert [(e["event"], e["result"]) for e in one["events"]] == [("compute_snapshot_instance", "Success")]


def test_a_snapshot_image_is_deleted_through_glance_or_nova_and_then_gone(cloud: Cloud, active: str) -> None:
    first = create_image(cloud, active)
    fill(cloud, active)
    # another project sees nothing; the owner deletes through nova's proxy
    assert cloud.client.delete(f"{IMAGES_PROXY}/{first}", headers=cloud.headers("alice")).status_code == 404
    assert cloud.client.delete(f"{IMAGES_PROXY}/{first}", headers=cloud.headers()).status_code == 204
    assert cloud.client.get(f"{IMAGES_PROXY}/{first}", headers=cloud.headers()).status_code == 404
    assert cloud.client.get(f"/image/v2/images/{first}", headers=cloud.headers()).status_code == 404
    # a queued one too, through glance
    second = create_image(cloud, active, {"name": "\u20a1-snap"})
    assert cloud.client.delete(f"/image/v2/images/{second}", headers=cloud.headers()).status_code == 204
    assert cloud.client.delete(f"/image/v2/images/{second}", headers=cloud.headers()).status_code == 404
    # a public image is the admin's: the owner of nothing may not delete it
    public = cloud.ids["image"]
    assert cloud.client.delete(f"/image/v2/images/{public}", headers=cloud.headers()).status_code == 403


@pytest.mark.parametrize("body", [
    None, {}, {"name": ""}, {"name": 5}, {"name": "x" * 256}, {"name": " padded"},
    {"name": "ok", "metadata": "nope"}, {"name": "ok", "metadata": {"k": 1}}, {"name": "ok", "bogus": 1},
    {"name": "\U0001f600"}])
def test_a_bad_create_image_body_is_400_and_appends_nothing(cloud: Cloud, active: str, body: Any) -> None:
    before = len(cloud.records())
    answer = post(cloud, active, {"createImage": body})
    assert answer.status_code == 400, answer.text
    assert "badRequest" in answer.json()
    assert len(cloud.records()) == before


def test_create_image_of_anothers_server_is_404_and_of_a_locked_one_409(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"createImage": {"name": "s"}}, user="alice").status_code == 404
    assert post(cloud, active, {"lock": None}, user="admin").status_code == 202
    locked = post(cloud, active, {"createImage": {"name": "s"}})
    assert locked.status_code == 409 and "locked" in locked.text


# -- the QEMU path: the overlay becomes a standalone image file that a new disk can start from -----
@pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
                    reason="qemu-img / qemu-io not installed")
def test_a_snapshot_converts_the_overlay_with_its_writes_into_a_standalone_bootable_image(
    tmp_path: Path
) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 1M", str(base)], check=True, capture_output=True)
    backend = ImageBackend(tmp_path / "instances", {})
    server, image_id = str(uuid.uuid4()), str(uuid.uuid4())
    disk = backend.create_disk(server, {"id": "base", "location": base.as_uri()}, 0)
    # the guest wrote to its overlay after the boot: the snapshot must carry it
    subprocess.run(["qemu-io", "-c", "write -P 0x22 4M 1M", str(disk)], check=True, capture_output=True)
    snap = backend.snapshot(server, image_id)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(snap)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and "backing-filename" not in info
    for offset, pattern in (("0", "0x11"), ("4M", "0x22")):
        read = subprocess.run(["qemu-io", "-c", f"read -P {pattern} {offset} 1M", str(snap)],
                              capture_output=True, text=True)
        assert "Pattern verification failed" not in read.stdout and read.returncode == 0
    # the image a snapshot registers is a base for another server's disk
    again = backend.create_disk(str(uuid.uuid4()), {"id": image_id, "location": snap.as_uri()}, 0)
    assert again.is_file()
    # a redelivered snapshot keeps the file it made; an instance without a disk has no snapshot
    assert backend.snapshot(server, image_id) == snap
    with pytest.raises(SnapshotError):
        backend.snapshot(str(uuid.uuid4()), str(uuid.uuid4()))
