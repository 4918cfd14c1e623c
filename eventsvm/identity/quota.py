"""Per-project compute quota, as nova counts it: instances, cores and RAM, -1 meaning unlimited."""

from __future__ import annotations

from dataclasses import dataclass

UNLIMITED = -1
# nova's [quota] metadata_items: items one server's metadata may hold (a fixed limit here)
METADATA_ITEMS = 128
# nova's [quota] server_groups (per project) and server_group_members (per group) defaults
SERVER_GROUPS = 10
SERVER_GROUP_MEMBERS = 10


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """A project's limits; the defaults are nova's (`[quota]` instances, cores, ram)."""

    instances: int = 10
    cores: int = 20
    ram_mb: int = 51200
    server_groups: int = SERVER_GROUPS
    server_group_members: int = SERVER_GROUP_MEMBERS


DEFAULT_LIMITS = QuotaLimits()


@dataclass(frozen=True, slots=True)
class ResourceCount:
    """An amount of compute: what a project already uses, or what a request asks for."""

    instances: int = 0
    cores: int = 0
    ram_mb: int = 0


# (field, nova's resource name) in nova's order when several are exceeded: sorted by name.
_RESOURCES = (("cores", "cores"), ("instances", "instances"), ("ram_mb", "ram"))


def within(limit: int, used: int, wanted: int = 1) -> bool:
    """Whether `wanted` more fit beside `used` under one limit (any negative limit is unlimited)."""
    return limit < 0 or used + wanted <= limit


def check_quota(limits: QuotaLimits, usage: ResourceCount, request: ResourceCount) -> str | None:
    """None when `request` fits beside `usage`; else nova's message naming each exceeded resource.

    A resource the request does not ask for never fails, even when a lowered limit is already
    overrun, as in nova. Any negative limit counts as unlimited.
    """
    overs = _overs(limits, usage, request)
    if not overs:
        return None
    return _over_quota_message(overs, {resource: str(wanted) for resource, wanted, _, _ in overs})


class QuotaExceeded(Exception):
    """A request for servers that do not fit the project's quota; the message is nova's."""


def servers_that_fit(limits: QuotaLimits, usage: ResourceCount, per_server: ResourceCount,
                     min_count: int, max_count: int) -> int:
    """How many servers of `per_server` each one request may create beside `usage`, as nova's
    _check_num_instances_quota decides: max_count when all fit, else as many as the headroom of
    instances, cores and RAM allows, and QuotaExceeded when that is fewer than min_count."""
    wanted = _times(per_server, max_count)
    overs = _overs(limits, usage, wanted)
    if not overs:
        return max_count
    allowed = _headroom(limits.instances, usage.instances) // max(per_server.instances, 1)
    if per_server.cores:
        allowed = min(allowed, _headroom(limits.cores, usage.cores) // per_server.cores)
    if per_server.ram_mb:
        allowed = min(allowed, _headroom(limits.ram_mb, usage.ram_mb) // per_server.ram_mb)
    if allowed >= max(min_count, 1):
        return min(allowed, max_count)
    # nova names the count asked for as "min-max" when the two differ
    requested = {resource: str(amount) for resource, amount, _, _ in overs}
    if "instances" in requested and min_count != max_count:
        requested["instances"] = f"{min_count}-{max_count}"
    raise QuotaExceeded(_over_quota_message(overs, requested))


def _times(amount: ResourceCount, count: int) -> ResourceCount:
    return ResourceCount(amount.instances * count, amount.cores * count, amount.ram_mb * count)


def _headroom(limit: int, used: int) -> int:
    # unlimited: more than any request can ask for (an Avro int bounds every count)
    return 2**62 if limit < 0 else max(limit - used, 0)


def _overs(limits: QuotaLimits, usage: ResourceCount,
           request: ResourceCount) -> list[tuple[str, int, int, int]]:
    """(nova's resource name, wanted, used, limit) of each resource the request overruns."""
    overs: list[tuple[str, int, int, int]] = []
    for field_name, resource in _RESOURCES:
        limit: int = getattr(limits, field_name)
        used: int = getattr(usage, field_name)
        wanted: int = getattr(request, field_name)
        if wanted > 0 and limit >= 0 and used + wanted > limit:
            overs.append((resource, wanted, used, limit))
    return overs


def _over_quota_message(overs: list[tuple[str, int, int, int]], requested: dict[str, str]) -> str:
    """nova's TooManyInstances / OverQuota text."""
    names = ", ".join(o[0] for o in overs)
    asked = ", ".join(requested[o[0]] for o in overs)
    used_text = ", ".join(str(o[2]) for o in overs)
    allowed = ", ".join(str(o[3]) for o in overs)
    return f"Quota exceeded for {names}: Requested {asked}, but already used {used_text} of {allowed} {names}"
