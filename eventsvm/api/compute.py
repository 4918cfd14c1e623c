"""Nova v2.1 under /compute: the version documents, servers and their instance actions.

Flavors and keypairs live in compute_catalog.py, limits, quotas, usage and hypervisors in
compute_usage.py; all three share this prefix.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.backlog import BACKLOG_FULL
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.models import ServerCreate
from eventsvm.api.openapi import failures
from eventsvm.api.patterns import user_pattern
from eventsvm.api.policy_check import authorize, own_target, permits
from eventsvm.api.responses import ServerBody, ServerCreatedBody, ServerDetailList, ServerList
from eventsvm.api.server_request import (
    admin_password,
    build_requested_body,
    described,
    new_reservation_id,
    refuse_create_tags,
    reservation_bodies,
    server_count,
    servers_admitted,
)
from eventsvm.api.volume_reservations import release, reserve_boot_volumes
from eventsvm.api.wire import (
    FastJSONResponse,
    base_url,
    iso_micro,
    iso_z,
    links,
    next_link,
    page,
    parse_limit,
    parse_time,
)
from eventsvm.api.writes import caller_event, chained_event
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, Topic
from eventsvm.identity import policy
from eventsvm.projections.readmodel import Models
from eventsvm.state.instances import Instance, InstanceProjection
from eventsvm.state.volumes import attachments_by_server, server_attachments

router = APIRouter(prefix="/compute", tags=["compute"])

_V1_REQUESTED_FIELDS = frozenset(
    {
        "name",
        "flavor_id",
        "image_id",
        "networks",
        "key_name",
        "availability_zone",
        "server_group_id",
        "block_devices",
        "metadata",
        "roles",
        "token_audit_id",
    }
)


def compute_base(request: Request) -> str:
    """The compute endpoint URL, as in the catalog."""
    return f"{base_url(request)}/compute/v2.1"


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": microversion.max_version(),
        "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{compute_base(request)}/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
        ],
    }


def _legacy_version(request: Request) -> dict[str, Any]:
    """nova's v2.0 entry: the same API without microversions, still listed first by nova."""
    return {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/compute/v2/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}
        ],
    }


@router.get("", include_in_schema=False)
@router.get("/", summary="Nova's version list (unauthenticated)")
def versions(request: Request) -> dict[str, Any]:
    """The compute API versions as nova lists them: v2.0 first, then v2.1 with its microversions
    (the list carries no media-types, as nova's)."""
    return {"versions": [{k: v for k, v in doc.items() if k != "media-types"}
                         for doc in (_legacy_version(request), _version(request))]}


@router.get("/v2", include_in_schema=False)
@router.get("/v2/", summary="Nova v2.0 version document (unauthenticated)")
def legacy_version(request: Request) -> dict[str, Any]:
    """The v2.0 document the version list links to; this cloud serves its routes under v2.1."""
    return {"version": _legacy_version(request)}


@router.get("/v2.1", include_in_schema=False)
@router.get("/v2.1/", summary="Nova v2.1 version document (unauthenticated)")
def version(request: Request) -> dict[str, Any]:
    """The v2.1 document; `version` is the highest microversion, which the clients then send."""
    return {"version": _version(request)}


# -- views -------------------------------------------------------------------------------------
def _addresses(models: Models, inst: Instance) -> dict[str, list[dict[str, Any]]]:
    addresses: dict[str, list[dict[str, Any]]] = {}
    for port in inst.ports:
        network = models.catalog.networks.get(port["network_id"])
        name = network["name"] if network else port["network_id"]
        addresses.setdefault(name, []).append(
            {
                "version": 6 if ":" in port["ip_address"] else 4,
                "addr": port["ip_address"],
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
            }
        )
    return addresses


# nova shows `progress` only in these statuses (ViewBuilder._progress_statuses)
_PROGRESS_STATUSES = frozenset({"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"})


def _attached_volumes(attached: list[tuple[dict[str, Any], dict[str, Any]]],
                      version: tuple[int, int]) -> list[dict[str, Any]]:
    """os-extended-volumes: the volumes attached, with delete_on_termination from nova 2.3."""
    return [{"id": volume["id"]} | ({"delete_on_termination": attachment["delete_on_termination"]}
                                   if version >= microversion.EXTENDED_ATTRIBUTES else {})
            for volume, attachment in attached]


