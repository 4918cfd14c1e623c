"""The soft server group policies of nova 2.15 as weighers, as nova has them: a soft-affinity
group prefers the hosts holding most of its members, a soft-anti-affinity group the hosts
holding fewest; neither ever filters a host out, so a full host never fails a boot for them."""

from __future__ import annotations

from typing import ClassVar

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.weighers.base import HostWeigher


class _SoftGroupWeigher(HostWeigher):
    """Weighs a host by how many members of the request's group it holds, for one policy."""

    policy: ClassVar[str]
    # +1: more members is better (affinity); -1: fewer is better (anti-affinity)
    sign: ClassVar[float]

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """The group's members on the host, signed; 0 for every host of another policy."""
        if request.server_group_policy != self.policy:
            return 0.0
        return self.sign * request.group_member_counts.get(host.name, 0)

    def weighs_all_alike(self, request: SchedulingRequest) -> bool:
        """Outside a group of its policy every host weighs 0.0, so the best-first search of the
        other weighers' orders stands; inside one, the scheduler weighs every host (full scan)."""
        return request.server_group_policy != self.policy


class ServerGroupSoftAffinityWeigher(_SoftGroupWeigher):
    """nova's ServerGroupSoftAffinityWeigher (soft_affinity_weight_multiplier)."""

    name = "ServerGroupSoftAffinityWeigher"
    policy = "soft-affinity"
    sign = 1.0


class ServerGroupSoftAntiAffinityWeigher(_SoftGroupWeigher):
    """nova's ServerGroupSoftAntiAffinityWeigher (soft_anti_affinity_weight_multiplier)."""

    name = "ServerGroupSoftAntiAffinityWeigher"
    policy = "soft-anti-affinity"
    sign = -1.0
