"""What one instance holds on its host, computed once, by the scheduler, for everyone.

Nova counts DISK_GB as the flavor's root disk plus ephemeral plus swap; a server that boots from a
volume has its root in cinder, so its root disk counts nothing on the host. The scheduler computes
the claim here and it travels in the events; the spawner checks those numbers, never its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Claim:
    """The resources one instance holds on a host: vCPUs, RAM in MB, local disk in GB."""

    vcpus: int
    ram_mb: int
    disk_gb: int

    def as_record(self) -> dict[str, int]:
        """The Claim record of the schemas."""
        return {"vcpus": self.vcpus, "ram_mb": self.ram_mb, "disk_gb": self.disk_gb}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Claim:
        """A Claim record of the schemas as a Claim."""
        return cls(vcpus=record["vcpus"], ram_mb=record["ram_mb"], disk_gb=record["disk_gb"])

    def as_tuple(self) -> tuple[int, int, int]:
        """(vcpus, ram MB, disk GB), the order a host's capacity check takes."""
        return self.vcpus, self.ram_mb, self.disk_gb


def boots_from_volume(spec: Mapping[str, Any]) -> bool:
    """Whether the request spec's boot device (boot_index 0) is a cinder volume."""
    return any(
        bd.get("boot_index") == 0 and bd.get("destination_type") == "volume"
        for bd in spec.get("block_devices") or []
    )


def claim_for_flavor(flavor: Mapping[str, Any], boot_from_volume: bool = False) -> Claim:
    """The claim of one instance of `flavor`: swap rounded up to whole GB, no local root disk
    when it boots from a volume."""
    root = 0 if boot_from_volume else int(flavor["disk_gb"])
    swap = math.ceil(int(flavor.get("swap_mb", 0)) / 1024)
    return Claim(
        vcpus=int(flavor["vcpus"]),
        ram_mb=int(flavor["ram_mb"]),
        disk_gb=root + int(flavor.get("ephemeral_gb", 0)) + swap,
    )


def claim_for(spec: Mapping[str, Any]) -> Claim:
    """The claim of the instance a request spec describes (its flavor and its boot device)."""
    return claim_for_flavor(spec["flavor"], boots_from_volume(spec))


def claim_in(body: Mapping[str, Any]) -> Claim:
    """The claim an event body carries; for a body written before claims travelled with it
    (no `claim`, or None), the claim its request spec gives."""
    record = body.get("claim")
    if record is None:
        return claim_for(body["spec"])
    return Claim.from_record(record)


def recorded_claim(record: Mapping[str, Any] | None, flavor: Mapping[str, Any]) -> Claim:
    """The claim an instance holds by what was recorded of it: the claim record, or for one
    recorded before claims travelled in its events (only a flavor known), the flavor's claim with
    its root disk counted, as the spawner of that time counted it."""
    return Claim.from_record(record) if record else claim_for_flavor(flavor)
