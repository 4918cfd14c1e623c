"""os-resetState, forceDelete and changePassword on POST /servers/{id}/action, with nova's codes:
resetState is an admin's and lands on the log as an action with no host step; forceDelete is the
delete, refused during a task; changePassword is refused without a guest agent and never puts the
password on the log."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_server_actions import host_step, post
from test_api_support import Cloud, active_fixture, cloud_fixture, shown  # noqa: F401

from eventsvm.events.model import EventType, new_event

SERVERS = "/compute/v2.1/servers"


# -- os-resetState ---------------------------------------------------------------------------------
def test_an_admin_resets_a_server_to_error_and_back_and_the_history_names_it(
    cloud: Cloud, active: str
) -> None:
    assert post(cloud, active, {"os-stop": None}).status_code == 202  # a task in flight: reset anyway
    answer = post(cloud, active, {"os-resetState": {"state": "error"}}, user="admin")
    assert answer.status_code == 202, answer.text
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"]) == (
        "ERROR", "error", None)
    # the server's state now forbids what it allowed
    assert post(cloud, active, {"os-start": None}).status_code == 409
    assert post(cloud, active, {"os-resetState": {"state": "active"}}, user="admin").status_code == 202
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:vm_state"]) == ("ACTIVE", "active")
    command = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    assert (command.body["action"], command.body["vm_state"]) == ("resetState", "active")
    actions = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions", headers=cloud.headers()).json()
    assert [a["action"] for a in actions["instanceActions"]][:2] == ["resetState", "resetState"]


@pytest.mark.parametrize("args", [None, {}, {"state": "stopped"}, {"state": "active", "extra": 1}, "active"])
def test_a_bad_reset_state_is_400(cloud: Cloud, active: str, args: Any) -> None:
    before = len(cloud.records())
    assert post(cloud, active, {"os-resetState": args}, user="admin").status_code == 400
    assert len(cloud.records()) == before


def test_reset_state_is_for_admins(cloud: Cloud, active: str) -> None:
    answer = post(cloud, active, {"os-resetState": {"state": "error"}})
    assert answer.status_code == 403
    assert "os_compute_api:os-admin-actions:reset_state" in answer.text
    assert post(cloud, active, {"os-resetState": {"state": "error"}}, user="alice").status_code == 404


# -- forceDelete -----------------------------------------------------------------------------------
def test_force_delete_deletes_like_delete_but_not_during_a_task(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"reboot": {"type": "HARD"}}).status_code == 202
    refused = post(cloud, active, {"forceDelete": None})
    assert refused.status_code == 409
    assert refused.json()["conflictingRequest"]["message"] == (
        f"Cannot 'force_delete' instance {active} while it is in task_state rebooting_hard")
    host_step(cloud, active)
    assert post(cloud, active, {"forceDelete": None}, user="alice").status_code == 404
    assert post(cloud, active, {"forceDelete": None}).status_code == 202
    [requested] = cloud.events(EventType.INSTANCE_DELETE_REQUESTED)
    assert requested.aggregate_id == active
    assert shown(cloud, active)["OS-EXT-STS:task_state"] == "deleting"


# -- changePassword --------------------------------------------------------------------------------
SECRET = "s3cret-Pa55-word"


def test_change_password_without_a_guest_agent_is_409_and_the_password_goes_nowhere(
    cloud: Cloud, active: str
) -> None:
    before = len(cloud.records())
    answer = post(cloud, active, {"changePassword": {"adminPass": SECRET}})
    assert answer.status_code == 409
    assert answer.json()["conflictingRequest"]["message"] == (
        f"Failed to set admin password on {active} because error setting admin password")
    records = cloud.records()
    assert len(records) == before
    assert not any(SECRET.encode() in r.value for r in records)


def test_change_password_with_a_guest_agent_is_not_offered(cloud: Cloud) -> None:
    agent_image = cloud.client.post("/image/v2/images", headers=cloud.headers("admin"), json={
        "name": "with-agent", "disk_format": "qcow2", "container_format": "bare", "visibility": "public",
        "hw_qemu_guest_agent": "yes"}).json()["id"]
    # its data, as an upload records it: nova boots only an active image
    cloud.readmodel.append([new_event(EventType.IMAGE_UPDATED, agent_image,
                                      {"id": agent_image, "status": "active"})])
    server_id = cloud.create_server(imageRef=agent_image)
    cloud.advance(server_id, "active")
    answer = post(cloud, server_id, {"changePassword": {"adminPass": SECRET}})
    assert answer.status_code == 501
    assert answer.json()["notImplemented"]["message"] == "Unable to set password on instance"


@pytest.mark.parametrize("args", [None, {}, {"adminPass": 5}, {"adminPass": "x", "other": 1}])
def test_a_bad_change_password_is_400(cloud: Cloud, active: str, args: Any) -> None:
    answer = post(cloud, active, {"changePassword": args})
    assert answer.status_code == 400
    message = answer.json()["badRequest"]["message"]
    assert message.startswith("Invalid input for field/attribute changePassword")


def test_change_password_checks_lock_and_state_first(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"os-stop": None}).status_code == 202
    host_step(cloud, active)
    stopped = post(cloud, active, {"changePassword": {"adminPass": SECRET}})
    assert stopped.status_code == 409 and "vm_state stopped" in stopped.text
    assert post(cloud, active, {"lock": None}, user="admin").status_code == 202
    locked = post(cloud, active, {"changePassword": {"adminPass": SECRET}})
    assert locked.status_code == 409 and "is locked" in locked.text
    assert post(cloud, active, {"changePassword": {"adminPass": SECRET}}, user="alice").status_code == 404
