"""How a route writes: the event envelope of a caller's request, built in one place, and the claim
of a unique name, decided by the log rather than by this process (see eventsvm.state.names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from eventsvm.api.auth import Identity
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import Conflict, ServiceUnavailable
from eventsvm.api.wire import request_id
from eventsvm.events.model import Event, EventType, new_event, new_id
from eventsvm.state.instances import Instance

# Seconds a client waits before asking again when the verdict on its name was late.
RETRY_AFTER = "1"


def caller_event(
    kind: EventType, aggregate_id: str, body: dict[str, Any], request: Request, caller: Identity
) -> Event:
    """An event the caller's request causes: this request's id, the caller's user and project."""
    return new_event(
        kind,
        aggregate_id,
        body,
        request_id=request_id(request),
        user_id=caller.user_id,
        project_id=caller.project_id,
    )


def chained_event(
    kind: EventType, inst: Instance, body: dict[str, Any], request: Request, caller: Identity, ctx: ApiContext
) -> Event:
    """A command on a server, chained to the newest event of it this process has seen: the next
    sequence, caused by that event, hashed onto it (a delete, an action, an edit)."""
    return Event(
        type=kind,
        event_id=new_id(),
        aggregate_id=inst.id,
        sequence=inst.last_sequence + 1,
        request_id=request_id(request),
        causation_id=inst.last_event_id,
        user_id=caller.user_id,
        project_id=caller.project_id,
        occurred_at=ctx.clock_ms(),
        prev_hash=inst.last_hash,
        body=body,
    )


def append_in_log_order(ctx: ApiContext, event: Event) -> bool:
    """Append an event that takes or frees a unique name (see eventsvm.state.names) and wait for
    this process to fold it in log order; False when it was not folded in time. A delete is
    recorded either way, so a late fold only delays when this process shows it."""
    return ctx.readmodel.append_in_order([event], ctx.name_verdict_timeout)


def won_on_log(ctx: ApiContext, event: Event) -> bool:
    """Append an event whose verdict the log gives (a name claim, a volume reservation) and wait
    for it: True when it holds, False when an earlier event refused it; ServiceUnavailable when
    the verdict is late."""
    if not append_in_log_order(ctx, event):
        raise ServiceUnavailable(
            "The request was recorded but the log has not decided it yet; look before retrying it.",
            headers={"Retry-After": RETRY_AFTER},
        )
    models = ctx.readmodel.models
    with ctx.readmodel.lock:
        return event.event_id not in models.catalog.refused and event.event_id not in models.identity.refused


def claim_name(ctx: ApiContext, event: Event, taken: str) -> None:
    """Append a create that claims a name and return once the log has given it the name; Conflict
    with `taken` when an earlier claim holds it, ServiceUnavailable when the verdict is late."""
    if not won_on_log(ctx, event):
        raise Conflict(taken)


def append_delete(ctx: ApiContext, request: Request, caller: Identity, kind: EventType, aggregate_id: str,
                  body_of: Callable[[], dict[str, Any]], status: int) -> Response:
    """A delete: its event body built from the read model under its lock (`body_of` raises NotFound
    when there is nothing to delete), appended in log order (a delete frees a name), answered with
    `status` and no body."""
    with ctx.readmodel.lock:
        body = body_of()
    append_in_log_order(ctx, caller_event(kind, aggregate_id, body, request, caller))
    return Response(status_code=status)
