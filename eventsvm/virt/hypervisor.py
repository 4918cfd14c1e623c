"""One compute host's hypervisor, reached through libvirt-python, with idempotent operations.

Idempotency is decided by looking at the domain's state, never by a driver's error code: the test
and QEMU drivers answer the same mistake with different codes (docs in
/work/shared/libvirt-on-these-machines.md). Only "no such domain" (42) is read from a code, and
both drivers agree on it.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from types import TracebackType

import libvirt

DEFAULT_URI = "test:///default"
# The test driver's built-in domain, present in every test:///default connection.
_TEST_DRIVER_DOMAIN = "test"
# Nova's limit on what it returns from a console log (nova.virt.libvirt.driver.MAX_CONSOLE_BYTES).
MAX_CONSOLE_BYTES = 100 * 1024

# Errors about the document itself: every host would refuse it, so rescheduling cannot help.
_DOCUMENT_ERRORS = frozenset({
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_XML_INVALID_SCHEMA,
    libvirt.VIR_ERR_INVALID_ARG,
})


class DomainState(IntEnum):
    """A domain's power state, as nova's `power_state` numbers it."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


_POWER_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.SUSPENDED,
}


# distinct document shapes a connection remembers as validated (a few per flavor of guest)
_VALIDATED_SHAPES = 256


def document_shape(xml: str | ET.Element) -> str:
    """The structure of a domain document (its text or its parsed root) without its values: every
    element's path with its attribute names, in document order. The documents eventsvm writes
    differ by values (names, UUIDs, MACs, sizes) taken from typed fields; a new structure (another
    disk, a config drive) is what a schema check is for."""
    paths: list[str] = []

    def walk(element: ET.Element, path: str) -> None:
        here = f"{path}/{element.tag}[{','.join(sorted(element.attrib))}]"
        paths.append(here)
        for child in element:
            walk(child, here)

    walk(ET.fromstring(xml) if isinstance(xml, str) else xml, "")
    return "\n".join(paths)


class HypervisorError(Exception):
    """A libvirt operation failed; `retryable` says whether another attempt (or host) may succeed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class SpawnError(HypervisorError):
    """The guest could not be defined or started on this host."""


class DomainNotFound(HypervisorError):
    """No domain on this host has the instance's UUID."""

    def __init__(self, instance_uuid: str) -> None:
        super().__init__(f"no domain for instance {instance_uuid} on this host", retryable=False)


class HypervisorUnavailable(Exception):
    """The hypervisor cannot be reached (or was closed); nothing is known about the instance."""


@dataclass(frozen=True)
class DomainInfo:
    """What the spawner reports about a domain: identity, power state and size."""

    uuid: str
    name: str
    state: DomainState
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class NodeCapacity:
    """The host's total size, as the hypervisor reports it."""

    vcpus: int
    memory_mb: int


