"""ComputeFilter: only hosts whose compute service is enabled."""

from __future__ import annotations

from collections.abc import Sequence

from eventsvm.scheduler.filters.base import HostFilter
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class ComputeFilter(HostFilter):
    """Passes hosts an operator has not disabled (`openstack compute service set --disable`)."""

    name = "ComputeFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host's compute service is enabled."""
        return host.enabled

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """Name the disabled hosts and why an operator disabled them."""
        disabled = sorted((h for h in candidates if not h.enabled), key=lambda h: h.name)
        shown = [f"{h.name} ({h.disabled_reason})" if h.disabled_reason else h.name for h in disabled[:5]]
        more = f" and {len(disabled) - 5} more" if len(disabled) > 5 else ""
        return f"needs an enabled compute service, disabled: {', '.join(shown)}{more}"
