"""Neutron v2.0 under /network: networks and subnets from the catalog, ports from the instances
that hold them (the resolver allocates every port; there is no port of its own here)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.models import NetworkCreate, SubnetCreate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize, own_target, permits
from eventsvm.api.responses import NetworkBody, NetworkList, PortBody, PortList
from eventsvm.api.server_request import network_visible
from eventsvm.api.wire import base_url, iso_z
from eventsvm.api.writes import caller_event
from eventsvm.events.model import EventType
from eventsvm.projections.readmodel import Models
from eventsvm.state.catalog import Body

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
        "admin_state_up": True,
        "shared": network.get("shared", False),
        "router:external": network.get("external", False),
        "mtu": network.get("mtu", 1500),
        "subnets": [s["id"] for s in models.catalog.subnets_of(network["id"])],
        "tenant_id": network.get("owner"),
        "project_id": network.get("owner"),
        "description": "",
        "availability_zones": ["nova"],
        "availability_zone_hints": [],
        "port_security_enabled": True,
        "is_default": False,
        "tags": [],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "l2_adjacency": True,
        "created_at": created,
        "updated_at": created,
        "revision_number": 1,
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
        "host_routes": [],
        "tenant_id": network.get("owner"),
        "project_id": network.get("owner"),
        "description": "",
        "subnetpool_id": None,
        "ipv6_ra_mode": None,
        "ipv6_address_mode": None,
        "service_types": [],
        "tags": [],
        "created_at": created,
        "updated_at": created,
        "revision_number": 0,
    }


def _visible_subnets(models: Models, caller: Identity) -> list[Body]:
    return [
        s
        for s in models.catalog.subnets.values()
        if (n := models.catalog.networks.get(s["network_id"])) is not None and network_visible(n, caller)
    ]


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
    for subnet in _visible_subnets(models, caller):
        if subnet["id"] == subnet_id:
            return _with_fields(request, "subnet", subnet_view(models, subnet))
    raise NotFound(f"Subnet {subnet_id} could not be found.", kind="SubnetNotFound")


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
        start = _address(spec.allocation_pools[0].start, cidr, "allocation_pools")
        end = _address(spec.allocation_pools[0].end, cidr, "allocation_pools")
        if int(start) > int(end):
            raise BadRequest("Invalid input for allocation_pools: the start is after the end.")
        if gateway is not None and int(start) <= int(ipaddress.ip_address(gateway)) <= int(end):
            raise Conflict(f"Gateway ip {gateway} conflicts with allocation pool {start}-{end}")
    else:
        first = cidr.network_address + 1
        start = first + 1 if gateway is not None and ipaddress.ip_address(gateway) == first else first
        end = cidr.broadcast_address - 1 if cidr.version == 4 else cidr.broadcast_address
    for nameserver in spec.dns_nameservers:
        try:
            ipaddress.ip_address(nameserver)
        except ValueError:
            raise BadRequest(
                f"Invalid input for dns_nameservers: '{nameserver}' is not a valid IP address."
            ) from None
    subnet_id = str(uuid.uuid4())
    subnet = {
        "id": subnet_id,
        "network_id": spec.network_id,
        "name": spec.name,
        "cidr": str(cidr),
        "gateway_ip": gateway,
        "allocation_start": str(start),
        "allocation_end": str(end),
        "ip_version": spec.ip_version,
        "enable_dhcp": spec.enable_dhcp,
        "dns_nameservers": list(spec.dns_nameservers),
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
