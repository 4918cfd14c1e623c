"""createImage on a real QEMU host: the snapshot of a running guest's overlay is an image file
that another server boots from (its boot line on the serial console), and the snapshotted guest
keeps running (a paused one stays paused). One libvirtd of its own; two guests under TCG, one
after the other."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.hypervisor import DomainState
from eventsvm.virt.images import GuestImage
from eventsvm.virt.qemu import ensure_guest_image, ensure_libvirtd, qemu_compute_host, stop_libvirtd

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

GUEST_DIR = Path(__file__).resolve().parents[2] / "guest"


@pytest.fixture(scope="module")
def host() -> Iterator[ComputeHost]:
    guest: GuestImage = ensure_guest_image(GUEST_DIR)
    # libvirt's socket path must be short: a directory of its own under /tmp
    state_dir = Path(tempfile.mkdtemp(prefix="evsnap-"))
    uri = ensure_libvirtd(state_dir / "lv")
    compute = qemu_compute_host("snap-host", 0, HostCapacity(vcpus=2, ram_mb=4096, disk_gb=10), uri,
                                state_dir, guest)
    compute.extra["guest"] = guest
    try:
        yield compute
    finally:
        compute.hypervisor.close()
        stop_libvirtd(state_dir / "lv")
        shutil.rmtree(state_dir, ignore_errors=True)


def resolved(image: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"name": "snap", "flavor": {"name": "m1.tiny", "vcpus": 1, "ram_mb": 256, "disk_gb": 1}},
            "image": image, "ports": []}


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def test_a_snapshot_of_a_running_guest_boots_another_server(host: ComputeHost) -> None:
    guest: GuestImage = host.extra["guest"]
    original, clone, image_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    base = {"id": str(uuid.uuid4()), "disk_format": "qcow2", "location": guest.location,
            "properties": guest.properties()}
    try:
        host.spawn(original, resolved(base), "user", "project", now_ms())
        filled = host.snapshot(original, image_id)
        assert filled["location"].startswith("file://") and filled["size_bytes"] > 0
        assert host.hypervisor.state(original) is DomainState.RUNNING  # paused only while converted
        snapshot = {"id": image_id, "disk_format": filled["disk_format"], "location": filled["location"],
                    "properties": guest.properties()}
        # spawn returns once the clone printed its boot line: the snapshot boots
        booted = host.spawn(clone, resolved(snapshot), "user", "project", now_ms())
        assert booted.state is DomainState.RUNNING
        # a paused guest is snapshotted and stays paused
        host.hypervisor.pause(original)
        host.snapshot(original, str(uuid.uuid4()))
        assert host.hypervisor.state(original) is DomainState.PAUSED
    finally:
        host.destroy(clone)
        host.destroy(original)
