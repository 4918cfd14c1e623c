"""DiskFilter: only hosts with enough local disk left under their disk allocation ratio."""

from __future__ import annotations

from eventsvm.scheduler.filters.base import Capacity, CapacityFilter


class DiskFilter(CapacityFilter):
    """Passes hosts whose disk limit (total x disk_allocation_ratio) minus usage covers the request.

    The request's disk is root + ephemeral + swap, as nova counts DISK_GB.
    """

    name = "DiskFilter"
    capacity = Capacity("GB", "disk", lambda request: request.disk_gb, lambda host: host.usable_disk_gb)
