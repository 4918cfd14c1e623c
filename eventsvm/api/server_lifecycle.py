"""The server actions of issue 13's snapshot and shelve family on POST /servers/{id}/action:
createImage (eventsvm.api.server_snapshot), shelve / shelveOffload / unshelve, an admin's
os-resetState, forceDelete and changePassword. Each is nova's API with nova's codes; the ones
with a host step are sagas on the log (DESIGN §7), the others are decided here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from eventsvm.api.auth import Identity
from eventsvm.api.compute import delete_server, visible_server
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import BadRequest, Conflict, NotImplementedHere
from eventsvm.api.server_actions import host_action_body, host_partition
from eventsvm.api.server_snapshot import append_with_image, request_snapshot
from eventsvm.api.writes import chained_event
from eventsvm.events.model import Event, EventType
from eventsvm.identity import policy
from eventsvm.state.instances import Instance
from eventsvm.state.server_actions import CHANGE_PASSWORD_STATES, RESET_STATES

ActionRoute = Callable[[str, Any, Request, Identity, ApiContext], Response]


def reset_state(server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext) -> Response:
    """os-resetState (admin by default: os-admin-actions:reset_state, the route table's rule): the
    server takes the vm_state named and loses its task; 202. Nova records it as the instance
    action resetState, with no step, and checks neither lock nor state."""
    state = args.get("state") if isinstance(args, dict) else None
    if state not in RESET_STATES or set(args) != {"state"}:
        raise BadRequest(f"Invalid input for field/attribute os-resetState. Value: {str(args)[:80]}. "
                         f"'state' must be one of {list(RESET_STATES)} and the only property")
    rm = ctx.readmodel
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)
        body = {"action": "resetState", "host": inst.host, "vm_state": state, "task_state": None,
                "reboot_type": None, "locked_reason": None, "locked_by": None, "image_id": None}
        placed = _command(inst, body, request, caller, ctx)
    rm.append(*placed)
    return Response(status_code=202)


def _command(
    inst: Instance, body: dict[str, Any], request: Request, caller: Identity, ctx: ApiContext
) -> tuple[list[Event], list[int | None]]:
    """The action_requested of `body` and its partition (the host's; by key for a server without
    one, which the scheduler reads); call with the read model's lock held, append after."""
    event = chained_event(EventType.INSTANCE_ACTION_REQUESTED, inst, body, request, caller, ctx)
    return [event], [host_partition(ctx.readmodel, inst)]


# -- shelve / shelveOffload / unshelve ---------------------------------------------------------------
def _no_args(action: str, args: Any) -> None:
    # microversion 2.1 takes no arguments (unshelve's availability_zone is 2.77's)
    if args not in (None, {}):
        raise BadRequest(f"Invalid input for field/attribute {action}. Value: {str(args)[:40]}. "
                         "It takes no arguments at microversion 2.1.")


def shelve(server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext) -> Response:
    """shelve: the host snapshots the server into `<name>-shelved` (none for a volume-backed
    server), stops it and, with nova's default shelved_offload_time 0, offloads it at once: the
    guest and its claim go, the server is SHELVED_OFFLOADED with no host; 202."""
    _no_args("shelve", args)
    append_with_image(server_id, "shelve", lambda inst: f"{inst.name}-shelved" if inst.image_id else None,
                      {}, request, caller, ctx)
    return Response(status_code=202)


def shelve_offload(
    server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext
) -> Response:
    """shelveOffload: from SHELVED only, which offloading at once never leaves a server in (nova's
    409 then, as with shelved_offload_time 0)."""
    _no_args("shelveOffload", args)
    append_with_image(server_id, "shelveOffload", lambda _inst: None, {}, request, caller, ctx)
    return Response(status_code=202)


def unshelve(server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext) -> Response:
    """unshelve: back through the scheduler (a new claim, maybe another host), spawned from the
    shelved image, which is deleted once the server runs again; 202."""
    _no_args("unshelve", args)
    rm = ctx.readmodel
    with rm.lock:
        inst = visible_server(rm.models, caller, server_id)
        body = host_action_body(inst, caller, "unshelve", None)
        body["image_id"] = inst.shelved_image_id
        placed = _command(inst, body, request, caller, ctx)
    rm.append(*placed)
    return Response(status_code=202)


def force_delete(server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext) -> Response:
    """forceDelete: with no soft delete here (nova's reclaim_instance_interval 0) it is the delete,
    refused (409) while a task is in flight, as nova's force_delete checks task_state; 202."""
    with ctx.readmodel.lock:
        inst = visible_server(ctx.readmodel.models, caller, server_id)
        task_state = inst.task_state
    if task_state not in (None, "deleting"):
        raise Conflict(f"Cannot 'force_delete' instance {server_id} while it is in task_state {task_state}")
    delete_server(server_id, request, caller, ctx)
    return Response(status_code=202)


def change_password(
    server_id: str, args: Any, request: Request, caller: Identity, ctx: ApiContext
) -> Response:
    """changePassword: nova sets it through the guest agent, in a call the API waits on. The
    password never goes on the log (nor in a log line), so there is no saga to carry it: nova's
    409 when the image has no guest agent (libvirt's QemuGuestAgentNotEnabled, reported as a
    failed set), its 501 when it has one, since the direct call to the host is not built here."""
    password = args.get("adminPass") if isinstance(args, dict) else None
    if not isinstance(password, str) or set(args) != {"adminPass"}:
        raise BadRequest("Invalid input for field/attribute changePassword. "
                         "'adminPass' is a required string property and the only one")
    with ctx.readmodel.lock:
        # os-admin-password is the route table's rule; the lock is nova's 409 on the server's state
        inst = visible_server(ctx.readmodel.models, caller, server_id)
        if policy.lock_holds(inst.locked, caller.admin_of("nova")):
            raise Conflict(f"Instance {inst.id} is locked")
        for attr, value, allowed in (("vm_state", inst.vm_state, CHANGE_PASSWORD_STATES),
                                     ("task_state", inst.task_state, {None})):
            if value not in allowed:
                raise Conflict(f"Cannot 'changePassword' instance {inst.id} while it is in {attr} {value}")
        image = ctx.readmodel.models.catalog.images.get(inst.image_id or "") or {}
    agent = str((image.get("properties") or {}).get("hw_qemu_guest_agent", "")).lower()
    if agent not in ("yes", "true", "1"):
        raise Conflict(f"Failed to set admin password on {inst.id} because error setting admin password")
    raise NotImplementedHere("Unable to set password on instance")


LIFECYCLE_ACTIONS: dict[str, ActionRoute] = {
    "createImage": request_snapshot,
    "os-resetState": reset_state,
    "forceDelete": force_delete,
    "changePassword": change_password,
    "shelve": shelve,
    "shelveOffload": shelve_offload,
    "unshelve": unshelve,
}
