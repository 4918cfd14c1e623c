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


@dataclass
class HostOrder:
    """Some hosts' names in order, and (figure, name) pairs in ascending order per indexed figure."""

    names: list[str] = field(default_factory=list)
    by_key: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: {k: [] for k in INDEXED_KEYS})

    def add(self, host: HostState) -> None:
        """Enter the host in every order."""
        insort(self.names, host.name)
        for key, entries in self.by_key.items():
            insort(entries, (host_key_value(host, key), host.name))

    def remove(self, host: HostState) -> None:
        """Take out the entries `host` (as it was entered) holds."""
        del self.names[bisect_left(self.names, host.name)]
        for key, entries in self.by_key.items():
            del entries[bisect_left(entries, (host_key_value(host, key), host.name))]


@dataclass
class HostIndex:
    """Every host in order, and the hosts of each availability zone in order."""

    every: HostOrder = field(default_factory=HostOrder)
    zones: dict[str, HostOrder] = field(default_factory=dict)

    def put(self, host: HostState, previous: HostState | None) -> None:
        """Record `host` in place of `previous` (its state before, None when it is new)."""
        if previous is not None:
            if previous.availability_zone == host.availability_zone and all(
                host_key_value(previous, key) == host_key_value(host, key) for key in INDEXED_KEYS
            ):
                return  # nothing the orders hold changed (an enable, a disable)
            self.every.remove(previous)
            zone = self.zones[previous.availability_zone]
            zone.remove(previous)
            if not zone.names:
                del self.zones[previous.availability_zone]
        self.every.add(host)
        self.zones.setdefault(host.availability_zone, HostOrder()).add(host)
