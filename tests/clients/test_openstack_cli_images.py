"""Images as the unmodified python-openstackclient handles them against a live cloud: `openstack
image create --file` uploads a disk (glance's PUT .../file), `image save` downloads it, a server
boots from it, and an upload QEMU must not boot (a qcow2 naming a backing file) is refused; `image
set / unset` change name, properties, tags, minimums and protection (glance's JSON patch and tag
calls).

The set / unset test registers its image through the API: `openstack image create` run from a script
uploads its standard input as the image's data, and the clients' standard input here is empty, which
is no qcow2 (glance refuses it as this one does)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from live_cloud import LiveCloud

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


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


@needs_qemu_img
def test_image_create_from_a_file_saves_back_the_same_bytes_and_boots(live_cloud: LiveCloud, tmp_path: Path):
    name = f"osc-upload-{uuid.uuid4().hex[:6]}"
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    live_cloud.openstack("image", "create", "--file", str(disk), "--disk-format", "qcow2",
                         "--container-format", "bare", name)
    image = shown(live_cloud, "image", "show", name)
    data = disk.read_bytes()
    assert (image["status"], image["size"], image["checksum"]) == (
        "active", len(data), hashlib.md5(data).hexdigest())
    assert image["virtual_size"] == 16 << 20

    saved = tmp_path / "saved.qcow2"
    live_cloud.openstack("image", "save", "--file", str(saved), name)  # the SDK checks its sha512
    assert saved.read_bytes() == data

    server = f"{name}-vm"
    live_cloud.openstack("server", "create", "--image", name, "--flavor", "m1.tiny", "--network", "private",
                         "--wait", server)
    booted = shown(live_cloud, "server", "show", server)
    assert booted["status"] == "ACTIVE" and image["id"] in json.dumps(booted["image"])
    live_cloud.openstack("server", "delete", "--wait", server)
    live_cloud.openstack("image", "delete", name)
    assert live_cloud.openstack("image", "show", name, check=False).returncode == 1


@needs_qemu_img
def test_image_create_of_a_qcow2_with_a_backing_file_is_refused(live_cloud: LiveCloud, tmp_path: Path):
    name = f"osc-backed-{uuid.uuid4().hex[:6]}"
    disk = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
                    str(disk), "1M"], check=True)
    store = live_cloud.data_dir / "images"
    kept = set(store.glob("*"))
    refused = live_cloud.openstack("image", "create", "--file", str(disk), "--disk-format", "qcow2",
                                   "--container-format", "bare", name, check=False)
    assert refused.returncode == 1, refused.stdout
    assert "415" in refused.stderr and "Image failed safety checks: backing_file" in refused.stderr
    # the SDK deletes the image whose upload failed; the cloud kept nothing of the data
    assert live_cloud.openstack("image", "show", name, check=False).returncode == 1
    assert set(store.glob("*")) == kept
