"""How the API writes: one envelope for a caller's events, no lock held across an append, and a
name's uniqueness decided by the order of claims on the log, not by one process's read model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from test_api_support import PUBLIC_KEY, Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import Event, EventType, new_event
from eventsvm.log.port import OutRecord
from eventsvm.projections.readmodel import LockHeldDuringAppend

COMPUTE = "/compute/v2.1"
IDENTITY = "/identity/v3"


def appended_elsewhere(cloud: Cloud, event: Event) -> None:
    """Append `event` as another API process would: on the log, where the read model has not seen it."""
    rm = cloud.readmodel
    partition = rm._place(event)
    data = rm.codec.encode(event)
    rm.log.append([OutRecord(str(event.topic), event.aggregate_id.encode(), data, partition)])


def keypair_claim(cloud: Cloud, name: str) -> Event:
    user_id = cloud.ids["user:demo"]
    body = {"name": name, "user_id": user_id, "public_key": PUBLIC_KEY, "fingerprint": "0", "key_type": "ssh"}
    return new_event(EventType.KEYPAIR_CREATED, f"{user_id}:{name}", body, user_id=user_id)


def test_append_refuses_a_caller_holding_the_read_models_lock(cloud: Cloud):
    before = len(cloud.records())
    event = new_event(EventType.NETWORK_CREATED, "n-x", {"id": "n-x", "name": "x"})
    with cloud.readmodel.lock, pytest.raises(LockHeldDuringAppend):
        cloud.readmodel.append([event])
    with cloud.readmodel.lock, pytest.raises(LockHeldDuringAppend):
        cloud.readmodel.append_in_order([event], timeout=1.0)
    assert len(cloud.records()) == before


def test_a_callers_event_carries_the_request_id_user_and_project(cloud: Cloud):
    created = cloud.client.post(
        f"{COMPUTE}/os-keypairs",
        json={"keypair": {"name": "laptop", "public_key": PUBLIC_KEY}},
        headers=cloud.headers(),
    )
    assert created.status_code == 200
    event = next(e for e in cloud.events(EventType.KEYPAIR_CREATED) if e.body["name"] == "laptop")
    assert event.request_id == created.headers["x-openstack-request-id"]
    assert (event.user_id, event.project_id) == (cloud.ids["user:demo"], cloud.ids["project:demo"])


def test_a_keypair_name_claimed_first_by_another_process_gets_novas_409(cloud: Cloud):
    appended_elsewhere(cloud, keypair_claim(cloud, "k1"))
    assert cloud.readmodel.models.catalog.keypair(cloud.ids["user:demo"], "k1") is None  # not seen yet
    answer = cloud.client.post(
        f"{COMPUTE}/os-keypairs",
        json={"keypair": {"name": "k1", "public_key": PUBLIC_KEY}},
        headers=cloud.headers(),
    )
    assert answer.status_code == 409
    assert answer.json() == {"conflictingRequest": {"code": 409, "message": "Key pair 'k1' already exists."}}
    # both claims are on the log; the read model shows the first and records the second as refused
    assert len([e for e in cloud.events(EventType.KEYPAIR_CREATED) if e.body["name"] == "k1"]) == 2
    listed = cloud.client.get(f"{COMPUTE}/os-keypairs", headers=cloud.headers()).json()["keypairs"]
    assert [k["keypair"]["name"] for k in listed].count("k1") == 1


def test_a_project_name_claimed_first_elsewhere_gets_keystones_409(cloud: Cloud):
    body = {"id": "p-first", "name": "team", "domain_id": "default"}
    first = new_event(EventType.PROJECT_CREATED, "p-first", body)
    appended_elsewhere(cloud, first)
    answer = cloud.client.post(
        f"{IDENTITY}/projects", json={"project": {"name": "team"}}, headers=cloud.headers("admin")
    )
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert (error["code"], error["title"]) == (409, "Conflict")
    assert cloud.readmodel.models.identity.project_by_name("team", "default").id == "p-first"


def test_a_verdict_that_does_not_arrive_in_time_is_a_503_with_retry_after(cloud: Cloud, monkeypatch):
    monkeypatch.setattr(cloud.readmodel, "catch_up", lambda to_end=False: 0)  # the fold falls behind
    monkeypatch.setattr(cloud.client.app.state.ctx, "name_verdict_timeout", 0.2)
    answer = cloud.client.post(
        f"{COMPUTE}/os-keypairs",
        json={"keypair": {"name": "slow", "public_key": PUBLIC_KEY}},
        headers=cloud.headers(),
    )
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["serviceUnavailable"]["code"] == 503


def test_the_same_name_from_many_requests_at_once_is_created_once(cloud: Cloud):
    def create(_: int) -> int:
        return cloud.client.post(
            f"{COMPUTE}/os-keypairs",
            json={"keypair": {"name": "raced", "public_key": PUBLIC_KEY}},
            headers=cloud.headers(),
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        answers = sorted(pool.map(create, range(4)))
    assert answers == [200, 409, 409, 409]
