"""Host weighers, one module each, and the registry that maps their configured names to them."""

from __future__ import annotations

from eventsvm.scheduler.weighers.base import HostKeyWeigher, HostWeigher, normalize
from eventsvm.scheduler.weighers.cpu import CPUWeigher
from eventsvm.scheduler.weighers.disk import DiskWeigher
from eventsvm.scheduler.weighers.ram import RAMWeigher
from eventsvm.scheduler.weighers.server_group_soft import (
    ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher,
)

WEIGHERS: dict[str, type[HostWeigher]] = {cls.name: cls for cls in (
    RAMWeigher, DiskWeigher, CPUWeigher, ServerGroupSoftAffinityWeigher, ServerGroupSoftAntiAffinityWeigher)}

__all__ = [
    "WEIGHERS", "CPUWeigher", "DiskWeigher", "HostKeyWeigher", "HostWeigher", "RAMWeigher",
    "ServerGroupSoftAffinityWeigher", "ServerGroupSoftAntiAffinityWeigher", "normalize",
]
