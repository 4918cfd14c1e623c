"""Keystone v3 under /identity: version documents, tokens with a service catalog, and the
projects, users and role assignments of the identity read model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from eventsvm.api.auth import Identity, api_context, current_identity, verify_token
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, NotFound, Unauthorized
from eventsvm.api.models import AuthRequest
from eventsvm.api.openapi import failures
from eventsvm.api.responses import TokenBody
from eventsvm.api.wire import base_url, iso_micro
from eventsvm.api.writes import caller_event
from eventsvm.events.model import EventType
from eventsvm.identity.tokens import TokenClaims, TokenInvalid, epoch_ms
from eventsvm.state import identity as identity_state
from eventsvm.state.identity import Project, User

router = APIRouter(prefix="/identity", tags=["identity"])

_DOMAIN = {"id": "default", "name": "Default"}


def _version(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    }


@router.get("", include_in_schema=False)
@router.get("/", summary="Keystone's version list (unauthenticated)", status_code=300)
def versions(request: Request) -> JSONResponse:
    """The identity API versions; keystone answers 300 Multiple Choices."""
    return JSONResponse({"versions": {"values": [_version(base_url(request))]}}, status_code=300)


@router.get("/v3", include_in_schema=False)
@router.get("/v3/", summary="Keystone v3 version document (unauthenticated)")
def version(request: Request) -> dict[str, Any]:
    """The v3 version document, the auth_url every client reads first."""
    return {"version": _version(base_url(request))}


def service_catalog(base: str, project_id: str, region: str) -> list[dict[str, Any]]:
    """The catalog a token carries: devstack's prefixes on this server (contract, catalog layout)."""
    services = (
        ("identity", "keystone", f"{base}/identity"),
        ("compute", "nova", f"{base}/compute/v2.1"),
        ("image", "glance", f"{base}/image"),
        ("network", "neutron", f"{base}/network"),
        ("volumev3", "cinderv3", f"{base}/volume/v3/{project_id}"),
        ("block-storage", "cinder", f"{base}/volume/v3/{project_id}"),
    )
    return [
        {
            "type": kind,
            "name": name,
            "id": kind,
            "endpoints": [
                {
                    "id": f"{kind}-{interface}",
                    "interface": interface,
                    "region": region,
                    "region_id": region,
                    "url": url,
                }
                for interface in ("public", "internal", "admin")
            ],
        }
        for kind, name, url in services
    ]


def _token_body(
    ctx: ApiContext, request: Request, claims: TokenClaims, catalog: bool = True
) -> dict[str, Any]:
    models = ctx.readmodel.models.identity
    user, project = models.user(claims.user_id), models.project(claims.project_id)
    token: dict[str, Any] = {
        "methods": list(claims.methods),
        "user": {
            "id": claims.user_id,
            "name": user.name if user else "",
            "domain": _DOMAIN,
            "password_expires_at": None,
        },
        "project": {"id": claims.project_id, "name": project.name if project else "", "domain": _DOMAIN},
        "roles": [{"id": role, "name": role} for role in claims.roles],
        "audit_ids": claims.audit_ids,
        "issued_at": iso_micro(claims.issued_at_ms, zulu=True),
        "expires_at": iso_micro(claims.expires_at_ms, zulu=True),
        "is_domain": False,
    }
    if catalog:
        token["catalog"] = service_catalog(base_url(request), claims.project_id, ctx.region)
    return {"token": token}


def _password_auth(ctx: ApiContext, body: AuthRequest) -> tuple[User, Project, tuple[str, ...]]:
    password = body.auth.identity.password
    if password is None:
        raise BadRequest("Expecting to find password in identity.")
    models = ctx.readmodel.models.identity
    ref = password.user
    user_name, user_domain = ref.name, _domain_of(ref.domain)
    if ref.id is not None:
        known = models.user(ref.id)
        user_name, user_domain = (known.name, known.domain_id) if known else (ref.id, "\x00unknown")
    if user_name is None:
        raise BadRequest("Expecting to find name or id in user.")
    project_name, project_domain = _scope_of(ctx, body, user_name, user_domain)
    try:
        return models.authenticate(user_name, user_domain, ref.password, project_name, project_domain)
    except identity_state.Unauthorized:
        raise Unauthorized() from None


def _domain_of(domain: Any) -> str:
    if domain is None:
        return "default"
    return str(domain.id or domain.name or "default")


