"""One compute host as the spawner drives it: its capacity, its hypervisor, and how a resolved
instance becomes a libvirt guest (nova's LibvirtDriver.spawn, reduced to what matters here)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsvm.virt.bridges import bridges_locked, ensure_bridge
from eventsvm.virt.config_drive import InstanceMetadata, write_config_drive
from eventsvm.virt.hypervisor import DomainInfo, DomainNotFound, DomainState, Hypervisor, SpawnError
from eventsvm.virt.images import ImageBackend
from eventsvm.virt.xml import FlavorMeta, GuestPort, GuestSpec, OwnerMeta, build_domain_xml

# How often a booting guest's console log is read while the spawner waits for its boot line.
_BOOT_POLL_S = 0.25
# How often a guest asked to shut down is looked at while the spawner waits for it to stop.
_SHUTDOWN_POLL_S = 0.1


@dataclass(frozen=True)
class HostCapacity:
    """What a host offers and nova's allocation ratios over it."""

    vcpus: int = 64
    ram_mb: int = 256 * 1024
    disk_gb: int = 2048
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0

    def fits(self, used: tuple[int, int, int], want: tuple[int, int, int]) -> str | None:
        """None if `want` fits beside `used` (vcpus, ram MB, disk GB); else nova's claim message."""
        limits = (
            self.vcpus * self.cpu_allocation_ratio,
            self.ram_mb * self.ram_allocation_ratio,
            self.disk_gb * self.disk_allocation_ratio,
        )
        names = ("vcpu", "memory", "disk")
        units = ("VCPU", "MB", "GB")
        for name, unit, limit, have, need in zip(names, units, limits, used, want, strict=True):
            if have + need > limit:
                return (
                    f"Insufficient compute resources: Free {name} {limit - have:g} {unit} "
                    f"< requested {need} {unit}."
                )
        return None


