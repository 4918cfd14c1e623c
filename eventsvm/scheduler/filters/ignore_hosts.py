"""IgnoreHostsFilter: on a reschedule, skip the hosts this instance already failed on."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter, host_list
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class IgnoreHostsFilter(HostFilter):
    """Passes hosts not in the request's `ignore_hosts`; selection always runs it first."""

    name = "IgnoreHostsFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host has not been tried for this instance yet."""
        return host.name not in request.ignore_hosts

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """Name the hosts already tried."""
        tried = [h for h in candidates if h.name in request.ignore_hosts]
        return f"already tried {host_list(tried)}"
