"""CPUWeigher: prefer hosts with more free vCPUs (spread), or fewer with a negative multiplier."""

from __future__ import annotations

from eventsvm.scheduler.weighers.base import HostKeyWeigher


class CPUWeigher(HostKeyWeigher):
    """Weighs a host by the vCPUs it has left under its CPU allocation ratio."""

    name = "CPUWeigher"
    host_key = "free_vcpus"
