"""ServerGroupAffinityFilter: members of an 'affinity' group all land on the same host."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class ServerGroupAffinityFilter(HostFilter):
    """For an affinity group with members already placed, passes only the hosts holding them.

    The first member of a group may go anywhere; it fixes the host for the rest.
    """

    name = "ServerGroupAffinityFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host keeps the group together."""
        if request.server_group_policy != "affinity" or not request.group_hosts:
            return True
        return host.name in request.group_hosts

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The host(s) the group already lives on."""
        return f"affinity group needs host {', '.join(sorted(request.group_hosts))}"
