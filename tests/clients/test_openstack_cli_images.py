"""`openstack image set / unset` (name, properties, tags, minimums, protection) as the unmodified
python-openstackclient sends them (glance's JSON patch and tag calls) against a live cloud. The
image is registered through the API: `openstack image create` run from a script reads its
standard input as image data and uploads it, which this glance does not take."""

from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Any

from live_cloud import LiveCloud


def shown(cloud: LiveCloud, *args: str) -> Any:
    return json.loads(cloud.openstack(*args, "-f", "json").stdout)


def test_image_set_unset_and_protection(live_cloud: LiveCloud):
    name = f"osc-img-{uuid.uuid4().hex[:6]}"
    token = shown(live_cloud, "token", "issue")["id"]
    body = json.dumps({"name": name, "disk_format": "qcow2", "hw_disk_bus": "virtio"}).encode()
    request = urllib.request.Request(f"{live_cloud.url}/image/v2/images", data=body, method="POST",
                                     headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        image_id = json.loads(answer.read())["id"]
    live_cloud.openstack("image", "set", "--name", f"{name}-2", "--property", "os_distro=cirros",
                         "--tag", "golden", "--min-ram", "64", image_id)
    image = shown(live_cloud, "image", "show", image_id)
    assert (image["name"], image["min_ram"], image["tags"]) == (f"{name}-2", 64, ["golden"])
    assert image["properties"]["os_distro"] == "cirros" and image["properties"]["hw_disk_bus"] == "virtio"
    live_cloud.openstack("image", "unset", "--property", "hw_disk_bus", "--tag", "golden", image_id)
    image = shown(live_cloud, "image", "show", image_id)
    assert image["tags"] == [] and "hw_disk_bus" not in image["properties"]

    live_cloud.openstack("image", "set", "--protected", image_id)
    refused = live_cloud.openstack("image", "delete", image_id, check=False)
    assert refused.returncode == 1, refused.stderr
    assert shown(live_cloud, "image", "show", image_id)["protected"] is True
    live_cloud.openstack("image", "set", "--unprotected", image_id)
    live_cloud.openstack("image", "delete", image_id)
    assert live_cloud.openstack("image", "show", image_id, check=False).returncode == 1
