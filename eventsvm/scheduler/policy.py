"""Which filters run, in which order, and how much each weigher counts: the operator's knobs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from eventsvm.scheduler.filters import FILTERS, HostFilter
from eventsvm.scheduler.weighers import WEIGHERS, HostWeigher

DEFAULT_FILTERS = (
    "ComputeFilter",
    "AvailabilityZoneFilter",
    "RamFilter",
    "DiskFilter",
    "CoreFilter",
    "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter",
    "ServerGroupAffinityFilter",
)

# nova's ram/disk/cpu_weight_multiplier all default to 1.0: spread instances over hosts; its
# soft_(anti_)affinity_weight_multiplier too (they weigh nothing for a server of no soft group)
DEFAULT_WEIGHERS = {"RAMWeigher": 1.0, "DiskWeigher": 1.0, "CPUWeigher": 1.0,
                    "ServerGroupSoftAffinityWeigher": 1.0, "ServerGroupSoftAntiAffinityWeigher": 1.0}


@dataclass(frozen=True)
class SchedulerPolicy:
    """Filter names in the order they run and weigher names with their multipliers (nova's
    `enabled_filters` and `*_weight_multiplier`); a wrong name fails here, not at first boot."""

    filters: list[str] = field(default_factory=lambda: list(DEFAULT_FILTERS))
    weighers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHERS))

    def __post_init__(self) -> None:
        unknown = [name for name in self.filters if name not in FILTERS]
        if unknown:
            raise ValueError(
                f"unknown scheduler filter(s) {', '.join(map(repr, unknown))}; "
                f"known filters: {', '.join(sorted(FILTERS))}"
            )
        repeated = sorted({name for name in self.filters if self.filters.count(name) > 1})
        if repeated:
            raise ValueError(f"scheduler filter(s) listed more than once: {', '.join(repeated)}")
        unknown = [name for name in self.weighers if name not in WEIGHERS]
        if unknown:
            raise ValueError(
                f"unknown scheduler weigher(s) {', '.join(map(repr, unknown))}; "
                f"known weighers: {', '.join(sorted(WEIGHERS))}"
            )
        for name, multiplier in self.weighers.items():
            if (
                isinstance(multiplier, bool)
                or not isinstance(multiplier, int | float)
                or not math.isfinite(multiplier)
            ):
                raise ValueError(f"weigher {name} needs a finite number as multiplier, not {multiplier!r}")

    def host_filters(self) -> list[HostFilter]:
        """The configured filters, in order."""
        return [FILTERS[name]() for name in self.filters]

    def host_weighers(self) -> list[tuple[HostWeigher, float]]:
        """The configured weighers with their multipliers."""
        return [(WEIGHERS[name](), float(multiplier)) for name, multiplier in self.weighers.items()]
