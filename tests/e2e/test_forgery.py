"""Issue 14, item 5: someone who can write to the log but holds no writer's key appends a validly
encoded identity.role_assigned that makes `demo` an admin of the admin project. `audit verify`
names it, every fold dead-letters it, and demo still sees only its own project's servers; the same
for the event signed by a writer's real key that may not write identity events (the scheduler's),
and for a validly signed old grant appended again after the role was unassigned (a replay)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from eventsvm.app.cloud import serving_app
from eventsvm.app.writers import writer_codec, writer_ring
from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, Topic, new_event
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING, OutRecord
from eventsvm.projections.audit import DUPLICATE, FORGED, verify
from eventsvm.projections.readmodel import Models
from eventsvm.projections.replay import Drain
from eventsvm.runtime.fold_letters import FORGED as FORGED_LETTER
from eventsvm.runtime.fold_letters import REPLAYED
from tests.e2e.conftest import CloudFactory, wait_quiet
from tests.factories import plain_request


def token(client: TestClient, user: str, password: str, project: str) -> tuple[int, str]:
    answer = client.post("/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}})
    return answer.status_code, answer.headers.get("X-Subject-Token", "")


def test_a_forged_role_assignment_is_reported_and_never_applied(make_cloud: CloudFactory) -> None:
    cloud = make_cloud(hosts=1)
    cloud.forgeries_expected = True
    identity = cloud.readmodel.models.identity
    admin_user, admin_project = identity.user_by_name("admin", "default"), identity.project_by_name(
        "admin", "default")
    assert admin_user is not None and admin_project is not None
    demo_user, demo_project = cloud.demo
    mine = cloud.submit("mine")
    theirs = str(uuid.uuid4())
    body = plain_request("theirs", "1", cloud.image_id(), cloud.network_id(), "forgery-theirs")
    cloud.readmodel.append([new_event(EventType.INSTANCE_REQUESTED, theirs, body, user_id=admin_user.id,
                                      project_id=admin_project.id)],
                           [cloud.readmodel.partition_by(Topic.REQUESTED, admin_project.id)])
    cloud.wait_for([mine, theirs], {"ACTIVE"}, timeout=60)

    # the forger: the log's own client and the codec, no writer's key (then a writer's key that
    # may not write identity events)
    grant = {"user_id": demo_user, "project_id": admin_project.id, "role": "admin"}
    forged = [new_event(EventType.ROLE_ASSIGNED, f"{demo_user}:{admin_project.id}", grant),
              new_event(EventType.ROLE_ASSIGNED, f"{demo_user}:{admin_project.id}", grant)]
    scheduler = writer_codec(cloud.options.data_dir, "scheduler")
    payloads = [Codec().encode(forged[0]), scheduler.encode(forged[1])]
    forger = open_log(cloud.options.log)
    try:
        places = [(str(Topic.IDENTITY),
                   *forger.append([OutRecord(str(Topic.IDENTITY), e.aggregate_id.encode(), data)])[0])
                  for e, data in zip(forged, payloads, strict=True)]
        # and a replay: demo's member role is unassigned, then the seed's signed assignment of it
        # is appended again, byte for byte
        reader = forger.reader([str(Topic.IDENTITY)], BEGINNING)
        try:
            (original,) = [r for batch in Drain(reader) for r in batch
                           if (e := Codec().decode(r.value)).type == EventType.ROLE_ASSIGNED
                           and e.body == {"user_id": demo_user, "project_id": demo_project,
                                          "role": "member"}]
        finally:
            reader.close()
        member = {"user_id": demo_user, "project_id": demo_project, "role": "member"}
        cloud.readmodel.append([new_event(EventType.ROLE_UNASSIGNED, f"{demo_user}:{demo_project}", member)])
        assert "member" not in identity.roles_of(demo_user, demo_project)
        replayed = (str(Topic.IDENTITY), *forger.append([OutRecord(original.topic, original.key,
                                                                   original.value)])[0])
    finally:
        forger.close()

    def lettered(models: Models) -> bool:
        letters = {(e.body["error_type"], e.body["source_topic"], e.body["source_partition"],
                    e.body["source_offset"]) for e in models.dead_letters}
        return (all((FORGED_LETTER, *place) in letters for place in places)
                and (REPLAYED, *replayed) in letters)

    assert cloud.readmodel.wait_until(lettered, 30), "the read model letters both forgeries"
    wait_quiet(cloud)
    assert "admin" not in identity.roles_of(demo_user, admin_project.id)
    assert identity.roles_of(demo_user, demo_project) == {"reader"}, "the replayed grant is not applied"

    app, _context, monitoring = serving_app(cloud.readmodel, cloud.options.data_dir, "http://testserver")
    try:
        client = TestClient(app)
        assert token(client, "demo", "demo-pw", "admin")[0] == 401, "no role on the admin project"
        status, demo_token = token(client, "demo", "demo-pw", "demo")
        assert status == 201
        assert client.get("/compute/v2.1/servers?all_tenants=1",
                          headers={"X-Auth-Token": demo_token}).status_code == 403, "not an admin anywhere"
        listing = client.get("/compute/v2.1/servers", headers={"X-Auth-Token": demo_token})
        assert listing.status_code == 200
        assert {s["id"] for s in listing.json()["servers"]} == {mine}
        status, admin_token = token(client, "admin", "admin-pw", "admin")
        everything = client.get("/compute/v2.1/servers?all_tenants=1", headers={"X-Auth-Token": admin_token})
        assert {s["id"] for s in everything.json()["servers"]} == {mine, theirs}
    finally:
        monitoring.close()
        _context.consoles.close()

    log = open_log(cloud.options.log)
    try:
        report = verify(log, Codec().keyed(None, writer_ring(cloud.options.data_dir)))
    finally:
        log.close()
    found = sorted((f.kind, f.topic, f.partition, f.offset) for f in report.findings)
    assert found == sorted([(FORGED, *place) for place in places] + [(DUPLICATE, *replayed)]), report.findings
    details = " ".join(f.detail for f in report.findings)
    assert "unsigned" in details and "scheduler, which may not write identity.role_assigned" in details
