"""What each compute microversion above 2.2 changes on the APIs this cloud has, asked for with
either header nova reads: the standard `OpenStack-API-Version: compute 2.X` and nova's own
`X-OpenStack-Nova-API-Version: 2.X`. A version below the change keeps the old answer."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from test_api_support import Cloud, active_fixture, cloud_fixture  # noqa: F401

from eventsvm.api import microversion
from eventsvm.events.model import EventType, new_event
from eventsvm.state.instances import evolve_projection, initial_projection

SERVERS = "/compute/v2.1/servers"


def at(cloud: Cloud, version: str, user: str = "demo", legacy: bool = False) -> dict[str, str]:
    """A user's headers asking for compute `version`, by the standard header or nova's own."""
    header = {"X-OpenStack-Nova-API-Version": version} if legacy else {
        "OpenStack-API-Version": f"compute {version}"}
    return {**cloud.headers(user), **header}


def show(cloud: Cloud, server_id: str, version: str, user: str = "demo",
         legacy: bool = False) -> dict[str, Any]:
    answer = cloud.client.get(f"{SERVERS}/{server_id}", headers=at(cloud, version, user, legacy))
    assert answer.status_code == 200, answer.text
    assert answer.headers["openstack-api-version"] == f"compute {version}"
    return dict(answer.json()["server"])


def test_the_maximum_is_advertised_and_served() -> None:
    assert microversion.negotiate("latest") == (microversion.max_version(), None)
    assert microversion.negotiate(microversion.max_version())[1] is None
    over = f"{microversion.MAX_VERSION[0]}.{microversion.MAX_VERSION[1] + 1}"
    assert microversion.negotiate(over)[1] is not None and microversion.negotiate(over)[1][0] == 406


# -- 2.3: OS-EXT-SRV-ATTR extended attributes for admins -----------------------------------------
EXTENDED = ("OS-EXT-SRV-ATTR:reservation_id", "OS-EXT-SRV-ATTR:launch_index", "OS-EXT-SRV-ATTR:hostname",
            "OS-EXT-SRV-ATTR:kernel_id", "OS-EXT-SRV-ATTR:ramdisk_id", "OS-EXT-SRV-ATTR:root_device_name",
            "OS-EXT-SRV-ATTR:user_data")


@pytest.mark.parametrize("legacy", [False, True])
def test_2_3_shows_admins_the_extended_attributes(cloud: Cloud, legacy: bool) -> None:
    user_data = base64.b64encode(b"#!/bin/sh\necho hello\n").decode()
    answer = cloud.client.post(SERVERS, json={"server": {**cloud.server_request("Web_Server.1")["server"],
                                                         "user_data": user_data, "min_count": 2,
                                                         "max_count": 2}},
                               headers=cloud.headers())
    assert answer.status_code == 202, answer.text
    server_id = answer.json()["server"]["id"]
    cloud.advance(server_id, "active")
    old = show(cloud, server_id, "2.2", "admin", legacy)
    assert not any(k in old for k in EXTENDED)
    server = show(cloud, server_id, "2.3", "admin", legacy)
    inst = cloud.instance(server_id)
    assert {k: server[k] for k in EXTENDED} == {
        "OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
        "OS-EXT-SRV-ATTR:launch_index": inst.launch_index,
        "OS-EXT-SRV-ATTR:hostname": f"web-server-1-{inst.launch_index + 1}",
        "OS-EXT-SRV-ATTR:kernel_id": "", "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda", "OS-EXT-SRV-ATTR:user_data": user_data}
    assert inst.reservation_id and inst.reservation_id.startswith("r-")
    indexes = sorted(i.launch_index for i in cloud.readmodel.models.instances.instances.values())
    assert indexes == [0, 1]
    # a member of the project sees none of them at any version
    assert not any(k in show(cloud, server_id, "2.3", "demo", legacy) for k in EXTENDED)


def test_2_3_hostname_keeps_the_create_name_and_bad_user_data_is_nova_400(cloud: Cloud) -> None:
    server_id = cloud.create_server("!!!")
    hostname = show(cloud, server_id, "2.3", "admin")["OS-EXT-SRV-ATTR:hostname"]
    assert hostname == f"Server-{server_id}"
    assert cloud.client.put(f"{SERVERS}/{server_id}", json={"server": {"name": "renamed"}},
                            headers=cloud.headers()).status_code == 200
    assert show(cloud, server_id, "2.3", "admin")["OS-EXT-SRV-ATTR:hostname"] == f"Server-{server_id}"
    for bad in ("not base64!", 12, "QQ="):
        answer = cloud.client.post(SERVERS, json=cloud.server_request("x", user_data=bad),
                                   headers=cloud.headers())
        assert answer.status_code == 400 and "user_data" in answer.text[:300], bad


def test_2_3_shows_delete_on_termination_of_attached_volumes(cloud: Cloud) -> None:
    answer = cloud.client.post(SERVERS, json=cloud.server_request("vol", block_device_mapping_v2=[{
        "source_type": "blank", "destination_type": "volume", "volume_size": 1, "boot_index": -1,
        "delete_on_termination": True}]), headers=cloud.headers())
    assert answer.status_code == 202, answer.text
    server_id = answer.json()["server"]["id"]
    cloud.advance(server_id, "active")
    volumes = show(cloud, server_id, "2.3")["os-extended-volumes:volumes_attached"]
    old = show(cloud, server_id, "2.2")["os-extended-volumes:volumes_attached"]
    assert all(set(v) == {"id"} for v in old)
    assert all(v["delete_on_termination"] is True for v in volumes) and len(volumes) == len(old)
    # a page of the detail list indexes the volumes once for all its servers: the same answer
    plain = cloud.create_server("plain")
    listed = cloud.client.get(f"{SERVERS}/detail", headers=cloud.headers() | {
        "X-OpenStack-Nova-API-Version": "2.3"}).json()["servers"]
    attached = {s["id"]: s["os-extended-volumes:volumes_attached"] for s in listed}
    assert attached == {server_id: volumes, plain: []}


# -- 2.5: ip6 filters a non-admin's list -----------------------------------------------------------
def test_2_5_lets_a_non_admin_filter_by_ip6(cloud: Cloud, active: str) -> None:
    def listed(version: str, user: str = "demo") -> list[str]:
        answer = cloud.client.get(SERVERS, params={"ip6": "fd00"}, headers=at(cloud, version, user))
        assert answer.status_code == 200
        return [s["id"] for s in answer.json()["servers"]]

    # below 2.5 nova drops the filter for a non-admin: every server is listed
    assert listed("2.4") == [active]
    # from 2.5 (and for an admin at any version) it filters: this server has no IPv6 address
    assert listed("2.5") == []
    assert listed("2.1", "admin") == []


# -- 2.9: `locked` in the server view ------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_2_9_shows_locked(cloud: Cloud, active: str, legacy: bool) -> None:
    assert "locked" not in show(cloud, active, "2.8", legacy=legacy)
    assert show(cloud, active, "2.9", legacy=legacy)["locked"] is False
    lock = cloud.client.post(f"{SERVERS}/{active}/action", json={"lock": None}, headers=cloud.headers())
    assert lock.status_code == 202
    assert show(cloud, active, "2.9", legacy=legacy)["locked"] is True
    detail = cloud.client.get(f"{SERVERS}/detail", headers=at(cloud, "2.9", legacy=legacy)).json()["servers"]
    assert [s["locked"] for s in detail] == [True]
    renamed = cloud.client.put(f"{SERVERS}/{active}", json={"server": {"name": "x"}},
                               headers=at(cloud, "2.9", "admin", legacy))
    assert renamed.status_code == 200 and renamed.json()["server"]["locked"] is True


# -- 2.10: an admin's keypairs of another user ---------------------------------------------------
KEYPAIRS = "/compute/v2.1/os-keypairs"


def test_2_10_lets_an_admin_manage_another_users_keypairs(cloud: Cloud) -> None:
    demo, admin_2_10 = cloud.ids["user:demo"], at(cloud, "2.10", "admin")
    made = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "for-demo", "user_id": demo}},
                             headers=admin_2_10)
    assert made.status_code == 201, made.text
    assert made.json()["keypair"]["user_id"] == demo
    # demo owns it now; the admin's own list does not hold it
    names = [k["keypair"]["name"]
             for k in cloud.client.get(KEYPAIRS, headers=cloud.headers()).json()["keypairs"]]
    assert "for-demo" in names
    own = cloud.client.get(KEYPAIRS, headers=at(cloud, "2.10", "admin")).json()["keypairs"]
    assert "for-demo" not in [k["keypair"]["name"] for k in own]
    listed = cloud.client.get(KEYPAIRS, params={"user_id": demo}, headers=at(cloud, "2.10", "admin"))
    assert sorted(k["keypair"]["name"] for k in listed.json()["keypairs"]) == sorted(names)
    shown = cloud.client.get(f"{KEYPAIRS}/for-demo", params={"user_id": demo}, headers=admin_2_10)
    assert shown.status_code == 200 and shown.json()["keypair"]["user_id"] == demo
    # below 2.10 the query's user_id is not read: the admin's own keypairs, and no such key
    assert cloud.client.get(f"{KEYPAIRS}/for-demo", params={"user_id": demo},
                            headers=at(cloud, "2.9", "admin")).status_code == 404
    gone = cloud.client.delete(f"{KEYPAIRS}/for-demo", params={"user_id": demo}, headers=admin_2_10)
    assert gone.status_code == 204
    assert cloud.client.get(f"{KEYPAIRS}/for-demo", headers=cloud.headers()).status_code == 404


def test_2_10_refuses_a_member_naming_another_user_and_user_id_below_2_10(cloud: Cloud) -> None:
    admin = cloud.ids["user:admin"]
    for answer in (
        cloud.client.post(KEYPAIRS, json={"keypair": {"name": "x", "user_id": admin}},
                          headers=at(cloud, "2.10")),
        cloud.client.get(KEYPAIRS, params={"user_id": admin}, headers=at(cloud, "2.10")),
        cloud.client.delete(f"{KEYPAIRS}/k", params={"user_id": admin}, headers=at(cloud, "2.10")),
    ):
        assert answer.status_code == 403 and "os-keypairs" in answer.json()["forbidden"]["message"]
    # naming oneself is allowed
    mine = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "mine", "user_id": cloud.ids["user:demo"]}},
                             headers=at(cloud, "2.10"))
    assert mine.status_code == 201
    old = cloud.client.post(KEYPAIRS, json={"keypair": {"name": "y", "user_id": admin}},
                            headers=at(cloud, "2.9", "admin"))
    assert old.status_code == 400 and "'user_id' was unexpected" in old.json()["badRequest"]["message"]


# -- 2.13: project_id and user_id of server groups; 2.15: the soft policies -----------------------
GROUPS = "/compute/v2.1/os-server-groups"


def test_2_13_shows_a_groups_project_and_user(cloud: Cloud) -> None:
    made = cloud.client.post(GROUPS, json={"server_group": {"name": "g", "policies": ["affinity"]}},
                             headers=at(cloud, "2.13", legacy=True))
    assert made.status_code == 200
    owner = {"project_id": cloud.ids["project:demo"], "user_id": cloud.ids["user:demo"]}
    group = made.json()["server_group"]
    assert {k: group[k] for k in owner} == owner
    shown = cloud.client.get(f"{GROUPS}/{group['id']}", headers=at(cloud, "2.13")).json()["server_group"]
    listed = cloud.client.get(GROUPS, headers=at(cloud, "2.13")).json()["server_groups"]
    assert shown == group and listed == [group]
    old = cloud.client.get(f"{GROUPS}/{group['id']}", headers=at(cloud, "2.12")).json()["server_group"]
    assert old == {k: v for k, v in group.items() if k not in owner}


@pytest.mark.parametrize("policy", ["soft-affinity", "soft-anti-affinity"])
def test_2_15_takes_the_soft_policies_and_a_boot_in_such_a_group_is_scheduled_with_it(
        cloud: Cloud, policy: str) -> None:
    body = {"server_group": {"name": "soft", "policies": [policy]}}
    assert cloud.client.post(GROUPS, json=body, headers=at(cloud, "2.14")).status_code == 400
    made = cloud.client.post(GROUPS, json=body, headers=at(cloud, "2.15"))
    assert made.status_code == 200 and made.json()["server_group"]["policies"] == [policy]
    group_id = made.json()["server_group"]["id"]
    hinted = {**cloud.server_request("member"), "os:scheduler_hints": {"group": group_id}}
    answer = cloud.client.post(SERVERS, json=hinted, headers=cloud.headers())
    assert answer.status_code == 202, answer.text
    assert cloud.instance(answer.json()["server"]["id"]).server_group_id == group_id


# -- 2.16: host_status for admins; 2.17: trigger_crash_dump ------------------------------------------
def test_2_16_shows_admins_the_host_status(cloud: Cloud, active: str) -> None:
    assert "host_status" not in show(cloud, active, "2.15", "admin")
    assert "host_status" not in show(cloud, active, "2.16")  # nova's rule: admins only
    assert show(cloud, active, "2.16", "admin")["host_status"] == "UP"
    detail = cloud.client.get(f"{SERVERS}/detail", params={"all_tenants": "1"},
                              headers=at(cloud, "2.16", "admin")).json()["servers"]
    assert [s["host_status"] for s in detail] == ["UP"]
    disabled = {"name": "host-1", "enabled": False, "disabled_reason": "maintenance"}
    cloud.readmodel.append([new_event(EventType.HOST_UPDATED, "host-1", disabled)])
    assert show(cloud, active, "2.16", "admin")["host_status"] == "MAINTENANCE"
    building = cloud.create_server("building")
    assert show(cloud, building, "2.16", "admin")["host_status"] == ""


def test_2_17_trigger_crash_dump_is_a_host_action(cloud: Cloud, active: str) -> None:
    def dump(version: str, body: Any = None, user: str = "demo") -> Any:
        return cloud.client.post(f"{SERVERS}/{active}/action", json={"trigger_crash_dump": body},
                                 headers=at(cloud, version, user))

    old = dump("2.16")
    assert old.status_code == 400 and "no such action" in old.json()["badRequest"]["message"]
    assert dump("2.17", {"x": 1}).status_code == 400
    assert dump("2.17", user="reader").status_code == 403
    assert dump("2.17").status_code == 202
    [event] = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)
    assert (event.body["action"], event.body["host"], event.body["task_state"]) == (
        "trigger_crash_dump", "host-1", None)
    assert show(cloud, active, "2.17")["status"] == "ACTIVE"
    actions = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions", headers=cloud.headers()).json()
    assert "trigger_crash_dump" in [a["action"] for a in actions["instanceActions"]]
    # nor does a locked one (nova's 409)
    cloud.client.post(f"{SERVERS}/{active}/action", json={"lock": None}, headers=cloud.headers())
    locked = dump("2.17")
    assert locked.status_code == 409 and "locked" in locked.text


def test_2_17_a_building_or_hostless_server_takes_no_crash_dump(cloud: Cloud) -> None:
    failed = cloud.create_server("broken")
    cloud.advance(failed, "error")
    answer = cloud.client.post(f"{SERVERS}/{failed}/action", json={"trigger_crash_dump": None},
                               headers=at(cloud, "2.17"))
    assert answer.status_code == 409 and answer.json()["conflictingRequest"]["message"] == (
        f"Instance {failed} is not ready")
    building = cloud.create_server("building")
    answer = cloud.client.post(f"{SERVERS}/{building}/action", json={"trigger_crash_dump": None},
                               headers=at(cloud, "2.17"))
    assert answer.status_code == 409 and "vm_state building" in answer.text


# -- 2.19: the server description ------------------------------------------------------------------
def test_2_19_a_description_on_create_update_and_rebuild_is_kept_and_shown(cloud: Cloud) -> None:
    request = cloud.server_request("described", description="the web tier")
    assert cloud.client.post(SERVERS, json=request, headers=at(cloud, "2.18")).status_code == 400
    made = cloud.client.post(SERVERS, json=request, headers=at(cloud, "2.19", legacy=True))
    assert made.status_code == 202, made.text
    server_id = made.json()["server"]["id"]
    cloud.advance(server_id, "active")
    assert show(cloud, server_id, "2.19")["description"] == "the web tier"
    assert "description" not in show(cloud, server_id, "2.18")
    path = f"{SERVERS}/{server_id}"
    old = cloud.client.put(path, json={"server": {"description": "x"}}, headers=at(cloud, "2.18"))
    assert old.status_code == 400
    bad = cloud.client.put(path, json={"server": {"description": "a\x1bb"}}, headers=at(cloud, "2.19"))
    assert bad.status_code == 400
    updated = cloud.client.put(path, json={"server": {"description": "renamed tier"}},
                               headers=at(cloud, "2.19"))
    assert updated.status_code == 200 and updated.json()["server"]["description"] == "renamed tier"
    # a rename alone keeps it; null clears it
    cloud.client.put(path, json={"server": {"name": "web"}}, headers=at(cloud, "2.19"))
    assert show(cloud, server_id, "2.19")["description"] == "renamed tier"
    cleared = cloud.client.put(path, json={"server": {"description": None}}, headers=at(cloud, "2.19"))
    assert cleared.status_code == 200 and cleared.json()["server"]["description"] is None
    rebuild = {"rebuild": {"imageRef": cloud.ids["image"], "description": "rebuilt"}}
    assert cloud.client.post(f"{path}/action", json=rebuild, headers=at(cloud, "2.18")).status_code == 400
    rebuilt = cloud.client.post(f"{path}/action", json=rebuild, headers=at(cloud, "2.19"))
    assert rebuilt.status_code == 202 and rebuilt.json()["server"]["description"] == "rebuilt"
    assert show(cloud, server_id, "2.19")["description"] == "rebuilt"
    [event] = cloud.events(EventType.INSTANCE_MOVE_REQUESTED)
    assert (event.body["description"], event.body["description_set"]) == ("rebuilt", True)
    # the fold from the log alone gives the same description
    replayed = initial_projection()
    for record in cloud.records():
        replayed = evolve_projection(replayed, cloud.readmodel.codec.decode(record.value))
    inst = replayed.get(server_id)
    assert inst is not None and inst.description == "rebuilt"


# -- 2.20: volumes of a shelved-offloaded server --------------------------------------------------
def _offloaded(cloud: Cloud, server_id: str) -> None:
    """Shelve the server through the API and append the host's outcome: offloaded, no host."""
    assert cloud.client.post(f"{SERVERS}/{server_id}/action", json={"shelve": None},
                             headers=cloud.headers()).status_code == 202
    request = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    done = {"action": "shelve", "host": "host-1", "vm_state": "shelved_offloaded", "power_state": 0,
            "detail": None}
    outcome = new_event(EventType.INSTANCE_ACTION_COMPLETED, server_id, done, cause=request)
    cloud.readmodel.append([outcome])
    inst = cloud.instance(server_id)
    assert (inst.vm_state, inst.host) == ("shelved_offloaded", None)


