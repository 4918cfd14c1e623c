"""A snapshot's image file goes when its image is deleted (glance deletes the image's data), decided
by the spawner from the log, while a server booted from the snapshot keeps a disk that reads: its
overlay backs onto its own link to the file, which goes with the server (issue 14). On libvirt's
test driver with a real qcow2 image backend (qemu-img)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventsvm.app.cluster import register_host, simulated_host, spawner_runner
from eventsvm.config import LogConfig
from eventsvm.events.builders import deleted
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import EventLog, OutRecord, partition_for
from eventsvm.runtime.runner import ServiceRunner
from eventsvm.state.names import IMAGES
from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.images import ImageBackend
from tests.unit.test_deciders import resolved_for

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

PATTERN = b"eventsvm snapshot data " * 64


def qcow2_with_pattern(path: Path) -> Path:
    raw = path.with_suffix(".raw")
    raw.write_bytes(PATTERN + b"\0" * (1 << 20))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return path


def reads_the_pattern(disk: Path, scratch: Path) -> bool:
    """The guest's view of `disk` (through its whole backing chain) starts with PATTERN."""
    out = scratch / f"{uuid.uuid4()}.raw"
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=4096", "count=1", f"if={disk}",
                    f"of={out}"], check=True, capture_output=True)
    try:
        return out.read_bytes()[:len(PATTERN)] == PATTERN
    finally:
        out.unlink()


def test_a_dropped_snapshot_file_leaves_the_servers_on_it_their_own_link(tmp_path: Path) -> None:
    images = ImageBackend(tmp_path / "instances", {})
    image_id, server = str(uuid.uuid4()), str(uuid.uuid4())
    images.snapshots_dir.mkdir()
    snapshot = qcow2_with_pattern(images.snapshots_dir / f"{image_id}.qcow2")
    image = {"id": image_id, "disk_format": "qcow2", "location": snapshot.as_uri()}
    disk = images.create_disk(server, image, 1)
    link = images.instance_dir(server) / "image"
    assert link.stat().st_ino == snapshot.stat().st_ino  # a link, not a copy

    assert images.drop_snapshot(image_id) and not snapshot.exists()
    assert reads_the_pattern(disk, tmp_path)  # the server's disk still reads its image
    assert not images.drop_snapshot(image_id)
    images.remove(server)
    assert not link.exists()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[ComputeHost]:
    compute = simulated_host(tmp_path, "h0", 0, HostCapacity())
    compute = dataclasses.replace(compute, images=ImageBackend(tmp_path / "hosts" / "h0" / "instances", {}))
    yield compute
    compute.hypervisor.close()


def _append(log: EventLog, codec: Codec, topic: Topic, event: Event, partition: int = 0) -> None:
    log.append([OutRecord(str(topic), event.aggregate_id.encode(), codec.encode(event), partition)])


def _booting(image: dict[str, Any]) -> Event:
    build = resolved_for(host="h0")
    return dataclasses.replace(build, body={**build.body, "image": {**build.body["image"], **image}})


def test_deleting_a_snapshot_image_removes_its_file_and_a_server_booted_from_it_keeps_running(
        tmp_path: Path, host: ComputeHost) -> None:
    assert host.images is not None
    codec = Codec()
    log = open_log(LogConfig(url=f"sqlite://{tmp_path / 'log.db'}", partitions=2))
    register_host(log, codec, host, "test")
    runner: ServiceRunner[Any] = spawner_runner(log, codec, host)
    runner.start()
    try:
        base = qcow2_with_pattern(tmp_path / "base.qcow2")
        original = _booting({"id": str(uuid.uuid4()), "disk_format": "qcow2", "location": base.as_uri()})
        _append(log, codec, Topic.RESOURCES_RESOLVED, original)
        runner.step()
        # createImage's host step (the spawner's _imaging takes it the same way)
        image_id = str(uuid.uuid4())
        filled = host.snapshot(original.aggregate_id, image_id)
        snapshot = host.images.snapshots_dir / f"{image_id}.qcow2"
        assert filled["location"] == snapshot.as_uri()
        clone = _booting({"id": image_id, "disk_format": "qcow2", "location": filled["location"]})
        _append(log, codec, Topic.RESOURCES_RESOLVED, clone)
        runner.step()
        assert sorted(host.hypervisor.list_instances()) == sorted([original.aggregate_id, clone.aggregate_id])

        # glance deletes the image (on the catalog's partition of images): its file goes
        gone = new_event(EventType.IMAGE_DELETED, image_id, {"id": image_id})
        _append(log, codec, Topic.CATALOG, gone, partition_for(IMAGES.encode(), 2))
        runner.step()
        assert not snapshot.exists()
        clone_disk = host.images.instance_dir(clone.aggregate_id) / "disk"
        assert reads_the_pattern(clone_disk, tmp_path)
        assert host.hypervisor.state(clone.aggregate_id) is not None

        # a restart decides the same from the log: nothing left to remove, nothing else touched
        runner.close()
        runner = spawner_runner(log, codec, host, member_name="h0-again")
        runner.start()
        runner.step()
        assert not snapshot.exists() and reads_the_pattern(clone_disk, tmp_path)

        # the server goes, and its link with it: nothing of the snapshot is left on the host
        spawned = new_event(EventType.INSTANCE_SPAWNED, clone.aggregate_id, {}, cause=clone)
        _append(log, codec, Topic.DELETED, deleted(spawned, None, "api"))
        runner.step()
        assert not host.images.instance_dir(clone.aggregate_id).exists()
        assert host.hypervisor.list_instances() == [original.aggregate_id]
    finally:
        runner.close()
        log.close()