class Hypervisor:
    """One libvirt connection and the instance operations the spawner needs, each idempotent."""

    def __init__(self, uri: str = DEFAULT_URI) -> None:
        _silence_libvirt_stderr()
        self._uri = uri
        self._lock = threading.Lock()
        self._validate_supported = True
        self._validated_shapes: set[str] = set()
        self._connection: libvirt.virConnect | None = self._open()

    @property
    def uri(self) -> str:
        """The libvirt URI this hypervisor was opened with."""
        return self._uri

    @property
    def socket_path(self) -> str:
        """The daemon's socket when the URI names one (the project's own libvirtd), else ''."""
        return socket_of(self._uri)

    @property
    def domain_type(self) -> str:
        """The `<domain type>` this hypervisor runs: 'test' for the test driver, else 'qemu'."""
        with self._translated("ask the driver type"):
            driver = self._conn().getType()
        # KVM is a choice of the operator (it needs a working /dev/kvm), so QEMU means TCG here.
        return "test" if driver == "TEST" else "qemu"

    def spawn(self, xml: str, instance_uuid: str) -> DomainInfo:
        """Make the instance's domain run; an existing running domain is returned as it is."""
        wanted = _canonical_uuid(instance_uuid)
        document = _parsed(xml)  # once: its uuid is checked here, its shape when it is defined
        declared = _uuid_in(document)
        if declared != wanted:
            raise SpawnError(f"domain XML carries uuid {declared!r}, not instance {wanted}", retryable=False)
        with self._translated(f"spawn instance {wanted}", SpawnError):
            domain = self._lookup(wanted)
            if domain is not None and domain.isActive():
                current = _power_state(domain)
                if current is DomainState.RUNNING:
                    return _describe(domain)
                if current is DomainState.PAUSED:
                    domain.resume()
                    return _describe(domain)
                # Crashed, shutting down or suspended: start over from a clean boot, as nova's
                # hard reboot does.
                self._stop(domain)
            domain = self._define(xml, document)
            try:
                domain.create()
            except libvirt.libvirtError:
                # A concurrent spawn of the same instance may have started it first.
                if domain.isActive() and _power_state(domain) is DomainState.RUNNING:
                    return _describe(domain)
                raise
            return _describe(domain)

    def destroy(self, instance_uuid: str) -> bool:
        """Stop and undefine the instance's domain; False when there was none (not an error)."""
        wanted = _canonical_uuid(instance_uuid)
        with self._translated(f"destroy instance {wanted}"):
            domain = self._lookup(wanted)
            if domain is None:
                return False
            try:
                self._stop(domain)
                if domain.isPersistent():
                    domain.undefineFlags(_undefine_flags(domain))
            except libvirt.libvirtError:
                # Someone else removed it meanwhile: the outcome we wanted.
                if self._lookup(wanted) is None:
                    return True
                raise
            return True

    def state(self, instance_uuid: str) -> DomainState | None:
        """The instance's power state, or None when this host has no domain for it."""
        wanted = _canonical_uuid(instance_uuid)
        with self._translated(f"read the state of instance {wanted}"):
            domain = self._lookup(wanted)
            return None if domain is None else _power_state(domain)

    def info(self, instance_uuid: str) -> DomainInfo | None:
        """The instance's domain as the spawner reports it, or None when there is none."""
        wanted = _canonical_uuid(instance_uuid)
        with self._translated(f"describe instance {wanted}"):
            domain = self._lookup(wanted)
            return None if domain is None else _describe(domain)

    def list_instances(self) -> list[str]:
        """UUIDs of every domain on this host, defined or running (not the test driver's own)."""
        with self._translated("list domains"):
            conn = self._conn()
            builtin = _TEST_DRIVER_DOMAIN if conn.getType() == "TEST" else None
            return sorted(d.UUIDString() for d in conn.listAllDomains(0) if d.name() != builtin)

    def capacity(self) -> NodeCapacity:
        """The host's vCPUs and memory (MiB), from the node description the driver reports."""
        with self._translated("read the node's capacity"):
            _model, memory_mb, cpus, *_rest = self._conn().getInfo()
        return NodeCapacity(vcpus=int(cpus), memory_mb=int(memory_mb))

    def console_output(self, instance_uuid: str, max_bytes: int = MAX_CONSOLE_BYTES) -> str:
        """The tail of the guest's serial console log; '' when it has no log or wrote none yet."""
        wanted = _canonical_uuid(instance_uuid)
        with self._translated(f"read the console of instance {wanted}"):
            domain = self._lookup(wanted)
            if domain is None:
                raise DomainNotFound(wanted)
            path = _console_log_path(domain.XMLDesc(0))
        if path is None:
            return ""
        try:
            with open(path, "rb") as log:
                log.seek(max(0, os.fstat(log.fileno()).st_size - max_bytes))
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise HypervisorError(f"console log of instance {wanted} unreadable: {exc.strerror}",
                                  retryable=True) from exc

    # -- power actions, each idempotent on the domain's state (nova's LibvirtDriver power_off,
    # power_on, pause, unpause, suspend, resume); each raises DomainNotFound when there is no domain
    def shutdown(self, instance_uuid: str) -> None:
        """Ask the guest to shut itself down (ACPI); returns at once, the guest may take its time."""
        with self._domain(instance_uuid, "shut down") as domain:
            if _power_state(domain) is DomainState.RUNNING:
                domain.shutdown()

    def power_off(self, instance_uuid: str, discard_saved: bool = False) -> DomainInfo:
        """Pull the plug: stop the domain at once, keeping it defined (and, with `discard_saved`,
        dropping the memory a suspend saved, so the next start boots afresh)."""
        with self._domain(instance_uuid, "power off") as domain:
            self._stop(domain)
            if discard_saved and domain.hasManagedSaveImage(0):
                domain.managedSaveRemove(0)
            return _describe(domain)

    def power_on(self, instance_uuid: str) -> DomainInfo:
        """Start a defined domain (from its managed save if it has one); a paused one resumes."""
        with self._domain(instance_uuid, "power on") as domain:
            if not domain.isActive():
                domain.create()
            elif _power_state(domain) is DomainState.PAUSED:
                domain.resume()
            return _describe(domain)

    def pause(self, instance_uuid: str) -> DomainInfo:
        """Freeze the guest's vCPUs, its memory kept in place (libvirt's virDomainSuspend)."""
        with self._domain(instance_uuid, "pause") as domain:
            if _power_state(domain) is not DomainState.PAUSED:
                domain.suspend()
            return _describe(domain)

    def inject_nmi(self, instance_uuid: str) -> DomainInfo:
        """Send the guest a non-maskable interrupt (nova's trigger_crash_dump through libvirt's
        virDomainInjectNMI); a guest that is not running refuses it."""
        with self._domain(instance_uuid, "trigger crash dump of") as domain:
            domain.injectNMI(0)
            return _describe(domain)

    def unpause(self, instance_uuid: str) -> DomainInfo:
        """Let a paused guest's vCPUs run again."""
        with self._domain(instance_uuid, "unpause") as domain:
            if _power_state(domain) is DomainState.PAUSED:
                domain.resume()
            return _describe(domain)

    def suspend(self, instance_uuid: str) -> DomainInfo:
        """Save the guest's memory to disk and stop it (managed save), as nova's suspend does."""
        with self._domain(instance_uuid, "suspend") as domain:
            if domain.isActive():
                domain.managedSave(0)
            return _describe(domain)

    def has_saved_memory(self, instance_uuid: str) -> bool:
        """Whether a managed save waits to be resumed."""
        with self._domain(instance_uuid, "inspect") as domain:
            return bool(domain.hasManagedSaveImage(0))

    # -- volumes (nova's LibvirtDriver.attach_volume / detach_volume) ------------------------------
    def attach_disk(self, instance_uuid: str, disk_xml: str) -> bool:
        """Attach a `<disk>` to the guest, live when it runs and in its definition either way, so
        it stays attached across a stop and start; False when a disk with its target is there."""
        target = _disk_target(ET.fromstring(disk_xml))
        with self._domain(instance_uuid, f"attach disk {target} to") as domain:
            if _find_disk(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target) is not None:
                return False
            try:
                domain.attachDeviceFlags(disk_xml, _device_flags(domain))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                # a driver without hotplug (libvirt's test driver): the disk joins the definition,
                # which is what the guest has from its next start on
                self._redefine(domain, lambda devices: devices.append(ET.fromstring(disk_xml)))
            return True

    def detach_disk(self, instance_uuid: str, target: str) -> bool:
        """Detach the guest's disk with target `target` (e.g. vdb), live and from its definition;
        False when it has none."""
        with self._domain(instance_uuid, f"detach disk {target} from") as domain:
            disk = _find_disk(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target)
            if disk is None:
                return False
            try:
                domain.detachDeviceFlags(ET.tostring(disk, encoding="unicode"), _device_flags(domain))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                    raise
                self._redefine(domain, lambda devices: _remove_disk(devices, target))
            return True

    def disk_targets(self, instance_uuid: str) -> list[str]:
        """The target names (vda, vdb ...) of the disks in the guest's definition."""
        with self._domain(instance_uuid, "list the disks of") as domain:
            devices = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).find("devices")
            return [] if devices is None else [_disk_target(d) for d in devices.findall("disk")]

    def _redefine(self, domain: libvirt.virDomain, change: Callable[[ET.Element], None]) -> None:
        root = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        devices = root.find("devices")
        if devices is None:
            devices = ET.SubElement(root, "devices")
        change(devices)
        self._conn().defineXML(ET.tostring(root, encoding="unicode"))

    @contextmanager
    def _domain(self, instance_uuid: str, action: str) -> Iterator[libvirt.virDomain]:
        wanted = _canonical_uuid(instance_uuid)
        with self._translated(f"{action} instance {wanted}"):
            domain = self._lookup(wanted)
            if domain is None:
                raise DomainNotFound(wanted)
            yield domain

    def close(self) -> None:
        """Close the connection; later calls raise HypervisorUnavailable."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except libvirt.libvirtError:
                pass  # The connection is going away either way.

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _open(self) -> libvirt.virConnect:
        try:
            return libvirt.open(self._uri)
        except libvirt.libvirtError as exc:
            raise HypervisorUnavailable(
                f"cannot open hypervisor {_redacted(self._uri)}: {_message(exc)}") from exc

    def _conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._connection is None:
                raise HypervisorUnavailable(f"hypervisor {_redacted(self._uri)} is closed")
            # A remote daemon may have restarted; reconnect instead of failing every later call.
            if not self._connection.isAlive():
                self._connection = self._open()
            return self._connection

    def _lookup(self, instance_uuid: str) -> libvirt.virDomain | None:
        try:
            return self._conn().lookupByUUIDString(instance_uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def _define(self, xml: str, document: ET.Element) -> libvirt.virDomain:
        conn = self._conn()
        shape = document_shape(document) if self._validate_supported else None
        if shape is not None and shape not in self._validated_shapes:
            try:
                # Validation against libvirt's schema makes a bad document fail here with a
                # reason, rather than later as an odd runtime error (the test driver checks nothing).
                domain = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            except libvirt.libvirtError as exc:
                if not _flag_unsupported(exc):
                    raise
                self._validate_supported = False
                return conn.defineXML(xml)
            # libvirt reads its schema anew for each validation (6.7 ms a define here, against
            # 0.1 ms without): a document of a shape already validated is not checked again
            if len(self._validated_shapes) < _VALIDATED_SHAPES:
                self._validated_shapes.add(shape)
            return domain
        return conn.defineXML(xml)

    @staticmethod
    def _stop(domain: libvirt.virDomain) -> None:
        if not domain.isActive():
            return
        try:
            domain.destroy()
        except libvirt.libvirtError:
            # It may have stopped on its own between the check and the call.
            if domain.isActive():
                raise

    @contextmanager
    def _translated(self, action: str,
                    error: type[HypervisorError] = HypervisorError) -> Iterator[None]:
        """Turn a libvirt error into HypervisorUnavailable or `error`, with one readable message."""
        try:
            yield
        except libvirt.libvirtError as exc:
            if not self._alive():
                raise HypervisorUnavailable(
                    f"hypervisor {_redacted(self._uri)} went away during {action}: {_message(exc)}"
                ) from exc
            retryable = exc.get_error_code() not in _DOCUMENT_ERRORS
            raise error(f"{action} failed: {_message(exc)}", retryable=retryable) from exc

    def _alive(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            return bool(connection.isAlive())
        except libvirt.libvirtError:
            return False


def _describe(domain: libvirt.virDomain) -> DomainInfo:
    state, max_kib, _kib, vcpus, _cpu_time = domain.info()
    return DomainInfo(uuid=domain.UUIDString(), name=domain.name(),
                      state=_POWER_STATE.get(state, DomainState.NOSTATE),
                      vcpus=int(vcpus), memory_mb=int(max_kib) // 1024)


def _power_state(domain: libvirt.virDomain) -> DomainState:
    state, _reason = domain.state()
    return _POWER_STATE.get(state, DomainState.NOSTATE)


def _undefine_flags(domain: libvirt.virDomain) -> int:
    # Leftovers of a managed save or snapshots would otherwise block the undefine. NVRAM only when
    # the domain has some: drivers without UEFI support (the test driver) refuse the flag.
    flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    if ET.fromstring(domain.XMLDesc(0)).find("os/nvram") is not None:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    return flags


def _device_flags(domain: libvirt.virDomain) -> int:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return flags | libvirt.VIR_DOMAIN_AFFECT_LIVE if domain.isActive() else flags


def _disk_target(disk: ET.Element) -> str:
    target = disk.find("target")
    return "" if target is None else target.get("dev", "")


def _find_disk(domain_xml: str, target: str) -> ET.Element | None:
    devices = ET.fromstring(domain_xml).find("devices")
    if devices is None:
        return None
    return next((d for d in devices.findall("disk") if _disk_target(d) == target), None)


def _remove_disk(devices: ET.Element, target: str) -> None:
    for disk in devices.findall("disk"):
        if _disk_target(disk) == target:
            devices.remove(disk)


def _flag_unsupported(exc: libvirt.libvirtError) -> bool:
    return (exc.get_error_code() in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT)
            and "flags" in _message(exc))


def _console_log_path(domain_xml: str) -> str | None:
    devices = ET.fromstring(domain_xml).find("devices")
    if devices is None:
        return None
    for device in (*devices.findall("serial"), *devices.findall("console")):
        log = device.find("log")
        if log is not None and log.get("file"):
            return log.get("file")
    return None


def _parsed(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SpawnError(f"domain XML does not parse: {exc}", retryable=False) from exc


def _uuid_in(document: ET.Element) -> str | None:
    text = document.findtext("uuid")
    try:
        return None if text is None else str(uuidlib.UUID(text.strip()))
    except ValueError:
        return text


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (ValueError, AttributeError, TypeError) as exc:
        raise HypervisorError(f"{value!r} is not an instance UUID", retryable=False) from exc


def socket_of(uri: str) -> str:
    """The unix socket a libvirt URI names (`?socket=`), else ''."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get("socket", [""])[0]


def _message(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()


def _redacted(uri: str) -> str:
    """The URI without a password, if one was written into it."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_silenced = False


def _silence_libvirt_stderr() -> None:
    # libvirt prints every error to stderr by default, including the expected "no domain" of an
    # idempotent lookup; errors reach callers as exceptions instead.
    global _silenced
    if not _silenced:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _silenced = True
