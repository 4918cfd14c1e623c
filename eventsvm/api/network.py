"""Neutron v2.0 under /network: networks and subnets from the catalog, ports from the instances
that hold them (the resolver allocates every port; there is no port of its own here)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.authorization import network_target
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.models import (
    AllocationPool,
    HostRoute,
    NetworkCreate,
    NetworkUpdate,
    SubnetCreate,
    SubnetUpdate,
)
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize, own_target, permits
from eventsvm.api.responses import NetworkBody, NetworkList, PortBody, PortList
from eventsvm.api.server_request import network_visible
from eventsvm.api.wire import base_url, iso_z
from eventsvm.api.writes import caller_event
from eventsvm.events.model import EventType
from eventsvm.projections.readmodel import Models
from eventsvm.state.catalog import NETWORK_FIELDS, Body

router = APIRouter(prefix="/network", tags=["network"])


@router.get("", include_in_schema=False)
@router.get("/", summary="Neutron's version list (unauthenticated)")
def versions(request: Request) -> dict[str, Any]:
    """The networking API versions: v2.0."""
    href = f"{base_url(request)}/network/v2.0/"
    return {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}]}


@router.get("/v2.0", include_in_schema=False)
@router.get("/v2.0/", summary="Neutron v2.0 resources (unauthenticated)")
def resources(request: Request) -> dict[str, Any]:
    """The collections this networking API offers."""
    base = f"{base_url(request)}/network/v2.0"
    return {
        "resources": [
            {"name": n, "collection": f"{n}s", "links": [{"rel": "self", "href": f"{base}/{n}s"}]}
            for n in ("network", "subnet", "port")
        ]
    }


# The API extensions this neutron serves, by alias: only those whose attributes and calls are
# here (no routers, floating IPs or security groups). Clients ask before using a feature.
EXTENSIONS: dict[str, tuple[str, str]] = {
    "external-net": ("Neutron external network", "Adds external network attribute to network resource."),
    "net-mtu": ("Network MTU", "Provides MTU attribute for a network resource."),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external application"),
    "standard-attr-description": ("standard-attr-description",
                                  "Extension to add descriptions to standard attributes"),
    "standard-attr-revisions": ("Resource revision numbers",
                                "This extension will display the revision number of neutron resources."),
    "standard-attr-timestamp": ("Resource timestamps",
                                "Adds created_at and updated_at fields to all Neutron resources that "
                                "have Neutron standard attributes."),
}


def _extension(alias: str) -> dict[str, Any]:
    name, description = EXTENSIONS[alias]
    return {"alias": alias, "name": name, "description": description, "updated": "2013-01-01T10:00:00-00:00",
            "links": []}


@router.get("/v2.0/extensions", summary="List the API extensions")
def list_extensions(_: Identity = Depends(current_identity)) -> dict[str, Any]:
    """What this networking API offers beyond its core, as clients discover it."""
    return {"extensions": [_extension(alias) for alias in sorted(EXTENSIONS)]}


@router.get("/v2.0/extensions/{alias}", summary="Show an API extension", responses=failures(404))
def show_extension(alias: str, _: Identity = Depends(current_identity)) -> dict[str, Any]:
    """One extension by alias; 404 for one not served here."""
    if alias not in EXTENSIONS:
        raise NotFound(f"Extension with alias {alias} does not exist", kind="ExtensionNotFound")
    return {"extension": _extension(alias)}


def _matches(query: Any, item: dict[str, Any], fields: tuple[str, ...]) -> bool:
    """Neutron's filters: each given field must equal one of its given values."""
    for name in fields:
        wanted = query.getlist(name)
        if not wanted:
            continue
        value = item.get(name)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        if shown not in [w.lower() if isinstance(value, bool) else w for w in wanted]:
            return False
    return True


