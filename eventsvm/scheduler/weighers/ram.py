"""RAMWeigher: prefer hosts with more free RAM (spread), or less with a negative multiplier (stack)."""

from __future__ import annotations

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.weighers.base import HostWeigher


class RAMWeigher(HostWeigher):
    """Weighs a host by its free physical RAM in MB."""

    name = "RAMWeigher"

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """Free RAM in MB."""
        return float(host.free_ram_mb)
