"""What each project's live servers hold, kept as the read model folds rather than counted by a scan.

Nova's quota check counts a project's usage on every create. Counted by walking every server of
the cloud (`count_usage`), that is about a microsecond per server the cloud holds, on every POST:
4 ms at 10,000 servers, and a POST's latency grew with the cloud. A `UsageBook` keeps each server's
contribution (its project, cores and RAM) and each project's totals, and brings them up to date
from the servers changed since it was last asked: the read model marks each one it folds an event
of (or forgets), so a create pays for the few changed since the last one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventsvm.identity.quota import ResourceCount
from eventsvm.state.catalog import CatalogState
from eventsvm.state.instances import Instance, InstanceProjection


class Models(Protocol):
    """What the usage is counted from: the read model's models (eventsvm.projections.readmodel,
    which keeps a UsageBook and so cannot be imported from here)."""

    @property
    def instances(self) -> InstanceProjection: ...

    @property
    def catalog(self) -> CatalogState: ...

_Size = tuple[int, int]  # (cores, RAM MB) of one counted server


def flavor_of(models: Models, inst: Instance) -> dict[str, Any] | None:
    """The flavor a server holds: its own copy, else the catalog's by the id it was asked with."""
    return inst.flavor or (models.catalog.flavors.get(inst.flavor_ref) if inst.flavor_ref else None)


def _held(models: Models, inst: Instance | None) -> _Size | None:
    """What `inst` counts for in its project's usage (its project is its own: it never changes)."""
    # nova counts every server not deleted, ERROR ones included
    if inst is None or inst.status == "DELETED" or inst.project_id is None:
        return None
    flavor = flavor_of(models, inst)
    size = (flavor["vcpus"], flavor["ram_mb"]) if flavor else (0, 0)
    # one tuple for all the servers of a flavor's size: the book then costs a live server its dict
    # entry alone, however many projects there are (one project a server is the worst case)
    return _SIZES.setdefault(size, size)


# bounded as the flavor sizes a cloud has; cleared past this, which only unshares
_SIZES: dict[_Size, _Size] = {}
_SIZES_MAX = 4096


def count_usage(models: Models, project_id: str) -> ResourceCount:
    """A project's usage counted from scratch, by a walk over every server (what the book keeps)."""
    instances = cores = ram = 0
    for inst in models.instances.instances.values():
        held = _held(models, inst)
        if held is None or inst.project_id != project_id:
            continue
        instances += 1
        cores += held[0]
        ram += held[1]
    return ResourceCount(instances=instances, cores=cores, ram_mb=ram)


@dataclass
class UsageBook:
    """Per project, what its live servers hold, as `count_usage` counts it."""

    # servers changed since the totals were last brought up to date
    changed: set[str] = field(default_factory=set)
    # per counted server, what it counts for; its project is read from the server when it is
    # taken off (a forgotten server is handed over by `forgotten`)
    held: dict[str, _Size] = field(default_factory=dict)
    # per project: (servers, cores, RAM MB); a tuple (one object) rather than a list (two)
    totals: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def mark(self, instance_ids: Iterable[str]) -> None:
        """These servers changed (an event of theirs was folded)."""
        self.changed.update(instance_ids)

    def forgotten(self, servers: Iterable[Instance]) -> None:
        """These servers left the read model: whatever they still count for is taken off, read
        from the servers themselves (a deleted server the book has not recounted yet)."""
        for inst in servers:
            self.changed.discard(inst.id)
            before = self.held.pop(inst.id, None)
            if before is not None and inst.project_id is not None:
                self._add(inst.project_id, before, -1)

    def usage(self, models: Models, project_id: str) -> ResourceCount:
        """`project_id`'s usage, the changed servers recounted first."""
        self.bring_up_to_date(models)
        servers, cores, ram = self.totals.get(project_id) or (0, 0, 0)
        return ResourceCount(instances=servers, cores=cores, ram_mb=ram)

    def bring_up_to_date(self, models: Models) -> None:
        """Recount the servers changed since the last time."""
        if not self.changed:
            return
        instances = models.instances.instances
        if len(_SIZES) > _SIZES_MAX:
            _SIZES.clear()
        lost = False
        for instance_id in self.changed:
            inst = instances.get(instance_id)
            before = self.held.pop(instance_id, None)
            if before is not None:
                if inst is None or inst.project_id is None:
                    lost = True  # dropped without `forgotten`: its project is unknown here
                    continue
                self._add(inst.project_id, before, -1)
            if inst is not None:
                self._count(models, inst)
        self.changed.clear()
        if lost:
            self._count_all(models)

    def _count_all(self, models: Models) -> None:
        self.held.clear()
        self.totals.clear()
        for inst in models.instances.instances.values():
            self._count(models, inst)

    def _count(self, models: Models, inst: Instance) -> None:
        """Count `inst` for its project, if it holds anything (a server not deleted)."""
        now = _held(models, inst)
        if now is not None and inst.project_id is not None:
            self.held[inst.id] = now
            self._add(inst.project_id, now, 1)

    def _add(self, project: str, held: _Size, sign: int) -> None:
        servers, cores, ram = self.totals.get(project) or (0, 0, 0)
        servers += sign
        if servers:
            self.totals[project] = (servers, cores + sign * held[0], ram + sign * held[1])
        else:
            del self.totals[project]
