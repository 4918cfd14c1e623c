"""One claim, computed once, end to end: a server whose root disk lives in cinder needs no local
root disk, and the host that spawns it agrees with the scheduler that placed it."""

from __future__ import annotations

import uuid
from typing import Any

from eventsvm.events.model import EventType, new_event
from eventsvm.monitoring.metrics import host_usage
from eventsvm.virt.compute_host import HostCapacity
from tests.e2e.conftest import Cloud, CloudFactory

# Every host has 20 GB of local disk; m1.medium's root disk is 40 GB.
SMALL_DISK = HostCapacity(vcpus=8, ram_mb=16384, disk_gb=20, cpu_allocation_ratio=1.0)
MEDIUM = "3"


def volume(cloud: Cloud, size_gb: int = 40) -> str:
    """A cinder volume of the demo project, as POST /volumes records it."""
    _, project_id = cloud.demo
    volume_id = str(uuid.uuid4())
    body = {"id": volume_id, "name": "root", "size_gb": size_gb, "owner": project_id, "status": "available"}
    cloud.readmodel.append([new_event(EventType.VOLUME_CREATED, volume_id, body)])
    return volume_id


def boot_device(source: str, uuid_: str, size: int | None = None) -> dict[str, Any]:
    """block_device_mapping_v2's boot entry (boot_index 0) onto a cinder volume."""
    return {"source_type": source, "destination_type": "volume", "uuid": uuid_, "volume_size": size,
            "boot_index": 0, "delete_on_termination": False}


def test_a_server_booting_from_a_volume_needs_no_local_root_disk(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=2, capacity=SMALL_DISK)
    root = volume(cloud)
    from_volume = cloud.submit("from-volume", flavor=MEDIUM, block_devices=[boot_device("volume", root)])
    # what `openstack server create --image cirros --boot-from-volume 40` asks for
    onto_volume = cloud.submit(
        "onto-volume", flavor=MEDIUM, block_devices=[boot_device("image", cloud.image_id(), 40)]
    )
    servers = cloud.wait_for([from_volume, onto_volume], {"ACTIVE", "ERROR"})
    assert {s.status for s in servers.values()} == {"ACTIVE"}, {s.name: s.fault for s in servers.values()}
    assert {s.host for s in servers.values()} <= {"compute-1", "compute-2"}
    with cloud.readmodel.lock:  # what the dashboard shows: no local disk held by either server
        assert [h["disk_gb"]["used"] for h in host_usage(cloud.readmodel.models)] == [0, 0]

    # the converse, so this test can fail: the same flavor booting from its image needs 40 GB here
    local = cloud.submit("local-root", flavor=MEDIUM)
    server = cloud.wait_for([local], {"ACTIVE", "ERROR"})[local]
    assert server.status == "ERROR"
    assert server.fault is not None
    message = server.fault["message"] + " " + server.fault["details"]
    assert "No valid host was found" in message and "DiskFilter: 2 -> 0" in message
    assert "needs 40 GB disk" in message


def test_a_server_booting_from_a_volume_needs_no_image(make_cloud: CloudFactory) -> None:
    # what `openstack server create --volume root` sends: a boot_index 0 volume and no imageRef
    cloud = make_cloud(hosts=1, capacity=SMALL_DISK)
    root = volume(cloud)
    server_id = cloud.submit("volume-only", flavor=MEDIUM, image_id="",
                             block_devices=[boot_device("volume", root)])
    server = cloud.wait_for([server_id], {"ACTIVE", "ERROR"})[server_id]
    assert server.status == "ACTIVE", server.fault
    with cloud.readmodel.lock:
        inst = cloud.readmodel.models.instances.get(server_id)
        assert inst is not None and inst.image_id == ""
