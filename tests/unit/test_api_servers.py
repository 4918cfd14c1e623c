"""Nova servers: create appends exactly one instance.requested and answers 202, reads come from
the projection, deletes chain to the instance's newest event, and bad input appends nothing."""

from __future__ import annotations

import pytest
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType, Topic

SERVERS = "/compute/v2.1/servers"


def test_create_appends_one_requested_event_and_a_get_right_after_shows_build(cloud: Cloud):
    token = cloud.token("demo")
    answer = cloud.client.post(SERVERS, json=cloud.server_request("vm2"), headers={"X-Auth-Token": token})
    assert answer.status_code == 202
    server_id = answer.json()["server"]["id"]
    assert answer.json()["server"]["security_groups"] == [{"name": "default"}]
    admin_pass = answer.json()["server"]["adminPass"]  # nova's enable_instance_password, on by default
    assert len(admin_pass) == 12
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:vm_state"], shown["name"]) == ("BUILD", "building", "vm2")
    assert shown["flavor"]["id"] == "1" and shown["image"]["id"] == cloud.ids["image"]

    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    claims = cloud.tokens.validate(token)
    assert event.aggregate_id == server_id
    assert (event.user_id, event.project_id) == (cloud.ids["user:demo"], cloud.ids["project:demo"])
    assert event.request_id == answer.headers["x-openstack-request-id"]
    assert event.body["token_audit_id"] == claims.audit_id
    assert sorted(event.body["roles"]) == ["member", "reader"]
    assert event.body["networks"] == [{"network_id": cloud.ids["network:private"], "port_id": None,
                                       "fixed_ip": None}]
    assert event.body["key_name"] == "keypair-1"
    # partitioned by project, so one authenticator decides a project's quota
    [record] = [r for r in cloud.records() if r.topic.endswith(Topic.REQUESTED.value)]
    assert record.partition == cloud.readmodel.partition_by(Topic.REQUESTED, cloud.ids["project:demo"])
    assert all(token.encode() not in r.value for r in cloud.records())
    assert all(admin_pass.encode() not in r.value for r in cloud.records())  # answered once, never kept


def test_flavor_by_name_scheduler_group_and_block_devices_reach_the_event(cloud: Cloud):
    request = cloud.server_request("vm", flavorRef="m1.small", block_device_mapping_v2=[{
        "uuid": cloud.ids["image"], "boot_index": 0, "source_type": "image", "destination_type": "local",
        "delete_on_termination": True}], metadata={"role": "web"}, description="a web server")
    # a description from microversion 2.19
    answer = cloud.client.post("/compute/v2.1/servers", json=request,
                               headers={**cloud.headers(), "OpenStack-API-Version": "compute 2.19"})
    assert answer.status_code == 202, answer.text
    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    assert event.body["flavor_id"] == "2"
    assert event.body["block_devices"][0]["boot_index"] == 0
    assert event.body["metadata"] == {"role": "web"}
    assert event.body.get("description") == "a web server"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flavorRef": "999"}, "Flavor 999 could not be found."),
        ({"imageRef": "not-a-uuid"}, "Invalid imageRef provided."),
        (
            {"imageRef": "6f1f7b2e-0000-4000-8000-000000000000"},
            "Image 6f1f7b2e-0000-4000-8000-000000000000 could not",
        ),
        ({"networks": [{"uuid": "6f1f7b2e-0000-4000-8000-000000000000"}]}, "Network 6f1f7b2e-0000-4000-8000"),
        ({"networks": [{"uuid": "private"}]}, "network uuid is not in proper format"),
        ({"networks": [{"uuid": "NET", "fixed_ip": "10.0.0.9"}]}, "fixed_ip is not supported"),
        ({"key_name": "nosuchkey"}, "Invalid key_name provided."),
        ({"min_count": 3, "max_count": 2}, "min_count must be <= max_count"),
        ({"min_count": 0}, "min_count"),
        ({"name": "x" * 256}, "name"),
        ({"name": ""}, "name"),
        ({"flavorRef": [1]}, "flavorRef"),
        ({"metadata": {"k": 5}}, "metadata"),
        ({"availability_zone": "mars"}, "availability zone is not available"),
    ],
)
def test_invalid_requests_answer_nova_400s_and_append_nothing(cloud: Cloud, change: dict, message: str):
    body = cloud.server_request()
    if change.get("networks") and change["networks"][0].get("uuid") == "NET":
        change = {"networks": [{**change["networks"][0], "uuid": cloud.ids["network:private"]}]}
    body["server"].update(change)
    before = len(cloud.records())
    answer = cloud.client.post(SERVERS, json=body, headers=cloud.headers())
    assert answer.status_code == 400, answer.text
    assert answer.json()["badRequest"]["code"] == 400
    assert message in answer.json()["badRequest"]["message"]
    assert answer.headers["content-type"].startswith("application/json")
    assert len(cloud.records()) == before