def test_2_20_attaches_and_detaches_a_volume_of_a_shelved_offloaded_server(
        cloud: Cloud, active: str) -> None:
    _offloaded(cloud, active)
    project = cloud.ids["project:demo"]
    cinder = f"/volume/v3/{project}/volumes"
    volume = cloud.client.post(cinder, json={"volume": {"size": 1}},
                               headers=cloud.headers()).json()["volume"]["id"]
    attachments = f"{SERVERS}/{active}/os-volume_attachments"
    body = {"volumeAttachment": {"volumeId": volume}}
    old = cloud.client.post(attachments, json=body, headers=at(cloud, "2.19"))
    assert old.status_code == 409 and "vm_state shelved_offloaded" in old.text
    made = cloud.client.post(attachments, json=body, headers=at(cloud, "2.20"))
    assert made.status_code == 200, made.text
    assert made.json()["volumeAttachment"]["volumeId"] == volume
    # attached in cinder alone: in-use, on no host, and no host was asked to plug it in
    shown = cloud.client.get(f"{cinder}/{volume}", headers=cloud.headers()).json()["volume"]
    assert shown["status"] == "in-use"
    assert [a["server_id"] for a in shown["attachments"]] == [active]
    assert cloud.events(EventType.INSTANCE_VOLUME_ATTACH_REQUESTED) == []
    [attached] = cloud.events(EventType.VOLUME_ATTACHED)
    assert attached.body["host"] == ""
    assert cloud.readmodel.models.catalog.volumes[volume]["attachments"][
        attached.body["attachment_id"]]["host_name"] is None
    listed = cloud.client.get(attachments, headers=at(cloud, "2.20")).json()["volumeAttachments"]
    assert [a["volumeId"] for a in listed] == [volume]
    assert cloud.client.delete(f"{attachments}/{volume}", headers=at(cloud, "2.19")).status_code == 409
    assert cloud.client.delete(f"{attachments}/{volume}", headers=at(cloud, "2.20")).status_code == 202
    shown = cloud.client.get(f"{cinder}/{volume}", headers=cloud.headers()).json()["volume"]
    assert shown["status"] == "available"
    assert cloud.events(EventType.INSTANCE_VOLUME_DETACH_REQUESTED) == []


