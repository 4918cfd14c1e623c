"""CPUWeigher: prefer hosts with more free vCPUs (spread), or fewer with a negative multiplier."""

from __future__ import annotations

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.weighers.base import HostWeigher


class CPUWeigher(HostWeigher):
    """Weighs a host by the vCPUs it has left under its CPU allocation ratio."""

    name = "CPUWeigher"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """Free vCPUs, overcommit included."""
        return host.free_vcpus