@dataclass
class ComputeHost:
    """A compute host: name, slot (its partition), capacity and hypervisor.

    `broken` makes every spawn on this host fail with that message: the chaos knob operators use
    to drain a host in a drill and tests use to prove rescheduling. With `images`, each guest gets
    a root disk from its image and boots its kernel (real hypervisors); without, it is diskless
    (the test driver). `domain_type` overrides the hypervisor's (`kvm` where /dev/kvm works);
    `vif_type` 'user' gives guests QEMU's user-mode network instead of a tap device; 'bridge' plugs
    each into its network's Linux bridge on this machine (eventsvm.virt.bridges), made on demand and
    kept while the libvirtd runs.
    With `config_drive` (and `images`), each guest gets nova's config drive (forced, as nova's
    force_config_drive): its name, hostname, key pair's public key and fixed IPs.
    With `boot_line` (may contain `{uuid}`), a spawn succeeds only once the guest printed it on its
    serial console within `boot_timeout_s`. A stop waits `shutdown_timeout_s` for the guest to shut
    down cleanly before pulling the plug (nova's shutdown_timeout), a soft reboot waits
    `soft_reboot_timeout_s` before rebooting hard (nova's [libvirt] wait_soft_reboot_seconds).
    """

    name: str
    slot: int
    capacity: HostCapacity
    hypervisor: Hypervisor
    availability_zone: str = "nova"
    state_dir: Path | None = None
    broken: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    images: ImageBackend | None = None
    domain_type: str | None = None
    boot_line: str | None = None
    boot_timeout_s: float = 60.0
    vif_type: str = "ethernet"
    config_drive: bool = False
    shutdown_timeout_s: float = 60.0
    soft_reboot_timeout_s: float = 120.0

    def guest_spec(
        self, instance_id: str, resolved: dict[str, Any], user_id: str, project_id: str, created_ms: int
    ) -> GuestSpec:
        """The libvirt guest for a resources-resolved body."""
        spec = resolved["spec"]
        flavor = spec["flavor"]
        console = None
        if self.state_dir is not None:
            console = str(self.state_dir / f"{instance_id}.console.log")
        guest = GuestSpec(
            instance_uuid=instance_id,
            name=spec["name"],
            vcpus=flavor["vcpus"],
            memory_mb=flavor["ram_mb"],
            flavor=FlavorMeta(
                name=flavor["name"],
                memory_mb=flavor["ram_mb"],
                root_gb=flavor["disk_gb"],
                vcpus=flavor["vcpus"],
                swap_mb=flavor.get("swap_mb", 0),
                ephemeral_gb=flavor.get("ephemeral_gb", 0),
            ),
            owner=OwnerMeta(
                user_id=user_id, user_name=user_id, project_id=project_id, project_name=project_id
            ),
            created_at=datetime.fromtimestamp(created_ms / 1000, UTC),
            domain_type=self.domain_type or self.hypervisor.domain_type,
            root_gb=flavor["disk_gb"],
            image_id=resolved["image"]["id"],
            ports=tuple(
                GuestPort(
                    port_id=p["port_id"], mac=p["mac_address"], ip=p["ip_address"],
                    network_id=p["network_id"], cidr=p.get("cidr"), gateway_ip=p.get("gateway_ip"),
                )
                for p in resolved["ports"]
            ),
            console_log_path=console,
            vif_type=self.vif_type,
        )
        if self.images is None:
            return guest
        boot = self.images.boot_source(instance_id, resolved["image"])
        drive = self.images.instance_dir(instance_id) / "disk.config" if self.config_drive else None
        return replace(guest, disk_path=str(boot.disk_path), disk_cache=boot.disk_cache,
                       console_log_path=str(boot.console_log_path), kernel=boot.kernel, initrd=boot.ramdisk,
                       cmdline=boot.cmdline, config_drive_path=str(drive) if drive else None)

    def spawn(
        self, instance_id: str, resolved: dict[str, Any], user_id: str, project_id: str, created_ms: int,
        hostname: str | None = None,
    ) -> DomainInfo:
        """Define and start the guest (and await its boot line); a running guest is returned as it is.
        `hostname` is the one nova made from the server's name, for the config drive."""
        guest = self.guest_spec(instance_id, resolved, user_id, project_id, created_ms)
        if self.images is not None:
            self.images.create_disk(instance_id, resolved["image"], guest.root_gb)
        if guest.config_drive_path:
            write_config_drive(Path(guest.config_drive_path),
                               self._metadata(guest, resolved, project_id, hostname or guest.name))
        if self.vif_type == "bridge":
            # the bridges must exist from their creation until the guest's taps are in them
            with bridges_locked():
                for port in guest.ports:
                    ensure_bridge(port.network_id or "", port.cidr, port.gateway_ip,
                                  self.hypervisor.socket_path)
                domain = self.hypervisor.spawn(build_domain_xml(guest), instance_id)
        else:
            domain = self.hypervisor.spawn(build_domain_xml(guest), instance_id)
        if self.boot_line is not None:
            self._await_boot(instance_id, self.boot_line.replace("{uuid}", guest.instance_uuid))
        return domain

    def destroy(self, instance_id: str) -> bool:
        """Stop and undefine the guest and remove its disk; False if there was no guest."""
        existed = self.hypervisor.destroy(instance_id)
        if self.images is not None:
            self.images.remove(instance_id)
        return existed

    def _metadata(self, guest: GuestSpec, resolved: dict[str, Any], project_id: str, hostname: str
                  ) -> InstanceMetadata:
        key_name = resolved["spec"].get("key_name")
        public_key = resolved.get("public_key")
        return InstanceMetadata(
            uuid=guest.instance_uuid, name=guest.name, hostname=hostname, project_id=project_id,
            availability_zone=self.availability_zone,
            public_keys={key_name: public_key} if key_name and public_key else {}, ports=guest.ports)

    # -- server actions (nova's ComputeManager stop / start / reboot / pause / suspend ...) ---------
    def act(
        self, instance_id: str, action: str, reboot_type: str | None = None
    ) -> tuple[DomainInfo, str | None]:
        """Carry out a host-side server action; the guest afterwards and a note on how it went."""
        hv = self.hypervisor
        if action == "stop":
            clean = self._clean_shutdown(instance_id, self.shutdown_timeout_s)
            note = None if clean else (f"the guest did not shut down within {self.shutdown_timeout_s:g} s; "
                                       "powered off")
            return hv.power_off(instance_id), note
        if action == "reboot":
            return self._reboot(instance_id, hard=reboot_type == "HARD")
        steps = {"start": hv.power_on, "pause": hv.pause, "unpause": hv.unpause, "suspend": hv.suspend,
                 "resume": hv.power_on, "trigger_crash_dump": hv.inject_nmi}
        return steps[action](instance_id), None

    def snapshot(self, instance_id: str, image_id: str) -> dict[str, Any]:
        """Take the snapshot of createImage: what fills its Glance image (size, formats, location).

        On the test driver a guest has no disk, so the snapshot is a record of the guest as it was.
        With an image backend the root disk is converted into an image file that boots. A guest
        that runs (or is paused) is saved to disk meanwhile and restored after, nova's cold
        snapshot: QEMU then holds no lock on the disk and has flushed its qcow2 caches into it."""
        state = self.hypervisor.state(instance_id)
        if state is None:
            raise DomainNotFound(instance_id)
        if self.images is None:
            return {"size_bytes": 0, "disk_format": "qcow2", "container_format": "bare", "location": None}
        live = state in (DomainState.RUNNING, DomainState.PAUSED)
        if live:
            self.hypervisor.suspend(instance_id)
        try:
            path = self.images.snapshot(instance_id, image_id)
        finally:
            if live:
                self.hypervisor.power_on(instance_id)  # restored from the save, paused if it was
        return {"size_bytes": path.stat().st_size, "disk_format": "qcow2", "container_format": "bare",
                "location": path.as_uri()}

    def drop_snapshot(self, image_id: str) -> bool:
        """Remove the file of a deleted snapshot image from this host; False when it had none."""
        return self.images is not None and self.images.drop_snapshot(image_id)

    def _reboot(self, instance_id: str, hard: bool) -> tuple[DomainInfo, str | None]:
        note = None
        if not hard:
            # nova's libvirt soft reboot: a clean shutdown and a start; hard when the guest ignores it
            if self._clean_shutdown(instance_id, self.soft_reboot_timeout_s):
                return self.hypervisor.power_on(instance_id), None
            note = f"the guest did not shut down within {self.soft_reboot_timeout_s:g} s; rebooted hard"
        # hard: destroy and create again, from a clean boot (a suspended guest's saved memory is dropped)
        self.hypervisor.power_off(instance_id, discard_saved=True)
        return self.hypervisor.power_on(instance_id), note

    def _clean_shutdown(self, instance_id: str, timeout_s: float) -> bool:
        """Ask a running guest to shut down and wait for it; False when it is still up at the deadline."""
        state = self.hypervisor.state(instance_id)
        if state is None:
            raise DomainNotFound(instance_id)
        if state is not DomainState.RUNNING:
            # a paused or crashed guest cannot shut itself down
            return state is DomainState.SHUTDOWN
        self.hypervisor.shutdown(instance_id)
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.hypervisor.state(instance_id)
            if state is None:
                raise DomainNotFound(instance_id)
            if state is DomainState.SHUTDOWN:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_SHUTDOWN_POLL_S)

    def _await_boot(self, instance_id: str, line: str) -> None:
        # RUNNING only says QEMU started; the line on the console says the guest's kernel and init
        # came up, which is what a user of the server notices.
        deadline = time.monotonic() + self.boot_timeout_s
        while True:
            if line in self.hypervisor.console_output(instance_id):
                return
            state = self.hypervisor.state(instance_id)
            if state is not DomainState.RUNNING:
                raise SpawnError(f"guest stopped while booting (state {state.name if state else 'gone'})",
                                 retryable=True)
            if time.monotonic() >= deadline:
                raise SpawnError(f"guest did not report its boot on the serial console within "
                                 f"{self.boot_timeout_s:g} s", retryable=True)
            time.sleep(_BOOT_POLL_S)


class Consoles:
    """The guests' serial console logs, read for the API's os-getConsoleOutput (nova's
    get_console_output): one hypervisor connection per host URI, opened on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hypervisors: dict[str, Hypervisor] = {}

    def output(self, hypervisor_uri: str, instance_id: str, length: int | None = None) -> str:
        """The last `length` lines of the instance's console (all when None).

        '' on the test driver, whose guests have no console. Raises DomainNotFound when the host
        has no such guest, HypervisorUnavailable when the host cannot be reached.
        """
        if hypervisor_uri.startswith("test:"):
            # Each test-driver connection has its own domains; the spawner's are not visible here.
            return ""
        with self._lock:
            hypervisor = self._hypervisors.get(hypervisor_uri)
            if hypervisor is None:
                hypervisor = self._hypervisors[hypervisor_uri] = Hypervisor(hypervisor_uri)
        text = hypervisor.console_output(instance_id)
        if length is None:
            return text
        return "".join(text.splitlines(keepends=True)[-length:]) if length > 0 else ""

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            hypervisors, self._hypervisors = list(self._hypervisors.values()), {}
        for hypervisor in hypervisors:
            hypervisor.close()
