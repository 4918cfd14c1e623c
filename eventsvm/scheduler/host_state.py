"""What the scheduler knows about one compute host: inventory, allocation ratios and claims."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from eventsvm.scheduler.claims import Claim


@dataclass(frozen=True)
class HostState:
    """One compute host as the scheduler sees it; immutable, `claim`/`release` return a new state.

    The `*_used` fields are the host's whole usage, claims included, so a host can report usage
    the log never claimed (instances from before, the host's own reservations).
    """

    name: str
    vcpus: int
    ram_mb: int
    disk_gb: int
    availability_zone: str = "nova"
    enabled: bool = True
    disabled_reason: str | None = None
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    vcpus_used: int = 0
    ram_mb_used: int = 0
    disk_gb_used: int = 0
    cpu_arch: str | None = None
    hypervisor_type: str | None = None
    claims: Mapping[str, Claim] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Usage below what the claims hold means a rebuilt state lost its claims' usage; scheduling
        # on it would silently over-commit, so refuse it where the mistake is made.
        for resource, used in (
            ("vcpus", self.vcpus_used),
            ("ram_mb", self.ram_mb_used),
            ("disk_gb", self.disk_gb_used),
        ):
            claimed = sum(getattr(c, resource) for c in self.claims.values())
            if used < claimed:
                raise ValueError(
                    f"host {self.name}: {resource}_used {used} is less than its claims hold ({claimed}); "
                    f"carry usage over with dataclasses.replace(previous, ...) when inventory changes"
                )

    @property
    def instances(self) -> frozenset[str]:
        """Ids of the instances that hold a claim on this host."""
        return frozenset(self.claims)

    @property
    def vcpus_limit(self) -> float:
        """vCPUs the host may hand out, overcommit included."""
        return self.vcpus * self.cpu_allocation_ratio

    @property
    def ram_limit_mb(self) -> float:
        """RAM the host may hand out, overcommit included."""
        return self.ram_mb * self.ram_allocation_ratio

    @property
    def disk_limit_gb(self) -> float:
        """Disk the host may hand out, overcommit included."""
        return self.disk_gb * self.disk_allocation_ratio

    @property
    def free_vcpus(self) -> float:
        """vCPUs still available under the allocation ratio."""
        return self.vcpus_limit - self.vcpus_used

    @property
    def free_ram_mb(self) -> int:
        """Physical RAM not in use; negative when the host is overcommitted."""
        return self.ram_mb - self.ram_mb_used

    @property
    def free_disk_gb(self) -> int:
        """Physical disk not in use; negative when the host is overcommitted."""
        return self.disk_gb - self.disk_gb_used

    @property
    def usable_ram_mb(self) -> float:
        """RAM still available under the allocation ratio (what RamFilter compares against)."""
        return self.ram_limit_mb - self.ram_mb_used

    @property
    def usable_disk_gb(self) -> float:
        """Disk still available under the allocation ratio (what DiskFilter compares against)."""
        return self.disk_limit_gb - self.disk_gb_used

    def fits(self, vcpus: int, ram_mb: int, disk_gb: int) -> bool:
        """Whether one more instance of this size stays within every limit of the host."""
        return (
            vcpus <= self.free_vcpus
            and vcpus <= self.vcpus
            and ram_mb <= self.usable_ram_mb
            and disk_gb <= self.usable_disk_gb
        )

    def claim(self, instance_id: str, vcpus: int, ram_mb: int, disk_gb: int) -> HostState:
        """Return the host with the instance's resources claimed; a repeated claim changes nothing.

        No limit check here: a claim records a decision already taken (see `fits`), and replaying
        history must never refuse what was accepted when it happened.
        """
        if instance_id in self.claims:
            return self
        claims = dict(self.claims)
        claims[instance_id] = Claim(vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb)
        return self._with_usage(vcpus, ram_mb, disk_gb, claims)

    def release(self, instance_id: str) -> HostState:
        """Return the host with the instance's claim given back; an unknown instance changes nothing."""
        held = self.claims.get(instance_id)
        if held is None:
            return self
        remaining = dict(self.claims)
        del remaining[instance_id]
        return self._with_usage(-held.vcpus, -held.ram_mb, -held.disk_gb, remaining)

    def _with_usage(self, vcpus: int, ram_mb: int, disk_gb: int, claims: dict[str, Claim]) -> HostState:
        """A copy with usage moved by the given amounts and `claims` as its claims. It skips
        __post_init__: usage and claims move by the same claim, so the invariant the check guards
        still holds, and re-summing every claim on each claim made a busy host's claim O(claims)."""
        changed = object.__new__(HostState)
        fields = changed.__dict__
        fields.update(self.__dict__)
        fields["vcpus_used"] = self.vcpus_used + vcpus
        fields["ram_mb_used"] = self.ram_mb_used + ram_mb
        fields["disk_gb_used"] = self.disk_gb_used + disk_gb
        fields["claims"] = claims
        return changed
