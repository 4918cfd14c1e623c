"""RAMWeigher: prefer hosts with more free RAM (spread), or less with a negative multiplier (stack)."""

from __future__ import annotations

from eventsvm.scheduler.weighers.base import HostKeyWeigher


class RAMWeigher(HostKeyWeigher):
    """Weighs a host by its free physical RAM in MB."""

    name = "RAMWeigher"
    host_key = "free_ram_mb"
