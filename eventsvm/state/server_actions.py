"""Nova's server actions after the boot (stop, start, reboot, pause, unpause, suspend, resume,
lock, unlock): which vm_state and task_state each may start from, the task_state it puts the
server in, and the vm_state it leaves it in. The API checks requests against these rules and the
spawner reports outcomes with them, so both read one table (nova.compute.api's
check_instance_state decorators, reduced to the states eventsvm has)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerAction:
    """One action: nova's name, where it may start, its task_state and where it ends."""

    name: str
    vm_states: frozenset[str]
    task_state: str | None
    vm_state_after: str | None
    on_host: bool = True


SERVER_ACTIONS: dict[str, ServerAction] = {
    a.name: a
    for a in (
        # nova also stops a server in ERROR; here one may have no guest (nor host) to stop
        ServerAction("stop", frozenset({"active"}), "powering-off", "stopped"),
        ServerAction("start", frozenset({"stopped"}), "powering-on", "active"),
        ServerAction("pause", frozenset({"active"}), "pausing", "paused"),
        ServerAction("unpause", frozenset({"paused"}), "unpausing", "active"),
        ServerAction("suspend", frozenset({"active"}), "suspending", "suspended"),
        ServerAction("resume", frozenset({"suspended"}), "resuming", "active"),
        # SOFT from active only; HARD from any powered state (HARD_REBOOT_STATES)
        ServerAction("reboot", frozenset({"active"}), "rebooting", "active"),
        # no host step and no state check: the lock is in place once it is on the log
        ServerAction("lock", frozenset(), None, None, on_host=False),
        ServerAction("unlock", frozenset(), None, None, on_host=False),
        # nova 2.17: an NMI to the guest (a kernel set up for it dumps its memory); no task state,
        # and the server stays in the vm_state it had (vm_state_after None)
        ServerAction("trigger_crash_dump", frozenset({"active", "paused", "resized", "error"}), None, None),
    )
}
HARD_REBOOT_STATES = frozenset({"active", "stopped", "paused", "suspended"})
HARD_REBOOT_TASK = "rebooting_hard"

# The API's request key of each action (POST /servers/{id}/action)
REQUEST_KEYS: dict[str, str] = {
    "os-stop": "stop", "os-start": "start", "reboot": "reboot", "pause": "pause", "unpause": "unpause",
    "suspend": "suspend", "resume": "resume", "lock": "lock", "unlock": "unlock",
    "trigger_crash_dump": "trigger_crash_dump",
}


class ActionRefused(Exception):
    """The server's state forbids the action: nova's InstanceInvalidState, with its attribute."""

    def __init__(self, attr: str, state: str | None) -> None:
        super().__init__(f"{attr} {state}")
        self.attr = attr
        self.state = state


def check_state(
    action: str, vm_state: str, task_state: str | None, reboot_type: str | None = None
) -> str | None:
    """The task_state the action starts in, or ActionRefused naming the vm_state or task_state
    that forbids it (vm_state is checked first, as nova does)."""
    rule = SERVER_ACTIONS[action]
    if not rule.on_host:
        return None
    hard = action == "reboot" and reboot_type == "HARD"
    allowed = HARD_REBOOT_STATES if hard else rule.vm_states
    if vm_state not in allowed:
        raise ActionRefused("vm_state", vm_state)
    if task_state is not None:
        raise ActionRefused("task_state", task_state)
    return HARD_REBOOT_TASK if hard else rule.task_state


# -- createImage, shelve, reset (issue 13: snapshot and shelve sagas) -------------------------------
# Kept in their own block (and eventsvm.state.server_snapshot for the image a snapshot registers) so
# that other action families can be added beside them without touching these lines.
SNAPSHOT_STATES = frozenset({"active", "stopped", "paused", "suspended"})
SERVER_ACTIONS.update({
    a.name: a
    for a in (
        # nova's snapshot: allowed from any powered state; the server keeps its vm_state (None after)
        ServerAction("createImage", SNAPSHOT_STATES, "image_snapshot", None),
        # shelve offloads at once (nova's shelved_offload_time 0): the guest and its claim go
        ServerAction("shelve", SNAPSHOT_STATES, "shelving", "shelved_offloaded"),
        ServerAction("shelveOffload", frozenset({"shelved"}), "shelving_offloading", "shelved_offloaded"),
        # unshelve has no host to go to: the scheduler places it, the new host's spawner spawns it
        ServerAction("unshelve", frozenset({"shelved", "shelved_offloaded"}), "unshelving", "active"),
        # an admin's os-resetState sets the vm_state it names and clears the task: no host step
        ServerAction("resetState", frozenset(), None, None, on_host=False),
    )
})
# the actions that end with the guest gone from its host and its claim freed
OFFLOADING_ACTIONS = frozenset({"shelve", "shelveOffload"})
# os-resetState's states (nova's reset_state schema) and where changePassword may start
RESET_STATES = ("active", "error")
CHANGE_PASSWORD_STATES = frozenset({"active"})
