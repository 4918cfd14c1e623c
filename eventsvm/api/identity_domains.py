"""Keystone v3's domains under /identity/v3/domains, read-only: the default domain as keystone
bootstraps it, and any other domain a project or user names (by its id; there are no domain
events, see eventsvm.state.identity)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.wire import base_url
from eventsvm.state.identity import DEFAULT_DOMAIN_ID, domain_name

router = APIRouter(prefix="/identity", tags=["identity"])


def domain_view(base: str, domain_id: str) -> dict[str, Any]:
    """A domain as keystone shows it."""
    return {
        "id": domain_id,
        "name": domain_name(domain_id),
        "description": "The default domain" if domain_id == DEFAULT_DOMAIN_ID else "",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": {"self": f"{base}/identity/v3/domains/{domain_id}"},
    }


@router.get("/v3/domains", summary="List domains (admin)", responses=failures(403))
@reads_models
def list_domains(
    request: Request,
    name: str | None = None,
    enabled: str | None = None,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Every domain, filtered by exact name and by `enabled` (all are enabled)."""
    base = base_url(request)
    wanted_enabled = enabled is None or enabled.lower() not in ("0", "false")
    domains = [domain_view(base, d) for d in ctx.readmodel.models.identity.domain_ids()]
    return {
        "domains": [d for d in domains if (name is None or d["name"] == name) and wanted_enabled],
        "links": {"self": f"{base}/identity/v3/domains", "next": None, "previous": None},
    }


@router.get("/v3/domains/{domain_id}", summary="Show a domain (admin, or a member of a project in it)",
            responses=failures(403, 404))
@reads_models
def show_domain(
    domain_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One domain; a project-scoped caller may see its own project's domain, as keystone allows."""
    models = ctx.readmodel.models.identity
    if domain_id not in models.domain_ids():
        raise NotFound(f"Could not find domain: {domain_id}.")
    return {"domain": domain_view(base_url(request), domain_id)}
