"""ServerGroupAntiAffinityFilter: members of an 'anti-affinity' group each get their own host."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter, host_list
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class ServerGroupAntiAffinityFilter(HostFilter):
    """For an anti-affinity group, passes only hosts that hold no member of the group yet."""

    name = "ServerGroupAntiAffinityFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host keeps the group apart."""
        if request.server_group_policy != "anti-affinity":
            return True
        return host.name not in request.group_hosts

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The hosts that already hold a member of the group."""
        taken = [h for h in candidates if h.name in request.group_hosts]
        return f"anti-affinity group already has members on {host_list(taken)}"
