"""CoreFilter: only hosts with enough vCPUs left under their CPU allocation ratio."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter, amount, roomiest
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class CoreFilter(HostFilter):
    """Passes hosts whose vCPU limit (vcpus x cpu_allocation_ratio) minus usage covers the request.

    Overcommit shares physical CPUs between instances; it cannot give one instance more vCPUs
    than the host has CPUs, so such a host fails however idle it is.
    """

    name = "CoreFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host has the requested vCPUs left and at least that many CPUs."""
        return request.vcpus <= host.vcpus and request.vcpus <= host.free_vcpus

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The vCPUs asked for against the host with the most left (or the CPUs it has)."""
        need = f"needs {request.vcpus} vCPU"
        if not candidates:
            return need
        big_enough = [h for h in candidates if h.vcpus >= request.vcpus]
        if not big_enough:
            widest = roomiest(candidates, lambda h: h.vcpus)
            return f"{need}, largest host {widest.name} has {widest.vcpus} CPUs"
        best = roomiest(big_enough, lambda h: h.free_vcpus)
        return f"{need}, most free {amount(best.free_vcpus)} vCPU on {best.name}"
