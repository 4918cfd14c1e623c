"""Per-project compute quota, as nova counts it: instances, cores and RAM, -1 meaning unlimited."""

from __future__ import annotations

from dataclasses import dataclass

UNLIMITED = -1
# nova's [quota] metadata_items: items one server's metadata may hold (a fixed limit here)
METADATA_ITEMS = 128


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """A project's limits; the defaults are nova's (`[quota]` instances, cores, ram)."""

    instances: int = 10
    cores: int = 20
    ram_mb: int = 51200


DEFAULT_LIMITS = QuotaLimits()


@dataclass(frozen=True, slots=True)
class ResourceCount:
    """An amount of compute: what a project already uses, or what a request asks for."""

    instances: int = 0
    cores: int = 0
    ram_mb: int = 0


# (field, nova's resource name) in nova's order when several are exceeded: sorted by name.
_RESOURCES = (("cores", "cores"), ("instances", "instances"), ("ram_mb", "ram"))


def check_quota(limits: QuotaLimits, usage: ResourceCount, request: ResourceCount) -> str | None:
    """None when `request` fits beside `usage`; else nova's message naming each exceeded resource.

    A resource the request does not ask for never fails, even when a lowered limit is already
    overrun, as in nova. Any negative limit counts as unlimited.
    """
    overs: list[tuple[str, int, int, int]] = []
    for field_name, resource in _RESOURCES:
        limit: int = getattr(limits, field_name)
        used: int = getattr(usage, field_name)
        wanted: int = getattr(request, field_name)
        if wanted > 0 and limit >= 0 and used + wanted > limit:
            overs.append((resource, wanted, used, limit))
    if not overs:
        return None
    names = ", ".join(o[0] for o in overs)
    requested = ", ".join(str(o[1]) for o in overs)
    used_text = ", ".join(str(o[2]) for o in overs)
    allowed = ", ".join(str(o[3]) for o in overs)
    return (
        f"Quota exceeded for {names}: Requested {requested}, "
        f"but already used {used_text} of {allowed} {names}"
    )
