"""DiskWeigher: prefer hosts with more free disk (spread), or less with a negative multiplier."""

from __future__ import annotations

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.weighers.base import HostWeigher


class DiskWeigher(HostWeigher):
    """Weighs a host by its free physical disk in GB."""

    name = "DiskWeigher"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """Free disk in GB."""
        return float(host.free_disk_gb)
