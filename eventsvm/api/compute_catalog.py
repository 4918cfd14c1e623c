"""Nova's flavors and keypairs under /compute/v2.1, read from and appended to the catalog."""

from __future__ import annotations

import string
import uuid
import zlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api import keypair_keys, microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import compute_base
from eventsvm.api.context import ApiContext, reads_models
from eventsvm.api.errors import BadRequest, Conflict, Forbidden, NotFound
from eventsvm.api.models import FlavorCreate, KeypairCreate
from eventsvm.api.openapi import failures
from eventsvm.api.policy_check import authorize
from eventsvm.api.responses import FlavorBody, FlavorDetailList, FlavorList, KeypairBody, KeypairList
from eventsvm.api.wire import boolean_word, iso_z, links, page, parse_limit, wants_detail
from eventsvm.api.writes import append_delete, caller_event, claim_name
from eventsvm.events.model import EventType
from eventsvm.state.catalog import Body

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])

MAX_KEYPAIRS = 100  # nova's [quota] key_pairs
_KEY_NAME_CHARS = frozenset("_- " + string.digits + string.ascii_letters)


# -- flavors -----------------------------------------------------------------------------------
def flavor_view(base: str, flavor: Body, detail: bool = True) -> dict[str, Any]:
    """A flavor with nova's field names (ram in MB, disk in GB)."""
    view: dict[str, Any] = {
        "id": flavor["id"],
        "name": flavor["name"],
        "links": links(base, f"flavors/{flavor['id']}"),
    }
    if detail:
        view.update(
            {
                "ram": flavor["ram_mb"],
                "disk": flavor["disk_gb"],
                "vcpus": flavor["vcpus"],
                "OS-FLV-EXT-DATA:ephemeral": flavor.get("ephemeral_gb", 0),
                "OS-FLV-DISABLED:disabled": False,
                "swap": flavor.get("swap_mb") or "",
                "rxtx_factor": 1.0,
                "os-flavor-access:is_public": flavor.get("is_public", True),
            }
        )
    return view


def _is_public_filter(raw: str | None, caller: Identity) -> bool | None:
    if raw is None:
        return True
    if raw.strip().lower() == "none":
        return None if caller.admin_of("nova") else True
    value = boolean_word(raw)
    if value is None:
        raise BadRequest(f"Invalid is_public filter [{raw}]")
    return value or not caller.admin_of("nova")


