"""The shape every host filter has: one question about one host, and an account of a refusal."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.request import SchedulingRequest


class HostFilter(ABC):
    """A filter keeps the hosts that can take the request; it holds no state of its own."""

    name: ClassVar[str]

    @abstractmethod
    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether this host can take the request, as far as this filter is concerned."""

    @abstractmethod
    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """What the request needed against what `candidates` (the hosts this filter saw) offered."""


def host_list(hosts: Sequence[HostState], limit: int = 5) -> str:
    """Host names for an explanation, shortened so a 1000-host cloud still gives a readable line."""
    names = sorted(h.name for h in hosts)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def amount(value: float) -> str:
    """A capacity figure without a spurious '.0' (ratios make floats of whole numbers)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def roomiest(hosts: Sequence[HostState], free: Callable[[HostState], float]) -> HostState:
    """The host with the most of one resource left; ties go to the alphabetically first name."""
    return min(hosts, key=lambda h: (-free(h), h.name))



@dataclass(frozen=True)
class Capacity:
    """One resource a request needs an amount of, and how an explanation names it ("512 MB RAM")."""

    unit: str
    resource: str
    needed: Callable[[SchedulingRequest], int]
    # what the host has left of it under its allocation ratio
    left: Callable[[HostState], float]


class CapacityFilter(HostFilter):
    """Passes hosts with the requested amount of one resource left, and explains a refusal by the
    host with the most left."""

    capacity: ClassVar[Capacity]

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        """Whether the host has the requested amount left."""
        return self.capacity.needed(request) <= self.capacity.left(host)

    def explain(self, request: SchedulingRequest, candidates: Sequence[HostState]) -> str:
        """The amount asked for against the host with the most left."""
        what = self.capacity
        need = f"needs {what.needed(request)} {what.unit} {what.resource}"
        if not candidates:
            return need
        best = roomiest(candidates, what.left)
        return f"{need}, most free {amount(what.left(best))} {what.unit} on {best.name}"