def _extended_attributes(models: Models, inst: Instance) -> dict[str, Any]:
    """The OS-EXT-SRV-ATTR fields nova 2.3 adds for admins; kernel and ramdisk are the image's
    (nova copies them from the image's properties at create), the root disk is libvirt's vda."""
    image = models.catalog.images.get(inst.image_id or "") or {}
    properties = image.get("properties") or {}
    return {
        "OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
        "OS-EXT-SRV-ATTR:launch_index": inst.launch_index,
        "OS-EXT-SRV-ATTR:hostname": inst.hostname,
        "OS-EXT-SRV-ATTR:kernel_id": properties.get("kernel_id") or "",
        "OS-EXT-SRV-ATTR:ramdisk_id": properties.get("ramdisk_id") or "",
        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda" if inst.host else None,
        "OS-EXT-SRV-ATTR:user_data": inst.user_data,
    }


def _host_status(models: Models, inst: Instance) -> str:
    """Nova's host_status (2.16): "" without a host, UNKNOWN for a host this cloud does not know,
    MAINTENANCE for a disabled one, else UP (a host is up while registered, as os-hypervisors
    says; liveness beyond that is not tracked)."""
    if not inst.host:
        return ""
    host = models.hosts.get(inst.host)
    if host is None:
        return "UNKNOWN"
    return "UP" if host.get("enabled", True) else "MAINTENANCE"


@dataclass(frozen=True, slots=True)
class ServerFields:
    """What nova's policy shows the caller of a server beyond what its project sees."""

    extended: bool  # OS-EXT-SRV-ATTR:*: os_compute_api:os-extended-server-attributes
    host_status: bool  # os_compute_api:servers:show:host_status
    fault_details: bool  # a fault's details: nova's context.is_admin


def server_fields(ctx: ApiContext, caller: Identity) -> ServerFields:
    """The caller's ServerFields, checked once per request against its own project (nova checks
    them quietly: a refusal leaves the fields out, never a 403)."""
    own = own_target(caller)
    return ServerFields(
        extended=permits(ctx, caller, "nova", "os_compute_api:os-extended-server-attributes", own),
        host_status=permits(ctx, caller, "nova", "os_compute_api:servers:show:host_status", own),
        fault_details=caller.admin_of("nova"),
    )


