"""os-server-groups (create, list, show, delete, members, quota), the server_groups usage in
os-quota-sets detail and limits, and os-availability-zone/detail."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType, new_event
from eventsvm.identity.quota import SERVER_GROUP_MEMBERS, SERVER_GROUPS
from eventsvm.state.catalog import evolve_catalog, initial_catalog
from eventsvm.state.identity import IdentityState, evolve, quota_for

COMPUTE = "/compute/v2.1"
GROUPS = f"{COMPUTE}/os-server-groups"


def _create(cloud: Cloud, name: str = "db", policy: str = "affinity", user: str = "demo") -> dict[str, Any]:
    answer = cloud.client.post(
        GROUPS, json={"server_group": {"name": name, "policies": [policy]}}, headers=cloud.headers(user)
    )
    assert answer.status_code == 200, answer.text
    group: dict[str, Any] = answer.json()["server_group"]
    return group


def test_a_created_group_is_recorded_on_the_log_and_shown_with_novas_2_1_view(cloud: Cloud):
    group = _create(cloud, "db", "anti-affinity")
    assert group == {"id": group["id"], "name": "db", "policies": ["anti-affinity"], "members": [],
                     "metadata": {}}
    [event] = cloud.events(EventType.SERVER_GROUP_CREATED)
    assert event.body == {"id": group["id"], "name": "db", "policy": "anti-affinity"}
    assert event.project_id == cloud.ids["project:demo"]
    shown = cloud.client.get(f"{GROUPS}/{group['id']}", headers=cloud.headers())
    assert shown.status_code == 200
    assert shown.json()["server_group"] == group


@pytest.mark.parametrize(
    "body",
    [
        {"server_group": {"name": "g", "policies": ["soft-affinity"]}},  # from 2.15 only
        {"server_group": {"name": "g", "policies": ["affinity", "anti-affinity"]}},
        {"server_group": {"name": "g", "policies": []}},
        {"server_group": {"name": "g", "policies": "affinity"}},
        {"server_group": {"name": "g"}},
        {"server_group": {"name": "", "policies": ["affinity"]}},
        {"server_group": {"name": " g", "policies": ["affinity"]}},
        {"server_group": {"name": "g", "policy": "affinity"}},  # 2.64's form
        {"server_group": {"name": "g", "policies": ["affinity"], "rules": {}}},
        {"group": {"name": "g", "policies": ["affinity"]}},
    ],
)
def test_a_create_nova_2_1_refuses_is_a_400_and_appends_nothing(cloud: Cloud, body: dict[str, Any]):
    answer = cloud.client.post(GROUPS, json=body, headers=cloud.headers())
    assert answer.status_code == 400, answer.text
    assert answer.json()["badRequest"]["code"] == 400
    assert cloud.events(EventType.SERVER_GROUP_CREATED) == []


def test_list_is_the_callers_project_and_all_projects_only_for_an_admin(cloud: Cloud):
    mine = _create(cloud, "mine")
    theirs = _create(cloud, "theirs", user="alice")
    listed = cloud.client.get(GROUPS, headers=cloud.headers()).json()["server_groups"]
    assert [g["id"] for g in listed] == [mine["id"]]
    # all_projects from a non-admin is ignored, as nova does
    asked = cloud.client.get(f"{GROUPS}?all_projects=True", headers=cloud.headers()).json()["server_groups"]
    assert [g["id"] for g in asked] == [mine["id"]]
    everyone = cloud.client.get(f"{GROUPS}?all_projects=True", headers=cloud.headers("admin")).json()
    assert {g["id"] for g in everyone["server_groups"]} == {mine["id"], theirs["id"]}
    paged = cloud.client.get(f"{GROUPS}?all_projects=1&limit=1&offset=1", headers=cloud.headers("admin"))
    paged = paged.json()
    assert len(paged["server_groups"]) == 1
    assert cloud.client.get(f"{GROUPS}?offset=x", headers=cloud.headers()).status_code == 400


def test_another_projects_group_is_403_and_an_unknown_one_404(cloud: Cloud):
    theirs = _create(cloud, "theirs", user="alice")
    assert cloud.client.get(f"{GROUPS}/{theirs['id']}", headers=cloud.headers()).status_code == 403
    assert cloud.client.delete(f"{GROUPS}/{theirs['id']}", headers=cloud.headers()).status_code == 403
    assert cloud.client.get(f"{GROUPS}/{theirs['id']}", headers=cloud.headers("admin")).status_code == 200
    missing = cloud.client.get(f"{GROUPS}/no-such-group", headers=cloud.headers())
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["message"] == "Instance group no-such-group could not be found."


def test_delete_appends_the_event_and_the_group_is_gone(cloud: Cloud):
    group = _create(cloud)
    assert cloud.client.delete(f"{GROUPS}/{group['id']}", headers=cloud.headers()).status_code == 204
    [event] = cloud.events(EventType.SERVER_GROUP_DELETED)
    assert event.body == {"id": group["id"]}
    assert cloud.client.get(f"{GROUPS}/{group['id']}", headers=cloud.headers()).status_code == 404
    assert cloud.client.delete(f"{GROUPS}/{group['id']}", headers=cloud.headers()).status_code == 404
    assert cloud.client.get(GROUPS, headers=cloud.headers()).json()["server_groups"] == []


def test_servers_booted_with_the_group_hint_are_members_until_deleted(cloud: Cloud):
    group = _create(cloud)
    hint = {"os:scheduler_hints": {"group": group["id"]}}
    first = cloud.client.post(f"{COMPUTE}/servers", json={**cloud.server_request("a"), **hint},
                              headers=cloud.headers())
    assert first.status_code == 202, first.text
    first_id = first.json()["server"]["id"]
    second_id = cloud.client.post(f"{COMPUTE}/servers", json={**cloud.server_request("b"), **hint},
                                  headers=cloud.headers()).json()["server"]["id"]
    cloud.create_server("outside")
    shown = cloud.client.get(f"{GROUPS}/{group['id']}", headers=cloud.headers()).json()["server_group"]
    assert shown["members"] == [first_id, second_id]
    cloud.advance(first_id, "deleted")
    shown = cloud.client.get(f"{GROUPS}/{group['id']}", headers=cloud.headers()).json()["server_group"]
    assert shown["members"] == [second_id]


def test_a_boot_beyond_the_groups_member_quota_is_403(cloud: Cloud):
    admin = cloud.client.put(f"{COMPUTE}/os-quota-sets/{cloud.ids['project:demo']}",
                             json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}},
                             headers=cloud.headers("admin"))
    assert admin.status_code == 200
    group = _create(cloud)
    hint = {"os:scheduler_hints": {"group": group["id"]}}
    many = cloud.server_request("m", min_count=SERVER_GROUP_MEMBERS + 1, max_count=SERVER_GROUP_MEMBERS + 1)
    refused = cloud.client.post(f"{COMPUTE}/servers", json={**many, **hint}, headers=cloud.headers())
    assert refused.status_code == 403
    assert refused.json()["forbidden"]["message"] == "Quota exceeded, too many servers in group"
    assert cloud.events(EventType.INSTANCE_REQUESTED) == []
    full = cloud.server_request("m", min_count=SERVER_GROUP_MEMBERS, max_count=SERVER_GROUP_MEMBERS)
    filled = cloud.client.post(f"{COMPUTE}/servers", json={**full, **hint}, headers=cloud.headers())
    assert filled.status_code == 202
    one_more = cloud.client.post(f"{COMPUTE}/servers", json={**cloud.server_request("x"), **hint},
                                 headers=cloud.headers())
    assert one_more.status_code == 403


def test_a_project_holds_at_most_its_server_groups_quota(cloud: Cloud):
    for n in range(SERVER_GROUPS):
        _create(cloud, f"g{n}")
    over = cloud.client.post(GROUPS, json={"server_group": {"name": "over", "policies": ["affinity"]}},
                             headers=cloud.headers())
    assert over.status_code == 403
    assert over.json()["forbidden"]["message"] == "Quota exceeded, too many server groups."
    # another project has its own
    _create(cloud, "theirs", user="alice")


def test_quota_detail_and_limits_count_the_projects_groups_and_servers(cloud: Cloud):
    project = cloud.ids["project:demo"]
    _create(cloud, "a")
    _create(cloud, "b")
    _create(cloud, "theirs", user="alice")
    server_id = cloud.create_server(flavorRef="3")
    cloud.advance(server_id, "active")
    detail = cloud.client.get(f"{COMPUTE}/os-quota-sets/{project}/detail", headers=cloud.headers()).json()
    quota = detail["quota_set"]
    assert quota["id"] == project
    assert quota["server_groups"] == {"limit": SERVER_GROUPS, "in_use": 2, "reserved": 0}
    assert quota["instances"] == {"limit": 10, "in_use": 1, "reserved": 0}
    assert (quota["cores"]["in_use"], quota["ram"]["in_use"]) == (2, 4096)
    absolute = cloud.client.get(f"{COMPUTE}/limits", headers=cloud.headers()).json()["limits"]["absolute"]
    assert (absolute["totalServerGroupsUsed"], absolute["maxServerGroups"]) == (2, SERVER_GROUPS)
    used = (absolute["totalInstancesUsed"], absolute["totalCoresUsed"], absolute["totalRAMUsed"])
    assert used == (1, 2, 4096)
    other = cloud.client.get(f"{COMPUTE}/os-quota-sets/{project}/detail", headers=cloud.headers("alice"))
    assert other.status_code == 403


def test_availability_zone_detail_names_each_compute_host_for_admins_only(cloud: Cloud):
    url = f"{COMPUTE}/os-availability-zone/detail"
    assert cloud.client.get(url, headers=cloud.headers()).status_code == 403
    zones = cloud.client.get(url, headers=cloud.headers("admin")).json()
    hosts = set(cloud.readmodel.models.hosts)
    assert hosts, "the cloud fixture registers compute hosts"
    listed = {name for zone in zones["availabilityZoneInfo"] for name in zone["hosts"]}
    assert listed == hosts
    for zone in zones["availabilityZoneInfo"]:
        for services in zone["hosts"].values():
            assert services["nova-compute"]["available"] in (True, False)


def test_the_catalog_fold_drops_a_deleted_group_and_keeps_its_owner():
    state = initial_catalog()
    body = {"id": "g1", "name": "db", "policy": "affinity"}
    created = new_event(EventType.SERVER_GROUP_CREATED, "g1", body, user_id="u1", project_id="p1")
    evolve_catalog(state, created)
    assert state.server_groups["g1"]["project_id"] == "p1"
    assert state.server_groups["g1"]["user_id"] == "u1"
    evolve_catalog(state, new_event(EventType.SERVER_GROUP_DELETED, "g1", {"id": "g1"}))
    assert state.server_groups == {}


def test_an_admin_sets_the_server_group_limits_and_they_are_kept(cloud: Cloud):
    project = cloud.ids["project:demo"]
    url = f"{COMPUTE}/os-quota-sets/{project}"
    _create(cloud, "a")
    _create(cloud, "b")
    below = cloud.client.put(url, json={"quota_set": {"server_groups": 1}}, headers=cloud.headers("admin"))
    assert below.status_code == 400
    assert "already used and reserved 2" in below.json()["badRequest"]["message"]
    body = {"quota_set": {"server_groups": 2, "server_group_members": 1}}
    answer = cloud.client.put(url, json=body, headers=cloud.headers("admin"))
    assert answer.status_code == 200, answer.text
    answered = answer.json()["quota_set"]
    assert (answered["server_groups"], answered["server_group_members"]) == (2, 1)
    [event] = cloud.events(EventType.QUOTA_SET)
    assert (event.body["server_groups"], event.body["server_group_members"]) == (2, 1)
    shown = cloud.client.get(url, headers=cloud.headers()).json()["quota_set"]
    assert (shown["server_groups"], shown["server_group_members"], shown["instances"]) == (2, 1, 10)
    absolute = cloud.client.get(f"{COMPUTE}/limits", headers=cloud.headers()).json()["limits"]["absolute"]
    assert (absolute["maxServerGroups"], absolute["maxServerGroupMembers"]) == (2, 1)
    over = cloud.client.post(GROUPS, json={"server_group": {"name": "c", "policies": ["affinity"]}},
                             headers=cloud.headers())
    assert over.status_code == 403
    group = cloud.client.get(GROUPS, headers=cloud.headers()).json()["server_groups"][0]["id"]
    hint = {"os:scheduler_hints": {"group": group}}
    first = cloud.client.post(f"{COMPUTE}/servers", json={**cloud.server_request("a"), **hint},
                              headers=cloud.headers())
    assert first.status_code == 202
    second = cloud.client.post(f"{COMPUTE}/servers", json={**cloud.server_request("b"), **hint},
                               headers=cloud.headers())
    assert second.status_code == 403


def test_a_v1_quota_set_keeps_the_server_group_limits_the_project_had():
    state = IdentityState()
    evolve(state, new_event(EventType.QUOTA_SET, "p", {
        "project_id": "p", "instances": 5, "cores": 5, "ram_mb": 512, "server_groups": 3,
        "server_group_members": -1}))
    evolve(state, new_event(EventType.QUOTA_SET, "p", {
        "project_id": "p", "instances": 6, "cores": 6, "ram_mb": 1024}))
    quota = quota_for(state, "p")
    assert (quota.instances, quota.server_groups, quota.server_group_members) == (6, 3, -1)
    assert quota_for(state, "other").server_groups == SERVER_GROUPS