def test_a_body_without_server_or_not_json_is_a_400(cloud: Cloud):
    for content in (b"{}", b"{not json", b"[]"):
        answer = cloud.client.post(
            SERVERS, content=content, headers={**cloud.headers(), "Content-Type": "application/json"}
        )
        assert answer.status_code == 400
        assert "badRequest" in answer.json()
    assert cloud.events(EventType.INSTANCE_REQUESTED) == []


def test_an_oversized_body_is_refused_with_413_before_parsing(cloud: Cloud):
    body = cloud.server_request()
    body["server"]["user_data"] = "A" * 70_000
    answer = cloud.client.post(SERVERS, json=body, headers=cloud.headers())
    assert answer.status_code == 413
    assert answer.json()["overLimit"]["code"] == 413
    assert answer.headers["x-openstack-request-id"].startswith("req-")
    assert cloud.events(EventType.INSTANCE_REQUESTED) == []


def test_a_lone_surrogate_in_a_name_is_a_400_not_a_500(cloud: Cloud):
    content = b'{"server": {"name": "\\ud800", "imageRef": "x", "flavorRef": "1"}}'
    answer = cloud.client.post(
        SERVERS, content=content, headers={**cloud.headers(), "Content-Type": "application/json"}
    )
    assert answer.status_code == 400


def test_a_reader_may_look_but_not_create(cloud: Cloud):
    answer = cloud.client.post(SERVERS, json=cloud.server_request(), headers=cloud.headers("reader"))
    assert answer.status_code == 403
    assert (
        answer.json()["forbidden"]["message"]
        == "Policy doesn't allow os_compute_api:servers:create to be performed."
    )


def test_other_projects_servers_are_invisible_and_admin_sees_all_with_all_tenants(cloud: Cloud):
    server_id = cloud.create_server("mine")
    alice = cloud.headers("alice")
    assert cloud.client.get(f"{SERVERS}/{server_id}", headers=alice).status_code == 404
    assert cloud.client.get(f"{SERVERS}/{server_id}", headers=alice).json()["itemNotFound"]["message"] == (
        f"Instance {server_id} could not be found."
    )
    assert cloud.client.delete(f"{SERVERS}/{server_id}", headers=alice).status_code == 404
    assert cloud.client.get(f"{SERVERS}/detail", headers=alice).json()["servers"] == []
    assert (
        cloud.client.get(f"{SERVERS}/detail", params={"all_tenants": "1"}, headers=alice).status_code == 403
    )
    admin = cloud.headers("admin")
    assert cloud.client.get(f"{SERVERS}/detail", headers=admin).json()["servers"] == []
    everyone = cloud.client.get(f"{SERVERS}/detail", params={"all_tenants": "True"}, headers=admin).json()
    assert [s["id"] for s in everyone["servers"]] == [server_id]
    assert cloud.events(EventType.INSTANCE_DELETE_REQUESTED) == []


def test_delete_chains_to_the_newest_event_and_a_deleted_server_is_gone(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "active")
    inst = cloud.instance(server_id)
    last = (inst.last_sequence, inst.last_hash, inst.last_event_id)
    answer = cloud.client.delete(f"{SERVERS}/{server_id}", headers=cloud.headers())
    assert answer.status_code == 204
    [event] = cloud.events(EventType.INSTANCE_DELETE_REQUESTED)
    assert (event.sequence, event.prev_hash, event.causation_id) == (last[0] + 1, last[1], last[2])
    assert event.body["host"] == "host-1"
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert shown["OS-EXT-STS:task_state"] == "deleting"
    # a second delete while deleting appends nothing
    assert cloud.client.delete(f"{SERVERS}/{server_id}", headers=cloud.headers()).status_code == 204
    assert len(cloud.events(EventType.INSTANCE_DELETE_REQUESTED)) == 1


