"""One compute host as the spawner drives it: its capacity, its hypervisor, and how a resolved
instance becomes a libvirt guest (nova's LibvirtDriver.spawn, reduced to what matters here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsvm.virt.hypervisor import DomainInfo, Hypervisor
from eventsvm.virt.xml import FlavorMeta, GuestPort, GuestSpec, OwnerMeta, build_domain_xml


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
    to drain a host in a drill and tests use to prove rescheduling.
    """

    name: str
    slot: int
    capacity: HostCapacity
    hypervisor: Hypervisor
    availability_zone: str = "nova"
    state_dir: Path | None = None
    broken: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def guest_spec(
        self, instance_id: str, resolved: dict[str, Any], user_id: str, project_id: str, created_ms: int
    ) -> GuestSpec:
        """The libvirt guest for a resources-resolved body."""
        spec = resolved["spec"]
        flavor = spec["flavor"]
        console = None
        if self.state_dir is not None:
            console = str(self.state_dir / f"{instance_id}.console.log")
        return GuestSpec(
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
            domain_type=self.hypervisor.domain_type,
            root_gb=flavor["disk_gb"],
            image_id=resolved["image"]["id"],
            ports=tuple(
                GuestPort(
                    port_id=p["port_id"], mac=p["mac_address"], ip=p["ip_address"], network_id=p["network_id"]
                )
                for p in resolved["ports"]
            ),
            console_log_path=console,
        )

    def spawn(
        self, instance_id: str, resolved: dict[str, Any], user_id: str, project_id: str, created_ms: int
    ) -> DomainInfo:
        """Define and start the guest; an existing running guest is returned as it is."""
        guest = self.guest_spec(instance_id, resolved, user_id, project_id, created_ms)
        return self.hypervisor.spawn(build_domain_xml(guest), instance_id)

    def destroy(self, instance_id: str) -> bool:
        """Stop and undefine the guest; False if there was none."""
        return self.hypervisor.destroy(instance_id)
