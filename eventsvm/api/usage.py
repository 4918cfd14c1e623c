"""os-simple-tenant-usage's arithmetic: vCPU-, RAM- and disk-hours of each server over a period.

Kept to one function over the instance read model so the billing service can replace it with its
own fold (which never counts an event twice) without touching the router.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsvm.api.wire import iso_micro
from eventsvm.state.instances import Instance

_HOUR_MS = 3_600_000


def tenant_usages(instances: Iterable[Instance], start_ms: int, end_ms: int, now_ms: int,
                  project_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Usage per project between start and end (clipped to now), as nova's tenant_usage objects.

    A server counts from launched_at to terminated_at (or now); servers never launched count nothing.
    """
    stop = min(end_ms, now_ms)
    usages: dict[str, dict[str, Any]] = {}
    for inst in instances:
        if inst.launched_at is None or inst.project_id is None or inst.flavor is None:
            continue
        if project_id is not None and inst.project_id != project_id:
            continue
        ended = inst.terminated_at
        if inst.launched_at >= stop or (ended is not None and ended <= start_ms):
            continue
        hours = (min(ended if ended is not None else stop, stop) - max(inst.launched_at, start_ms)) / _HOUR_MS
        flavor = inst.flavor
        local_gb = flavor["disk_gb"] + flavor.get("ephemeral_gb", 0)
        tenant = usages.setdefault(
            inst.project_id,
            {
                "tenant_id": inst.project_id,
                "total_local_gb_usage": 0.0,
                "total_vcpus_usage": 0.0,
                "total_memory_mb_usage": 0.0,
                "total_hours": 0.0,
                "start": iso_micro(start_ms),
                "stop": iso_micro(stop),
                "server_usages": [],
            },
        )
        tenant["total_local_gb_usage"] += local_gb * hours
        tenant["total_vcpus_usage"] += flavor["vcpus"] * hours
        tenant["total_memory_mb_usage"] += flavor["ram_mb"] * hours
        tenant["total_hours"] += hours
        tenant["server_usages"].append(
            {
                "instance_id": inst.id,
                "name": inst.name,
                "hours": hours,
                "memory_mb": flavor["ram_mb"],
                "local_gb": local_gb,
                "vcpus": flavor["vcpus"],
                "tenant_id": inst.project_id,
                "flavor": flavor["name"],
                "started_at": iso_micro(inst.launched_at),
                "ended_at": iso_micro(ended),
                "state": "terminated" if ended is not None else inst.vm_state,
                "uptime": ((ended if ended is not None else now_ms) - inst.launched_at) // 1000,
            }
        )
    return usages
