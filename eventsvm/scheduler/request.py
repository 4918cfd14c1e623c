"""What one instance asks of the scheduler: its size, placement constraints and retry history."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from eventsvm.scheduler.claims import Claim

# the hard policies are filters, the soft ones (nova 2.15) weighers
SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


@dataclass(frozen=True)
class SchedulingRequest:
    """The request spec of one instance (nova's RequestSpec, reduced to what the filters read).

    `vcpus`, `ram_mb` and `disk_gb` are the instance's claim (`eventsvm.scheduler.claims`).
    `group_hosts` are the hosts already holding members of the instance's server group, and
    `group_member_counts` how many each;
    `ignore_hosts` the hosts already tried for this instance.
    """

    instance_id: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str | None = None
    image_properties: Mapping[str, str] = field(default_factory=dict)
    server_group_policy: str | None = None
    group_hosts: frozenset[str] = frozenset()
    # how many members of the group each of those hosts holds (the soft policies' weighers)
    group_member_counts: Mapping[str, int] = field(default_factory=dict)
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
        object.__setattr__(self, "group_member_counts", dict(self.group_member_counts))

    @property
    def claim(self) -> Claim:
        """What the instance will hold on the host the scheduler chooses."""
        return Claim(vcpus=self.vcpus, ram_mb=self.ram_mb, disk_gb=self.disk_gb)
