"""Nova's os-instance-actions under /compute/v2.1: a server's history, read from the `actions`
timeline the projection keeps of every event of the instance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request, Response

from eventsvm.api import microversion
from eventsvm.api.auth import Identity, api_context, current_identity
from eventsvm.api.compute import visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotFound
from eventsvm.api.openapi import failures
from eventsvm.api.server_actions import is_server_action, request_action
from eventsvm.api.server_lifecycle import LIFECYCLE_ACTIONS
from eventsvm.api.server_moves import is_move_action, request_move
from eventsvm.projections.history import instance_actions
from eventsvm.virt.hypervisor import DomainNotFound, HypervisorUnavailable

router = APIRouter(prefix="/compute", tags=["compute"])


def _actions(ctx: ApiContext, caller: Identity, server_id: str, version: tuple[int, int]
             ) -> list[dict[str, Any]]:
    """The server's actions, newest first, when the caller may see the server."""
    with ctx.readmodel.lock:
        models = ctx.readmodel.models
        inst = models.instances.get(server_id)
        # deleted servers keep their history; nova shows it from 2.21, a 404 before
        if (
            inst is None
            or inst.project_id is None
            or (inst.status == "DELETED" and version < microversion.DELETED_ACTIONS)
            or not caller.sees("nova", inst.project_id)
        ):
            raise NotFound(f"Instance {server_id} could not be found.")
        return instance_actions(models, inst.id)


@router.get(
    "/v2.1/servers/{server_id}/os-instance-actions", summary="A server's actions",
    responses=failures(404),
)
def list_actions(
    server_id: str, request: Request, caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """The requests made on the server (create, delete, the server actions), newest first, from the log."""
    actions = _actions(ctx, caller, server_id, microversion.served(request))
    return {"instanceActions": [_at_2_1(a, with_events=False) for a in actions]}


# nova shows an action's updated_at from microversion 2.58 and an event's host from 2.62; this API
# serves 2.1, whose schema (tempest's too) allows neither
_AFTER_2_1 = frozenset({"updated_at"})
_EVENT_AFTER_2_1 = frozenset({"host", "hostId"})


def _at_2_1(action: dict[str, Any], with_events: bool) -> dict[str, Any]:
    shown = {k: v for k, v in action.items() if k not in _AFTER_2_1 and k != "events"}
    if with_events:
        events = action["events"]
        shown["events"] = [{k: v for k, v in e.items() if k not in _EVENT_AFTER_2_1} for e in events]
    return shown


@router.get(
    "/v2.1/servers/{server_id}/os-instance-actions/{action_request_id}", summary="One action with events",
    responses=failures(404),
)
def show_action(
    server_id: str,
    action_request_id: str,
    request: Request,
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any]:
    """One action and the pipeline stages it went through, with their result."""
    for action in _actions(ctx, caller, server_id, microversion.served(request)):
        if action["request_id"] == action_request_id:
            return {"instanceAction": _at_2_1(action, with_events=True)}
    raise NotFound(f"Action {action_request_id} on instance {server_id} could not be found.")


# -- POST /servers/{id}/action: os-getConsoleOutput ----------------------------------------------
def _console_length(raw: Any) -> int | None:
    """Nova takes `length` as an int or a numeric string; null or -1 mean the whole log."""
    if raw is None:
        return None
    try:
        length = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute length. Value: {str(raw)[:40]}.") from None
    if length < -1:
        raise BadRequest("Invalid input for field/attribute length. Value must be -1 or more.")
    return None if length == -1 else length


@router.post(
    "/v2.1/servers/{server_id}/action", summary="A server action", response_model=None,
    responses={202: {"description": "A power, lock or move action was accepted (no body; a rebuild "
                                    "answers with the server)"},
               204: {"description": "A confirmResize was accepted"},
               **failures(400, 403, 404, 409)},
)
def server_action(
    server_id: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    caller: Identity = Depends(current_identity),
    ctx: ApiContext = Depends(api_context),
) -> dict[str, Any] | Response:
    """The guest's serial console (`openstack console log show`), and the power and lock actions
    (eventsvm.api.server_actions); other actions are not offered."""
    if len(body) != 1:
        raise BadRequest("A server action body names exactly one action.")
    ((action, args),) = body.items()
    if action in LIFECYCLE_ACTIONS:
        return LIFECYCLE_ACTIONS[action](server_id, args, request, caller, ctx)
    if is_server_action(action, microversion.served(request)):
        return request_action(server_id, action, args, request, caller, ctx)
    if is_move_action(action):
        return request_move(server_id, action, args, request, caller, ctx)
    if action != "os-getConsoleOutput":
        raise BadRequest(f"There is no such action: {action[:60]}")
    length = _console_length((args or {}).get("length") if isinstance(args, dict) else None)
    with ctx.readmodel.lock:
        inst = visible_server(ctx.readmodel.models, caller, server_id)
        host = ctx.readmodel.models.hosts.get(inst.host or "")
        status = inst.status
    if host is None or status != "ACTIVE":
        raise Conflict(f"Instance {server_id} is not ready yet (status {status}); it has no console.")
    try:
        output = ctx.consoles.output(host["hypervisor_uri"], inst.id, length)
    except DomainNotFound:
        raise NotFound(f"Guest of instance {server_id} could not be found on {inst.host}.") from None
    except HypervisorUnavailable:
        raise Conflict(f"The hypervisor of {inst.host} cannot be reached; try again later.") from None
    return {"output": output}