def _scope_of(ctx: ApiContext, body: AuthRequest, user_name: str, user_domain: str) -> tuple[str, str]:
    models = ctx.readmodel.models.identity
    scope = body.auth.scope
    project_ref = scope.project if scope is not None and not isinstance(scope, str) else None
    if project_ref is None:
        # keystone would issue an unscoped token; every token here is project-scoped, so use the default one
        user = models.user_by_name(user_name, user_domain)
        project = models.project(user.default_project_id) if user and user.default_project_id else None
        if project is None:
            raise Unauthorized()
        return project.name, project.domain_id
    if project_ref.id is not None:
        project = models.project(project_ref.id)
        return (project.name, project.domain_id) if project else (project_ref.id, "\x00unknown")
    if project_ref.name is None:
        raise BadRequest("Expecting to find name or id in project.")
    return project_ref.name, _domain_of(project_ref.domain)


@router.post(
    "/v3/auth/tokens", status_code=201, summary="Issue a project-scoped token (password or token method)",
    response_model=TokenBody, response_model_exclude_unset=True, responses=failures(400, 401),
)
def issue_token(body: AuthRequest, request: Request, ctx: ApiContext = Depends(api_context)) -> JSONResponse:
    """Authenticate and answer 201 with the token in X-Subject-Token and the catalog in the body."""
    methods = body.auth.identity.methods
    parent: TokenClaims | None = None
    if "password" in methods:
        user, project, roles = _password_auth(ctx, body)
        user_id, project_id = user.id, project.id
    elif "token" in methods and body.auth.identity.token is not None:
        claims = parent = verify_token(ctx, body.auth.identity.token.id)
        user_id = claims.user_id
        project_id = claims.project_id
        scope = body.auth.scope
        if scope is not None and not isinstance(scope, str) and scope.project is not None:
            name, domain = _scope_of(ctx, body, "", "default")
            target = ctx.readmodel.models.identity.project_by_name(name, domain)
            if target is None or not target.enabled:
                raise Unauthorized()
            project_id = target.id
        roles = tuple(sorted(ctx.readmodel.models.identity.roles_of(user_id, project_id)))
        if not roles:
            raise Unauthorized()
    else:
        raise Unauthorized("Only the password and token methods are supported.")
    used = tuple(m for m in methods if m in ("password", "token"))
    issued = ctx.tokens.issue(user_id, project_id, roles, methods=used, rescoped_from=parent)
    claims = TokenClaims(user_id, project_id, tuple(roles), used, issued.audit_id, issued.issued_at,
                         issued.expires_at, issued.chain_audit_id)
    return JSONResponse(
        _token_body(ctx, request, claims), status_code=201, headers={"X-Subject-Token": issued.token}
    )


def _subject(ctx: ApiContext, caller: Identity, subject_token: str | None) -> TokenClaims:
    if not subject_token:
        raise NotFound("Could not find token.")
    try:
        claims = ctx.tokens.validate(subject_token)
    except TokenInvalid:
        raise NotFound("Could not find token.") from None
    if ctx.readmodel.models.identity.check_token_still_valid(claims) is not None:
        raise NotFound("Could not find token.")
    return claims


@router.get("/v3/auth/catalog", summary="The service catalog of the caller's token")
def auth_catalog(
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """The same catalog a token issue carries, for clients that ask for it on its own."""
    base = base_url(request)
    return {
        "catalog": service_catalog(base, caller.project_id, ctx.region),
        "links": {"self": f"{base}/identity/v3/auth/catalog", "previous": None, "next": None},
    }


@router.get(
    "/v3/auth/tokens", summary="Validate a token (X-Subject-Token)",
    response_model=TokenBody, response_model_exclude_unset=True, responses=failures(403, 404),
)
def validate_token(
    request: Request,
    nocatalog: str | None = None,
    subject_token: str | None = Header(None, alias="X-Subject-Token"),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> JSONResponse:
    """The subject token's body, as keystone answers a validation."""
    claims = _subject(ctx, caller, subject_token)
    assert subject_token is not None
    return JSONResponse(
        _token_body(ctx, request, claims, catalog=nocatalog is None),
        headers={"X-Subject-Token": subject_token},
    )


@router.head(
    "/v3/auth/tokens", status_code=200, summary="Check a token (X-Subject-Token)",
    responses=failures(403, 404),
)
def check_token(
    subject_token: str | None = Header(None, alias="X-Subject-Token"),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """200 when the subject token is valid, 404 otherwise."""
    _subject(ctx, caller, subject_token)
    return Response(status_code=200)


@router.delete(
    "/v3/auth/tokens", status_code=204, summary="Revoke a token (X-Subject-Token)",
    responses=failures(403, 404),
)
def revoke_token(
    request: Request,
    subject_token: str | None = Header(None, alias="X-Subject-Token"),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> Response:
    """Append identity.token_revoked with the token's audit id (the token itself is never recorded)."""
    claims = _subject(ctx, caller, subject_token)
    revoked = {"audit_id": claims.audit_id, "expires_at": epoch_ms(claims.expires_at)}
    ctx.readmodel.append([caller_event(EventType.TOKEN_REVOKED, claims.audit_id, revoked, request, caller)])
    return Response(status_code=204)