def test_deleted_servers_answer_404(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "deleted")
    assert cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).status_code == 404
    assert cloud.client.delete(f"{SERVERS}/{server_id}", headers=cloud.headers()).status_code == 404
    assert cloud.client.get(SERVERS, headers=cloud.headers()).json()["servers"] == []


def test_an_active_server_shows_its_address_host_and_launch_time(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "active")
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:power_state"] == 1
    assert shown["addresses"] == {
        "private": [
            {
                "version": 4,
                "addr": "10.0.0.5",
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:05",
            }
        ]
    }
    assert shown["OS-SRV-USG:launched_at"] is not None and shown["hostId"]
    assert "OS-EXT-SRV-ATTR:host" not in shown
    as_admin = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers("admin")).json()["server"]
    assert as_admin["OS-EXT-SRV-ATTR:host"] == "host-1"


def test_an_error_server_carries_nova_fault(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "error")
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert shown["status"] == "ERROR"
    assert shown["fault"]["code"] == 500
    assert shown["fault"]["message"].startswith("No valid host was found")


def test_paging_with_limit_and_marker(cloud: Cloud):
    ids = [cloud.create_server(f"vm{i}") for i in range(3)]
    first = cloud.client.get(SERVERS, params={"limit": 2}, headers=cloud.headers()).json()
    assert len(first["servers"]) == 2
    assert first["servers_links"][0]["rel"] == "next"
    marker = first["servers"][-1]["id"]
    rest = cloud.client.get(SERVERS, params={"limit": 2, "marker": marker}, headers=cloud.headers()).json()
    assert len(rest["servers"]) == 1 and "servers_links" not in rest
    assert {s["id"] for s in first["servers"] + rest["servers"]} == set(ids)
    assert cloud.client.get(SERVERS, params={"marker": "nosuch"}, headers=cloud.headers()).status_code == 400
    assert cloud.client.get(SERVERS, params={"limit": "-1"}, headers=cloud.headers()).status_code == 400


def test_a_list_is_newest_first_and_a_new_server_heads_the_next_one(cloud: Cloud):
    def listed(**params: str) -> list[str]:
        answer = cloud.client.get(SERVERS, params=params, headers=cloud.headers())
        assert answer.status_code == 200, answer.text
        return [s["id"] for s in answer.json()["servers"]]

    first, second = cloud.create_server("vm1"), cloud.create_server("vm2")
    assert listed() == [second, first]
    third = cloud.create_server("vm3")
    cloud.advance(first, "active")  # a later event changes no place in the order
    assert listed() == [third, second, first]
    assert listed(limit="1", marker=third) == [second]
    assert listed(marker=second) == [first]


def test_filters_name_regex_and_status(cloud: Cloud):
    web, _ = cloud.create_server("web-1"), cloud.create_server("db-1")
    cloud.advance(web, "active")
    def names(params: dict) -> list[str]:
        listed = cloud.client.get(f"{SERVERS}/detail", params=params, headers=cloud.headers())
        return sorted(s["name"] for s in listed.json()["servers"])

    assert names({"name": "^web"}) == ["web-1"]
    assert names({"name": "-1"}) == ["db-1", "web-1"]
    assert names({"status": "active"}) == ["web-1"]
    assert names({"status": "BUILD", "deleted": "False"}) == ["db-1"]
    assert cloud.client.get(SERVERS, params={"name": "(["}, headers=cloud.headers()).status_code == 400


def test_instance_actions_come_from_the_log(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "active")
    create_request = cloud.instance(server_id).request_id
    cloud.client.delete(f"{SERVERS}/{server_id}", headers=cloud.headers())
    actions = cloud.client.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=cloud.headers()).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["delete", "create"]
    detail = cloud.client.get(
        f"{SERVERS}/{server_id}/os-instance-actions/{create_request}", headers=cloud.headers()
    ).json()["instanceAction"]
    assert detail["user_id"] == cloud.ids["user:demo"]
    assert [e["event"] for e in detail["events"]][-1] == "compute__do_build_and_run_instance"
    assert {e["result"] for e in detail["events"]} == {"Success"}
    # nova 2.1 shapes: an event's host comes at 2.62, an action's updated_at at 2.58
    assert "host" not in detail["events"][-1] and "updated_at" not in detail
    assert all("updated_at" not in a for a in actions["instanceActions"])
    missing = cloud.client.get(
        f"{SERVERS}/{server_id}/os-instance-actions/req-nosuch", headers=cloud.headers()
    )
    assert missing.status_code == 404
