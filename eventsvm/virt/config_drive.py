"""The config drive: what nova's `force_config_drive` gives a guest to learn who it is.

An ISO9660 volume labelled `config-2` holding `openstack/latest/meta_data.json` (uuid, name,
hostname, the key pair's public key, ...) and `openstack/latest/network_data.json` (each NIC by MAC,
its fixed IP, netmask and routes), in nova's formats (nova.api.metadata.base.InstanceMetadata and
nova.virt.netutils.get_network_metadata), written by genisoimage with nova's flags. cirros and
cloud-init read it; so does the guest `scripts/guest-image.sh` builds.
Only public keys ever go on the drive; the private half of a generated key pair never reaches a host.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from eventsvm.virt.hypervisor import SpawnError
from eventsvm.virt.xml import GuestPort

LABEL = "config-2"
META_DATA = "openstack/latest/meta_data.json"
NETWORK_DATA = "openstack/latest/network_data.json"
_GENISOIMAGE_TIMEOUT_S = 60


@dataclass(frozen=True)
class InstanceMetadata:
    """What the guest is told about itself. `hostname` is nova's sanitized one (the caller's to
    compute, from the name the server was created with); `public_keys` maps key pair name to key."""

    uuid: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str = "nova"
    public_keys: dict[str, str] = field(default_factory=dict)
    ports: tuple[GuestPort, ...] = ()


def meta_data(meta: InstanceMetadata) -> dict[str, object]:
    """nova's openstack/latest/meta_data.json for the instance."""
    return {
        "uuid": meta.uuid,
        "name": meta.name,
        "hostname": meta.hostname,
        "launch_index": 0,
        "availability_zone": meta.availability_zone,
        "project_id": meta.project_id,
        "public_keys": dict(meta.public_keys),
        "keys": [{"name": name, "type": "ssh", "data": key} for name, key in meta.public_keys.items()],
        "meta": {},
        "devices": [],
    }


def network_data(ports: tuple[GuestPort, ...]) -> dict[str, object]:
    """nova's openstack/latest/network_data.json: one link per port (named by its tap device, found
    in the guest by its MAC) and one static IPv4 or IPv6 network on it with its default route."""
    links: list[dict[str, object]] = []
    networks: list[dict[str, object]] = []
    for index, port in enumerate(ports):
        links.append({"id": port.tap_name, "vif_id": port.port_id, "type": "bridge",
                      "ethernet_mac_address": port.mac, "mtu": 1500})
        if not port.ip or not port.cidr:
            continue
        subnet = ipaddress.ip_network(port.cidr, strict=False)
        version = ipaddress.ip_address(port.ip).version
        routes = []
        if port.gateway_ip:
            anywhere = "0.0.0.0" if version == 4 else "::"
            routes.append({"network": anywhere, "netmask": anywhere, "gateway": port.gateway_ip})
        networks.append({"id": f"network{index}", "type": "ipv4" if version == 4 else "ipv6",
                         "link": port.tap_name, "ip_address": port.ip, "netmask": str(subnet.netmask),
                         "routes": routes, "network_id": port.network_id or ""})
    return {"links": links, "networks": networks, "services": []}


def config_drive_files(meta: InstanceMetadata) -> dict[str, bytes]:
    """Path on the drive -> content, for the instance."""
    return {
        META_DATA: json.dumps(meta_data(meta)).encode(),
        NETWORK_DATA: json.dumps(network_data(meta.ports)).encode(),
    }


def write_config_drive(path: Path, meta: InstanceMetadata) -> Path:
    """The instance's config drive at `path` (nova's `disk.config`); one already there is kept (a
    redelivered spawn must not rewrite the drive under a running guest)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    with tempfile.TemporaryDirectory(prefix="config-drive-") as staging:
        for name, content in config_drive_files(meta).items():
            target = Path(staging, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        command = ["genisoimage", "-o", str(part), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
                   "-publisher", "eventsvm", "-quiet", "-J", "-r", "-V", LABEL, staging]
        if shutil.which(command[0]) is None:
            raise SpawnError("genisoimage is not installed on this host (scripts/libvirtd.sh install)",
                             retryable=True)
        try:
            subprocess.run(command, check=True, capture_output=True, text=True,
                           timeout=_GENISOIMAGE_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            part.unlink(missing_ok=True)
            raise SpawnError(f"writing the config drive failed: {exc.stderr.strip()}",
                             retryable=True) from exc
        except subprocess.TimeoutExpired as exc:
            part.unlink(missing_ok=True)
            raise SpawnError("writing the config drive timed out", retryable=True) from exc
    part.rename(path)
    return path
