"""The unmodified `openstack` command drives a server's whole power and lock lifecycle against a
live cloud (on both engines): pause / unpause, suspend / resume, stop / start, soft and hard
reboot, lock / unlock, and `server set` / `unset` between them; after each step `server show`
gives nova's status, vm_state, power_state and task_state, and `server event list` names every
action in order. (test_openstack_cli.py has the first steps and the refusals of each.)"""

from __future__ import annotations

import json
import uuid

from live_cloud import LiveCloud
from test_openstack_cli import _properties, _status_becomes, rows

# nova's power_state numbers (nova.compute.power_state)
RUNNING, PAUSED, SHUTDOWN = 1, 3, 4


def test_the_cli_takes_a_server_through_every_power_and_lock_action(live_cloud: LiveCloud):
    name = f"osc-life-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    steps = [  # (the command, status, vm_state, power_state after it)
        (("pause",), "PAUSED", "paused", PAUSED),
        (("unpause",), "ACTIVE", "active", RUNNING),
        (("suspend",), "SUSPENDED", "suspended", SHUTDOWN),
        (("resume",), "ACTIVE", "active", RUNNING),
        (("stop",), "SHUTOFF", "stopped", SHUTDOWN),
        (("start",), "ACTIVE", "active", RUNNING),
        (("reboot", "--soft"), "ACTIVE", "active", RUNNING),
        (("reboot", "--hard"), "ACTIVE", "active", RUNNING),
    ]
    for command, status, vm_state, power_state in steps:
        live_cloud.openstack("server", *command, name)
        shown = _status_becomes(live_cloud, name, status)
        assert (shown["OS-EXT-STS:vm_state"], shown["OS-EXT-STS:power_state"]) == (vm_state, power_state), \
            command
        if command == ("pause",):
            # a paused server is not paused twice: nova's 409, as the CLI shows it
            again = live_cloud.openstack("server", "pause", name, check=False)
            assert again.returncode == 1 and "ConflictException: 409" in again.stderr
            assert "while it is in vm_state paused" in again.stderr

    # locked: the owner's actions and metadata changes are refused (nova's check_instance_lock),
    # a rename is not (nova's server update does not check the lock); unlocked, all go through
    live_cloud.openstack("server", "set", "--property", "stage=before", name)
    live_cloud.openstack("server", "lock", name)
    for refused_command in (("suspend", name), ("set", "--property", "stage=locked", name),
                            ("unset", "--property", "stage", name)):
        refused = live_cloud.openstack("server", *refused_command, check=False)
        assert refused.returncode == 1 and "ConflictException: 409" in refused.stderr, refused_command
        assert "is locked" in refused.stderr, refused_command
    renamed = f"{name}-renamed"
    live_cloud.openstack("server", "set", "--name", renamed, name)
    shown = _status_becomes(live_cloud, renamed, "ACTIVE")
    assert (shown["name"], _properties(shown)) == (renamed, {"stage": "before"})
    live_cloud.openstack("server", "unlock", renamed)
    live_cloud.openstack("server", "unset", "--property", "stage", renamed)
    assert _properties(_status_becomes(live_cloud, renamed, "ACTIVE")) == {}
    live_cloud.openstack("server", "set", "--property", "stage=unlocked", renamed)
    live_cloud.openstack("server", "suspend", renamed)
    shown = _status_becomes(live_cloud, renamed, "SUSPENDED")
    assert _properties(shown) == {"stage": "unlocked"} and shown["OS-EXT-STS:power_state"] == SHUTDOWN
    live_cloud.openstack("server", "resume", renamed)
    assert _status_becomes(live_cloud, renamed, "ACTIVE")["OS-EXT-STS:power_state"] == RUNNING

    actions = [e["Action"] for e in rows(live_cloud, "server", "event", "list", renamed)]
    assert list(reversed(actions)) == [
        "create", "pause", "unpause", "suspend", "resume", "stop", "start", "reboot", "reboot", "lock",
        "unlock", "suspend", "resume"]
    live_cloud.openstack("server", "delete", "--wait", renamed)
    assert renamed not in [s["Name"] for s in rows(live_cloud, "server", "list")]
    listed = json.loads(live_cloud.openstack("server", "list", "--name", name, "-f", "json").stdout)
    assert listed == []
