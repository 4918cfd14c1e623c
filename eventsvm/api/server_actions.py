"""Nova's power and lock actions (POST /servers/{id}/action: os-stop, os-start, reboot, pause,
unpause, suspend, resume, lock, unlock) as sagas on the log (DESIGN §7).

The API checks policy, the lock and the server's state against eventsvm.state.server_actions and
appends `instance.action_requested` chained to the server's newest event, on its host's partition
so the host's spawner carries it out; it answers 202 as nova does. Lock and unlock have no host
step: they hold once they are on the log.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from eventsvm.api import microversion
from eventsvm.api.auth import Identity
from eventsvm.api.compute import visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict
from eventsvm.api.policy_check import authorize, own_target
from eventsvm.api.writes import chained_event
from eventsvm.events.model import EventType, Topic
from eventsvm.identity import policy
from eventsvm.projections.readmodel import ReadModel
from eventsvm.state.instances import Instance
from eventsvm.state.server_actions import REQUEST_KEYS, ActionRefused, check_state

_REBOOT_TYPES = ("HARD", "Hard", "hard", "SOFT", "Soft", "soft")
_MAX_REASON = 255


# the actions a microversion added: below it nova knows no such action
_SINCE = {"trigger_crash_dump": microversion.CRASH_DUMP}


def is_server_action(key: str, version: tuple[int, int]) -> bool:
    """Whether a request key of POST /servers/{id}/action is one of the actions run here, at the
    microversion serving the request."""
    return key in REQUEST_KEYS and version >= _SINCE.get(key, microversion.MIN_VERSION)


def _reboot_type(args: Any) -> str:
    if not isinstance(args, dict) or "type" not in args:
        raise BadRequest(f"Invalid input for field/attribute reboot. Value: {args}. "
                         "'type' is a required property")
    kind = args["type"]
    if kind not in _REBOOT_TYPES:
        raise BadRequest(f"Invalid input for field/attribute type. Value: {str(kind)[:40]}. "
                         f"{str(kind)[:40]!r} is not one of {list(_REBOOT_TYPES)}")
    return str(kind).upper()


def _locked_reason(args: Any) -> str | None:
    reason = args.get("locked_reason") if isinstance(args, dict) else None
    if reason is not None and (not isinstance(reason, str) or len(reason) > _MAX_REASON):
        raise BadRequest("Invalid input for field/attribute locked_reason. "
                         f"Value must be a string of at most {_MAX_REASON} characters.")
    return reason


def request_action(
    server_id: str, key: str, args: Any, request: Request, caller: Identity, ctx: ApiContext
) -> Response:
    """Check and append one server action; 202, or nova's 400 / 403 / 404 / 409."""
    action = REQUEST_KEYS[key]
    reboot_type = _reboot_type(args) if action == "reboot" else None
    reason = _locked_reason(args) if action == "lock" else None
    if action == "trigger_crash_dump" and args is not None:
        raise BadRequest(f"Invalid input for field/attribute trigger_crash_dump. Value: {str(args)[:40]}. "
                         f"{str(args)[:40]} is not of type 'null'")
    rm = ctx.readmodel
    with rm.lock:
        # the action's own rule (servers:stop, os-lock-server:lock ...) is the route table's
        # (eventsvm.api.authorization.ACTION_RULES), checked before this handler runs
        inst = visible_server(rm.models, caller, server_id)
        body = _lock_body(inst, caller, action, reason, ctx) if action in ("lock", "unlock") else \
            host_action_body(inst, caller, action, reboot_type)
        if body is None:
            return Response(status_code=202)  # the owner locking what it already locked: nothing to do
        event = chained_event(EventType.INSTANCE_ACTION_REQUESTED, inst, body, request, caller, ctx)
        partition = host_partition(rm, inst)
        if action == "trigger_crash_dump" and inst.host is None:
            # a server in ERROR that never reached a host has no guest to signal (nova's 409)
            raise Conflict(f"Instance {inst.id} is not ready")
    rm.append([event], [partition])
    return Response(status_code=202)


def host_partition(rm: ReadModel, inst: Instance) -> int | None:
    """The partition of the action topic its host's spawner reads (docs/decisions.md, Routing work
    to a compute host); None for a server without a host. Call with the read model's lock held."""
    host = rm.models.hosts.get(inst.host or "")
    slot = host.get("slot") if host is not None else None
    return None if slot is None else slot % rm.log.partitions(str(Topic.ACTION_REQUESTED))


def host_action_body(
    inst: Instance, caller: Identity, action: str, reboot_type: str | None
) -> dict[str, Any]:
    """The action_requested body of an action with a host step, or nova's 409 (locked, or a
    state the action may not start from)."""
    # nova checks the lock before the state (check_instance_lock wraps check_instance_state). Not a
    # policy rule: nova's 409 for a locked server, decided by the server's state, not the table
    if policy.lock_holds(inst.locked, caller.admin_of("nova")):
        raise Conflict(f"Instance {inst.id} is locked")
    try:
        task_state = check_state(action, inst.vm_state, inst.task_state, reboot_type)
    except ActionRefused as refused:
        raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in "
                       f"{refused.attr} {refused.state}") from None
    return {"action": action, "host": inst.host, "vm_state": inst.vm_state, "task_state": task_state,
            "reboot_type": reboot_type, "locked_reason": None, "locked_by": None}


def _lock_body(
    inst: Instance, caller: Identity, action: str, reason: str | None, ctx: ApiContext
) -> dict[str, Any] | None:
    # nova's locked_by: 'owner' when the caller belongs to the server's project, else 'admin'
    role = "owner" if caller.project_id == inst.project_id else "admin"
    if action == "lock":
        if inst.locked and role == "owner":
            return None
        return {"action": "lock", "host": inst.host, "vm_state": inst.vm_state, "task_state": None,
                "reboot_type": None, "locked_reason": reason, "locked_by": role}
    if inst.locked_by not in (None, role):
        # a second rule only when the lock is someone else's (an owner unlocking an admin's lock),
        # which the route table cannot know: checked here through the same policy, as nova's
        # context.can(unlock_override) in its unlock, so an operator's policy.yaml governs it too
        authorize(ctx, caller, "nova", "os_compute_api:os-lock-server:unlock:unlock_override",
                  {**own_target(caller), "project_id": inst.project_id, "user_id": inst.user_id})
    return {"action": "unlock", "host": inst.host, "vm_state": inst.vm_state, "task_state": None,
            "reboot_type": None, "locked_reason": None, "locked_by": None}