def server_view(models: Models, base: str, inst: Instance, fields: ServerFields, version: tuple[int, int],
                attachments: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] | None = None
                ) -> dict[str, Any]:
    """One server as nova shows it in GET /servers/{id} and /servers/detail at `version`; a list
    passes every server's `attachments` (state.volumes.attachments_by_server), made once a page."""
    attached = (attachments.get(inst.id, []) if attachments is not None
                else server_attachments(models.catalog.volumes, inst.id))
    host_id = hashlib.sha224(f"{inst.project_id}{inst.host}".encode()).hexdigest() if inst.host else ""
    flavor_id = inst.flavor["id"] if inst.flavor else inst.flavor_ref
    view: dict[str, Any] = {
        "id": inst.id,
        "name": inst.name,
        "status": inst.status,
        "tenant_id": inst.project_id,
        "user_id": inst.user_id,
        "metadata": dict(inst.metadata),
        "hostId": host_id,
        "image": {"id": inst.image_id, "links": [links(base, f"images/{inst.image_id}")[1]]}
        if inst.image_id
        else "",
        "flavor": {"id": flavor_id, "links": [links(base, f"flavors/{flavor_id}")[1]]},
        "created": iso_z(inst.created_at),
        "updated": iso_z(inst.updated_at),
        "addresses": _addresses(models, inst),
        "accessIPv4": inst.access_ipv4 or "",
        "accessIPv6": inst.access_ipv6 or "",
        "links": links(base, f"servers/{inst.id}"),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": inst.availability_zone or ("nova" if inst.host else ""),
        "config_drive": "",
        "key_name": inst.key_name,
        "OS-SRV-USG:launched_at": iso_micro(inst.launched_at),
        "OS-SRV-USG:terminated_at": iso_micro(inst.terminated_at),
        "OS-EXT-STS:task_state": inst.task_state,
        "OS-EXT-STS:vm_state": inst.vm_state,
        "OS-EXT-STS:power_state": inst.power_state,
        "os-extended-volumes:volumes_attached": _attached_volumes(attached, version),
        "security_groups": [{"name": "default"}],
    }
    if inst.status in _PROGRESS_STATUSES:
        view["progress"] = 0
    if fields.extended:
        view["OS-EXT-SRV-ATTR:host"] = inst.host
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.host
        view["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst.id[:8]}"
        if version >= microversion.EXTENDED_ATTRIBUTES:
            view.update(_extended_attributes(models, inst))
    if fields.host_status and version >= microversion.HOST_STATUS:
        view["host_status"] = _host_status(models, inst)
    if version >= microversion.LOCKED_SHOWN:
        view["locked"] = inst.locked
    if version >= microversion.DESCRIPTION:
        view["description"] = inst.description
    if version >= microversion.SERVER_TAGS:
        view["tags"] = list(inst.tags)
    if inst.fault is not None and inst.status == "ERROR":
        fault = {
            "code": inst.fault["code"],
            "message": inst.fault["message"],
            "created": iso_z(inst.fault["created"]),
        }
        if fields.fault_details and inst.fault.get("details"):
            fault["details"] = inst.fault["details"]
        view["fault"] = fault
    return view


def visible_server(models: Models, caller: Identity, server_id: str) -> Instance:
    """A live server the caller may see; nova answers 404 for other projects' servers."""
    inst = models.instances.get(server_id)
    if (
        inst is None
        or inst.status == "DELETED"
        or inst.project_id is None
        or not caller.sees("nova", inst.project_id)
    ):
        raise NotFound(f"Instance {server_id} could not be found.")
    return inst


# -- servers -----------------------------------------------------------------------------------
def _requested_optional_fields(codec: Codec) -> frozenset[str]:
    schema = codec.current(EventType.INSTANCE_REQUESTED).schema
    body = next(f for f in schema["fields"] if f["name"] == "body")
    return frozenset(f["name"] for f in body["type"]["fields"]) - _V1_REQUESTED_FIELDS


@router.post(
    "/v2.1/servers", status_code=202, summary="Create a server",
    response_model=ServerCreatedBody, response_model_exclude_unset=True,
    responses=failures(400, 403, 409, 429) | {503: {"description": BACKLOG_FULL}},
)
def create_server(
    body: ServerCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> JSONResponse:
    """Validate, check quota and the backlog of unfinished builds, append one instance.requested per
    server (all at once, partitioned by project) and answer 202 with the first server, or the
    reservation id when asked."""
    spec = body.server
    version = microversion.served(request)
    refuse_create_tags(body, version)
    # the model keeps `description` as given; below 2.19 nova's closed schema refuses it
    description = described(spec.model_dump(include={"description"}, exclude_unset=True),
                            version)["description"]
    rm = ctx.readmodel
    with rm.lock:
        event_body = build_requested_body(rm.models, body, caller, _requested_optional_fields(rm.codec))
        event_body["description"] = description
        flavor = rm.models.catalog.flavors[event_body["flavor_id"]]
        servers = servers_admitted(rm.models, caller, flavor, server_count(spec))
    reservation_id = new_reservation_id()
    events = [
        caller_event(EventType.INSTANCE_REQUESTED, str(uuid.uuid4()), member, request, caller)
        for member in reservation_bodies(event_body, servers, reservation_id)
    ]
    booted_volumes = [bdm for bdm in event_body["block_devices"] if bdm.get("source_type") == "volume"]
    if booted_volumes and len(events) > 1:
        # nova's compute API: a volume can belong to one server of a multi-create only
        raise BadRequest("Cannot attach one or more volumes to multiple instances")
    # past the backlog of unfinished builds, 429 / 503 before anything is reserved or appended
    with ctx.backlog.admit(rm, caller.project_id, len(events)):
        # the volumes it boots with are its own before it is on the log (a second boot with one is refused)
        first = events[0].aggregate_id
        reserved = reserve_boot_volumes(ctx, first, event_body["block_devices"], request, caller)
        try:
            rm.append(events, [rm.partition_by(Topic.REQUESTED, caller.project_id)] * len(events))
        except BaseException:
            release(ctx, reserved, f"the request for server {first} could not be recorded", request, caller)
            raise
    if spec.return_reservation_id:
        return JSONResponse({"reservation_id": reservation_id}, status_code=202)
    base = compute_base(request)
    server_id = events[0].aggregate_id
    server: dict[str, Any] = {
        "id": server_id,
        "links": links(base, f"servers/{server_id}"),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
    }
    if ctx.enable_instance_password:
        server["adminPass"] = admin_password(spec)
    return JSONResponse(
        {"server": server}, status_code=202, headers={"Location": f"{base}/servers/{server_id}"}
    )


@dataclass(frozen=True)
class _Listed:
    """What the list's patterns read of one server, copied out of the read model under its lock."""

    id: str
    name: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]


def _listed(inst: Instance) -> _Listed:
    addresses = [p["ip_address"] for p in inst.ports]
    return _Listed(inst.id, inst.name, tuple(a for a in addresses if ":" not in a),
                   tuple(a for a in addresses if ":" in a))


_PATTERNS = ("name", "ip", "ip6")


def _tag_filter(query: dict[str, str]) -> Callable[[Instance], bool]:
    """Nova's four tag filters (2.26), each a comma-separated list: tags (has all), tags-any (has
    one), not-tags (lacks one at least), not-tags-any (has none)."""
    def named(key: str) -> set[str] | None:
        return set(query[key].split(",")) if query.get(key) else None

    every, anyof, not_every, not_any = (named(k) for k in ("tags", "tags-any", "not-tags", "not-tags-any"))

    def passes(inst: Instance) -> bool:
        tags = set(inst.tags)
        return ((every is None or every <= tags) and (anyof is None or bool(anyof & tags))
                and (not_every is None or not not_every <= tags) and (not_any is None or not not_any & tags))
    return passes


def _newest_first(inst: Instance) -> tuple[int, str]:
    return inst.created_at, inst.id


# Every instance in nova's default order (newest first), with the projection it was sorted from and
# that projection's fold count then: a list's marker paging reads it instead of sorting ten thousand
# servers a page. Any change to an instance is a folded instance event (events_folded grows) and the
# fold removes none, so an unchanged count means an unchanged order. Read and written under the lock.
_order: tuple[weakref.ref[InstanceProjection], int, list[Instance]] | None = None


def _in_order(projection: InstanceProjection) -> list[Instance]:
    global _order
    order = _order  # one read: another read model's list (tests run several) may replace it
    if order is None or order[0]() is not projection or order[1] != projection.events_folded:
        ordered = sorted(projection.instances.values(), key=_newest_first, reverse=True)
        order = _order = (weakref.ref(projection), projection.events_folded, ordered)
    return order[2]


def _all_tenants(ctx: ApiContext, caller: Identity, query: dict[str, str], detail: bool) -> bool:
    """Whether the list asks for every project (all_tenants, nova's truthy values); nova's 403 when
    its get_all_tenants rule refuses the caller (not a quiet fall back to its own project)."""
    asked = "all_tenants" in query and query["all_tenants"].lower() not in ("0", "false", "f", "no", "off")
    if asked:
        rule = f"os_compute_api:servers:{'detail' if detail else 'index'}:get_all_tenants"
        authorize(ctx, caller, "nova", rule, own_target(caller))
    return asked


def _candidates(models: Models, caller: Identity, query: dict[str, str],
                version: tuple[int, int], all_tenants: bool) -> list[Instance]:
    """Servers passing every filter but the caller's patterns, newest first; under the lock.
    `query` holds only the filters the caller may use (_list drops the others)."""
    # all projects (or the one named) with all_tenants, else the caller's own, as nova does
    project = (query.get("project_id") or query.get("tenant_id")) if all_tenants else caller.project_id
    status = query.get("status", "").upper()
    host = query.get("host")
    since = None
    if query.get("changes-since"):
        try:
            since = parse_time(query["changes-since"])
        except ValueError:
            raise BadRequest("Invalid changes-since value") from None
    tagged = _tag_filter(query) if version >= microversion.SERVER_TAGS else None
    found = []
    for inst in _in_order(models.instances):  # nova's default order: newest first
        if inst.project_id is None or inst.status == "DELETED" or (project and inst.project_id != project):
            continue
        if status and inst.status != status:
            continue
        if host is not None and inst.host != host:
            continue
        if "reservation_id" in query and inst.reservation_id != query["reservation_id"]:
            continue
        if "image" in query and inst.image_id != query["image"]:
            continue
        if "flavor" in query and (inst.flavor["id"] if inst.flavor else inst.flavor_ref) != query["flavor"]:
            continue
        if since is not None and inst.updated_at < since:
            continue
        if tagged is not None and not tagged(inst):
            continue
        found.append(inst)
    return found


def _matching(listed: list[_Listed], query: dict[str, str]) -> list[str]:
    """The ids of the servers the caller's patterns accept: name searched anywhere, as nova's
    database does; ip and ip6 matched from an address's start against that family only, as nova's
    _ip_filter. Runs without the read model's lock, so a slow pattern holds up no other request."""
    name = user_pattern(query.get("name"), "name")
    ip = user_pattern(query.get("ip"), "ip")
    ip6 = user_pattern(query.get("ip6"), "ip6")
    found = []
    for server in listed:
        if name is not None and not name.search(server.name):
            continue
        if (ip is not None or ip6 is not None) and not (
            (ip is not None and any(ip.match(a) for a in server.ipv4))
            or (ip6 is not None and any(ip6.match(a) for a in server.ipv6))
        ):
            continue
        found.append(server.id)
    return found


def _list(request: Request, caller: Identity, ctx: ApiContext, detail: bool) -> Response:
    query = dict(request.query_params)
    version = microversion.served(request)
    all_tenants = _all_tenants(ctx, caller, query, detail)
    if not permits(ctx, caller, "nova", "os_compute_api:servers:allow_all_filters", own_target(caller)):
        # nova drops quietly the filters only its allow_all_filters rule opens
        query.pop("host", None)
        if version < microversion.IP6_FILTER:
            query.pop("ip6", None)
    limit = parse_limit(query.get("limit"), ctx.max_page)
    fields = server_fields(ctx, caller)
    patterned = any(query.get(k) is not None for k in _PATTERNS)
    models = ctx.readmodel.models
    with ctx.readmodel.lock:
        found = _candidates(models, caller, query, version, all_tenants)
        # only a pattern reads more of a server than its id: copy that much out, for outside the lock
        listed = [_listed(i) for i in found] if patterned else None
        ids = [i.id for i in found] if listed is None else []
    if listed is not None:
        ids = _matching(listed, query)
    servers = page(ids, str, limit, query.get("marker"))
    base = compute_base(request)
    with ctx.readmodel.lock:
        shown = [models.instances.get(s) for s in servers]
        attachments = attachments_by_server(models.catalog.volumes) if detail else None
        items = [
            server_view(models, base, i, fields, version, attachments)
            if detail
            else {"id": i.id, "name": i.name, "links": links(base, f"servers/{i.id}")}
            for i in shown
            if i is not None
        ]
    path = "servers/detail" if detail else "servers"
    result: dict[str, Any] = {"servers": items}
    more = next_link(f"{base}/{path}", items, limit, query)
    if more:
        result["servers_links"] = more
    # a page of 1,000 servers is ~1.5 MB of JSON: sent as built (the views already have the
    # documented shape, test_api_responses holds them to it) rather than validated and re-serialised
    return FastJSONResponse(result)


@router.get(
    "/v2.1/servers", summary="List servers (id, name, links)",
    response_model=ServerList, response_model_exclude_unset=True, responses=failures(400, 403),
)
def list_servers(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> Response:
    """Servers of the caller's project (all projects with all_tenants, for admin); nova's filters."""
    return _list(request, caller, ctx, detail=False)


@router.get(
    "/v2.1/servers/detail", summary="List servers with details",
    response_model=ServerDetailList, response_model_exclude_unset=True, responses=failures(400, 403),
)
def list_servers_detail(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> Response:
    """As GET /servers, each server shown in full."""
    return _list(request, caller, ctx, detail=True)


@router.get(
    "/v2.1/servers/{server_id}", summary="Show a server",
    response_model=ServerBody, response_model_exclude_unset=True, responses=failures(404),
)
def show_server(
    server_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One server; 404 once it is deleted or when it belongs to another project."""
    models = ctx.readmodel.models
    fields = server_fields(ctx, caller)
    with ctx.readmodel.lock:
        return {
            "server": server_view(models, compute_base(request), visible_server(models, caller, server_id),
                                  fields, microversion.served(request))
        }


@router.delete(
    "/v2.1/servers/{server_id}", status_code=204, summary="Delete a server",
    responses=failures(403, 404, 409),
)
def delete_server(
    server_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append instance.delete_requested chained to the instance's newest event; 204."""
    rm = ctx.readmodel
    with rm.lock:
        # servers:delete is the route table's, forceDelete's os-deferred-delete:force likewise:
        # each checks its own rule only, as nova's force_delete never asks servers:delete
        inst = visible_server(rm.models, caller, server_id)
        if inst.task_state == "deleting":
            return Response(status_code=204)  # already on its way out; a second request changes nothing
        if policy.lock_holds(inst.locked, caller.admin_of("nova")):
            raise Conflict(f"Instance {inst.id} is locked")  # nova's check_instance_lock
        event = chained_event(EventType.INSTANCE_DELETE_REQUESTED, inst, {"host": inst.host},
                              request, caller, ctx)
    rm.append([event])
    return Response(status_code=204)
