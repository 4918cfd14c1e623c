"""shelve / shelveOffload / unshelve: the API's rules and codes, the spawner's host step (stop,
snapshot into `<name>-shelved`, offload: guest and claim gone), the scheduler placing an unshelve
again with a new claim from the shelved image, and the spawner deleting that image once the server
runs again. Deciders are driven directly; the API through its test client."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from test_api_server_actions import post
from test_api_support import Cloud, active_fixture, cloud_fixture, shown  # noqa: F401
from test_deciders import authenticated, folded, host_registered, resolve, schedule, spawn
from test_server_snapshot import body_of

from consumers import scheduler, spawner
from eventsvm.app.cluster import simulated_host
from eventsvm.events.model import Event, EventType, new_event, now_ms
from eventsvm.runtime.service import Rejected
from eventsvm.state.server_actions import ActionRefused, check_state
from eventsvm.virt.compute_host import HostCapacity

SERVERS = "/compute/v2.1/servers"


# -- the rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize("vm_state", ["active", "stopped", "paused", "suspended"])
def test_shelve_starts_from_every_powered_state(vm_state: str) -> None:
    assert check_state("shelve", vm_state, None) == "shelving"


@pytest.mark.parametrize(("action", "vm_state", "task"), [
    ("shelve", "shelved_offloaded", None), ("shelve", "active", "image_snapshot"),
    ("unshelve", "active", None), ("unshelve", "shelved_offloaded", "unshelving"),
    ("shelveOffload", "shelved_offloaded", None), ("shelveOffload", "active", None)])
def test_shelve_family_refusals(action: str, vm_state: str, task: str | None) -> None:
    with pytest.raises(ActionRefused):
        check_state(action, vm_state, task)


def test_unshelve_starts_from_shelved_and_offloaded() -> None:
    assert check_state("unshelve", "shelved_offloaded", None) == "unshelving"
    assert check_state("unshelve", "shelved", None) == "unshelving"
    assert check_state("shelveOffload", "shelved", None) == "shelving_offloading"


# -- the spawner's shelve --------------------------------------------------------------------------
@pytest.fixture
def compute(tmp_path: Path) -> Any:
    host = simulated_host(tmp_path, "h0", 0, HostCapacity(vcpus=4, ram_mb=1024, disk_gb=10))
    yield host
    host.hypervisor.close()


def command(cause: Event, action: str, vm_state: str, host: str | None, image_id: str | None) -> Event:
    body = {"action": action, "host": host, "vm_state": vm_state,
            "task_state": check_state(action, vm_state, None), "reboot_type": None, "locked_reason": None,
            "locked_by": None, "image_id": image_id}
    return new_event(EventType.INSTANCE_ACTION_REQUESTED, cause.aggregate_id, body, cause=cause)


def test_shelving_stops_snapshots_and_offloads_the_guest_and_frees_its_claim(compute: Any) -> None:
    resolved = spawn_ready()
    spawned = spawn(compute, resolved)[0].event
    image_id = str(uuid.uuid4())
    shelve = command(spawned, "shelve", "active", "h0", image_id)
    outputs = spawn(compute, shelve, [spawned])
    assert body_of(EventType.IMAGE_UPDATED, outputs)["id"] == image_id
    done = body_of(EventType.INSTANCE_ACTION_COMPLETED, outputs)
    assert (done["action"], done["vm_state"], done["power_state"]) == ("shelve", "shelved_offloaded", 0)
    assert compute.hypervisor.state(spawned.aggregate_id) is None  # offloaded: no guest here any more
    state = folded(spawner.service_for("h0"), [spawned, *(o.event for o in outputs)])
    assert state.claims == {} and state.was_answered(shelve)


def test_a_volume_backed_shelve_has_no_image_and_a_failed_one_keeps_the_state(compute: Any) -> None:
    spawned = spawn(compute, spawn_ready())[0].event
    outputs = spawn(compute, command(spawned, "shelve", "stopped", "h0", None), [spawned])
    assert [o.event.type for o in outputs] == [EventType.INSTANCE_ACTION_COMPLETED]
    # a second shelve finds no guest: the image it was to fill is dropped, the server stays put
    image_id = str(uuid.uuid4())
    again = spawn(compute, command(spawned, "shelve", "active", "h0", image_id), [spawned])
    assert body_of(EventType.IMAGE_DELETED, again) == {"id": image_id}
    failed = body_of(EventType.INSTANCE_ACTION_FAILED, again)
    assert failed["vm_state"] == "active" and "shelve of instance" in failed["reason"]


def spawn_ready() -> Event:
    hosts = [host_registered("h0", 0, ram_mb=65536)]
    placed = schedule(authenticated(), hosts)[0].event
    return resolve(placed, hosts)[0].event


# -- the scheduler's unshelve ----------------------------------------------------------------------
def offloaded(host: str, placed: Event) -> Event:
    body = {"action": "shelve", "host": host, "vm_state": "shelved_offloaded", "power_state": 0,
            "detail": None}
    return new_event(EventType.INSTANCE_ACTION_COMPLETED, placed.aggregate_id, body, cause=placed)


def test_an_offload_frees_the_claim_and_an_unshelve_is_placed_again_from_the_shelved_image() -> None:
    hosts = [host_registered("only", 0, ram_mb=4096)]
    first = schedule(authenticated(flavor="3"), hosts)[0].event  # 4096 MB: the host is full
    shelved = offloaded("only", first)
    state = folded(scheduler.SERVICE, [*hosts, first, shelved])
    assert state.placements == {} and first.aggregate_id in state.specs
    # the freed room takes another server; the unshelve then finds no valid host and fails
    other = schedule(authenticated(flavor="3"), [*hosts, first, shelved])[0].event
    image_id = str(uuid.uuid4())
    unshelve = command(shelved, "unshelve", "shelved_offloaded", None, image_id)
    refused = body_of(EventType.INSTANCE_ACTION_FAILED, schedule(unshelve, [*hosts, first, shelved, other]))
    assert (refused["action"], refused["vm_state"]) == ("unshelve", "shelved_offloaded")
    assert "No valid host was found" in refused["reason"]
    # with room, a new claim and the spec's image is the shelved one
    placed = body_of(EventType.INSTANCE_SCHEDULED, schedule(unshelve, [*hosts, first, shelved]))
    assert placed["host"] == "only" and placed["attempt"] == 1 and placed["claim"]["ram_mb"] == 4096
    assert placed["spec"]["image_id"] == image_id and placed["spec"]["flavor"] == first.body["spec"]["flavor"]


def test_an_answered_unshelve_is_not_placed_twice_and_an_unknown_one_is_rejected() -> None:
    hosts = [host_registered("a", 0), host_registered("b", 1)]
    first = schedule(authenticated(), hosts)[0].event
    shelved = offloaded(first.body["host"], first)
    unshelve = command(shelved, "unshelve", "shelved_offloaded", None, None)
    [again] = schedule(unshelve, [*hosts, first, shelved])
    assert again.event.body["spec"]["image_id"] == first.body["spec"]["image_id"]
    assert schedule(unshelve, [*hosts, first, shelved, again.event]) == []
    stranger = command(new_event(EventType.INSTANCE_DELETED, str(uuid.uuid4()), {}), "unshelve",
                       "shelved_offloaded", None, None)
    with pytest.raises(Rejected):
        schedule(stranger, hosts)


def test_other_actions_do_not_reach_the_scheduler() -> None:
    hosts = [host_registered("a", 0)]
    first = schedule(authenticated(), hosts)[0].event
    assert schedule(command(first, "stop", "active", "a", None), [*hosts, first]) == []


def test_the_spawner_deletes_the_shelved_image_once_the_server_runs_again(compute: Any) -> None:
    resolved = spawn_ready()
    spawned = spawn(compute, resolved)[0].event
    image_id = str(uuid.uuid4())
    shelve_out = spawn(compute, command(spawned, "shelve", "active", "h0", image_id), [spawned])
    back = new_event(EventType.INSTANCE_RESOURCES_RESOLVED, resolved.aggregate_id, {
        **resolved.body, "image": {**resolved.body["image"], "id": image_id, "properties": {
            "instance_uuid": resolved.aggregate_id, "image_type": "snapshot"}}}, cause=shelve_out[-1].event)
    outputs = spawn(compute, back, [spawned, *(o.event for o in shelve_out)])
    assert body_of(EventType.INSTANCE_SPAWNED, outputs)["host"] == "h0"
    assert body_of(EventType.IMAGE_DELETED, outputs) == {"id": image_id}
    # a build from another server's snapshot keeps it
    other = spawn(compute, spawn_ready())
    assert [o.event.type for o in other] == [EventType.INSTANCE_SPAWNED]


# -- the API ---------------------------------------------------------------------------------------
def host_done(cloud: Cloud, server_id: str, vm_state: str) -> None:
    """What the spawner appends for the newest command: the image filled and the outcome."""
    request = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    inst = cloud.instance(server_id)
    events = []
    if request.body["image_id"]:
        events.append(new_event(EventType.IMAGE_UPDATED, request.body["image_id"],
                                {"id": request.body["image_id"], "status": "active"}, cause=request))
    body = {"action": request.body["action"], "host": "host-1", "vm_state": vm_state, "power_state": 0,
            "detail": None}
    events.append(Event(type=EventType.INSTANCE_ACTION_COMPLETED, event_id=str(uuid.uuid4()),
                        aggregate_id=server_id, sequence=request.sequence + 1, request_id=request.request_id,
                        causation_id=request.event_id, user_id=request.user_id, project_id=request.project_id,
                        occurred_at=now_ms(), prev_hash=inst.last_hash, body=body))
    cloud.readmodel.append(events)


def test_shelve_registers_the_shelved_image_and_offloads_then_unshelve_asks_the_scheduler(
    cloud: Cloud, active: str
) -> None:
    assert post(cloud, active, {"shelve": None}).status_code == 202
    command_event = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    assert (command_event.body["action"], command_event.body["task_state"]) == ("shelve", "shelving")
    image_id = command_event.body["image_id"]
    glance = cloud.client.get(f"/image/v2/images/{image_id}", headers=cloud.headers()).json()
    assert (glance["name"], glance["status"], glance["instance_uuid"]) == ("vm1-shelved", "queued", active)
    assert shown(cloud, active)["OS-EXT-STS:task_state"] == "shelving"
    host_done(cloud, active, "shelved_offloaded")
    server = shown(cloud, active)
    assert (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"]) == (
        "SHELVED_OFFLOADED", "shelved_offloaded", None)
    assert cloud.instance(active).host is None
    # nova's 409s: no shelve of a shelved server, no offload of an offloaded one (an admin's
    # action by nova's default policy), no start
    for body, word in (({"shelve": None}, "shelve"), ({"shelveOffload": None}, "shelveOffload"),
                       ({"os-start": None}, "start")):
        refused = post(cloud, active, body, user="admin" if "shelveOffload" in body else "demo")
        assert refused.status_code == 409, body
        assert refused.json()["conflictingRequest"]["message"] == (
            f"Cannot '{word}' instance {active} while it is in vm_state shelved_offloaded")

    assert post(cloud, active, {"unshelve": None}).status_code == 202
    unshelve = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)[-1]
    assert (unshelve.body["action"], unshelve.body["host"], unshelve.body["image_id"]) == (
        "unshelve", None, image_id)
    assert shown(cloud, active)["OS-EXT-STS:task_state"] == "unshelving"
    actions = cloud.client.get(f"{SERVERS}/{active}/os-instance-actions", headers=cloud.headers()).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["unshelve", "shelve", "create"]


def test_unshelve_of_an_active_server_and_bad_bodies(cloud: Cloud, active: str) -> None:
    refused = post(cloud, active, {"unshelve": None})
    assert refused.status_code == 409 and "vm_state active" in refused.text
    for body in ({"shelve": {"x": 1}}, {"unshelve": {"availability_zone": "nova"}}, {"shelveOffload": 3}):
        assert post(cloud, active, body, user="admin").status_code == 400, body
    assert post(cloud, active, {"shelve": None}, user="alice").status_code == 404


def test_a_locked_server_is_not_shelved_by_its_owner(cloud: Cloud, active: str) -> None:
    assert post(cloud, active, {"lock": None}, user="admin").status_code == 202
    answer = post(cloud, active, {"shelve": None})
    assert answer.status_code == 409 and "locked" in answer.text
    assert cloud.events(EventType.IMAGE_CREATED)[-1].body["name"] != "vm1-shelved"
