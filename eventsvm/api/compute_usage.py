"""Nova's views of capacity and consumption under /compute/v2.1: limits, os-quota-sets,
os-simple-tenant-usage, os-hypervisors and os-availability-zone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, NotFound
from eventsvm.api.models import QuotaUpdate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize
from eventsvm.api.server_groups import project_server_groups
from eventsvm.api.wire import parse_time, truthy
from eventsvm.api.writes import caller_event
from eventsvm.events.model import EventType
from eventsvm.identity.quota import DEFAULT_LIMITS, METADATA_ITEMS, QuotaLimits, ResourceCount
from eventsvm.projections.billing import tenant_usage
from eventsvm.projections.readmodel import Models
from eventsvm.projections.usage import count_usage, flavor_of
from eventsvm.scheduler.claims import recorded_claim
from eventsvm.state.identity import quota_for

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

# nova's fixed limits beside the three this cloud enforces
_FIXED_QUOTAS = {
    "metadata_items": METADATA_ITEMS,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
    "key_pairs": 100,
    "fixed_ips": -1,
    "floating_ips": -1,
    "security_groups": -1,
    "security_group_rules": -1,
}


def project_usage(models: Models, project_id: str) -> ResourceCount:
    """What a project's live servers hold (ERROR ones included, as nova counts them): from the read
    model's usage book where it keeps one, else counted (eventsvm.projections.usage)."""
    if models.usage is not None:
        return models.usage.usage(models, project_id)
    return count_usage(models, project_id)


# The routes' own rules (quota-sets, simple-tenant-usage, hypervisors) are checked before the
# handlers run (eventsvm.api.authorization); only what depends on a query parameter is checked here.


