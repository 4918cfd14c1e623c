"""Domain XML: libvirt accepts it, and it says what nova's libvirt driver would say."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from eventsvm.virt import node
from eventsvm.virt.xml import (
    NOVA_NS,
    FlavorMeta,
    GuestPort,
    GuestSpec,
    InvalidGuestSpec,
    OwnerMeta,
    build_domain_xml,
    domain_name_for,
)

UUID = "6f1e0c5a-8d2b-4c1e-9f00-1234567890ab"
NS = {"nova": NOVA_NS}


def spec(**overrides: object) -> GuestSpec:
    fields: dict[str, object] = {
        "instance_uuid": UUID,
        "name": "web-1",
        "vcpus": 2,
        "memory_mb": 512,
        "flavor": FlavorMeta(name="m1.small", memory_mb=512, root_gb=1, vcpus=2, swap_mb=128,
                             ephemeral_gb=3),
        "owner": OwnerMeta(user_id="u-1", user_name="alice", project_id="p-1", project_name="demo"),
        "created_at": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
        "image_id": "9b0d0c3e-0000-4000-8000-000000000001",
        "ports": (GuestPort(port_id="3f5a7c9e-1b2d-4e6f-8a0b-c1d2e3f4a5b6", mac="fa:16:3e:12:34:56",
                            ip="10.0.0.7", network_id="net-1"),),
    }
    fields.update(overrides)
    return GuestSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory):
    # A node-file URI gives this module a connection whose domains no other test sees.
    path = node.write_node_xml(tmp_path_factory.mktemp("node") / "node.xml", vcpus=4, memory_mb=8192)
    connection = libvirt.open(node.test_uri_for(path))
    yield connection
    connection.close()


def define_validated(conn: libvirt.virConnect, xml: str) -> ET.Element:
    """Define with libvirt's schema check and return libvirt's own reading of the document."""
    domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        return ET.fromstring(domain.XMLDesc(0))
    finally:
        domain.undefine()


@pytest.mark.parametrize("domain_type", ["test", "qemu", "kvm"])
def test_libvirt_schema_accepts_the_document(conn, domain_type: str) -> None:
    guest = spec(domain_type=domain_type, disk_path="/var/lib/eventsvm/disk", console_log_path="/tmp/c.log")
    parsed = define_validated(conn, build_domain_xml(guest))
    assert parsed.get("type") == domain_type
    assert parsed.findtext("uuid") == UUID


def test_document_carries_identity_size_and_network(conn) -> None:
    parsed = define_validated(conn, build_domain_xml(spec()))
    assert parsed.findtext("name") == "instance-6f1e0c5a"
    assert parsed.find("memory").text == str(512 * 1024)
    assert parsed.find("memory").get("unit") == "KiB"
    assert parsed.find("currentMemory").text == str(512 * 1024)
    assert parsed.findtext("vcpu") == "2"
    interface = parsed.find("devices/interface")
    assert interface.get("type") == "ethernet"
    assert interface.find("mac").get("address") == "fa:16:3e:12:34:56"
    assert interface.find("model").get("type") == "virtio"
    assert interface.find("target").get("dev") == "tap3f5a7c9e-1b"
    entries = {e.get("name"): e.text for e in parsed.findall("sysinfo/system/entry")}
    assert entries["manufacturer"] == "OpenStack Foundation"
    assert entries["product"] == "OpenStack Nova"
    assert entries["serial"] == entries["uuid"] == UUID
    assert parsed.findtext("on_crash") == "destroy"
    assert parsed.find("os/boot").get("dev") == "hd"


def test_nova_metadata_survives_a_trip_through_libvirt(conn) -> None:
    parsed = define_validated(conn, build_domain_xml(spec()))
    instance = parsed.find("metadata/nova:instance", NS)
    assert instance is not None
    assert instance.findtext("nova:name", namespaces=NS) == "web-1"
    assert instance.findtext("nova:creationTime", namespaces=NS) == "2024-05-06 07:08:09"
    flavor = instance.find("nova:flavor", NS)
    assert flavor.get("name") == "m1.small"
    assert {child.tag.split("}")[1]: child.text for child in flavor} == {
        "memory": "512", "disk": "1", "swap": "128", "ephemeral": "3", "vcpus": "2"}
    user = instance.find("nova:owner/nova:user", NS)
    project = instance.find("nova:owner/nova:project", NS)
    assert (user.get("uuid"), user.text) == ("u-1", "alice")
    assert (project.get("uuid"), project.text) == ("p-1", "demo")
    assert instance.find("nova:root", NS).attrib == {"type": "image",
                                                     "uuid": "9b0d0c3e-0000-4000-8000-000000000001"}
    ip = instance.find("nova:ports/nova:port/nova:ip", NS)
    assert ip.attrib == {"type": "fixed", "address": "10.0.0.7", "ipVersion": "4"}


def test_xml_special_characters_in_user_values_are_escaped(conn) -> None:
    hostile = "</nova:name><evil/>&amp; \"quoted\" 'x' <b>"
    guest = spec(name=hostile, owner=OwnerMeta("u-1", "a&b<c>", "p-1", 'pro"j'),
                 flavor=FlavorMeta(name="m1.<tiny>&", memory_mb=512, root_gb=1, vcpus=2))
    parsed = define_validated(conn, build_domain_xml(guest))
    instance = parsed.find("metadata/nova:instance", NS)
    assert instance.findtext("nova:name", namespaces=NS) == hostile
    assert instance.find("nova:flavor", NS).get("name") == "m1.<tiny>&"
    assert instance.findtext("nova:owner/nova:user", namespaces=NS) == "a&b<c>"
    assert instance.findtext("nova:owner/nova:project", namespaces=NS) == 'pro"j'
    assert parsed.find(".//evil") is None


def test_control_characters_do_not_break_the_document(conn) -> None:
    parsed = define_validated(conn, build_domain_xml(spec(name="bell\x07name")))
    assert parsed.find("metadata/nova:instance", NS).findtext("nova:name", namespaces=NS) == "bell\ufffdname"


def test_direct_kernel_boot_replaces_booting_from_disk(conn) -> None:
    guest = spec(kernel="/images/vmlinuz", initrd="/images/initrd", cmdline="console=ttyS0 root=/dev/vda")
    define_validated(conn, build_domain_xml(guest))
    # Read our own document: libvirt adds a default <boot> when it reads one back.
    parsed = ET.fromstring(build_domain_xml(guest))
    assert parsed.findtext("os/kernel") == "/images/vmlinuz"
    assert parsed.findtext("os/initrd") == "/images/initrd"
    assert parsed.findtext("os/cmdline") == "console=ttyS0 root=/dev/vda"
    assert parsed.find("os/boot") is None


def test_disk_and_console_log_appear_only_when_given(conn) -> None:
    bare = define_validated(conn, build_domain_xml(spec()))
    assert bare.find("devices/disk") is None
    assert bare.find("devices/serial/log") is None

    guest = spec(disk_path="/var/lib/eventsvm/instances/disk", disk_format="raw",
                 console_log_path="/var/lib/eventsvm/instances/console.log")
    full = define_validated(conn, build_domain_xml(guest))
    disk = full.find("devices/disk")
    assert disk.find("source").get("file") == "/var/lib/eventsvm/instances/disk"
    assert disk.find("driver").get("type") == "raw"
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    log = full.find("devices/serial/log")
    assert log.attrib == {"file": "/var/lib/eventsvm/instances/console.log", "append": "off"}
    assert full.find("devices/console/target").get("type") == "serial"


def test_user_mode_networking_has_no_tap_device(conn) -> None:
    document = build_domain_xml(spec(vif_type="user"))
    define_validated(conn, document)
    # Read our own document: the test driver names a target device itself.
    interface = ET.fromstring(document).find("devices/interface")
    assert interface.get("type") == "user"
    assert interface.find("mac").get("address") == "fa:16:3e:12:34:56"
    assert interface.find("target") is None


def test_the_same_spec_gives_the_same_document() -> None:
    assert build_domain_xml(spec()) == build_domain_xml(spec())


def test_domain_name_is_novas_pattern_and_stable() -> None:
    name = domain_name_for(UUID)
    assert name == "instance-6f1e0c5a"
    assert re.fullmatch(r"instance-[0-9a-f]{8}", name)
    assert domain_name_for(UUID.upper()) == name
    assert domain_name_for("{" + UUID.replace("-", "") + "}") == name
    assert domain_name_for("00000001-8d2b-4c1e-9f00-1234567890ab") == "instance-00000001"
    assert domain_name_for("6f1e0c5b-8d2b-4c1e-9f00-1234567890ab") != name
    assert spec().domain_name == name
    assert spec(domain_name="custom").domain_name == "custom"


def test_uuid_is_written_in_canonical_form() -> None:
    parsed = ET.fromstring(build_domain_xml(spec(instance_uuid=UUID.upper())))
    assert parsed.findtext("uuid") == UUID


@pytest.mark.parametrize("overrides, reason", [
    ({"instance_uuid": "not-a-uuid"}, "not a UUID"),
    ({"domain_type": "xen"}, "domain type"),
    ({"disk_format": "vmdk"}, "disk format"),
    ({"vcpus": 0}, "at least 1 vCPU"),
    ({"ports": (GuestPort(port_id="p", mac="fa:16:3e:zz:00:01"),)}, "MAC"),
    ({"initrd": "/images/initrd"}, "needs a kernel"),
])
def test_specs_no_hypervisor_could_run_are_refused(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidGuestSpec, match=reason):
        spec(**overrides)


def test_node_file_describes_the_fake_host(tmp_path: Path) -> None:
    path = node.write_node_xml(tmp_path / "with space" / "node.xml", vcpus=12, memory_mb=24576, sockets=2)
    connection = libvirt.open(node.test_uri_for(path))
    try:
        _model, memory_mb, cpus, *_ = connection.getInfo()
        assert (cpus, memory_mb) == (12, 24576)
    finally:
        connection.close()
