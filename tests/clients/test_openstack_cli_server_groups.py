"""The unmodified `openstack` command with server groups, quotas, limits and zones: a group
created with a policy, servers booted into it with `--hint group=`, its members shown, and the
quota and limits counting what the project holds."""

from __future__ import annotations

import json
import uuid
from typing import Any

from live_cloud import LiveCloud


def _json(cloud: LiveCloud, *args: str, as_cloud: str = "eventsvm") -> Any:
    return json.loads(cloud.openstack(*args, "-f", "json", cloud=as_cloud).stdout)


def test_server_group_create_boot_into_it_show_and_delete(live_cloud: LiveCloud):
    name = f"osc-grp-{uuid.uuid4().hex[:6]}"
    group = _json(live_cloud, "server", "group", "create", "--policy", "affinity", name)
    assert (group["name"], group["policies"]) == (name, ["affinity"]), group
    servers = []
    for n in range(2):
        server = _json(live_cloud, "server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                       "--network", "private", "--hint", f"group={group['id']}", "--wait", f"{name}-{n}")
        assert server["status"] == "ACTIVE"
        servers.append(server["id"])
    admin_view = [_json(live_cloud, "server", "show", s, as_cloud="eventsvm-admin") for s in servers]
    # affinity: both on one host
    assert len({s["OS-EXT-SRV-ATTR:host"] for s in admin_view}) == 1
    shown = _json(live_cloud, "server", "group", "show", name)
    assert sorted(shown["members"]) == sorted(servers)
    listed = _json(live_cloud, "server", "group", "list")
    assert name in [g["Name"] for g in listed]
    everyone = _json(live_cloud, "server", "group", "list", "--all-projects", as_cloud="eventsvm-admin")
    assert group["id"] in [g["ID"] for g in everyone]

    live_cloud.openstack("server", "delete", "--wait", servers[0])
    assert _json(live_cloud, "server", "group", "show", name)["members"] == [servers[1]]
    live_cloud.openstack("server", "group", "delete", name)
    gone = live_cloud.openstack("server", "group", "show", name, check=False)
    assert gone.returncode != 0
    live_cloud.openstack("server", "delete", "--wait", servers[1])


def test_server_group_with_an_unknown_policy_is_refused(live_cloud: LiveCloud):
    refused = live_cloud.openstack("server", "group", "create", "--policy", "nearby", "osc-bad", check=False)
    assert refused.returncode != 0
    assert "osc-bad" not in [g["Name"] for g in _json(live_cloud, "server", "group", "list")]


def test_quota_show_and_limits_count_the_projects_servers_and_groups(live_cloud: LiveCloud):
    name = f"osc-q-{uuid.uuid4().hex[:6]}"
    before = {row["Name"]: row["Value"] for row in _json(live_cloud, "limits", "show", "--absolute")}
    live_cloud.openstack("server", "group", "create", "--policy", "anti-affinity", name)
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    after = {row["Name"]: row["Value"] for row in _json(live_cloud, "limits", "show", "--absolute")}
    # the SDK's names for nova's totalServerGroupsUsed, totalInstancesUsed, totalCoresUsed, maxTotalInstances
    assert after["server_groups_used"] == before["server_groups_used"] + 1, after
    assert after["instances_used"] == before["instances_used"] + 1
    assert after["total_cores_used"] == before["total_cores_used"] + 1  # m1.tiny: one vCPU
    assert (after["instances"], after["server_groups"]) == (10, 10)

    project = _json(live_cloud, "token", "issue")["project_id"]
    # OSC 10.5 shows one row per resource
    quota = {row["Resource"]: row for row in _json(live_cloud, "quota", "show", "--compute", project)}
    assert [quota[r]["Limit"] for r in ("instances", "cores", "server-groups")] == [10, 20, 10], quota
    usage_rows = _json(live_cloud, "quota", "show", "--compute", "--usage", project)
    usage = {row["Resource"]: row for row in usage_rows}
    assert usage["instances"]["In Use"] == after["instances_used"], usage
    assert usage["server-groups"]["In Use"] == after["server_groups_used"], usage
    live_cloud.openstack("server", "delete", "--wait", name)
    live_cloud.openstack("server", "group", "delete", name)


def test_availability_zone_list_long_for_admin(live_cloud: LiveCloud):
    zones = _json(live_cloud, "availability", "zone", "list", "--compute", "--long",
                  as_cloud="eventsvm-admin")
    assert {z["Zone Name"] for z in zones} == {"nova"}
    # `eventsvm up --hosts 2`: two compute hosts, each with its nova-compute service
    assert len({z["Host Name"] for z in zones}) == 2, zones
    assert {z["Service Name"] for z in zones} == {"nova-compute"}, zones