@router.get(
    "/limits", summary="The caller's (or, for admin, tenant_id's) absolute limits and usage",
    responses=failures(403),
)
def limits(
    tenant_id: str | None = None,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Quota limits with what is in use, nova's `absolute` block."""
    target = tenant_id or caller.project_id
    if target != caller.project_id:
        authorize(ctx, caller, "nova", "os_compute_api:limits:other_project", {"project_id": target})
    models = ctx.readmodel.models
    with ctx.readmodel.lock:
        quota, used = quota_for(models.identity, target), project_usage(models, target)
        groups = project_server_groups(models, target)
    return {
        "limits": {
            "rate": [],
            "absolute": {
                "maxTotalInstances": quota.instances,
                "maxTotalCores": quota.cores,
                "maxTotalRAMSize": quota.ram_mb,
                "totalInstancesUsed": used.instances,
                "totalCoresUsed": used.cores,
                "totalRAMUsed": used.ram_mb,
                "maxServerMeta": METADATA_ITEMS,
                "maxPersonality": 5,
                "maxPersonalitySize": 10240,
                "maxImageMeta": 128,
                "maxTotalKeypairs": 100,
                "maxServerGroups": quota.server_groups,
                "maxServerGroupMembers": quota.server_group_members,
                "maxSecurityGroups": -1,
                "maxSecurityGroupRules": -1,
                "maxTotalFloatingIps": -1,
                "totalFloatingIpsUsed": 0,
                "totalSecurityGroupsUsed": 0,
                "totalServerGroupsUsed": groups,
            },
        }
    }


def _quota_view(project_id: str | None, quota: QuotaLimits) -> dict[str, Any]:
    view: dict[str, Any] = {
        "instances": quota.instances,
        "cores": quota.cores,
        "ram": quota.ram_mb,
        "server_groups": quota.server_groups,
        "server_group_members": quota.server_group_members,
        **_FIXED_QUOTAS,
    }
    if project_id is not None:
        view["id"] = project_id
    return view


@router.get("/os-quota-sets/{project_id}", summary="A project's quota", responses=failures(403))
def show_quota(
    project_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The limits in force for the project (-1 is unlimited)."""
    return {"quota_set": _quota_view(project_id, quota_for(ctx.readmodel.models.identity, project_id))}


@router.get("/os-quota-sets/{project_id}/defaults", summary="The default quota")
def default_quota(project_id: str, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """nova's defaults, which a project has until an admin sets its quota."""
    return {"quota_set": _quota_view(project_id, DEFAULT_LIMITS)}


@router.get(
    "/os-quota-sets/{project_id}/detail", summary="A project's quota with usage",
    responses=failures(403),
)
def quota_detail(
    project_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Each limit with what is in use."""
    target = project_id
    models = ctx.readmodel.models
    with ctx.readmodel.lock:
        quota, used = quota_for(models.identity, target), project_usage(models, target)
        groups = project_server_groups(models, target)
        # key pairs belong to users: nova counts the caller's
        keypairs = sum(1 for (user, _) in models.catalog.keypairs if user == caller.user_id)
    view = {k: {"limit": v, "in_use": 0, "reserved": 0} for k, v in _quota_view(None, quota).items()}
    # server_group_members is a limit per group, so nova shows no usage for it
    for key, value in (("instances", used.instances), ("cores", used.cores), ("ram", used.ram_mb),
                       ("server_groups", groups), ("key_pairs", keypairs)):
        view[key]["in_use"] = value
    return {"quota_set": {"id": target, **view}}


@router.put(
    "/os-quota-sets/{project_id}", summary="Set a project's quota (admin; -1 = unlimited)",
    responses=failures(400, 403),
)
def update_quota(
    project_id: str,
    body: QuotaUpdate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append identity.quota_set; a limit below what is already in use is refused, as nova does."""
    rm = ctx.readmodel
    spec = body.quota_set
    with rm.lock:
        models = rm.models
        if models.identity.project(project_id) is None:
            raise BadRequest(f"Project ID {project_id} is not a valid project.")
        current, used = quota_for(models.identity, project_id), project_usage(models, project_id)
        groups = project_server_groups(models, project_id)
        new = QuotaLimits(
            instances=current.instances if spec.instances is None else spec.instances,
            cores=current.cores if spec.cores is None else spec.cores,
            ram_mb=current.ram_mb if spec.ram is None else spec.ram,
            server_groups=current.server_groups if spec.server_groups is None else spec.server_groups,
            server_group_members=(current.server_group_members if spec.server_group_members is None
                                  else spec.server_group_members),
        )
        for name, limit, in_use in (
            ("instances", new.instances, used.instances),
            ("cores", new.cores, used.cores),
            ("ram", new.ram_mb, used.ram_mb),
            ("server_groups", new.server_groups, groups),
        ):
            if limit != -1 and limit < in_use:
                raise BadRequest(
                    f"Quota limit {limit} for {name} must be greater than or equal to "
                    f"already used and reserved {in_use}."
                )
    quota = {"project_id": project_id, "instances": new.instances, "cores": new.cores, "ram_mb": new.ram_mb,
             "server_groups": new.server_groups, "server_group_members": new.server_group_members}
    rm.append([caller_event(EventType.QUOTA_SET, project_id, quota, request, caller)])
    return {"quota_set": _quota_view(None, new)}


# -- os-simple-tenant-usage --------------------------------------------------------------------
def _period(request: Request, now_ms: int) -> tuple[int, int]:
    bounds = []
    for name in ("start", "end"):
        raw = request.query_params.get(name)
        try:
            bounds.append(parse_time(raw) if raw else now_ms)
        except ValueError:
            raise BadRequest(
                f"Invalid {name} time. The {name} time must be an ISO 8601 date and time."
            ) from None
    if bounds[0] > bounds[1]:
        raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
    # Nova takes a missing bound as "now" for each, read a moment apart: an empty period, not an
    # error. Equal bounds become that one-millisecond period here.
    return bounds[0], max(bounds[1], bounds[0] + 1)


@router.get("/os-simple-tenant-usage", summary="Usage of every project (admin)", responses=failures(400, 403))
def list_usage(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """vCPU-, RAM- and disk-hours per project; `detailed` (True/true/1) adds the servers."""
    return {"tenant_usages": _usages(request, ctx, detailed=truthy(request.query_params.get("detailed")))}


@router.get(
    "/os-simple-tenant-usage/{tenant_id}", summary="Usage of one project",
    responses=failures(400, 403),
)
def show_usage(
    tenant_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One project's usage with its servers (empty when it used nothing in the period)."""
    usages = _usages(request, ctx, project_id=tenant_id, detailed=True)
    return {"tenant_usage": usages[0] if usages else {}}


def _usages(request: Request, ctx: ApiContext, project_id: str | None = None, detailed: bool = False
            ) -> list[dict[str, Any]]:
    """The usage report for the request's period (start, end: now when missing), of every project
    or of `project_id`, with the servers when `detailed`."""
    now = ctx.clock_ms()
    start, end = _period(request, now)
    return tenant_usage(ctx.usage_ledger(), start, end, project_id=project_id, detailed=detailed, now=now,
                        instance_info=_instance_info(ctx))


def _instance_info(ctx: ApiContext) -> Callable[[str], tuple[str, str | None]]:
    """Names and vm_states for the servers of a usage report (the ledger holds neither)."""
    instances = ctx.readmodel.models.instances

    def info(instance_id: str) -> tuple[str, str | None]:
        inst = instances.get(instance_id)
        return (inst.name, inst.vm_state) if inst is not None else ("", None)

    return info


# -- os-hypervisors, os-availability-zone ------------------------------------------------------
def _hypervisors(models: Models) -> list[dict[str, Any]]:
    used: dict[str, list[int]] = {}
    for inst in models.instances.instances.values():
        if inst.host is None or inst.status in ("DELETED", "ERROR"):
            continue
        flavor = flavor_of(models, inst)
        counts = used.setdefault(inst.host, [0, 0, 0, 0])
        if flavor:
            held = recorded_claim(inst.claim, flavor)
            counts[0] += held.vcpus
            counts[1] += held.ram_mb
            counts[2] += held.disk_gb
        counts[3] += 1
    result = []
    for number, (name, host) in enumerate(models.hosts.items(), start=1):
        vcpus_used, ram_used, disk_used, running = used.get(name, [0, 0, 0, 0])
        enabled = host.get("enabled", True)
        result.append(
            {
                "id": number,
                "hypervisor_hostname": name,
                "state": "up",
                "status": "enabled" if enabled else "disabled",
                "vcpus": host["vcpus"],
                "memory_mb": host["ram_mb"],
                "local_gb": host["disk_gb"],
                "vcpus_used": vcpus_used,
                "memory_mb_used": ram_used,
                "local_gb_used": disk_used,
                "free_ram_mb": host["ram_mb"] - ram_used,
                "free_disk_gb": host["disk_gb"] - disk_used,
                "disk_available_least": host["disk_gb"] - disk_used,
                "current_workload": 0,
                "running_vms": running,
                "hypervisor_type": host.get("hypervisor_type", "test"),
                "hypervisor_version": 1000000,
                "host_ip": "127.0.0.1",
                "cpu_info": json.dumps({"arch": host.get("cpu_arch", "x86_64")}),
                "service": {"id": number, "host": name, "disabled_reason": host.get("disabled_reason")},
            }
        )
    return result


_BRIEF = ("id", "hypervisor_hostname", "state", "status")


def _admin_hypervisors(caller: Identity, ctx: ApiContext) -> list[dict[str, Any]]:
    with ctx.readmodel.lock:
        return _hypervisors(ctx.readmodel.models)


@router.get("/os-hypervisors", summary="List compute hosts (admin)", responses=failures(403))
def list_hypervisors(
    caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Each compute host's id, name, state and status."""
    return {"hypervisors": [{k: h[k] for k in _BRIEF} for h in _admin_hypervisors(caller, ctx)]}


@router.get(
    "/os-hypervisors/detail", summary="List compute hosts with capacity and use (admin)",
    responses=failures(403),
)
def hypervisors_detail(
    caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Capacity from host.registered, use from the flavors of the servers on each host."""
    return {"hypervisors": _admin_hypervisors(caller, ctx)}


@router.get(
    "/os-hypervisors/{hypervisor_id}", summary="Show a compute host (admin)",
    responses=failures(403, 404),
)
def show_hypervisor(
    hypervisor_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """One compute host by its id."""
    for hypervisor in _admin_hypervisors(caller, ctx):
        if str(hypervisor["id"]) == hypervisor_id:
            return {"hypervisor": hypervisor}
    raise NotFound(f"Hypervisor with ID {hypervisor_id} could not be found.")


@router.get("/os-availability-zone", summary="Availability zones")
@reads_models
def availability_zones(
    _: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The zones the compute hosts are in."""
    zones = sorted({_zone_of(h) for h in ctx.readmodel.models.hosts.values()})
    return {
        "availabilityZoneInfo": [
            {"zoneName": z, "zoneState": {"available": True}, "hosts": None} for z in zones
        ]
    }


def _zone_of(host: dict[str, Any]) -> str:
    return str(host.get("availability_zone") or "nova")


@router.get(
    "/os-availability-zone/detail", summary="Availability zones with their hosts (admin)",
    responses=failures(403),
)
@reads_models
def availability_zones_detail(
    _: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Each zone with its compute hosts and their nova-compute service (enabled or not); who may
    see them is os-availability-zone:detail, the route table's rule (admin by default)."""
    zones: dict[str, dict[str, Any]] = {}
    for name, host in sorted(ctx.readmodel.models.hosts.items()):
        enabled = bool(host.get("enabled", True))
        service = {"available": enabled, "active": enabled, "updated_at": None}
        zones.setdefault(_zone_of(host), {})[name] = {"nova-compute": service}
    return {
        "availabilityZoneInfo": [
            {"zoneName": zone, "zoneState": {"available": any(
                s["nova-compute"]["available"] for s in hosts.values())}, "hosts": hosts}
            for zone, hosts in sorted(zones.items())
        ]
    }
