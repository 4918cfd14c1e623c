"""DiskFilter: only hosts with enough local disk left under their disk allocation ratio."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter, amount, roomiest
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class DiskFilter(HostFilter):
    """Passes hosts whose disk limit (total x disk_allocation_ratio) minus usage covers the request.

    The request's disk is root + ephemeral + swap, as nova counts DISK_GB.
    """

    name = "DiskFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host has the requested disk left."""
        return request.disk_gb <= host.usable_disk_gb

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The disk asked for against the host with the most left."""
        need = f"needs {request.disk_gb} GB disk"
        if not candidates:
            return need
        best = roomiest(candidates, lambda h: h.usable_disk_gb)
        return f"{need}, most free {amount(best.usable_disk_gb)} GB on {best.name}"
