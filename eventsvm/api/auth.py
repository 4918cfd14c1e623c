"""The token dependency: every authenticated route takes `Depends(current_identity)`.

A token is good when the Fernet layer accepts it (genuine, unexpired) and the identity read model
still stands behind it (user and project enabled, roles still assigned, audit id not revoked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from eventsvm.api.context import ApiContext
from eventsvm.api.errors import Unauthorized
from eventsvm.api.peers import catch_up
from eventsvm.events.model import Topic
from eventsvm.identity.policy_rules import PolicyEnforcers
from eventsvm.identity.tokens import TokenClaims, TokenInvalid, TokenService
from eventsvm.projections.readmodel import ReadModel

token_header = APIKeyHeader(
    name="X-Auth-Token", auto_error=False, description="a token from POST /identity/v3/auth/tokens"
)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the claims of a verified token (never the token itself)."""

    user_id: str
    project_id: str
    roles: tuple[str, ...]
    audit_id: str
    issued_at_ms: int
    expires_at_ms: int
    chain_audit_id: str | None = None
    # a service's admin rule (eventsvm.identity.policy_rules.ADMIN_RULES) for this caller, asked
    # of the policy at most once per service and request: most requests need one service's
    admin_rule: Callable[[str], bool] = field(default=lambda _service: False, compare=False, repr=False)

    def admin_of(self, service: str) -> bool:
        """Whether `service` treats the caller as an administrator, who sees every project's
        resources: its context_is_admin rule (keystone's admin_required), as the operator's
        policy file sets it. What else the caller may do is the route's rule."""
        return self.admin_rule(service)

    def sees(self, service: str, project_id: str | None) -> bool:
        """Whether a resource of `project_id` exists for the caller in `service`: the services
        scope their database reads to the token's project unless the context is an admin's."""
        return project_id == self.project_id or self.admin_of(service)

    @classmethod
    def from_claims(cls, claims: TokenClaims, policies: PolicyEnforcers) -> Identity:
        """The identity a token's claims describe, with the services it is an admin of."""
        return cls(
            claims.user_id,
            claims.project_id,
            claims.roles,
            claims.audit_id,
            claims.issued_at_ms,
            claims.expires_at_ms,
            claims.chain_audit_id,
            functools.cache(functools.partial(policies.admin_of, claims.user_id, claims.project_id,
                                              claims.roles)),
        )


def context_of(request: Request) -> ApiContext:
    """The ApiContext the app was created with."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def api_context(request: Request) -> ApiContext:
    """`context_of` as a dependency. Async, as every dependency here that neither waits nor does
    I/O: FastAPI runs a plain `def` dependency on its thread pool, a hop to another thread and
    back for each one, every request."""
    return context_of(request)


def valid_claims(tokens: TokenService, readmodel: ReadModel, token: str) -> TokenClaims | None:
    """The claims of a token that is genuine, unexpired and still backed by the identity model;
    None for any other. The one check every token meets, in the API and on the dashboard."""
    try:
        claims = tokens.validate(token)
    except TokenInvalid:
        return None
    with readmodel.lock:
        reason = readmodel.models.identity.check_token_still_valid(claims)
    return claims if reason is None else None


def verify_token(ctx: ApiContext, token: str | None) -> TokenClaims:
    """The claims of a valid token (see valid_claims); 401 in keystone's shape otherwise.

    The token's decryption is cached (TokenService.validate); its revocation is not: with peers,
    the identity topic is caught up first, so a token revoked through any worker is refused by
    every worker from the moment the revocation was answered."""
    if ctx.peers and token:
        catch_up(ctx.readmodel, topics=(Topic.IDENTITY,))  # revocations, disabled users, roles
    claims = valid_claims(ctx.tokens, ctx.readmodel, token) if token else None
    if claims is None:
        raise Unauthorized()
    return claims


def caller_of(request: Request, ctx: ApiContext, token: str | None) -> Identity:
    """The caller behind X-Auth-Token, verified once per request (the policy dependency and the
    handler share it); 401 in keystone's shape when there is none."""
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Identity):
        caller = Identity.from_claims(verify_token(ctx, token), ctx.policy)
        request.state.caller = caller
    return caller


async def current_identity(
    request: Request, token: str | None = Depends(token_header), ctx: ApiContext = Depends(api_context)
) -> Identity:
    """The caller behind X-Auth-Token; 401 in keystone's shape when there is none. Async (see
    api_context): enforce_route_policy, which every route runs first, has verified it already."""
    return caller_of(request, ctx, token)
