"""Deleting a server in the middle of an action works, as it does during a build, on either engine.

A stop, a soft reboot, a resize and a createImage are each asked for through the API and held at
their host step (the spawner's real libvirt call waits until the test lets it go, as a slow
hypervisor would), a delete is asked for right behind, and the log shows the action requested and
unanswered when the delete was appended. Then the host step goes on, and the server ends DELETED
with no guest left on any host (a resize has one on each of its two hosts), no claim left in the
scheduler's or the spawners' state rebuilt from the log, and no image left queued."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from consumers import scheduler
from eventsvm.events.model import Event, EventType, Topic
from eventsvm.state.server_moves import SCHEDULED
from eventsvm.virt.compute_host import ComputeHost
from tests.e2e.conftest import Cloud, wait_quiet
from tests.e2e.test_resize_rebuild import _events, claims_in_log, client  # noqa: F401
from tests.e2e.test_server_lifecycle import SERVERS, login, settled
from tests.e2e.test_snapshot_e2e import image_settled
from tests.e2e.test_volume_attachments_e2e import boot

INSTANCE_TOPICS = (Topic.ACTION_REQUESTED, Topic.ACTION_COMPLETED, Topic.ACTION_FAILED,
                   Topic.DELETE_REQUESTED, Topic.DELETED)
# the host's answer to an action (a resize's scheduling is not one: the held step comes after it)
ANSWERS = (EventType.INSTANCE_ACTION_COMPLETED, EventType.INSTANCE_ACTION_FAILED,
           EventType.INSTANCE_MOVE_FAILED, EventType.INSTANCE_MOVE_STEP)
REQUESTS = (EventType.INSTANCE_ACTION_REQUESTED, EventType.INSTANCE_MOVE_REQUESTED)


@contextmanager
def held(hosts: list[ComputeHost], step: str) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold every host's `step` (act, spawn, snapshot) until `release` is set; `entered` says a
    spawner is inside it. The real call follows: only its timing is the test's."""
    entered, release = threading.Event(), threading.Event()

    def gate(original: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            assert release.wait(60), f"{step} held for a minute"
            return original(*args, **kwargs)
        return gated

    for host in hosts:
        setattr(host, step, gate(getattr(host, step)))
    try:
        yield entered, release
    finally:
        release.set()
        for host in hosts:
            delattr(host, step)  # the class's own method again


def instance_events(cloud: Cloud, server_id: str) -> list[Event]:
    return [e for e in _events(cloud, INSTANCE_TOPICS) if e.aggregate_id == server_id]


def assert_in_flight(cloud: Cloud, server_id: str, action: str) -> None:
    """The log holds the action's request and the delete, and no answer to the action."""
    events = instance_events(cloud, server_id)
    [request] = [e for e in events if e.type in REQUESTS and e.body["action"] == action]
    [delete] = [e for e in events if e.type == EventType.INSTANCE_DELETE_REQUESTED]
    answers = [(e.type, e.body.get("step")) for e in events
               if e.type in ANSWERS and e.sequence > request.sequence and e.body.get("step") != SCHEDULED]
    assert answers == [], f"{action} was answered before the delete: {answers}"
    assert delete.sequence > request.sequence


def assert_nothing_left(cloud: Cloud, server_id: str) -> None:
    cloud.wait_for([server_id], {"DELETED"})
    # every service has answered everything: the held step too, and the deletion on every host
    wait_quiet(cloud)
    left = [h.name for h in cloud.cluster.hosts if h.hypervisor.state(server_id) is not None]
    assert left == [], f"a guest of {server_id} is left on {left}"
    by_scheduler, by_spawners = claims_in_log(cloud)
    for where, claims in (("scheduler", by_scheduler), ("spawners", by_spawners)):
        assert [(h, k) for h, keys in claims.items() for k in keys if k.startswith(server_id)] == [], where
    state = scheduler.SERVICE.initial_state()
    for event in _events(cloud, scheduler.SERVICE.state_topics):
        state = scheduler.evolve(state, event)
    assert server_id not in state.placements and server_id not in state.resizing


def test_a_delete_right_behind_an_action_in_flight_leaves_nothing_behind(
    client: tuple[Cloud, TestClient],  # noqa: F811 (the fixture imported above)
) -> None:
    cloud, api = client
    hosts = cloud.cluster.hosts
    demo = login(api, "demo", "demo-pw")

    cases = [  # (action body, its name in the log, the host step it waits in)
        ({"os-stop": None}, "stop", "act"),
        ({"reboot": {"type": "SOFT"}}, "reboot", "act"),
        # the destination's spawn of the new guest: the source still has the old one
        ({"resize": {"flavorRef": "2"}}, "resize", "spawn"),
        ({"createImage": {"name": "behind"}}, "createImage", "snapshot"),
    ]
    for body, action, step in cases:
        answer = boot(api, demo, cloud, f"doomed-{action}")
        assert answer.status_code == 202, answer.text
        server_id = answer.json()["server"]["id"]
        settled(cloud, server_id, "ACTIVE")
        with held(hosts, step) as (entered, release):
            answer = api.post(f"{SERVERS}/{server_id}/action", headers=demo, json=body)
            assert answer.status_code == 202, (body, answer.text)
            image_id = answer.headers.get("location", "").rsplit("/", 1)[-1]
            assert entered.wait(30), f"{action} never reached a host"
            assert api.delete(f"{SERVERS}/{server_id}", headers=demo).status_code == 204
            assert_in_flight(cloud, server_id, action)
            release.set()
            assert_nothing_left(cloud, server_id)
        if action == "createImage":
            # the snapshot was taken before the guest went: the image is active, not queued
            assert image_id and image_settled(cloud, image_id) == "active"
        if action == "resize":
            events = instance_events(cloud, server_id)
            assert any(e.type == EventType.INSTANCE_MOVE_STEP and e.body["step"] == SCHEDULED
                       for e in events), "the resize never claimed a destination"
    with cloud.readmodel.lock:
        images = cloud.readmodel.models.catalog.images.values()
        queued = [i["id"] for i in images if i.get("status") == "queued"]
    assert queued == []
