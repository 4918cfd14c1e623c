"""What the API needs from the rest of the system, handed to `create_app` in one object."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from eventsvm.api.backlog import BuildBacklog
from eventsvm.api.image_store import ImageStore
from eventsvm.events.model import now_ms
from eventsvm.identity.policy_rules import PolicyEnforcers
from eventsvm.identity.tokens import TokenService
from eventsvm.projections.billing import LedgerView
from eventsvm.projections.readmodel import ReadModel
from eventsvm.state.usage import UsageLedger
from eventsvm.virt.compute_host import Consoles

# Nova's osapi_max_limit: the most items one page of a list holds.
MAX_PAGE = 1000


@dataclass
class ApiContext:
    """The read model (and through it the log), the token service and the API's settings.

    `public_url` is the scheme://host:port clients reach the API at; the token's catalog and the
    version documents point there. When it is None the request's own base URL is used.
    """

    readmodel: ReadModel
    tokens: TokenService
    public_url: str | None = None
    region: str = "RegionOne"
    max_body_bytes: int = 64 * 1024
    max_page: int = MAX_PAGE
    clock_ms: Callable[[], int] = field(default=now_ms)
    # the billing service's ledger behind os-simple-tenant-usage; None: fold one from the instances
    ledger: LedgerView | None = None
    consoles: Consoles = field(default_factory=Consoles)
    # how long a create waits for the log's verdict on its name before answering 503
    name_verdict_timeout: float = 10.0
    # nova's [api] enable_instance_password: answer a create with the guest's adminPass
    enable_instance_password: bool = True
    # the bound on unfinished builds a create must fit in (429 / 503 past it), and their count
    backlog: BuildBacklog = field(default_factory=BuildBacklog)
    # each service's oslo.policy rules, with the operator's <service>-policy.yaml overrides
    policy: PolicyEnforcers = field(default_factory=PolicyEnforcers)
    # other API processes write the same log (`eventsvm up --api-workers N`): writes and token
    # checks catch up with the log first (eventsvm.api.peers)
    peers: bool = False
    # glance's file store under the cloud's data directory; None (a bare API, e.g. in tests): no
    # upload is taken, as glance answers with no store to add to
    image_store: ImageStore | None = None

    def usage_ledger(self) -> UsageLedger:
        """What os-simple-tenant-usage reports from: the billing ledger, or (where no billing
        service runs, e.g. a bare API in tests) the same records taken from the instance model."""
        if self.ledger is not None:
            return self.ledger.current()
        ledger = UsageLedger()
        with self.readmodel.lock:
            for inst in self.readmodel.models.instances.instances.values():
                if inst.launched_at is not None and inst.flavor is not None:
                    ledger.opened(
                        inst.id, inst.project_id, inst.user_id, inst.host or "", inst.flavor, inst.launched_at
                    )
                    if inst.terminated_at is not None:
                        ledger.closed(inst.id, inst.host, inst.terminated_at)
        return ledger

    def base_url(self, request_base: str) -> str:
        """The URL prefix the catalog and version documents use, without a trailing slash."""
        return (self.public_url or request_base).rstrip("/")


P = ParamSpec("P")
R = TypeVar("R")


def reads_models(handler: Callable[P, R]) -> Callable[P, R]:
    """Run a route handler holding the read model's lock, so the projector cannot change a dict
    the handler is iterating over. The handler must take `ctx` (the ApiContext) as a parameter."""

    @functools.wraps(handler)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = kwargs["ctx"]
        assert isinstance(ctx, ApiContext)
        with ctx.readmodel.lock:
            return handler(*args, **kwargs)

    return locked