# -- 2.21: the actions of a deleted server ----------------------------------------------------------
def test_2_21_shows_the_actions_of_a_deleted_server(cloud: Cloud, active: str) -> None:
    assert cloud.client.delete(f"{SERVERS}/{active}", headers=cloud.headers()).status_code == 204
    cloud.advance(active, "deleted")
    path = f"{SERVERS}/{active}/os-instance-actions"
    assert cloud.client.get(path, headers=at(cloud, "2.20")).status_code == 404
    listed = cloud.client.get(path, headers=at(cloud, "2.21", legacy=True))
    assert listed.status_code == 200
    actions = listed.json()["instanceActions"]
    assert [a["action"] for a in actions] == ["delete", "create"]
    create = next(a for a in actions if a["action"] == "create")
    one = f"{path}/{create['request_id']}"
    assert cloud.client.get(one, headers=at(cloud, "2.20")).status_code == 404
    shown = cloud.client.get(one, headers=at(cloud, "2.21"))
    assert shown.status_code == 200 and shown.json()["instanceAction"]["action"] == "create"
    # another project's deleted server stays hidden
    assert cloud.client.get(path, headers=at(cloud, "2.21", "alice")).status_code == 404


# -- 2.26: server tags ---------------------------------------------------------------------------------
def test_2_26_tags_are_added_listed_checked_replaced_and_deleted_as_events(cloud: Cloud, active: str) -> None:
    tags = f"{SERVERS}/{active}/tags"
    v226 = at(cloud, "2.26")
    assert cloud.client.get(tags, headers=at(cloud, "2.25")).status_code == 404
    assert cloud.client.put(f"{tags}/web", headers=at(cloud, "2.25")).status_code == 404
    added = cloud.client.put(f"{tags}/web", headers=v226)
    assert added.status_code == 201 and added.headers["Location"].endswith(f"/servers/{active}/tags/web")
    assert cloud.client.put(f"{tags}/web", headers=v226).status_code == 204  # had it already
    assert cloud.client.put(f"{tags}/db", headers=at(cloud, "2.26", legacy=True)).status_code == 201
    assert cloud.client.get(tags, headers=v226).json() == {"tags": ["web", "db"]}
    assert cloud.client.get(f"{tags}/db", headers=v226).status_code == 204
    assert cloud.client.get(f"{tags}/nope", headers=v226).status_code == 404
    assert show(cloud, active, "2.26")["tags"] == ["web", "db"]
    assert "tags" not in show(cloud, active, "2.25")
    replaced = cloud.client.put(tags, json={"tags": ["a", "b", "a"]}, headers=v226)
    assert replaced.status_code == 200 and replaced.json() == {"tags": ["a", "b"]}
    assert cloud.client.delete(f"{tags}/a", headers=v226).status_code == 204
    missing = cloud.client.delete(f"{tags}/a", headers=v226)
    assert missing.status_code == 404 and "has no tag 'a'" in missing.json()["itemNotFound"]["message"]
    assert cloud.client.get(tags, headers=v226).json() == {"tags": ["b"]}
    assert cloud.client.delete(tags, headers=v226).status_code == 204
    assert cloud.client.get(tags, headers=v226).json() == {"tags": []}
    changes = cloud.events(EventType.INSTANCE_TAGS_CHANGED)
    assert [(e.body["added"], e.body["removed"], e.body["replace"]) for e in changes] == [
        (["web"], [], False), (["db"], [], False), (["a", "b"], [], True), ([], ["a"], False), ([], [], True)]
    # the tags rebuilt from the log alone
    cloud.client.put(f"{tags}/kept", headers=v226)
    replayed = initial_projection()
    for record in cloud.records():
        replayed = evolve_projection(replayed, cloud.readmodel.codec.decode(record.value))
    inst = replayed.get(active)
    assert inst is not None and inst.tags == ["kept"] == cloud.instance(active).tags


