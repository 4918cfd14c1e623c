"""Host filters, one module each, and the registry that maps their configured names to them."""

from __future__ import annotations

from eventsvm.scheduler.filters.availability_zone import AvailabilityZoneFilter
from eventsvm.scheduler.filters.base import HostFilter
from eventsvm.scheduler.filters.compute import ComputeFilter
from eventsvm.scheduler.filters.core import CoreFilter
from eventsvm.scheduler.filters.disk import DiskFilter
from eventsvm.scheduler.filters.ignore_hosts import IgnoreHostsFilter
from eventsvm.scheduler.filters.image_properties import ImagePropertiesFilter
from eventsvm.scheduler.filters.ram import RamFilter
from eventsvm.scheduler.filters.server_group_affinity import ServerGroupAffinityFilter
from eventsvm.scheduler.filters.server_group_anti_affinity import ServerGroupAntiAffinityFilter

# IgnoreHostsFilter is not configurable: retries must never land on a host that already failed.
FILTERS: dict[str, type[HostFilter]] = {
    cls.name: cls
    for cls in (
        ComputeFilter,
        AvailabilityZoneFilter,
        RamFilter,
        DiskFilter,
        CoreFilter,
        ImagePropertiesFilter,
        ServerGroupAntiAffinityFilter,
        ServerGroupAffinityFilter,
    )
}

__all__ = [
    "FILTERS",
    "AvailabilityZoneFilter",
    "ComputeFilter",
    "CoreFilter",
    "DiskFilter",
    "HostFilter",
    "IgnoreHostsFilter",
    "ImagePropertiesFilter",
    "RamFilter",
    "ServerGroupAffinityFilter",
    "ServerGroupAntiAffinityFilter",
]
