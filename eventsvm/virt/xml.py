"""Libvirt domain XML for one guest, shaped the way nova's libvirt driver shapes it.

Every value that comes from a user (display name, flavor name, user and project names, kernel
command line) goes through xml.etree, so `<`, `&` and quotes are escaped by the serializer and can
never change the document's structure.
"""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventsvm import __version__

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
DOMAIN_TYPES = ("test", "qemu", "kvm")
DISK_FORMATS = ("qcow2", "raw")
VIF_TYPES = ("ethernet", "user", "bridge")

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Characters XML 1.0 cannot carry at all, escaped or not; etree would write them through raw.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Linux caps interface names at 15 bytes; nova's "tap" + 11 characters of the port id fits, as
# does neutron's linuxbridge "brq" + 11 characters of the network id.
_TAP_ID_CHARS = 11
_BRIDGE_ID_CHARS = 11

ET.register_namespace("nova", NOVA_NS)


class InvalidGuestSpec(ValueError):
    """A guest description that no hypervisor could run; retrying it anywhere fails the same way."""


def domain_name_for(instance_uuid: str) -> str:
    """The libvirt domain name for an instance, nova's `instance-%08x`.

    Nova formats its database id; the log has no such id, so the integer is the UUID's first 32
    bits. Stable across processes and hosts, and two instances collide only when their UUIDs share
    the first 8 hex digits (libvirt then refuses the second define, which the spawner reports).
    """
    return "instance-%08x" % (_parse_uuid(instance_uuid).int >> 96)


@dataclass(frozen=True)
class GuestPort:
    """One network port plugged into the guest: neutron's port id, MAC and fixed IP, and its
    subnet's range and gateway (what the guest configures from its config drive)."""

    port_id: str
    mac: str
    ip: str | None = None
    network_id: str | None = None
    cidr: str | None = None
    gateway_ip: str | None = None

    @property
    def tap_name(self) -> str:
        """Host-side tap device name, nova's `tap<port id[:11]>`."""
        return "tap" + self.port_id[:_TAP_ID_CHARS]

    @property
    def bridge_name(self) -> str:
        """The network's Linux bridge on the host, neutron linuxbridge's `brq<network id[:11]>`."""
        return bridge_name(self.network_id or "")


def bridge_name(network_id: str) -> str:
    """A network's Linux bridge, neutron linuxbridge's `brq<network id[:11]>`."""
    return "brq" + network_id[:_BRIDGE_ID_CHARS]


@dataclass(frozen=True)
class FlavorMeta:
    """The flavor as recorded in nova's domain metadata (sizes in MiB / GiB, like nova)."""

    name: str
    memory_mb: int
    root_gb: int
    vcpus: int
    swap_mb: int = 0
    ephemeral_gb: int = 0