def test_2_26_tag_limits_and_rules_are_novas(cloud: Cloud, active: str) -> None:
    tags = f"{SERVERS}/{active}/tags"
    v226 = at(cloud, "2.26")
    for bad in ("a,b", "x" * 61):
        answer = cloud.client.put(f"{tags}/{bad}", headers=v226)
        assert answer.status_code == 400 and "is invalid" in answer.json()["badRequest"]["message"], bad
    for body in ({"tags": ["a/b"]}, {"tags": ["x" * 61]}, {"tags": [f"t{i}" for i in range(51)]},
                 {"tags": "a"}, {"tag": []}, {"tags": [], "more": 1}, {"tags": [1]}):
        assert cloud.client.put(tags, json=body, headers=v226).status_code == 400, body
    full = cloud.client.put(tags, json={"tags": [f"t{i}" for i in range(50)]}, headers=v226)
    assert full.status_code == 200
    over = cloud.client.put(f"{tags}/one-more", headers=v226)
    assert over.status_code == 400
    assert over.json()["badRequest"]["message"] == "The number of tags exceeded the per-server limit 50"
    assert cloud.client.put(f"{tags}/t1", headers=v226).status_code == 400  # nova counts first
    # a reader may look but not change; another project sees no server
    assert cloud.client.get(tags, headers=at(cloud, "2.26", "reader")).status_code == 200
    assert cloud.client.put(f"{tags}/x", headers=at(cloud, "2.26", "reader")).status_code == 403
    assert cloud.client.get(tags, headers=at(cloud, "2.26", "alice")).status_code == 404
    # a server in the middle of a task takes no tag change (nova's 409)
    cloud.client.post(f"{SERVERS}/{active}/action", json={"os-stop": None}, headers=cloud.headers())
    busy = cloud.client.delete(f"{tags}/t1", headers=v226)
    assert busy.status_code == 409 and "task_state powering-off" in busy.text


