"""What one instance asks of the scheduler: its size, placement constraints and retry history."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

SERVER_GROUP_POLICIES = ("affinity", "anti-affinity")


@dataclass(frozen=True)
class SchedulingRequest:
    """The request spec of one instance (nova's RequestSpec, reduced to what the filters read).

    `disk_gb` is the whole local disk the instance needs: root + ephemeral + swap
    (see `disk_for_flavor`). `group_hosts` are the hosts already holding members of the
    instance's server group; `ignore_hosts` the hosts already tried for this instance.
    """

    instance_id: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str | None = None
    image_properties: Mapping[str, str] = field(default_factory=dict)
    server_group_policy: str | None = None
    group_hosts: frozenset[str] = frozenset()
    ignore_hosts: frozenset[str] = frozenset()
    num_alternates: int = 2

    def __post_init__(self) -> None:
        if self.vcpus < 1 or self.ram_mb < 1 or self.disk_gb < 0:
            raise ValueError(
                f"instance {self.instance_id} asks for {self.vcpus} vCPU, {self.ram_mb} MB RAM, "
                f"{self.disk_gb} GB disk: needs at least 1 vCPU, 1 MB RAM and no negative disk"
            )
        if self.server_group_policy is not None and self.server_group_policy not in SERVER_GROUP_POLICIES:
            raise ValueError(
                f"unknown server group policy {self.server_group_policy!r}; "
                f"use one of {', '.join(SERVER_GROUP_POLICIES)} or none"
            )
        if self.num_alternates < 0:
            raise ValueError(f"num_alternates must be 0 or more, not {self.num_alternates}")
        # Callers naturally pass plain sets; freezing them keeps the request a value.
        object.__setattr__(self, "group_hosts", frozenset(self.group_hosts))
        object.__setattr__(self, "ignore_hosts", frozenset(self.ignore_hosts))
        object.__setattr__(self, "image_properties", dict(self.image_properties))


def disk_for_flavor(root_gb: int, ephemeral_gb: int, swap_mb: int, boot_from_volume: bool = False) -> int:
    """Local disk in GB a flavor needs on the host, counted as nova does for placement.

    Swap is counted too, rounded up to whole GB; a volume-backed root lives in cinder, not here.
    """
    root = 0 if boot_from_volume else root_gb
    return root + ephemeral_gb + math.ceil(swap_mb / 1024)
