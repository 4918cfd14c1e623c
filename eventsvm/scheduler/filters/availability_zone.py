"""AvailabilityZoneFilter: only hosts in the availability zone the request names."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class AvailabilityZoneFilter(HostFilter):
    """Passes every host when the request names no zone, else the hosts of that zone."""

    name = "AvailabilityZoneFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host is in the requested zone (or no zone was requested)."""
        return request.availability_zone is None or host.availability_zone == request.availability_zone

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The zone asked for against the zones the hosts are in."""
        zones = sorted({h.availability_zone for h in candidates})
        return f"needs availability zone {request.availability_zone!r}, hosts are in {', '.join(zones)}"
