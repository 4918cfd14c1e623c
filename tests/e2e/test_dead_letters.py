"""Poison input goes to the dead-letter topic with its reason; the services keep going."""

from __future__ import annotations

import uuid

from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.log.port import OutRecord
from tests.e2e.conftest import CloudFactory


def test_undecodable_and_impossible_events_are_dead_lettered_and_the_pipeline_goes_on(
    make_cloud: CloudFactory,
) -> None:
    cloud = make_cloud(hosts=1)
    readmodel = cloud.readmodel
    user_id, project_id = cloud.demo
    garbage = OutRecord(str(Topic.REQUESTED), b"garbage-key", b"\x00\x01 not avro at all")
    readmodel.log.append([garbage])
    impossible = new_event(
        EventType.INSTANCE_REQUESTED,
        "not-a-uuid",
        {
            "name": "x",
            "flavor_id": "1",
            "image_id": cloud.image_id(),
            "networks": [],
            "key_name": None,
            "availability_zone": None,
            "server_group_id": None,
            "block_devices": [],
            "metadata": {},
        },
        user_id=user_id,
        project_id=project_id,
    )
    readmodel.append([impossible])
    fine = cloud.submit("after-the-poison")
    assert cloud.wait_for([fine], {"ACTIVE", "ERROR"})[fine].status == "ACTIVE"
    assert readmodel.wait_until(lambda m: len(m.dead_letters) >= 2, 30)
    letters = {d.body["error_type"]: d.body for d in readmodel.models.dead_letters}
    assert letters["CodecError"]["source_topic"] == str(Topic.REQUESTED)
    assert letters["CodecError"]["payload"] == b"\x00\x01 not avro at all"
    assert "not-a-uuid" in letters["Rejected"]["reason"]
    assert letters["Rejected"]["group"] == "eventsvm.authenticator"
    assert not any(
        i.id == "not-a-uuid" and i.status == "ACTIVE" for i in readmodel.models.instances.instances.values()
    )


def test_work_scheduled_onto_an_unknown_host_is_dead_lettered(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    flavor = {
        "id": "1",
        "name": "m1.tiny",
        "vcpus": 1,
        "ram_mb": 512,
        "disk_gb": 1,
        "ephemeral_gb": 0,
        "swap_mb": 0,
        "extra_specs": {},
    }
    spec = {
        "name": "ghost",
        "flavor": flavor,
        "image_id": cloud.image_id(),
        "image_properties": {},
        "availability_zone": None,
        "server_group_id": None,
        "server_group_policy": None,
        "networks": [],
        "key_name": None,
        "block_devices": [],
        "metadata": {},
    }
    ghost = new_event(
        EventType.INSTANCE_SCHEDULED,
        str(uuid.uuid4()),
        {
            "spec": spec,
            "host": "no-such-host",
            "alternates": [],
            "attempt": 1,
            "claim": {"vcpus": 1, "ram_mb": 512, "disk_gb": 1},
        },
    )
    # signed as the scheduler signs its decisions: the API's key may not write one
    scheduler = cloud.cluster.codec_of("scheduler")
    cloud.readmodel.log.append(
        [OutRecord(str(Topic.SCHEDULED), ghost.aggregate_id.encode(), scheduler.encode(ghost))])
    assert cloud.readmodel.wait_until(
        lambda m: any(d.aggregate_id == ghost.aggregate_id for d in m.dead_letters), 30
    )
    letter = next(d for d in cloud.readmodel.models.dead_letters if d.aggregate_id == ghost.aggregate_id)
    assert "no-such-host" in letter.body["reason"]
    assert letter.body["group"] == "eventsvm.resolver"
