"""Cinder volumes on a compute host: the `<disk>` a volume is to its guest and the attach and
detach nova's libvirt driver performs (LibvirtDriver.attach_volume / detach_volume).

There is no storage backend: a volume's data lives in one sparse file per volume on the host that
runs the guest (only made on real hypervisors; libvirt's test driver reads no file).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from eventsvm.virt.compute_host import ComputeHost

# where volume files live when the host has no state directory of its own
_DEFAULT_VOLUMES_DIR = Path("/var/lib/eventsvm/volumes")


def volume_path(host: ComputeHost, volume_id: str) -> Path:
    """The file that holds the volume's data on `host`."""
    base = host.state_dir / "volumes" if host.state_dir is not None else _DEFAULT_VOLUMES_DIR
    return base / f"volume-{volume_id}.img"


def volume_disk_xml(volume_id: str, path: Path, device: str) -> str:
    """The `<disk>` of a volume as nova's LibvirtConfigGuestDisk writes it: raw, virtio, and the
    volume id as the disk's serial, so the guest sees /dev/disk/by-id/virtio-<id prefix>."""
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
    ET.SubElement(disk, "source", file=str(path))
    ET.SubElement(disk, "target", dev=_target(device), bus="virtio")
    ET.SubElement(disk, "serial").text = volume_id
    return ET.tostring(disk, encoding="unicode")


def attach_volume(host: ComputeHost, instance_id: str, volume_id: str, device: str, size_gb: int) -> bool:
    """Attach the volume to the instance's guest as `device`; False when it was attached already."""
    path = volume_path(host, volume_id)
    if host.images is not None and not path.exists():
        # a real guest reads the file: a sparse one of the volume's size, kept across attaches
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as data:
            data.truncate(size_gb * 1024**3)
    return host.hypervisor.attach_disk(instance_id, volume_disk_xml(volume_id, path, device))


def detach_volume(host: ComputeHost, instance_id: str, device: str) -> bool:
    """Detach the disk the guest has as `device`; False when it had none."""
    return host.hypervisor.detach_disk(instance_id, _target(device))


def _target(device: str) -> str:
    return device.rsplit("/", 1)[-1]
