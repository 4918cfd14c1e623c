"""RamFilter: only hosts with enough RAM left under their RAM allocation ratio."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter, amount, roomiest
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class RamFilter(HostFilter):
    """Passes hosts whose RAM limit (total x ram_allocation_ratio) minus usage covers the request."""

    name = "RamFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host has the requested RAM left."""
        return request.ram_mb <= host.usable_ram_mb

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The RAM asked for against the host with the most left."""
        need = f"needs {request.ram_mb} MB RAM"
        if not candidates:
            return need
        best = roomiest(candidates, lambda h: h.usable_ram_mb)
        return f"{need}, most free {amount(best.usable_ram_mb)} MB on {best.name}"