def _int_filter(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest(f"Invalid {name} filter [{raw}]")
    return int(raw)


@router.get(
    "/flavors", summary="List flavors (id, name, links)",
    response_model=FlavorList, response_model_exclude_unset=True, responses=failures(400),
)
@router.get(
    "/flavors/detail", summary="List flavors with details",
    response_model=FlavorDetailList, response_model_exclude_unset=True, responses=failures(400),
)
@reads_models
def list_flavors(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """Flavors, filtered by is_public (None = all, for admin), minRam and minDisk; at /detail with
    ram, disk, vcpus and the extension fields."""
    query = request.query_params
    public = _is_public_filter(query.get("is_public"), caller)
    min_ram, min_disk = (
        _int_filter(query.get("minRam"), "minRam"),
        _int_filter(query.get("minDisk"), "minDisk"),
    )
    limit = parse_limit(query.get("limit"), ctx.max_page)
    flavors = sorted(ctx.readmodel.models.catalog.flavors.values(), key=lambda f: f["id"])
    chosen = [
        f
        for f in flavors
        if (public is None or f.get("is_public", True) == public)
        and (min_ram is None or f["ram_mb"] >= min_ram)
        and (min_disk is None or f["disk_gb"] >= min_disk)
    ]
    base, detail = compute_base(request), wants_detail(request)
    return {
        "flavors": [
            flavor_view(base, f, detail) for f in page(chosen, lambda f: f["id"], limit, query.get("marker"))
        ]
    }


def _flavor(ctx: ApiContext, flavor_id: str) -> Body:
    flavor = ctx.readmodel.models.catalog.flavors.get(flavor_id)
    if flavor is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return flavor


@router.get(
    "/flavors/{flavor_id}", summary="Show a flavor (by id only, as nova)",
    response_model=FlavorBody, response_model_exclude_unset=True, responses=failures(404),
)
def show_flavor(
    flavor_id: str,
    request: Request,
    _: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One flavor by id; a name answers 404 so the clients fall back to listing."""
    return {"flavor": flavor_view(compute_base(request), _flavor(ctx, flavor_id))}


@router.get("/flavors/{flavor_id}/os-extra_specs", summary="A flavor's extra specs", responses=failures(404))
def flavor_extra_specs(
    flavor_id: str, _: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The flavor's extra_specs (scheduler hints such as hw:cpu_policy)."""
    return {"extra_specs": dict(_flavor(ctx, flavor_id).get("extra_specs") or {})}


@router.post(
    "/flavors", summary="Create a flavor (admin)",
    response_model=FlavorBody, response_model_exclude_unset=True, responses=failures(400, 403, 409),
)
def create_flavor(
    body: FlavorCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """Append catalog.flavor_created; 409 when the id or the name is taken."""
    spec = body.flavor
    if spec.name != spec.name.strip():
        raise BadRequest("Invalid input for field/attribute name: leading or trailing whitespace.")
    flavor_id = spec.id if spec.id not in (None, "auto") else str(uuid.uuid4())
    assert flavor_id is not None
    flavor = {
        "id": flavor_id,
        "name": spec.name,
        "vcpus": spec.vcpus,
        "ram_mb": spec.ram,
        "disk_gb": spec.disk,
        "ephemeral_gb": spec.ephemeral,
        "swap_mb": spec.swap or 0,
        "is_public": spec.is_public,
        "extra_specs": {},
    }
    rm = ctx.readmodel
    with rm.lock:
        catalog = rm.models.catalog
        if flavor_id in catalog.flavors:
            raise Conflict(f"Flavor with ID {flavor_id} already exists.")
        if spec.name in catalog.flavor_names:
            raise Conflict(f"Flavor with name {spec.name} already exists.")
    event = caller_event(EventType.FLAVOR_CREATED, flavor_id, flavor, request, caller)
    claim_name(ctx, event, f"Flavor with ID {flavor_id} or name {spec.name} already exists.")
    return {"flavor": flavor_view(compute_base(request), flavor)}


@router.delete(
    "/flavors/{flavor_id}", status_code=202, summary="Delete a flavor (admin)",
    responses=failures(403, 404),
)
def delete_flavor(
    flavor_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.flavor_deleted; servers keep the flavor they were built with."""
    return append_delete(ctx, request, caller, EventType.FLAVOR_DELETED, flavor_id,
                         lambda: {"id": _flavor(ctx, flavor_id)["id"]}, 202)


# -- keypairs ----------------------------------------------------------------------------------
def _keypair_view(keypair: Body, version: tuple[int, int], full: bool = False) -> dict[str, Any]:
    view = {
        "name": keypair["name"],
        "public_key": keypair["public_key"],
        "fingerprint": keypair["fingerprint"],
    }
    if version >= microversion.KEYPAIR_TYPES:
        view["type"] = keypair.get("key_type") or "ssh"
    if full:
        view.update(
            {
                "user_id": keypair["user_id"],
                "id": zlib.crc32(f"{keypair['user_id']}:{keypair['name']}".encode()) & 0x7FFFFFFF,
                "created_at": iso_z(keypair.get("created_at")),
                "updated_at": None,
                "deleted": False,
                "deleted_at": None,
            }
        )
    return view


@router.get(
    "/os-keypairs", summary="List the caller's keypairs",
    response_model=KeypairList, response_model_exclude_unset=True,
)
@reads_models
def list_keypairs(
    request: Request, caller: Identity = Depends(current_identity), ctx: ApiContext = Depends(api_context)
) -> dict[str, Any]:
    """The caller's keypairs by name, each wrapped as nova does."""
    owner = keypair_owner(request, caller)
    mine = sorted(
        (k for (user, _), k in ctx.readmodel.models.catalog.keypairs.items() if user == owner),
        key=lambda k: k["name"],
    )
    version = microversion.served(request)
    return {"keypairs": [{"keypair": _keypair_view(k, version)} for k in mine]}


@router.post(
    "/os-keypairs", summary="Import a keypair, or generate one (its private key answered once)",
    response_model=KeypairBody, response_model_exclude_unset=True, responses=failures(400, 403, 409),
)
def create_keypair(
    body: KeypairCreate,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> JSONResponse:
    """Append catalog.keypair_created, importing the public key given or generating a key pair,
    whose private key is answered once and never recorded (docs/decisions.md); 201 from 2.2."""
    spec = body.keypair
    version = microversion.served(request)
    for field, since in (("type", microversion.KEYPAIR_TYPES), ("user_id", microversion.KEYPAIR_USERS)):
        if version < since and field in spec.model_fields_set:
            raise BadRequest("Invalid input for field/attribute keypair. Value: {...}. "
                             f"Additional properties are not allowed ('{field}' was unexpected)")
    owner = spec.user_id or caller.user_id
    if owner != caller.user_id:
        # nova 2.10's create checks its rule against the user named (an admin's, by default)
        authorize(ctx, caller, "nova", "os_compute_api:os-keypairs:create", {"user_id": owner})
    if not spec.name.strip() or not set(spec.name) <= _KEY_NAME_CHARS:
        raise BadRequest("Keypair name contains unsafe characters")
    private_key = None
    if spec.public_key is None:
        public_key, private_key = keypair_keys.generate(spec.type, owner, caller.project_id)
    else:
        public_key = spec.public_key.strip()
    fingerprint = keypair_keys.fingerprint(spec.type, public_key)
    keypair = {
        "name": spec.name,
        "user_id": owner,
        "public_key": public_key,
        "fingerprint": fingerprint,
        "key_type": spec.type,
    }
    taken = f"Key pair '{spec.name}' already exists."
    rm = ctx.readmodel
    with rm.lock:
        catalog = rm.models.catalog
        # answered here when this process already knows; otherwise the log decides (claim_name)
        if catalog.keypair(owner, spec.name) is not None:
            raise Conflict(taken)
        if sum(1 for (user, _) in catalog.keypairs if user == owner) >= MAX_KEYPAIRS:
            raise Forbidden("Quota exceeded, too many key pairs.")
    event = caller_event(EventType.KEYPAIR_CREATED, f"{owner}:{spec.name}", keypair, request, caller)
    claim_name(ctx, event, taken)
    answer = {**_keypair_view(keypair, version), "user_id": owner}
    if private_key is not None:
        answer["private_key"] = private_key
    created = 201 if version >= microversion.KEYPAIR_TYPES else 200
    return JSONResponse({"keypair": answer}, status_code=created)


def keypair_owner(request: Request, caller: Identity) -> str:
    """Whose keypairs a request reads or deletes: the caller's, or from 2.10 the user_id the query
    names (the route's policy lets only an admin name another user)."""
    if microversion.served(request) >= microversion.KEYPAIR_USERS:
        return request.query_params.get("user_id") or caller.user_id
    return caller.user_id


def _keypair(ctx: ApiContext, owner: str, name: str) -> Body:
    keypair = ctx.readmodel.models.catalog.keypair(owner, name)
    if keypair is None:
        raise NotFound(f"Keypair {name} not found for user {owner}")
    return keypair


@router.get(
    "/os-keypairs/{name}", summary="Show one of the caller's keypairs",
    response_model=KeypairBody, response_model_exclude_unset=True, responses=failures(404),
)
def show_keypair(
    name: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One keypair with its user and creation time."""
    owner = keypair_owner(request, caller)
    keypair = _keypair(ctx, owner, name)
    created = ctx.readmodel.models.catalog.created_at.get(f"{owner}:{name}")
    shown = {**keypair, "created_at": created}
    return {"keypair": _keypair_view(shown, microversion.served(request), full=True)}


@router.delete(
    "/os-keypairs/{name}", status_code=202, summary="Delete one of the caller's keypairs (204 from 2.2)",
    responses=failures(404),
)
def delete_keypair(
    name: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append catalog.keypair_deleted; servers built with the key keep it."""
    owner = keypair_owner(request, caller)
    return append_delete(
        ctx, request, caller, EventType.KEYPAIR_DELETED, f"{owner}:{name}",
        lambda: {"name": _keypair(ctx, owner, name)["name"], "user_id": owner},
        # nova answers 202 at 2.1 and 204 from 2.2
        204 if microversion.served(request) >= microversion.KEYPAIR_TYPES else 202,
    )
