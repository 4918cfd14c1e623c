"""POST /servers with min_count / max_count, return_reservation_id and adminPass, and nova's
quota check at the door: what is answered, and what reaches the log (or does not)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.app.cli import build_parser
from eventsvm.events.model import EventType, Topic, new_event

SERVERS = "/compute/v2.1/servers"


def _post(cloud: Cloud, user: str = "demo", **extra: Any) -> Any:
    return cloud.client.post(SERVERS, json=cloud.server_request("web", **extra), headers=cloud.headers(user))


def _set_quota(cloud: Cloud, project: str, instances: int = 10, cores: int = 20, ram_mb: int = 51200) -> None:
    body = {"project_id": cloud.ids[f"project:{project}"], "instances": instances, "cores": cores,
            "ram_mb": ram_mb}
    cloud.readmodel.append([new_event(EventType.QUOTA_SET, body["project_id"], body)])


def test_min_count_three_appends_three_servers_together_named_name_n(cloud: Cloud):
    answer = _post(cloud, min_count=3, max_count=3)
    assert answer.status_code == 202, answer.text
    events = cloud.events(EventType.INSTANCE_REQUESTED)
    assert sorted(e.body["name"] for e in events) == ["web-1", "web-2", "web-3"]
    assert len({e.aggregate_id for e in events}) == 3
    assert answer.json()["server"]["id"] == events[0].aggregate_id
    [reservation] = {e.body["reservation_id"] for e in events}
    assert reservation.startswith("r-") and len(reservation) == 10
    assert {e.body["reservation_size"] for e in events} == {3}
    # one partition (the project's), so one authenticator decides the three together
    partitions = {r.partition for r in cloud.records() if r.topic.endswith(Topic.REQUESTED.value)}
    assert partitions == {cloud.readmodel.partition_by(Topic.REQUESTED, cloud.ids["project:demo"])}
    # each its own server, listed by the reservation's id
    listed = cloud.client.get(f"{SERVERS}?reservation_id={reservation}", headers=cloud.headers()).json()
    assert sorted(s["name"] for s in listed["servers"]) == ["web-1", "web-2", "web-3"]
    other = cloud.client.get(f"{SERVERS}?reservation_id=r-00000000", headers=cloud.headers()).json()
    assert other["servers"] == []


def test_one_server_keeps_its_name_and_still_has_a_reservation(cloud: Cloud):
    assert _post(cloud).status_code == 202
    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    assert event.body["name"] == "web" and event.body["reservation_size"] == 1
    assert event.body["reservation_id"].startswith("r-")


def test_return_reservation_id_answers_only_the_reservation(cloud: Cloud):
    answer = _post(cloud, min_count=1, max_count=2, return_reservation_id=True)
    assert answer.status_code == 202
    assert set(answer.json()) == {"reservation_id"}
    events = cloud.events(EventType.INSTANCE_REQUESTED)
    assert {e.body["reservation_id"] for e in events} == {answer.json()["reservation_id"]}
    assert len(events) == 2


def test_max_count_is_reduced_to_what_the_quota_allows(cloud: Cloud):
    _set_quota(cloud, "demo", instances=4)
    answer = _post(cloud, min_count=2, max_count=6)
    assert answer.status_code == 202, answer.text
    assert sorted(e.body["name"] for e in cloud.events(EventType.INSTANCE_REQUESTED)) == [
        "web-1", "web-2", "web-3", "web-4"]
    assert {e.body["reservation_size"] for e in cloud.events(EventType.INSTANCE_REQUESTED)} == {4}


def test_fewer_than_min_count_within_quota_refuses_all_with_novas_403(cloud: Cloud):
    _set_quota(cloud, "demo", instances=3)
    cloud.create_server("old")
    before = len(cloud.records())
    answer = _post(cloud, min_count=3, max_count=3)
    assert answer.status_code == 403
    assert answer.json() == {"forbidden": {"code": 403, "message": (
        "Quota exceeded for instances: Requested 3, but already used 1 of 3 instances")}}
    assert len(cloud.records()) == before


def test_a_single_server_over_quota_is_refused_at_the_door(cloud: Cloud):
    _set_quota(cloud, "demo", cores=2)
    cloud.create_server("a", flavorRef="3")  # 2 vCPUs: the project's cores are all used
    before = len(cloud.records())
    answer = _post(cloud)
    assert answer.status_code == 403
    assert answer.json()["forbidden"]["message"] == (
        "Quota exceeded for cores: Requested 1, but already used 2 of 2 cores")
    assert len(cloud.records()) == before
    # ERROR servers hold their share until deleted, as in nova; deleting frees it
    server_id = cloud.events(EventType.INSTANCE_REQUESTED)[0].aggregate_id
    cloud.advance(server_id, "deleted")
    assert _post(cloud).status_code == 202


def test_another_projects_servers_do_not_count(cloud: Cloud):
    _set_quota(cloud, "demo", instances=1)
    cloud.create_server("theirs", user="alice", key_name=None, networks="none")
    assert _post(cloud).status_code == 202


def test_one_volume_cannot_boot_several_servers(cloud: Cloud):
    volume_id = "0f4c1d2e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
    volume = {"id": volume_id, "name": "boot", "size_gb": 1, "owner": cloud.ids["project:demo"],
              "status": "available"}
    cloud.readmodel.append([new_event(EventType.VOLUME_CREATED, volume_id, volume)])
    bdm = [{"uuid": volume_id, "boot_index": 0, "source_type": "volume", "destination_type": "volume"}]
    answer = _post(cloud, imageRef="", min_count=2, max_count=2, block_device_mapping_v2=bdm)
    assert answer.status_code == 400
    assert answer.json()["badRequest"]["message"] == "Cannot attach one or more volumes to multiple instances"


def test_admin_pass_given_is_answered_and_never_recorded(cloud: Cloud):
    answer = _post(cloud, adminPass="s3cret-Pass-for-the-guest")
    assert answer.json()["server"]["adminPass"] == "s3cret-Pass-for-the-guest"
    assert all(b"s3cret-Pass-for-the-guest" not in r.value for r in cloud.records())


def test_generated_admin_passes_differ(cloud: Cloud):
    first = _post(cloud).json()["server"]["adminPass"]
    second = _post(cloud).json()["server"]["adminPass"]
    assert first != second and first.isalnum()


def test_enable_instance_password_off_answers_no_admin_pass(cloud: Cloud):
    context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens, enable_instance_password=False)
    with TestClient(create_app(context)) as client:
        answer = client.post(SERVERS, json=cloud.server_request("web"), headers=cloud.headers())
    assert answer.status_code == 202
    assert "adminPass" not in answer.json()["server"]


def test_eventsvm_up_and_run_api_take_nova_s_setting() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).enable_instance_password is True
    assert parser.parse_args(["up", "--no-instance-password"]).enable_instance_password is False
    assert parser.parse_args(["run", "api", "--no-instance-password"]).enable_instance_password is False


def test_access_ipv6_is_kept_in_its_compressed_form_on_create_and_update(cloud: Cloud):
    long_form = "0000:0000:0000:0000:0000:babe:220.12.22.2"
    server_id = _post(cloud, accessIPv6=long_form, accessIPv4="192.0.2.9").json()["server"]["id"]
    shown = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers()).json()["server"]
    assert (shown["accessIPv6"], shown["accessIPv4"]) == ("::babe:dc0c:1602", "192.0.2.9")
    answer = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(),
                              json={"server": {"accessIPv6": "2001:0db8:0000:0000:0000:0000:0000:0007"}})
    assert answer.status_code == 200 and answer.json()["server"]["accessIPv6"] == "2001:db8::7"
