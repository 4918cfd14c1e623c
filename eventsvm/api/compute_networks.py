"""Nova's network proxy under /compute/v2.1/os-networks (deprecated from 2.36, read-only here as
in nova with neutron): the networks the project may use, named by `label`, as tempest's compute
tests find the network named by its fixed_network_name and `nova network-list` reads them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import NotFound
from eventsvm.api.network import visible_network
from eventsvm.api.openapi import failures
from eventsvm.api.server_request import network_visible
from eventsvm.projections.readmodel import Models
from eventsvm.state.catalog import Body

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

# nova-network's fields that a neutron-backed nova answers with None (nova's network_dict)
_UNSET = ("netmask", "broadcast", "dns1", "dns2", "cidr_v6", "gateway_v6", "netmask_v6")


def compute_network_view(models: Models, network: Body) -> dict[str, Any]:
    """A network as nova's proxy shows it: its id, its name as `label`, its first IPv4 subnet."""
    subnet = next((s for s in models.catalog.subnets_of(network["id"]) if s.get("ip_version", 4) == 4), None)
    view: dict[str, Any] = dict.fromkeys(_UNSET)
    view.update(id=network["id"], label=network["name"],
                cidr=None if subnet is None else subnet.get("cidr"),
                gateway=None if subnet is None else subnet.get("gateway_ip"))
    return view


@router.get("/os-networks", summary="List networks (nova's proxy to neutron)")
@reads_models
def list_compute_networks(
    caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The networks the caller's project may boot on, as neutron's own list shows them."""
    models = ctx.readmodel.models
    return {"networks": [compute_network_view(models, n) for n in models.catalog.networks.values()
                         if network_visible(n, caller)]}


@router.get("/os-networks/{network_id}", summary="Show a network (nova's proxy)", responses=failures(404))
@reads_models
def show_compute_network(
    network_id: str, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """One network the caller may use; nova's 404 for one it may not see or that does not exist."""
    models = ctx.readmodel.models
    network = visible_network(models, caller, network_id)
    if network is None:
        raise NotFound("Network could not be found.")
    return {"network": compute_network_view(models, network)}
