"""Nova's power and lock actions on POST /servers/{id}/action: each appends one
instance.action_requested chained to the server's newest event and answers 202; nova's 409 when
the lock or the server's state forbids it, 403 by policy, 400 for a bad body, and nothing appended
then. The host step is played here by appending what the spawner would."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from test_api_support import Cloud, active_fixture, cloud_fixture, shown  # noqa: F401

from eventsvm.events.model import Event, EventType, Topic, now_ms

SERVERS = "/compute/v2.1/servers"
POWER_STATE = {"stopped": 4, "suspended": 4, "paused": 3, "active": 1}


def post(cloud: Cloud, server_id: str, body: dict[str, Any], user: str = "demo") -> Any:
    return cloud.client.post(f"{SERVERS}/{server_id}/action", json=body, headers=cloud.headers(user))


def host_step(cloud: Cloud, server_id: str, failed: bool = False) -> None:
    """Append what the spawner appends for the newest action request: its outcome."""
    request = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    ends = {"stop": "stopped", "pause": "paused", "suspend": "suspended"}
    after = ends.get(request.body["action"], "active")
    body: dict[str, Any] = {"action": request.body["action"], "host": "host-1",
                            "vm_state": request.body["vm_state"] if failed else after,
                            "power_state": POWER_STATE[request.body["vm_state"] if failed else after]}
    body.update({"reason": "it broke"} if failed else {"detail": None})
    kind = EventType.INSTANCE_ACTION_FAILED if failed else EventType.INSTANCE_ACTION_COMPLETED
    inst = cloud.instance(server_id)
    cloud.readmodel.append([Event(
        type=kind, event_id=str(uuid.uuid4()), aggregate_id=server_id, sequence=request.sequence + 1,
        request_id=request.request_id, causation_id=request.event_id, user_id=request.user_id,
        project_id=request.project_id, occurred_at=now_ms(), prev_hash=inst.last_hash, body=body)])


def act(cloud: Cloud, server_id: str, body: dict[str, Any], user: str = "demo") -> None:
    """An accepted action and its host step."""
    answer = post(cloud, server_id, body, user)
    assert answer.status_code == 202, answer.text
    host_step(cloud, server_id)


def test_stop_appends_one_chained_command_on_the_hosts_partition_and_the_outcome_shows(
    cloud: Cloud, active: str
) -> None:
    inst = cloud.instance(active)
    last = (inst.last_sequence, inst.last_hash, inst.last_event_id)
    answer = post(cloud, active, {"os-stop": None})
    assert (answer.status_code, answer.content) == (202, b"")
    [event] = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)
    assert (event.sequence, event.prev_hash, event.causation_id) == (last[0] + 1, last[1], last[2])
    assert event.request_id == answer.headers["x-openstack-request-id"]
    assert event.body["action"] == "stop" and event.body["host"] == "host-1"
    assert (event.body["vm_state"], event.body["task_state"]) == ("active", "powering-off")
    [record] = [r for r in cloud.records() if r.topic == str(Topic.ACTION_REQUESTED)]
    # host-1 has slot 0
    assert record.partition == 0 % cloud.readmodel.log.partitions(str(Topic.ACTION_REQUESTED))
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"]) == (
        "ACTIVE", "active", "powering-off")
    host_step(cloud, active)
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"],
            server["OS-EXT-STS:power_state"]) == ("SHUTOFF", "stopped", None, 4)
    assert "locked" not in server  # nova shows it from 2.9, its reason from 2.73; this API serves 2.1


@pytest.mark.parametrize(("path", "status"), [
    ([({"os-stop": None}, "SHUTOFF"), ({"os-start": None}, "ACTIVE")], "ACTIVE"),
    ([({"pause": None}, "PAUSED"), ({"unpause": None}, "ACTIVE")], "ACTIVE"),
    ([({"suspend": None}, "SUSPENDED"), ({"resume": None}, "ACTIVE")], "ACTIVE"),
    ([({"reboot": {"type": "SOFT"}}, "ACTIVE")], "ACTIVE"),
    ([({"os-stop": None}, "SHUTOFF"), ({"reboot": {"type": "hard"}}, "ACTIVE")], "ACTIVE"),
])
def test_each_action_moves_the_server_through_novas_statuses(
    cloud: Cloud, active: str, path: list[tuple[dict[str, Any], str]], status: str
) -> None:
    for body, after in path:
        act(cloud, active, body)
        assert shown(cloud, active)["status"] == after
    assert shown(cloud, active)["status"] == status


@pytest.mark.parametrize(("body", "task", "status"), [
    ({"reboot": {"type": "SOFT"}}, "rebooting", "REBOOT"),
    ({"reboot": {"type": "HARD"}}, "rebooting_hard", "HARD_REBOOT"),
    ({"pause": None}, "pausing", "ACTIVE"),
])
def test_a_server_in_an_action_shows_its_task(cloud: Cloud, active: str, body: dict, task: str, status: str):
    assert post(cloud, active, body).status_code == 202
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:task_state"]) == (status, task)


# (actions taken first, the refused request, nova's attribute and state)
CONFLICTS = [
    ([{"os-stop": None}], {"os-stop": None}, "stop", "vm_state stopped"),
    ([], {"os-start": None}, "start", "vm_state active"),
    ([{"pause": None}], {"pause": None}, "pause", "vm_state paused"),
    ([], {"unpause": None}, "unpause", "vm_state active"),
    ([{"os-stop": None}], {"suspend": None}, "suspend", "vm_state stopped"),
    ([], {"resume": None}, "resume", "vm_state active"),
    ([{"os-stop": None}], {"reboot": {"type": "SOFT"}}, "reboot", "vm_state stopped"),
    ([{"suspend": None}], {"pause": None}, "pause", "vm_state suspended"),
]


@pytest.mark.parametrize(("before", "body", "name", "state"), CONFLICTS)
def test_an_action_the_vm_state_forbids_is_novas_409(
    cloud: Cloud, active: str, before: list[dict], body: dict, name: str, state: str
) -> None:
    for earlier in before:
        act(cloud, active, earlier)
    appended = len(cloud.records())
    answer = post(cloud, active, body)
    assert answer.status_code == 409
    assert answer.json() == {"conflictingRequest": {
        "code": 409, "message": f"Cannot '{name}' instance {active} while it is in {state}"}}
    assert len(cloud.records()) == appended


def test_a_building_server_and_a_server_in_a_task_refuse_actions(cloud: Cloud) -> None:
    building = cloud.create_server("b")
    answer = post(cloud, building, {"reboot": {"type": "HARD"}})
    assert answer.json()["conflictingRequest"]["message"] == (
        f"Cannot 'reboot' instance {building} while it is in vm_state building")
    cloud.advance(building, "active")
    assert post(cloud, building, {"os-stop": None}).status_code == 202
    answer = post(cloud, building, {"reboot": {"type": "HARD"}})
    assert answer.json()["conflictingRequest"]["message"] == (
        f"Cannot 'reboot' instance {building} while it is in task_state powering-off")
    assert cloud.client.delete(f"{SERVERS}/{building}", headers=cloud.headers()).status_code == 204
    answer = post(cloud, building, {"os-start": None})
    assert answer.status_code == 409


def test_a_delete_during_an_action_is_not_blocked(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"reboot": {"type": "SOFT"}}).status_code == 202
    assert cloud.client.delete(f"{SERVERS}/{active}", headers=cloud.headers()).status_code == 204
    [request] = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)
    [delete] = cloud.events(EventType.INSTANCE_DELETE_REQUESTED)
    assert delete.causation_id == request.event_id
    assert shown(cloud, active)["OS-EXT-STS:task_state"] == "deleting"


def test_a_failed_host_step_leaves_the_server_where_it_was(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"pause": None}).status_code == 202
    host_step(cloud, active, failed=True)
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
    assert post(cloud, active, {"pause": None}).status_code == 202  # may be tried again


def test_a_locked_server_refuses_its_owner_but_not_an_admin(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"lock": {"locked_reason": "do not touch"}}).status_code == 202
    [lock] = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)
    assert (lock.body["action"], lock.body["locked_by"], lock.body["locked_reason"]) == (
        "lock", "owner", "do not touch")
    inst = cloud.instance(active)
    assert (inst.locked, inst.task_state, inst.status) == (True, None, "ACTIVE")
    appended = len(cloud.records())
    for body in ({"os-stop": None}, {"reboot": {"type": "HARD"}}, {"pause": None}, {"suspend": None}):
        answer = post(cloud, active, body)
        assert answer.status_code == 409
        assert answer.json()["conflictingRequest"]["message"] == f"Instance {active} is locked"
    # locking again what its owner locked changes nothing
    assert post(cloud, active, {"lock": None}).status_code == 202
    assert len(cloud.records()) == appended
    act(cloud, active, {"os-stop": None}, user="admin")
    assert shown(cloud, active)["status"] == "SHUTOFF"
    assert post(cloud, active, {"unlock": None}).status_code == 202
    assert cloud.instance(active).locked is False
    act(cloud, active, {"os-start": None})
    assert shown(cloud, active)["status"] == "ACTIVE"


def test_only_an_admin_unlocks_what_an_admin_locked(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"lock": None}, user="admin").status_code == 202
    assert cloud.instance(active).locked_by == "admin"
    answer = post(cloud, active, {"unlock": None})
    assert answer.status_code == 403
    assert answer.json()["forbidden"]["message"] == (
        "Policy doesn't allow os_compute_api:os-lock-server:unlock:unlock_override to be performed.")
    assert cloud.instance(active).locked is True
    assert post(cloud, active, {"unlock": None}, user="admin").status_code == 202
    assert cloud.instance(active).locked is False


def test_a_reader_may_not_act_and_another_project_does_not_see_the_server(cloud: Cloud, active: str) -> None:
    answer = post(cloud, active, {"os-stop": None}, user="reader")
    assert answer.status_code == 403
    assert answer.json()["forbidden"]["message"] == (
        "Policy doesn't allow os_compute_api:servers:stop to be performed.")
    assert post(cloud, active, {"lock": None}, user="reader").status_code == 403
    assert post(cloud, active, {"os-stop": None}, user="alice").status_code == 404
    assert post(cloud, str(uuid.uuid4()), {"os-stop": None}).status_code == 404
    assert cloud.events(EventType.INSTANCE_ACTION_REQUESTED) == []


@pytest.mark.parametrize("body", [
    {"reboot": {}}, {"reboot": {"type": "WARM"}}, {"reboot": None}, {"lock": {"locked_reason": "x" * 256}},
    {"os-stop": None, "pause": None}, {"hibernate": None},
])
def test_a_bad_action_body_is_a_400_and_appends_nothing(cloud: Cloud, active: str, body: dict) -> None:
    answer = post(cloud, active, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["badRequest"]["code"] == 400
    assert cloud.events(EventType.INSTANCE_ACTION_REQUESTED) == []


def test_os_instance_actions_names_each_action_and_its_step(cloud: Cloud, active: str) -> None:
    act(cloud, active, {"os-stop": None})
    assert post(cloud, active, {"lock": None}).status_code == 202
    act(cloud, active, {"reboot": {"type": "HARD"}}, user="admin")
    listed = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions", headers=cloud.headers()).json()
    assert [a["action"] for a in listed["instanceActions"]] == ["reboot", "lock", "stop", "create"]
    by_name = {a["action"]: a for a in listed["instanceActions"]}
    for name, step in (("stop", "compute_stop_instance"), ("reboot", "compute_reboot_instance"),
                       ("lock", "api_lock")):
        one = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions/{by_name[name]['request_id']}",
                               headers=cloud.headers()).json()["instanceAction"]
        assert [(e["event"], e["result"]) for e in one["events"]] == [(step, "Success")]


def test_a_locked_server_is_not_deleted_by_its_owner_but_by_an_admin(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"lock": None}).status_code == 202
    answer = cloud.client.delete(f"{SERVERS}/{active}", headers=cloud.headers())
    assert answer.status_code == 409
    assert answer.json()["conflictingRequest"]["message"] == f"Instance {active} is locked"
    assert cloud.events(EventType.INSTANCE_DELETE_REQUESTED) == []
    assert cloud.client.delete(f"{SERVERS}/{active}", headers=cloud.headers("admin")).status_code == 204


def test_the_command_goes_to_the_partition_of_the_servers_host(cloud: Cloud) -> None:
    host = dict(next(e for e in cloud.readmodel.models.hosts.values()))
    cloud.readmodel.append([Event(
        type=EventType.HOST_REGISTERED, event_id=str(uuid.uuid4()), aggregate_id="host-7", sequence=1,
        request_id="req-seed", causation_id=None, user_id=None, project_id=None, occurred_at=now_ms(),
        prev_hash=None, body={**host, "name": "host-7", "slot": 3})])
    server_id = cloud.create_server()
    cloud.advance(server_id, "active", host="host-7")
    assert post(cloud, server_id, {"os-stop": None}).status_code == 202
    [record] = [r for r in cloud.records() if r.topic == str(Topic.ACTION_REQUESTED)]
    partitions = cloud.readmodel.log.partitions(str(Topic.ACTION_REQUESTED))
    assert partitions > 1 and record.partition == 3 % partitions
