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

_Held = tuple[str, int, int]  # (project, cores, RAM MB) of one counted server


def flavor_of(models: Models, inst: Instance) -> dict[str, Any] | None:
    """The flavor a server holds: its own copy, else the catalog's by the id it was asked with."""
    return inst.flavor or (models.catalog.flavors.get(inst.flavor_ref) if inst.flavor_ref else None)


def _held(models: Models, inst: Instance | None) -> _Held | None:
    # nova counts every server not deleted, ERROR ones included
    if inst is None or inst.status == "DELETED" or inst.project_id is None:
        return None
    flavor = flavor_of(models, inst)
    held = (inst.project_id, flavor["vcpus"] if flavor else 0, flavor["ram_mb"] if flavor else 0)
    # one tuple for all the servers of a project and flavor: the book then costs a live server its
    # dict entry alone (and the key is the server's own id string, not another copy of it)
    return _SHARED_HELD.setdefault(held, held)


# bounded as the projects times the flavor sizes a cloud has; cleared past this, which only unshares
_SHARED_HELD: dict[_Held, _Held] = {}
_SHARED_HELD_MAX = 65_536


def count_usage(models: Models, project_id: str) -> ResourceCount:
    """A project's usage counted from scratch, by a walk over every server (what the book keeps)."""
    instances = cores = ram = 0
    for inst in models.instances.instances.values():
        held = _held(models, inst)
        if held is None or held[0] != project_id:
            continue
        instances += 1
        cores += held[1]
        ram += held[2]
    return ResourceCount(instances=instances, cores=cores, ram_mb=ram)


@dataclass
class UsageBook:
    """Per project, what its live servers hold, as `count_usage` counts it."""

    # servers changed since the totals were last brought up to date
    changed: set[str] = field(default_factory=set)
    held: dict[str, _Held] = field(default_factory=dict)
    # per project: [servers, cores, RAM MB]
    totals: dict[str, list[int]] = field(default_factory=dict)

    def mark(self, instance_ids: Iterable[str]) -> None:
        """These servers changed (an event of theirs was folded, or they were forgotten)."""
        self.changed.update(instance_ids)

    def usage(self, models: Models, project_id: str) -> ResourceCount:
        """`project_id`'s usage, the changed servers recounted first."""
        if self.changed:
            self._recount(models)
        servers, cores, ram = self.totals.get(project_id) or (0, 0, 0)
        return ResourceCount(instances=servers, cores=cores, ram_mb=ram)

    def _recount(self, models: Models) -> None:
        instances = models.instances.instances
        if len(_SHARED_HELD) > _SHARED_HELD_MAX:
            _SHARED_HELD.clear()
        for instance_id in self.changed:
            before = self.held.pop(instance_id, None)
            if before is not None:
                self._add(before, -1)
            inst = instances.get(instance_id)
            now = _held(models, inst)
            if now is not None and inst is not None:
                self.held[inst.id] = now
                self._add(now, 1)
        self.changed.clear()

    def _add(self, held: _Held, sign: int) -> None:
        project, cores, ram = held
        total = self.totals.setdefault(project, [0, 0, 0])
        total[0] += sign
        total[1] += sign * cores
        total[2] += sign * ram
        if not total[0]:
            del self.totals[project]
