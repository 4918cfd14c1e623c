"""`openstack server add volume` / `remove volume`, `volume set --read-only / --bootable` and `volume show`
(python-openstackclient, unmodified) against a live cloud: the volume goes in-use on one server,
is refused to another, and is available again once removed."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from live_cloud import LiveCloud


def shown(cloud: LiveCloud, *args: str) -> Any:
    return json.loads(cloud.openstack(*args, "-f", "json").stdout)


def volume_becomes(cloud: LiveCloud, name: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
    """`openstack volume show` until the volume is `status`; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        volume = shown(cloud, "volume", "show", name)
        if volume["status"] == status:
            return dict(volume)
        if time.monotonic() > deadline:
            raise AssertionError(f"volume {name} is {volume['status']}, not {status}, after {timeout}s")
        time.sleep(0.3)


def test_server_add_and_remove_volume(live_cloud: LiveCloud):
    tag = uuid.uuid4().hex[:6]
    servers = [f"osc-vol-{tag}-{n}" for n in (1, 2)]
    for server in servers:
        live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                             "--network", "private", "--wait", server)
    volume = f"osc-data-{tag}"
    created = shown(live_cloud, "volume", "create", "--size", "1", "--bootable", volume)
    assert created["status"] == "available"
    # the client sends os-set_bootable after the create
    assert shown(live_cloud, "volume", "show", volume)["bootable"] is True  # the client reads cinder's "true"
    first, second = servers
    live_cloud.openstack("server", "add", "volume", first, volume)
    attached = volume_becomes(live_cloud, volume, "in-use")
    [attachment] = attached["attachments"]
    server_id = shown(live_cloud, "server", "show", first)["id"]
    assert attachment["server_id"] == server_id and attachment["device"] == "/dev/vdb"

    refused = live_cloud.openstack("server", "add", "volume", second, volume, check=False)
    assert refused.returncode == 1 and "BadRequestException: 400" in refused.stderr, refused.stderr
    assert "Invalid volume" in refused.stderr and created["id"] in refused.stderr

    # cinder changes the read-only flag of an available volume only
    in_use = live_cloud.openstack("volume", "set", "--read-only", volume, check=False)
    assert in_use.returncode == 1 and "status must be available" in in_use.stderr, in_use.stderr

    live_cloud.openstack("server", "remove", "volume", first, volume)
    freed = volume_becomes(live_cloud, volume, "available")
    assert freed["attachments"] == []
    live_cloud.openstack("volume", "set", "--read-only", "--property", "tier=gold", volume)
    assert shown(live_cloud, "volume", "show", volume)["properties"] == {"tier": "gold", "readonly": "True"}
    live_cloud.openstack("volume", "set", "--read-write", "--non-bootable", volume)
    flags = shown(live_cloud, "volume", "show", volume)
    assert (flags["properties"]["readonly"], flags["bootable"]) == ("False", False)
    live_cloud.openstack("server", "add", "volume", second, volume)
    assert volume_becomes(live_cloud, volume, "in-use")["attachments"][0]["server_id"] == shown(
        live_cloud, "server", "show", second)["id"]
    for server in servers:
        live_cloud.openstack("server", "delete", "--wait", server)
    assert volume_becomes(live_cloud, volume, "available")["attachments"] == []
