"""Choose a host and its alternates: filter, weigh, rank; or say exactly why nothing fits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eventsvm.scheduler.filters import HostFilter, IgnoreHostsFilter
from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.policy import SchedulerPolicy
from eventsvm.scheduler.request import SchedulingRequest
from eventsvm.scheduler.weighers import normalize


@dataclass(frozen=True)
class Selection:
    """The chosen host and, best first, the hosts to retry on if the build there fails."""

    host: str
    alternates: list[str]


@dataclass(frozen=True)
class FilterStep:
    """One filter's run: how many hosts it saw, how many it kept, and why it dropped any."""

    name: str
    hosts_in: int
    hosts_out: int
    detail: str | None

    def __str__(self) -> str:
        counts = f"{self.name}: {self.hosts_in} -> {self.hosts_out}"
        return f"{counts} ({self.detail})" if self.detail else counts


class NoValidHost(Exception):
    """No host passed every filter; `explanation` walks through each filter's hosts in and out."""

    def __init__(self, explanation: str, steps: Sequence[FilterStep] = ()) -> None:
        self.explanation = explanation
        self.steps = tuple(steps)
        super().__init__(f"No valid host was found. {explanation}")


def select_destinations(
    hosts: Iterable[HostState], request: SchedulingRequest, policy: SchedulerPolicy | None = None
) -> Selection:
    """Pick the best host for the request plus up to `request.num_alternates` runners-up.

    Raises NoValidHost naming every filter that ran, how many hosts it saw and kept, and for
    each filter that dropped hosts what the request needed against what the hosts offered.
    """
    policy = policy if policy is not None else SchedulerPolicy()
    candidates = _unique(hosts)
    if not candidates:
        raise NoValidHost("There are no compute hosts.")
    steps: list[FilterStep] = []
    for host_filter in filters_for(request, policy):
        passed = [h for h in candidates if host_filter.host_passes(h, request)]
        detail = host_filter.explain(request, candidates) if len(passed) < len(candidates) else None
        steps.append(FilterStep(host_filter.name, len(candidates), len(passed), detail))
        candidates = passed
        if not candidates:
            raise NoValidHost("; ".join(str(step) for step in steps), steps)
    ranked = [host for host, _ in weigh_hosts(candidates, request, policy)]
    return Selection(host=ranked[0].name, alternates=[h.name for h in ranked[1 : 1 + request.num_alternates]])


def weigh_hosts(
    hosts: Sequence[HostState], request: SchedulingRequest, policy: SchedulerPolicy
) -> list[tuple[HostState, float]]:
    """Hosts with their total weight, best first; equal weights go in host-name order.

    Each weigher's raw values are normalised to 0..1 across these hosts, then multiplied by the
    weigher's multiplier and summed, as nova does.
    """
    totals = [0.0] * len(hosts)
    for weigher, multiplier in policy.host_weighers():
        raw = [weigher.raw_weight(h, request) for h in hosts]
        for i, weight in enumerate(normalize(raw)):
            totals[i] += multiplier * weight
    return sorted(zip(hosts, totals, strict=True), key=lambda pair: (-pair[1], pair[0].name))


def filters_for(request: SchedulingRequest, policy: SchedulerPolicy) -> list[HostFilter]:
    """The filters a request runs through, in order."""
    # Only a reschedule has hosts to skip; listing a no-op step on every first try is noise.
    retry = [IgnoreHostsFilter()] if request.ignore_hosts else []
    return [*retry, *policy.host_filters()]


def _unique(hosts: Iterable[HostState]) -> list[HostState]:
    listed = list(hosts)
    # counted once: names.count per name made this quadratic, 1.5 s a decision at 10,000 hosts
    repeated = sorted(name for name, times in Counter(h.name for h in listed).items() if times > 1)
    if repeated:
        raise ValueError(f"host state given more than once for: {', '.join(repeated)}")
    return listed
