"""DiskWeigher: prefer hosts with more free disk (spread), or less with a negative multiplier."""

from __future__ import annotations

from eventsvm.scheduler.weighers.base import HostKeyWeigher


class DiskWeigher(HostKeyWeigher):
    """Weighs a host by its free physical disk in GB."""

    name = "DiskWeigher"
    host_key = "free_disk_gb"
