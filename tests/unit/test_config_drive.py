"""The config drive a real guest learns itself from: nova's meta_data.json and network_data.json,
what the spawner puts in them (the sanitized hostname, the key pair's public key, each port's fixed
IP), and the domain XML that plugs the drive and the bridged NICs in."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from eventsvm.state.instances import sanitized_hostname
from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.config_drive import (
    LABEL,
    META_DATA,
    NETWORK_DATA,
    InstanceMetadata,
    config_drive_files,
    meta_data,
    network_data,
    write_config_drive,
)
from eventsvm.virt.hypervisor import Hypervisor
from eventsvm.virt.images import ImageBackend
from eventsvm.virt.xml import GuestPort, InvalidGuestSpec, build_domain_xml

INSTANCE = "6f1e0c5a-8d2b-4c1e-9f00-1234567890ab"
NETWORK = "9e8d7c6b-5a49-4837-a261-50f4e3d2c1b0"
PUBLIC_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0 Generated-by-Nova"
PORT = GuestPort(port_id="3f5a7c9e-1b2d-4e6f-8a0b-c1d2e3f4a5b6", mac="fa:16:3e:12:34:56", ip="10.100.0.7",
                 network_id=NETWORK, cidr="10.100.0.0/22", gateway_ip="10.100.0.1")


def resolved(**spec: Any) -> dict[str, Any]:
    """A resources-resolved body as the resolver writes it (one port on a /22)."""
    return {
        "spec": {"name": "tempest-ServersTestJSON-server-1234", "key_name": "tempest-key",
                 "flavor": {"name": "m1.small", "vcpus": 2, "ram_mb": 512, "disk_gb": 1}, **spec},
        "image": {"id": str(uuid.uuid4()), "disk_format": "qcow2", "location": "file:///nonexistent",
                  "properties": {}},
        "ports": [{"port_id": PORT.port_id, "network_id": NETWORK, "subnet_id": "s-1", "ip_address": PORT.ip,
                   "mac_address": PORT.mac, "cidr": PORT.cidr, "gateway_ip": PORT.gateway_ip}],
        "public_key": PUBLIC_KEY,
    }


@pytest.mark.parametrize(("name", "hostname"), [
    ("tempest-ServersTestJSON-server-1234", "tempest-serverstestjson-server-1234"),
    ("My Server_1.example", "my-server-1-example"),
    ("--web*01--", "web01"),
    ("日本語", f"Server-{INSTANCE}"),
])
def test_the_hostname_on_the_drive_is_the_name_as_nova_sanitizes_it(name: str, hostname: str) -> None:
    meta = InstanceMetadata(uuid=INSTANCE, name=name, hostname=sanitized_hostname(name, INSTANCE),
                            project_id="p-1")
    assert meta_data(meta)["hostname"] == hostname
    assert meta_data(meta)["name"] == name


def test_meta_data_carries_the_key_pairs_public_key_under_its_name() -> None:
    meta = InstanceMetadata(uuid=INSTANCE, name="web", hostname="web", project_id="p-1",
                            availability_zone="az-1", public_keys={"mykey": PUBLIC_KEY})
    document = json.loads(config_drive_files(meta)[META_DATA])
    assert document["uuid"] == INSTANCE
    assert document["availability_zone"] == "az-1"
    assert document["public_keys"] == {"mykey": PUBLIC_KEY}
    assert document["keys"] == [{"name": "mykey", "type": "ssh", "data": PUBLIC_KEY}]
    # a server without a key pair gets none
    bare = InstanceMetadata(uuid=INSTANCE, name="web", hostname="web", project_id="p-1")
    assert json.loads(config_drive_files(bare)[META_DATA])["public_keys"] == {}


def test_network_data_names_each_nic_by_mac_with_its_fixed_ip_netmask_and_gateway() -> None:
    second = GuestPort(port_id="aaaaaaaa-1b2d-4e6f-8a0b-c1d2e3f4a5b6", mac="fa:16:3e:00:00:02", ip="10.0.0.9",
                       network_id="n-2", cidr="10.0.0.0/24", gateway_ip=None)
    document = network_data((PORT, second))
    assert document["links"] == [
        {"id": "tap3f5a7c9e-1b", "vif_id": PORT.port_id, "type": "bridge",
         "ethernet_mac_address": "fa:16:3e:12:34:56", "mtu": 1500},
        {"id": "tapaaaaaaaa-1b", "vif_id": second.port_id, "type": "bridge",
         "ethernet_mac_address": "fa:16:3e:00:00:02", "mtu": 1500},
    ]
    assert document["networks"] == [
        {"id": "network0", "type": "ipv4", "link": "tap3f5a7c9e-1b", "ip_address": "10.100.0.7",
         "netmask": "255.255.252.0", "network_id": NETWORK,
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.100.0.1"}]},
        # a subnet without a gateway: the address, no route
        {"id": "network1", "type": "ipv4", "link": "tapaaaaaaaa-1b", "ip_address": "10.0.0.9",
         "netmask": "255.255.255.0", "network_id": "n-2", "routes": []},
    ]
    assert document["services"] == []


def test_a_qemu_host_puts_hostname_key_and_ports_on_the_drive_and_plugs_it_and_the_bridges_in(
        tmp_path: Path) -> None:
    host = ComputeHost(name="c-1", slot=0, capacity=HostCapacity(), hypervisor=Hypervisor(),
                       images=ImageBackend(tmp_path / "instances", {}), vif_type="bridge", config_drive=True,
                       domain_type="qemu")
    try:
        body = resolved()
        guest = host.guest_spec(INSTANCE, body, "u-1", "p-1", 0)
        meta = host._metadata(guest, body, "p-1", sanitized_hostname(body["spec"]["name"], INSTANCE))
    finally:
        host.hypervisor.close()
    assert meta.hostname == "tempest-serverstestjson-server-1234"
    assert meta.public_keys == {"tempest-key": PUBLIC_KEY}
    assert meta.ports == (PORT,)
    assert guest.config_drive_path == str(tmp_path / "instances" / INSTANCE / "disk.config")

    domain = ET.fromstring(build_domain_xml(guest))
    drive = next((disk for disk in domain.iterfind("devices/disk")
                  if disk.find("target[@dev='vdb']") is not None), None)
    assert drive is not None and drive.find("readonly") is not None
    assert drive.find("source").get("file") == guest.config_drive_path  # type: ignore[union-attr]
    nic = domain.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "brq" + NETWORK[:11]  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == PORT.mac  # type: ignore[union-attr]
    assert nic.find("target").get("dev") == PORT.tap_name  # type: ignore[union-attr]


def test_a_key_pair_whose_key_is_unknown_puts_no_key_on_the_drive(tmp_path: Path) -> None:
    host = ComputeHost(name="c-1", slot=0, capacity=HostCapacity(), hypervisor=Hypervisor(),
                       images=ImageBackend(tmp_path, {}), config_drive=True)
    try:
        body = {**resolved(), "public_key": None}
        guest = host.guest_spec(INSTANCE, body, "u-1", "p-1", 0)
        assert host._metadata(guest, body, "p-1", "web").public_keys == {}
        body = resolved(key_name=None)
        assert host._metadata(guest, body, "p-1", "web").public_keys == {}
    finally:
        host.hypervisor.close()


def test_a_bridged_port_without_a_network_is_refused() -> None:
    host = ComputeHost(name="c-1", slot=0, capacity=HostCapacity(), hypervisor=Hypervisor(),
                       vif_type="bridge")
    try:
        body = resolved()
        body["ports"][0]["network_id"] = None
        with pytest.raises(InvalidGuestSpec, match="no network"):
            host.guest_spec(INSTANCE, body, "u-1", "p-1", 0)
    finally:
        host.hypervisor.close()


@pytest.mark.skipif(shutil.which("isoinfo") is None,
                    reason="genisoimage (scripts/libvirtd.sh install) is missing")
def test_the_drive_is_an_iso9660_volume_labelled_config_2_holding_both_documents(tmp_path: Path) -> None:
    meta = InstanceMetadata(uuid=INSTANCE, name="web", hostname="web", project_id="p-1",
                            public_keys={"k": PUBLIC_KEY}, ports=(PORT,))
    path = write_config_drive(tmp_path / "disk.config", meta)
    header = subprocess.run(["isoinfo", "-d", "-i", str(path)], capture_output=True, text=True, check=True)
    assert f"Volume id: {LABEL}" in header.stdout
    for name in (META_DATA, NETWORK_DATA):
        content = subprocess.run(["isoinfo", "-R", "-i", str(path), "-x", f"/{name}"], capture_output=True,
                                 check=True).stdout
        assert json.loads(content) == json.loads(config_drive_files(meta)[name])
    # a second write (a redelivered spawn) keeps the drive the guest has open
    before = path.stat().st_mtime_ns
    write_config_drive(path, InstanceMetadata(uuid=INSTANCE, name="x", hostname="x", project_id="p"))
    assert path.stat().st_mtime_ns == before
