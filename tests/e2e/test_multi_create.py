"""Multi-create and quota at the door, through the API on either engine: `min_count` servers
booted as servers of their own (own id, own address, own events), listed by their reservation; a
request the quota cannot hold is refused with nova's 403 and appends nothing; and two requests
that race past the API are decided all or none by the authenticator."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from tests.e2e.conftest import STAGES, Cloud, CloudFactory, fold_log, log_events
from tests.e2e.test_server_lifecycle import login

SERVERS = "/compute/v2.1/servers"


def _quota(cloud: Cloud, instances: int) -> None:
    _, project_id = cloud.demo
    cloud.readmodel.append([new_event(EventType.QUOTA_SET, project_id, {
        "project_id": project_id, "instances": instances, "cores": -1, "ram_mb": -1})])


def _requested_count(cloud: Cloud) -> int:
    return sum(1 for inst in fold_log(cloud.options.log).instances.instances.values() if inst.name)


def test_min_count_servers_boot_each_on_its_own_and_the_quota_is_kept_at_the_door(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    _quota(cloud, 4)
    ensure_keys(tmp_path / "keys")
    api = create_app(ApiContext(readmodel=cloud.readmodel, tokens=TokenService(tmp_path / "keys")))
    with TestClient(api) as client:
        demo = login(client, "demo", "demo-pw")

        def create(name: str, **counts: Any) -> Any:
            return client.post(SERVERS, headers=demo, json={"server": {
                "name": name, "imageRef": cloud.image_id(), "flavorRef": "1",
                "networks": [{"uuid": cloud.network_id()}], **counts}})

        answer = create("web", min_count=3, return_reservation_id=True)
        assert answer.status_code == 202, answer.text
        reservation = answer.json()["reservation_id"]
        listed = client.get(f"{SERVERS}?reservation_id={reservation}", headers=demo).json()["servers"]
        ids = [s["id"] for s in listed]
        assert sorted(s["name"] for s in listed) == ["web-1", "web-2", "web-3"]
        servers = cloud.wait_for(ids, {"ACTIVE"})
        addresses = {inst.ports[0]["ip_address"] for inst in servers.values()}
        assert len(addresses) == 3  # each its own port and address
        models = fold_log(cloud.options.log)
        for server_id in ids:  # each its own saga on the log, every stage once (folded in any order)
            assert sorted(e for e in log_events(models, server_id) if e in STAGES) == sorted(STAGES)

        # one server left in the quota: min_count 2 is refused whole, and nothing reaches the log
        before = _requested_count(cloud)
        refused = create("more", min_count=2, max_count=2)
        assert refused.status_code == 403
        assert refused.json()["forbidden"]["message"] == (
            "Quota exceeded for instances: Requested 2, but already used 3 of 4 instances")
        # max_count is reduced to what fits
        reduced = create("last", min_count=1, max_count=3)
        assert reduced.status_code == 202, reduced.text
        last = reduced.json()["server"]["id"]
        assert cloud.wait_for([last], {"ACTIVE"})[last].name == "last"  # one server: no -N, as nova
        assert _requested_count(cloud) == before + 1
        assert create("over").status_code == 403
        # a delete frees its share
        assert client.delete(f"{SERVERS}/{ids[0]}", headers=demo).status_code == 204
        cloud.wait_for([ids[0]], {"DELETED"})
        again = create("again")
        assert again.status_code == 202, again.text
        assert cloud.wait_for([again.json()["server"]["id"]], {"ACTIVE"})


def _reservation(cloud: Cloud, name: str, size: int) -> list[Any]:
    """What one API process appends for `size` servers, bypassing the door (a race past it)."""
    user_id, project_id = cloud.demo
    reservation_id = f"r-{uuid.uuid4().hex[:8]}"
    return [
        new_event(EventType.INSTANCE_REQUESTED, str(uuid.uuid4()), {
            "name": f"{name}-{n}", "flavor_id": "1", "image_id": cloud.image_id(),
            "networks": [{"network_id": cloud.network_id(), "port_id": None, "fixed_ip": None}],
            "key_name": None, "availability_zone": None, "server_group_id": None, "block_devices": [],
            "metadata": {}, "roles": ["member"], "token_audit_id": "", "reservation_id": reservation_id,
            "reservation_size": size}, user_id=user_id, project_id=project_id)
        for n in range(1, size + 1)
    ]


def test_two_requests_racing_past_the_door_are_each_decided_all_or_none(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    _quota(cloud, 3)
    _, project_id = cloud.demo
    partition = cloud.readmodel.partition_by(Topic.REQUESTED, project_id)
    first, second = _reservation(cloud, "a", 2), _reservation(cloud, "b", 2)
    # interleaved on the project's partition, as two API processes' appends may land
    events = [first[0], second[0], first[1], second[1]]
    cloud.readmodel.append(events, [partition] * len(events))
    outcome = cloud.wait_for([e.aggregate_id for e in events], {"ACTIVE", "ERROR"})
    by_name = {inst.name: inst.status for inst in outcome.values()}
    assert by_name == {"a-1": "ACTIVE", "a-2": "ACTIVE", "b-1": "ERROR", "b-2": "ERROR"}
    refused = outcome[second[1].aggregate_id]
    assert refused.fault is not None and refused.fault["code"] == 403
    assert "Quota exceeded for instances: Requested 2, but already used 2 of 3" in refused.fault["message"]