def _with_fields(request: Request, key: str, found: dict[str, Any] | list[dict[str, Any]]
                ) -> dict[str, Any] | JSONResponse:
    """neutron's `fields` query (repeated: `fields=id&fields=name`): only those fields of each
    resource, the unknown ones left out; without it the whole resource. A selection is sent as
    built, past the route's response model, which promises the whole resource."""
    fields = list(dict.fromkeys(request.query_params.getlist("fields")))
    if not fields:
        return {key: found}

    def pick(item: dict[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in fields if name in item}

    return JSONResponse({key: [pick(i) for i in found] if isinstance(found, list) else pick(found)})


def visible_network(models: Models, caller: Identity, network_id: str) -> Body | None:
    """The network, when it exists and the caller may see it (neutron's and nova's proxy's show)."""
    network = models.catalog.networks.get(network_id)
    return network if network is not None and network_visible(network, caller) else None


def network_view(models: Models, network: Body) -> dict[str, Any]:
    """A network as neutron shows it."""
    created = iso_z(models.catalog.created_at.get(network["id"]))
    return {
        "id": network["id"],
        "name": network["name"],
        "status": "ACTIVE",
        "admin_state_up": network.get("admin_state_up", True),
        "shared": network.get("shared", False),
        "router:external": network.get("external", False),
        "mtu": network.get("mtu", 1500),
        "subnets": [s["id"] for s in models.catalog.subnets_of(network["id"])],
        "tenant_id": network.get("owner"),
        "project_id": network.get("owner"),
        "description": network.get("description", ""),
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        "port_security_enabled": True,
        "is_default": False,
        "tags": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "created_at": created,
        "updated_at": iso_z(network["updated_at"]) if "updated_at" in network else created,
        "revision_number": network.get("revision", 1),
    }


@router.get(
    "/v2.0/networks", summary="List networks",
    response_model=NetworkList, response_model_exclude_unset=True,
)
@reads_models
def list_networks(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any] | JSONResponse:
    """Networks the project may use; filters are exact (name=private matches only `private`)."""
    models = ctx.readmodel.models
    views = [network_view(models, n) for n in models.catalog.networks.values() if network_visible(n, caller)]
    fields = ("id", "name", "shared", "router:external", "project_id", "tenant_id", "status", "mtu")
    return _with_fields(request, "networks", [v for v in views if _matches(request.query_params, v, fields)])


@router.get(
    "/v2.0/networks/{network_id}", summary="Show a network",
    response_model=NetworkBody, response_model_exclude_unset=True, responses=failures(404),
)
@reads_models
def show_network(
    network_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any] | JSONResponse:
    """One network; a name is not an id and answers 404."""
    models = ctx.readmodel.models
    network = visible_network(models, caller, network_id)
    if network is None:
        raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
    return _with_fields(request, "network", network_view(models, network))


@router.post(
    "/v2.0/networks", status_code=201, summary="Create a network",
    response_model=NetworkBody, response_model_exclude_unset=True, responses=failures(403),
)
def create_network(
    body: NetworkCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.network_created owned by the caller's project; shared and external need admin."""
    spec = body.network
    for flag, rule in ((spec.shared, "shared"), (spec.external, "router:external")):
        if flag:
            authorize(ctx, caller, "neutron", f"create_network:{rule}", own_target(caller))
    network_id = str(uuid.uuid4())
    network = {
        "id": network_id,
        "name": spec.name,
        "shared": spec.shared,
        "external": spec.external,
        "owner": caller.project_id,
        "mtu": spec.mtu,
        "description": spec.description,
        "admin_state_up": spec.admin_state_up,
    }
    rm = ctx.readmodel
    rm.append([caller_event(EventType.NETWORK_CREATED, network_id, network, request, caller)])
    with rm.lock:
        return {"network": network_view(rm.models, network)}


# -- subnets -----------------------------------------------------------------------------------
def subnet_view(models: Models, subnet: Body) -> dict[str, Any]:
    """A subnet as neutron shows it; its project is its network's."""
    network = models.catalog.networks.get(subnet["network_id"]) or {}
    created = iso_z(models.catalog.created_at.get(subnet["id"]))
    return {
        "id": subnet["id"],
        "name": subnet["name"],
        "network_id": subnet["network_id"],
        "cidr": subnet["cidr"],
        "ip_version": subnet.get("ip_version", 4),
        "gateway_ip": subnet.get("gateway_ip"),
        "allocation_pools": [{"start": subnet["allocation_start"], "end": subnet["allocation_end"]}],
        "enable_dhcp": subnet.get("enable_dhcp", True),
        "dns_nameservers": list(subnet.get("dns_nameservers", [])),
        "host_routes": [dict(route) for route in subnet.get("host_routes", [])],
        "tenant_id": network.get("owner"),
        "project_id": network.get("owner"),
        "description": subnet.get("description", ""),
        "subnetpool_id": None,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "service_types": [],
        "tags": [],
        "created_at": created,
        "updated_at": iso_z(subnet["updated_at"]) if "updated_at" in subnet else created,
        "revision_number": subnet.get("revision", 1) - 1,
    }


def _visible_subnets(models: Models, caller: Identity) -> list[Body]:
    return [
        s
        for s in models.catalog.subnets.values()
        if (n := models.catalog.networks.get(s["network_id"])) is not None and network_visible(n, caller)
    ]


def _visible_subnet(models: Models, caller: Identity, subnet_id: str) -> Body:
    """One subnet by id if the caller may see its network; NotFound otherwise."""
    subnet = models.catalog.subnets.get(subnet_id)
    network = models.catalog.networks.get(subnet["network_id"]) if subnet is not None else None
    if subnet is None or network is None or not network_visible(network, caller):
        raise NotFound(f"Subnet {subnet_id} could not be found.", kind="SubnetNotFound")
    return subnet


@router.get("/v2.0/subnets", summary="List subnets", response_model=None)
@reads_models
def list_subnets(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any] | JSONResponse:
    """Subnets of the networks the project may use."""
    models = ctx.readmodel.models
    fields = ("id", "name", "network_id", "cidr", "ip_version", "project_id", "tenant_id")
    views = [subnet_view(models, s) for s in _visible_subnets(models, caller)]
    return _with_fields(request, "subnets", [v for v in views if _matches(request.query_params, v, fields)])


@router.get("/v2.0/subnets/{subnet_id}", summary="Show a subnet", response_model=None,
            responses=failures(404))
@reads_models
def show_subnet(
    subnet_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any] | JSONResponse:
    """One subnet."""
    models = ctx.readmodel.models
    return _with_fields(request, "subnet", subnet_view(models, _visible_subnet(models, caller, subnet_id)))


def _address(
    text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network, what: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"Invalid input for {what}: '{text}' is not a valid IP address.") from None
    if address not in network:
        raise BadRequest(f"Invalid input for {what}: {address} is not in {network}.")
    return address


Cidr = ipaddress.IPv4Network | ipaddress.IPv6Network


def _pool(pool: AllocationPool, cidr: Cidr) -> tuple[str, str]:
    """An allocation pool's first and last address, both inside the subnet."""
    start = _address(pool.start, cidr, "allocation_pools")
    end = _address(pool.end, cidr, "allocation_pools")
    if int(start) > int(end):
        raise BadRequest("Invalid input for allocation_pools: the start is after the end.")
    return str(start), str(end)


def _gateway_outside_pool(gateway: str | None, start: str, end: str) -> None:
    if gateway is not None and int(ipaddress.ip_address(start)) <= int(ipaddress.ip_address(gateway)) \
            <= int(ipaddress.ip_address(end)):
        raise Conflict(f"Gateway ip {gateway} conflicts with allocation pool {start}-{end}",
                       kind="GatewayConflictWithAllocationPools")


def _nameservers(nameservers: list[str]) -> list[str]:
    for nameserver in nameservers:
        try:
            ipaddress.ip_address(nameserver)
        except ValueError:
            raise BadRequest(
                f"Invalid input for dns_nameservers: '{nameserver}' is not a valid IP address."
            ) from None
    if len(set(nameservers)) != len(nameservers):
        raise BadRequest(f"Duplicate nameserver in {nameservers}.")
    return list(nameservers)


def _host_routes(routes: list[HostRoute], version: int) -> list[dict[str, str]]:
    """Each route as neutron keeps it: a network of the subnet's IP version via an address."""
    kept: list[dict[str, str]] = []
    for route in routes:
        try:
            destination = ipaddress.ip_network(route.destination, strict=False)
            nexthop = ipaddress.ip_address(route.nexthop)
        except ValueError:
            raise BadRequest(f"Invalid input for host_routes: {route.destination} via {route.nexthop} "
                             "is not a network via an IP address.") from None
        if destination.version != version or nexthop.version != version:
            raise BadRequest(f"Invalid input for host_routes: {route.destination} via {route.nexthop} "
                             f"is not IPv{version}, as the subnet is.")
        entry = {"destination": str(destination), "nexthop": str(nexthop)}
        if entry in kept:
            raise BadRequest(f"Duplicate hostroute {entry['destination']} via {entry['nexthop']}.")
        kept.append(entry)
    return kept


@router.post(
    "/v2.0/subnets", status_code=201, summary="Create a subnet",
    responses=failures(400, 403, 404, 409),
)
def create_subnet(
    body: SubnetCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.subnet_created: the range servers on the network get their addresses from."""
    spec = body.subnet
    rm = ctx.readmodel
    network = rm.models.catalog.networks.get(spec.network_id)
    if network is None or not network_visible(network, caller):
        raise NotFound(f"Network {spec.network_id} could not be found.", kind="NetworkNotFound")
    # neutron's create_subnet: a member of the project that owns the network
    on_network = {**own_target(caller), "network:project_id": network.get("owner")}
    authorize(ctx, caller, "neutron", "create_subnet", on_network)
    try:
        cidr = ipaddress.ip_network(spec.cidr, strict=True)
    except ValueError:
        raise BadRequest(f"Invalid input for cidr: '{spec.cidr}' is not a valid IP subnet.") from None
    if cidr.version != spec.ip_version:
        raise BadRequest("Invalid input for operation: cidr and ip_version are inconsistent.")
    if cidr.num_addresses < 4:
        raise BadRequest(f"Invalid input for cidr: {cidr} is too small to hold addresses for servers.")
    gateway: str | None = str(cidr.network_address + 1)
    if "gateway_ip" in spec.model_fields_set:
        gateway = None if spec.gateway_ip is None else str(_address(spec.gateway_ip, cidr, "gateway_ip"))
    if spec.allocation_pools:
        start, end = _pool(spec.allocation_pools[0], cidr)
        _gateway_outside_pool(gateway, start, end)
    else:
        first = cidr.network_address + 1
        start = str(first + 1 if gateway is not None and ipaddress.ip_address(gateway) == first else first)
        end = str(cidr.broadcast_address - 1 if cidr.version == 4 else cidr.broadcast_address)
    subnet_id = str(uuid.uuid4())
    subnet = {
        "id": subnet_id,
        "network_id": spec.network_id,
        "name": spec.name,
        "cidr": str(cidr),
        "gateway_ip": gateway,
        "allocation_start": start,
        "allocation_end": end,
        "ip_version": spec.ip_version,
        "enable_dhcp": spec.enable_dhcp,
        "dns_nameservers": _nameservers(spec.dns_nameservers),
        "description": spec.description,
        "host_routes": _host_routes(spec.host_routes, cidr.version),
    }
    with rm.lock:
        for other in rm.models.catalog.subnets_of(spec.network_id):
            if ipaddress.ip_network(other["cidr"]).overlaps(cidr):
                raise BadRequest(
                    f"Invalid input for operation: Requested subnet with cidr: {cidr} for network: "
                    f"{spec.network_id} overlaps with another subnet."
                )
    rm.append([caller_event(EventType.SUBNET_CREATED, subnet_id, subnet, request, caller)])
    return {"subnet": subnet_view(rm.models, subnet)}


# what an update may not name (neutron: "Cannot update read-only attribute")
_NETWORK_READ_ONLY = frozenset({"id", "tenant_id", "project_id", "status", "subnets", "created_at",
                                "updated_at", "revision_number"})
_SUBNET_READ_ONLY = frozenset({"id", "network_id", "cidr", "ip_version", "tenant_id", "project_id",
                               "subnetpool_id", "created_at", "updated_at", "revision_number"})


def _refuse_read_only(sent: dict[str, Any] | None, read_only: frozenset[str]) -> None:
    named = sorted(set(sent or {}) & read_only)
    if named:
        raise BadRequest(f"Cannot update read-only attribute {named[0]}")


def _ports_on(models: Models, network_id: str, subnet_id: str | None = None) -> list[str]:
    """Ids of the servers that hold an address on the network (on the subnet, when given), or
    asked for one on it and were not yet given it: nothing may pull an address from under them."""
    using = []
    for inst in models.instances.instances.values():
        if inst.status == "DELETED":
            continue
        if any(p["network_id"] == network_id and subnet_id in (None, p["subnet_id"]) for p in inst.ports):
            using.append(inst.id)
        elif not inst.ports and inst.status == "BUILD" and any(
                n.get("network_id") == network_id for n in inst.requested_networks):
            using.append(inst.id)
    return using


@router.put(
    "/v2.0/networks/{network_id}", summary="Update a network",
    response_model=NetworkBody, response_model_exclude_unset=True, responses=failures(400, 403, 404),
)
def update_network(
    network_id: str, body: NetworkUpdate, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.network_updated with the fields sent; sharing a network or making it
    external (or no longer) is an admin's, as on create."""
    changes = body.network
    _refuse_read_only(changes.model_extra, _NETWORK_READ_ONLY)
    rm = ctx.readmodel
    with rm.lock:
        network = visible_network(rm.models, caller, network_id)
    if network is None:
        raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
    sent = changes.model_fields_set
    for flag, rule in (("shared", "shared"), ("external", "router:external")):
        if flag in sent and getattr(changes, flag) != network.get(flag, False):
            authorize(ctx, caller, "neutron", f"update_network:{rule}", network_target(network))
    values = changes.model_dump(include=set(NETWORK_FIELDS))
    changed = sorted(name for name in sent & NETWORK_FIELDS if values[name] != network.get(name))
    if changed:
        update = {"id": network_id, "changed": changed, **values}
        rm.append([caller_event(EventType.NETWORK_UPDATED, network_id, update, request, caller)])
    with rm.lock:
        network = rm.models.catalog.networks.get(network_id)
        if network is None:  # deleted meanwhile
            raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
        return {"network": network_view(rm.models, network)}


@router.delete(
    "/v2.0/networks/{network_id}", status_code=204, summary="Delete a network and its subnets",
    responses=failures(403, 404, 409),
)
def delete_network(
    network_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.network_deleted, which takes the network's subnets with it; refused (409)
    while a server holds or awaits an address on it."""
    rm = ctx.readmodel
    with rm.lock:
        if visible_network(rm.models, caller, network_id) is None:
            raise NotFound(f"Network {network_id} could not be found.", kind="NetworkNotFound")
        if _ports_on(rm.models, network_id):
            raise Conflict(f"Unable to complete operation on network {network_id}. There are one or "
                           "more ports still in use on the network.", kind="NetworkInUse")
    rm.append([caller_event(EventType.NETWORK_DELETED, network_id, {"id": network_id}, request, caller)])
    return Response(status_code=204)


@router.put(
    "/v2.0/subnets/{subnet_id}", summary="Update a subnet", response_model=None,
    responses=failures(400, 403, 404, 409),
)
def update_subnet(
    subnet_id: str, body: SubnetUpdate, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.subnet_updated with the fields sent, checked as on create (a gateway and
    an allocation pool inside the cidr and apart, addresses and routes well formed)."""
    changes = body.subnet
    _refuse_read_only(changes.model_extra, _SUBNET_READ_ONLY)
    rm = ctx.readmodel
    with rm.lock:
        subnet = _visible_subnet(rm.models, caller, subnet_id)
    cidr = ipaddress.ip_network(subnet["cidr"])
    sent = changes.model_fields_set
    update: dict[str, Any] = {
        "id": subnet_id, "name": changes.name, "description": changes.description,
        "gateway_ip": subnet.get("gateway_ip"), "enable_dhcp": changes.enable_dhcp,
        "dns_nameservers": _nameservers(changes.dns_nameservers),
        "host_routes": _host_routes(changes.host_routes, cidr.version),
        "allocation_start": subnet["allocation_start"], "allocation_end": subnet["allocation_end"],
    }
    if "gateway_ip" in sent:
        update["gateway_ip"] = (None if changes.gateway_ip is None
                                else str(_address(changes.gateway_ip, cidr, "gateway_ip")))
    if "allocation_pools" in sent:
        update["allocation_start"], update["allocation_end"] = _pool(changes.allocation_pools[0], cidr)
    _gateway_outside_pool(update["gateway_ip"], update["allocation_start"], update["allocation_end"])
    named = {"allocation_start", "allocation_end"} if "allocation_pools" in sent else set()
    named |= sent & {"name", "description", "gateway_ip", "enable_dhcp", "dns_nameservers", "host_routes"}
    changed = sorted(name for name in named if update[name] != subnet.get(name))
    if changed:
        update["changed"] = changed
        rm.append([caller_event(EventType.SUBNET_UPDATED, subnet_id, update, request, caller)])
    with rm.lock:
        return {"subnet": subnet_view(rm.models, _visible_subnet(rm.models, caller, subnet_id))}


@router.delete(
    "/v2.0/subnets/{subnet_id}", status_code=204, summary="Delete a subnet",
    responses=failures(403, 404, 409),
)
def delete_subnet(
    subnet_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.subnet_deleted; refused (409) while a server holds an address from it, or
    awaits one on its network."""
    rm = ctx.readmodel
    with rm.lock:
        subnet = _visible_subnet(rm.models, caller, subnet_id)
        if _ports_on(rm.models, subnet["network_id"], subnet_id):
            raise Conflict(f"Unable to complete operation on subnet {subnet_id}: One or more ports "
                           "have an IP allocation from this subnet.", kind="SubnetInUse")
    body = {"id": subnet_id, "network_id": subnet["network_id"]}
    rm.append([caller_event(EventType.SUBNET_DELETED, subnet_id, body, request, caller)])
    return Response(status_code=204)


@router.get("/v2.0/floatingips", summary="List floating IPs (this cloud has none)")
def list_floating_ips(_: Identity = Depends(current_identity)) -> dict[str, Any]:
    """Always empty: servers are reached on their fixed addresses; nothing allocates floating IPs."""
    return {"floatingips": []}


# -- ports -------------------------------------------------------------------------------------
def _ports(ctx: ApiContext, caller: Identity) -> list[dict[str, Any]]:
    """The ports the caller sees; under the lock."""
    # neutron's get_port:binding:host_id: the compute host, an admin's by default
    host_shown = permits(ctx, caller, "neutron", "get_port:binding:host_id", own_target(caller))
    models = ctx.readmodel.models
    ports = []
    for inst in models.instances.instances.values():
        if (
            inst.status == "DELETED"
            or not inst.ports
            or not caller.sees("neutron", inst.project_id)
        ):
            continue
        for port in inst.ports:
            view = {
                "id": port["port_id"],
                "name": "",
                "network_id": port["network_id"],
                "mac_address": port["mac_address"],
                "fixed_ips": [{"subnet_id": port["subnet_id"], "ip_address": port["ip_address"]}],
                "device_id": inst.id,
                "device_owner": f"compute:{inst.availability_zone or 'nova'}",
                "status": "ACTIVE" if inst.status == "ACTIVE" else "DOWN",
                "admin_state_up": True,
                "tenant_id": inst.project_id,
                "project_id": inst.project_id,
                "security_groups": [],
                "binding:vnic_type": "normal",
                "description": "",
                "tags": [],
                "port_security_enabled": True,
                "allowed_address_pairs": [],
                "extra_dhcp_opts": [],
                "revision_number": 1,
                "created_at": iso_z(inst.created_at),
                "updated_at": iso_z(inst.updated_at),
            }
            if host_shown:
                view["binding:host_id"] = inst.host or ""
            ports.append(view)
    return ports


@router.get("/v2.0/ports", summary="List ports", response_model=PortList, response_model_exclude_unset=True)
def list_ports(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any] | JSONResponse:
    """The ports of the project's servers, as the resolver allocated them."""
    with ctx.readmodel.lock:
        ports = _ports(ctx, caller)
    fields = (
        "id",
        "network_id",
        "device_id",
        "mac_address",
        "device_owner",
        "status",
        "project_id",
        "tenant_id",
    )
    return _with_fields(request, "ports", [p for p in ports if _matches(request.query_params, p, fields)])


@router.get(
    "/v2.0/ports/{port_id}", summary="Show a port",
    response_model=PortBody, response_model_exclude_unset=True, responses=failures(404),
)
def show_port(
    port_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any] | JSONResponse:
    """One port."""
    with ctx.readmodel.lock:
        ports = _ports(ctx, caller)
    for port in ports:
        if port["id"] == port_id:
            return _with_fields(request, "port", port)
    raise NotFound(f"Port {port_id} could not be found.", kind="PortNotFound")