def test_2_26_lists_servers_by_their_tags(cloud: Cloud) -> None:
    servers = {name: cloud.create_server(name) for name in ("both", "web", "none")}
    v226 = at(cloud, "2.26")
    building = cloud.client.put(f"{SERVERS}/{servers['both']}/tags", json={"tags": ["x"]}, headers=v226)
    assert building.status_code == 409  # nova changes no tags of a server being built
    for server_id in servers.values():
        cloud.advance(server_id, "active")
    for name, server_tags in (("both", ["web", "db"]), ("web", ["web"])):
        answer = cloud.client.put(f"{SERVERS}/{servers[name]}/tags", json={"tags": server_tags}, headers=v226)
        assert answer.status_code == 200

    def names(version: str, **filters: str) -> list[str]:
        listed = cloud.client.get(SERVERS, params=filters, headers=at(cloud, version)).json()["servers"]
        return sorted(s["name"] for s in listed)

    assert names("2.26", tags="web,db") == ["both"]
    assert names("2.26", **{"tags-any": "db,nope"}) == ["both"]
    assert names("2.26", **{"not-tags": "web,db"}) == ["none", "web"]
    assert names("2.26", **{"not-tags-any": "db"}) == ["none", "web"]
    assert names("2.26", tags="web", **{"not-tags-any": "db"}) == ["web"]
    assert names("2.25", tags="web,db") == ["both", "none", "web"]  # no tag filters before 2.26


def test_tags_in_a_create_body_are_refused_below_2_52_as_novas_closed_schema_does(cloud: Cloud) -> None:
    # tags on create are 2.52's; this API's maximum is below it, so nova's earlier schemas answer
    for version in ("2.1", "2.26"):
        refused = cloud.client.post(SERVERS, json=cloud.server_request("tagged", tags=["web"]),
                                    headers=at(cloud, version))
        assert refused.status_code == 400, refused.text
        assert "Additional properties are not allowed ('tags' was unexpected)" in \
            refused.json()["badRequest"]["message"]
    listed = cloud.client.get(SERVERS, headers=cloud.headers()).json()["servers"]
    assert "tagged" not in {s["name"] for s in listed}
