"""The shape every host weigher has, and nova's normalisation of raw weights to 0..1."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class HostWeigher(ABC):
    """A weigher scores a host on one resource; higher raw weight means preferred when the
    multiplier is positive (spread), less preferred when it is negative (stack)."""

    name: ClassVar[str]

    @abstractmethod
    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """This host's raw score, before normalisation across the candidate hosts."""

    def weighs_all_alike(self, request: SchedulingRequest) -> bool:
        """Whether this weigher gives every host the same raw weight for `request` (a soft-affinity
        weigher for a request in no such group): it then adds 0.0 to every total, and the
        scheduler's best-first search may leave it out instead of weighing every host."""
        return False


class HostKeyWeigher(HostWeigher):
    """A weigher whose raw weight is one figure of the host alone (`host_key`, a HostState
    attribute), whatever the request. The scheduler's state keeps its hosts sorted by each such
    figure, so it can visit hosts best first instead of weighing them all (eventsvm.scheduler.ranked);
    a weigher that reads the request (or overrides raw_weight) is weighed host by host instead."""

    host_key: ClassVar[str]

    def raw_weight(self, host: HostState, request: SchedulingRequest) -> float:
        """The host's `host_key` figure, as a float."""
        return float(getattr(host, self.host_key))


def normalize(values: Sequence[float]) -> list[float]:
    """Scale values to 0..1 across the hosts (min -> 0, max -> 1); all equal gives all 0.

    Without this a weigher in MB would drown one in vCPUs whatever the multipliers say.
    """
    if not values:
        return []
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return [0.0] * len(values)
    return [(v - low) / span for v in values]