@dataclass(frozen=True)
class OwnerMeta:
    """The user and project that own the instance, ids and names."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str


@dataclass(frozen=True)
class GuestSpec:
    """Everything needed to write one instance's domain XML.

    `disk_path` None means no disk device (enough for the test driver). `kernel` set means direct
    kernel boot (nova's AMI-style images); otherwise the guest boots from its first disk.
    `created_at` is part of the XML, so pass the request's time to keep the document reproducible.
    """

    instance_uuid: str
    name: str
    vcpus: int
    memory_mb: int
    flavor: FlavorMeta
    owner: OwnerMeta
    created_at: datetime
    domain_name: str = ""
    domain_type: str = "test"
    root_gb: int = 0
    image_id: str | None = None
    disk_path: str | None = None
    disk_format: str = "qcow2"
    # "none" is nova's choice where O_DIRECT works; tmpfs has no O_DIRECT, use "writeback" there.
    disk_cache: str = "none"
    ports: tuple[GuestPort, ...] = field(default_factory=tuple)
    vif_type: str = "ethernet"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    console_log_path: str | None = None
    # nova's disk.config: the config drive, a read-only second disk
    config_drive_path: str | None = None
    arch: str = "x86_64"

    def __post_init__(self) -> None:
        canonical = str(_parse_uuid(self.instance_uuid))
        object.__setattr__(self, "instance_uuid", canonical)
        object.__setattr__(self, "ports", tuple(self.ports))
        if not self.domain_name:
            object.__setattr__(self, "domain_name", domain_name_for(canonical))
        if self.domain_type not in DOMAIN_TYPES:
            raise InvalidGuestSpec(f"domain type {self.domain_type!r} is not one of {DOMAIN_TYPES}")
        if self.disk_format not in DISK_FORMATS:
            raise InvalidGuestSpec(f"disk format {self.disk_format!r} is not one of {DISK_FORMATS}")
        if self.vif_type not in VIF_TYPES:
            raise InvalidGuestSpec(f"vif type {self.vif_type!r} is not one of {VIF_TYPES}")
        if self.vcpus < 1 or self.memory_mb < 1:
            raise InvalidGuestSpec(f"a guest needs at least 1 vCPU and 1 MiB (got {self.vcpus}, "
                                   f"{self.memory_mb} MiB)")
        if (self.initrd or self.cmdline) and not self.kernel:
            raise InvalidGuestSpec("an initrd or kernel command line needs a kernel")
        for port in self.ports:
            if not _MAC.match(port.mac):
                raise InvalidGuestSpec(f"port {port.port_id} has no valid MAC address: {port.mac!r}")
            if self.vif_type == "bridge" and not port.network_id:
                raise InvalidGuestSpec(f"port {port.port_id} names no network to bridge it to")


def build_domain_xml(spec: GuestSpec) -> str:
    """The libvirt domain XML for `spec`, as a string ready for defineXML."""
    domain = ET.Element("domain", type=spec.domain_type)
    _text(domain, "name", spec.domain_name)
    _text(domain, "uuid", spec.instance_uuid)
    domain.append(_nova_metadata(spec))
    kib = str(spec.memory_mb * 1024)
    _text(domain, "memory", kib, unit="KiB")
    _text(domain, "currentMemory", kib, unit="KiB")
    _text(domain, "vcpu", str(spec.vcpus))
    domain.append(_sysinfo(spec))
    domain.append(_os(spec))
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    domain.append(_cpu(spec))
    ET.SubElement(domain, "clock", offset="utc")
    _text(domain, "on_poweroff", "destroy")
    _text(domain, "on_reboot", "restart")
    _text(domain, "on_crash", "destroy")
    domain.append(_devices(spec))
    ET.indent(domain)
    return _NOT_XML.sub("\ufffd", ET.tostring(domain, encoding="unicode"))


def _nova_metadata(spec: GuestSpec) -> ET.Element:
    metadata = ET.Element("metadata")
    instance = ET.SubElement(metadata, _nova("instance"))
    ET.SubElement(instance, _nova("package"), version=__version__)
    _text(instance, _nova("name"), spec.name)
    created = spec.created_at if spec.created_at.tzinfo else spec.created_at.replace(tzinfo=UTC)
    _text(instance, _nova("creationTime"), created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))
    flavor = ET.SubElement(instance, _nova("flavor"), name=spec.flavor.name)
    _text(flavor, _nova("memory"), str(spec.flavor.memory_mb))
    _text(flavor, _nova("disk"), str(spec.flavor.root_gb))
    _text(flavor, _nova("swap"), str(spec.flavor.swap_mb))
    _text(flavor, _nova("ephemeral"), str(spec.flavor.ephemeral_gb))
    _text(flavor, _nova("vcpus"), str(spec.flavor.vcpus))
    owner = ET.SubElement(instance, _nova("owner"))
    _text(owner, _nova("user"), spec.owner.user_name, uuid=spec.owner.user_id)
    _text(owner, _nova("project"), spec.owner.project_name, uuid=spec.owner.project_id)
    if spec.image_id:
        ET.SubElement(instance, _nova("root"), type="image", uuid=spec.image_id)
    if spec.ports:
        ports = ET.SubElement(instance, _nova("ports"))
        for port in spec.ports:
            element = ET.SubElement(ports, _nova("port"), uuid=port.port_id)
            if port.ip:
                version = str(ipaddress.ip_address(port.ip).version)
                ET.SubElement(element, _nova("ip"), type="fixed", address=port.ip, ipVersion=version)
    return metadata


def _sysinfo(spec: GuestSpec) -> ET.Element:
    sysinfo = ET.Element("sysinfo", type="smbios")
    system = ET.SubElement(sysinfo, "system")
    for name, value in (
        ("manufacturer", "OpenStack Foundation"),
        ("product", "OpenStack Nova"),
        ("version", __version__),
        ("serial", spec.instance_uuid),
        ("uuid", spec.instance_uuid),
        ("family", "Virtual Machine"),
    ):
        _text(system, "entry", value, name=name)
    return sysinfo


def _os(spec: GuestSpec) -> ET.Element:
    os_element = ET.Element("os")
    _text(os_element, "type", "hvm", arch=spec.arch)
    if spec.kernel:
        _text(os_element, "kernel", spec.kernel)
        if spec.initrd:
            _text(os_element, "initrd", spec.initrd)
        if spec.cmdline:
            _text(os_element, "cmdline", spec.cmdline)
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    ET.SubElement(os_element, "smbios", mode="sysinfo")
    return os_element


def _cpu(spec: GuestSpec) -> ET.Element:
    # Nova exposes every vCPU as its own socket unless the flavor asks otherwise; KVM guests
    # get the host's CPU model, TCG guests QEMU's default one.
    cpu = ET.Element("cpu", mode="host-model") if spec.domain_type == "kvm" else ET.Element("cpu")
    ET.SubElement(cpu, "topology", sockets=str(spec.vcpus), cores="1", threads="1")
    return cpu


def _devices(spec: GuestSpec) -> ET.Element:
    devices = ET.Element("devices")
    if spec.disk_path:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=spec.disk_format, cache=spec.disk_cache)
        ET.SubElement(disk, "source", file=spec.disk_path)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    if spec.config_drive_path:
        # a virtio disk rather than nova's IDE cdrom: the guest finds it by its label either way
        drive = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(drive, "driver", name="qemu", type="raw", cache=spec.disk_cache)
        ET.SubElement(drive, "source", file=spec.config_drive_path)
        ET.SubElement(drive, "target", dev="vdb" if spec.disk_path else "vda", bus="virtio")
        ET.SubElement(drive, "readonly")
    for port in spec.ports:
        interface = ET.SubElement(devices, "interface", type=spec.vif_type)
        ET.SubElement(interface, "mac", address=port.mac)
        if spec.vif_type == "bridge":
            ET.SubElement(interface, "source", bridge=port.bridge_name)
        ET.SubElement(interface, "model", type="virtio")
        if spec.vif_type in ("ethernet", "bridge"):
            ET.SubElement(interface, "target", dev=port.tap_name)
    serial = ET.SubElement(devices, "serial", type="pty")
    if spec.console_log_path:
        ET.SubElement(serial, "log", file=spec.console_log_path, append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    if spec.domain_type != "test":
        balloon = ET.SubElement(devices, "memballoon", model="virtio")
        ET.SubElement(balloon, "stats", period="10")
        # nova's hw_rng: the guest's random pool is ready at once (SSH host keys need it), where
        # an emulated guest alone gathers entropy for seconds
        rng = ET.SubElement(devices, "rng", model="virtio")
        _text(rng, "backend", "/dev/urandom", model="random")
    return devices


def _nova(tag: str) -> str:
    return f"{{{NOVA_NS}}}{tag}"


def _text(parent: ET.Element, tag: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element


def _parse_uuid(value: str) -> uuidlib.UUID:
    try:
        return uuidlib.UUID(value)
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidGuestSpec(f"instance uuid {value!r} is not a UUID") from exc
