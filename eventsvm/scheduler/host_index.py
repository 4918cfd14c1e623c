"""The scheduler's hosts kept in order: by name, and by each figure a HostKeyWeigher weighs, for
the whole cloud and per availability zone, so a decision can visit hosts best first
(eventsvm.scheduler.ranked) instead of filtering and weighing every host.

Plain sorted lists: a change moves one entry per list (a bisect and a memmove), which stays a few
microseconds at ten thousand hosts, and the lists pickle and compare as the state's snapshot needs.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from eventsvm.scheduler.host_state import HostState
from eventsvm.scheduler.weighers import WEIGHERS, HostKeyWeigher

# Every figure a registered weigher weighs by the host alone; a weigher added to the registry is
# indexed without touching this module.
INDEXED_KEYS: tuple[str, ...] = tuple(
    sorted({cls.host_key for cls in WEIGHERS.values() if issubclass(cls, HostKeyWeigher)})
)


def host_key_value(host: HostState, key: str) -> float:
    """The figure `key` of `host` as the index holds it (and as HostKeyWeigher weighs it)."""
    return float(getattr(host, key))


# A host's figures in INDEXED_KEYS order: hosts with the same figures weigh the same under any
# policy of these weighers, so they form one class, ranked among themselves by name.
Figures = tuple[float, ...]


def figures_of(host: HostState) -> Figures:
    """The host's figures, in INDEXED_KEYS order."""
    return tuple(host_key_value(host, key) for key in INDEXED_KEYS)


@dataclass
class HostOrder:
    """Some hosts: their names in order, the names of each class (hosts of equal figures) in
    order, and per figure the classes as (figure, class figures) pairs in ascending order.

    Ordering classes rather than hosts keeps the orders short where hosts are alike (one hardware
    model, a few flavors), and lets a best-first walk settle a tie of many hosts in one step.
    """

    names: list[str] = field(default_factory=list)
    classes: dict[Figures, list[str]] = field(default_factory=dict)
    by_key: dict[str, list[tuple[float, Figures]]] = field(
        default_factory=lambda: {key: [] for key in INDEXED_KEYS}
    )

    def add(self, host: HostState, figures: Figures) -> None:
        """Enter the host, whose figures are `figures`, in every order."""
        insort(self.names, host.name)
        members = self.classes.get(figures)
        if members is not None:
            insort(members, host.name)
            return
        self.classes[figures] = [host.name]
        for figure, entries in zip(figures, self.by_key.values(), strict=True):
            insort(entries, (figure, figures))

    def remove(self, host: HostState, figures: Figures) -> None:
        """Take out the entries `host` (as it was entered, with `figures`) holds."""
        del self.names[bisect_left(self.names, host.name)]
        members = self.classes[figures]
        del members[bisect_left(members, host.name)]
        if members:
            return
        del self.classes[figures]
        for figure, entries in zip(figures, self.by_key.values(), strict=True):
            del entries[bisect_left(entries, (figure, figures))]


@dataclass
class HostIndex:
    """Every host in order, and the hosts of each availability zone in order."""

    every: HostOrder = field(default_factory=HostOrder)
    zones: dict[str, HostOrder] = field(default_factory=dict)

    def put(self, host: HostState, previous: HostState | None) -> None:
        """Record `host` in place of `previous` (its state before, None when it is new)."""
        figures = figures_of(host)
        if previous is not None:
            were = figures_of(previous)
            if previous.availability_zone == host.availability_zone and were == figures:
                return  # nothing the orders hold changed (an enable, a disable)
            self.every.remove(previous, were)
            zone = self.zones[previous.availability_zone]
            zone.remove(previous, were)
            if not zone.names:
                del self.zones[previous.availability_zone]
        self.every.add(host, figures)
        self.zones.setdefault(host.availability_zone, HostOrder()).add(host, figures)
