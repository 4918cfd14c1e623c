"""Nova's os-server-ips: GET /servers/{id}/ips and /ips/{network_label}, a server's fixed
addresses by network name, each with only its version and address (nova's ips view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import _addresses, visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import NotFound
from eventsvm.api.openapi import failures

router = APIRouter(prefix="/compute/v2.1/servers", tags=["compute"])


def _ips(ctx: ApiContext, caller: Identity, server_id: str) -> dict[str, list[dict[str, Any]]]:
    rm = ctx.readmodel
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)
        by_network = _addresses(rm.models, inst)
    return {name: [{"version": a["version"], "addr": a["addr"]} for a in found]
            for name, found in by_network.items()}


@router.get("/{server_id}/ips", summary="List a server's IP addresses", responses=failures(404))
def list_ips(server_id: str, caller: Identity = Depends(current_identity),
             ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """Every fixed address of the server, by network name."""
    return {"addresses": _ips(ctx, caller, server_id)}


@router.get("/{server_id}/ips/{network_label}", summary="Show a server's IP addresses on one network",
            responses=failures(404))
def show_ips(server_id: str, network_label: str, caller: Identity = Depends(current_identity),
             ctx: ApiContext = Depends(api_context)) -> dict[str, Any]:
    """The server's addresses on the network named `network_label`."""
    found = _ips(ctx, caller, server_id)
    if network_label not in found:
        raise NotFound("Instance is not a member of specified network")
    return {network_label: found[network_label]}
