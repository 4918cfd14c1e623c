"""RamFilter: only hosts with enough RAM left under their RAM allocation ratio."""

from __future__ import annotations

from eventsvm.scheduler.filters.base import Capacity, CapacityFilter


class RamFilter(CapacityFilter):
    """Passes hosts whose RAM limit (total x ram_allocation_ratio) minus usage covers the request."""

    name = "RamFilter"
    capacity = Capacity("MB", "RAM", lambda request: request.ram_mb, lambda host: host.usable_ram_mb)
