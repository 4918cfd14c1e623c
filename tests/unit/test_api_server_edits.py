"""Nova's PUT /servers/{id} and server metadata: each change is one event on the log, chained to
the instance's newest event, shown by the server view, refused with nova's codes and messages, and
absent from os-instance-actions (nova records no action for them)."""

from __future__ import annotations

import pytest
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType, Topic
from eventsvm.projections.audit import verify

SERVERS = "/compute/v2.1/servers"


def _active(cloud: Cloud, **extra: object) -> str:
    server_id = cloud.create_server(**extra)  # type: ignore[arg-type]
    cloud.advance(server_id, "active")
    return server_id


def _show(cloud: Cloud, server_id: str, user: str = "demo") -> dict:
    answer = cloud.client.get(f"{SERVERS}/{server_id}", headers=cloud.headers(user))
    assert answer.status_code == 200, answer.text
    return answer.json()["server"]


# -- PUT /servers/{id} -----------------------------------------------------------------------------
def test_update_renames_and_sets_access_ips_with_one_chained_event(cloud: Cloud):
    server_id = _active(cloud)
    inst = cloud.instance(server_id)
    last = (inst.last_sequence, inst.last_hash, inst.last_event_id)
    answer = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(), json={"server": {
        "name": "renamed", "accessIPv4": "203.0.113.7", "accessIPv6": "2001:db8::7"}})
    assert answer.status_code == 200, answer.text
    server = answer.json()["server"]
    assert (server["id"], server["name"], server["accessIPv4"], server["accessIPv6"]) == (
        server_id, "renamed", "203.0.113.7", "2001:db8::7")
    assert server["status"] == "ACTIVE"
    # nova answers an update with its view without the extensions (tempest's update_server schema)
    assert set(server) == {"id", "name", "status", "tenant_id", "user_id", "metadata", "hostId", "image",
                           "flavor", "created", "updated", "addresses", "accessIPv4", "accessIPv6", "links",
                           "OS-DCF:diskConfig", "progress"}
    [event] = cloud.events(EventType.INSTANCE_UPDATED)
    assert event.topic == Topic.UPDATED
    assert (event.sequence, event.prev_hash, event.causation_id) == (last[0] + 1, last[1], last[2])
    assert event.body == {"name": "renamed", "access_ipv4": "203.0.113.7", "access_ipv6": "2001:db8::7",
                          "description": None, "description_set": False}
    assert event.request_id == answer.headers["x-openstack-request-id"]
    # a second update changes only what it names
    cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(), json={"server": {"name": "again"}})
    shown = _show(cloud, server_id)
    assert (shown["name"], shown["accessIPv4"], shown["accessIPv6"]) == (
        "again", "203.0.113.7", "2001:db8::7")
    listed = cloud.client.get(SERVERS, params={"name": "^again$"}, headers=cloud.headers()).json()["servers"]
    assert [s["id"] for s in listed] == [server_id]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"server": {"description": "d"}},
         "Additional properties are not allowed ('description' was unexpected)"),
        ({"server": {"name": ""}}, "Invalid input for field/attribute name"),
        ({"server": {"name": "x" * 256}}, "Invalid input for field/attribute name"),
        ({"server": {"name": "   "}}, "An invalid 'name' value was provided"),
        ({"server": {"name": " lead"}}, "Can not start or end with whitespace"),
        ({"server": {"name": 5}}, "is not of type 'string'"),
        ({"server": {"accessIPv4": "2001:db8::1"}}, "Invalid input for field/attribute accessIPv4"),
        ({"server": {"accessIPv4": "300.1.1.1"}}, "Invalid input for field/attribute accessIPv4"),
        ({"server": {"accessIPv6": "10.0.0.1"}}, "Invalid input for field/attribute accessIPv6"),
        ({"server": {"OS-DCF:diskConfig": "SOMETIMES"}}, "OS-DCF:diskConfig"),
        ({"server": "vm"}, "is not of type 'object'"),
        ({"name": "vm"}, "'server' is a required property"),
        ({"server": {}, "extra": 1}, "Additional properties are not allowed ('extra' was unexpected)"),
    ],
)
def test_update_refuses_what_nova_2_1_refuses_and_appends_nothing(cloud: Cloud, body: dict, message: str):
    server_id = _active(cloud)
    before = len(cloud.records())
    answer = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(), json=body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["badRequest"]["message"]
    assert len(cloud.records()) == before


def test_update_of_a_deleted_or_foreign_server_is_404_and_a_reader_is_403(cloud: Cloud):
    server_id = _active(cloud)
    rename = {"server": {"name": "x"}}
    foreign = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers("alice"), json=rename)
    assert foreign.status_code == 404
    refused = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers("reader"), json=rename)
    assert refused.status_code == 403
    assert "os_compute_api:servers:update" in refused.json()["forbidden"]["message"]
    by_admin = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers("admin"), json=rename)
    assert by_admin.status_code == 200
    cloud.advance(server_id, "deleted")
    gone = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(), json=rename)
    assert gone.status_code == 404
    assert gone.json()["itemNotFound"]["message"] == f"Instance {server_id} could not be found."


# -- metadata ----------------------------------------------------------------------------------------
def test_metadata_list_merge_replace_and_items_come_from_the_log(cloud: Cloud):
    server_id = _active(cloud, metadata={"role": "web"})
    base = f"{SERVERS}/{server_id}/metadata"
    h = cloud.headers()
    assert cloud.client.get(base, headers=h).json() == {"metadata": {"role": "web"}}
    merged = cloud.client.post(base, headers=h, json={"metadata": {"tier": "front", "role": "db"}})
    assert merged.status_code == 200
    assert merged.json() == {"metadata": {"role": "db", "tier": "front"}}
    one = cloud.client.put(f"{base}/zone", headers=h, json={"meta": {"zone": "a"}})
    assert (one.status_code, one.json()) == (200, {"meta": {"zone": "a"}})
    assert cloud.client.get(f"{base}/zone", headers=h).json() == {"meta": {"zone": "a"}}
    assert cloud.client.delete(f"{base}/tier", headers=h).status_code == 204
    assert _show(cloud, server_id)["metadata"] == {"role": "db", "zone": "a"}
    replaced = cloud.client.put(base, headers=h, json={"metadata": {"only": "this"}})
    assert (replaced.status_code, replaced.json()) == (200, {"metadata": {"only": "this"}})
    assert _show(cloud, server_id)["metadata"] == {"only": "this"}
    assert cloud.client.put(base, headers=h, json={"metadata": {}}).json() == {"metadata": {}}
    assert cloud.client.get(base, headers=h).json() == {"metadata": {}}
    changes = cloud.events(EventType.INSTANCE_METADATA_CHANGED)
    assert [(c.body["set"], c.body["removed"], c.body["replace"]) for c in changes] == [
        ({"tier": "front", "role": "db"}, [], False), ({"zone": "a"}, [], False), ({}, ["tier"], False),
        ({"only": "this"}, [], True), ({}, [], True)]
    assert [c.sequence for c in changes] == list(range(changes[0].sequence, changes[0].sequence + 5))
    # no instance action for metadata, as in nova
    actions = cloud.client.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=h).json()
    assert [a["action"] for a in actions["instanceActions"]] == ["create"]
    # every edit is a link of the instance's hash chain, which the auditor finds whole
    report = verify(cloud.readmodel.log, cloud.readmodel.codec)
    assert report.clean, report.findings
    assert report.links == cloud.instance(server_id).last_sequence - 1


def test_missing_keys_are_404_and_mismatched_bodies_400(cloud: Cloud):
    server_id = _active(cloud, metadata={"role": "web"})
    base = f"{SERVERS}/{server_id}/metadata"
    h = cloud.headers()
    for answer in (cloud.client.get(f"{base}/nope", headers=h),
                   cloud.client.delete(f"{base}/nope", headers=h)):
        assert answer.status_code == 404
        assert answer.json()["itemNotFound"]["message"] == "Metadata item was not found"
    mismatch = cloud.client.put(f"{base}/role", headers=h, json={"meta": {"other": "x"}})
    assert mismatch.status_code == 400
    assert mismatch.json()["badRequest"]["message"] == "Request body and URI mismatch"
    two = cloud.client.put(f"{base}/role", headers=h, json={"meta": {"role": "x", "other": "y"}})
    assert two.status_code == 400 and "too many properties" in two.json()["badRequest"]["message"]
    before = len(cloud.records())
    for body in ({"metadata": {"k": 5}}, {"metadata": {"k": "v" * 256}}, {"metadata": {"": "v"}},
                 {"metadata": {"k" * 256: "v"}}, {"metadata": {"bad/key": "v"}}, {"meta": {"k": "v"}},
                 {"metadata": ["k"]}):
        answer = cloud.client.post(base, headers=h, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert "badRequest" in answer.json()
    assert len(cloud.records()) == before


def test_more_than_128_items_is_nova_403(cloud: Cloud):
    server_id = _active(cloud, metadata={f"k{i}": "v" for i in range(100)})
    base = f"{SERVERS}/{server_id}/metadata"
    over = cloud.client.post(base, headers=cloud.headers(),
                             json={"metadata": {f"n{i}": "v" for i in range(29)}})
    assert over.status_code == 403
    assert over.json()["forbidden"]["message"] == "Maximum number of metadata items exceeds 128"
    fits = cloud.client.post(base, headers=cloud.headers(),
                             json={"metadata": {f"n{i}": "v" for i in range(28)}})
    assert fits.status_code == 200 and len(fits.json()["metadata"]) == 128
    assert cloud.client.put(f"{base}/one-more", headers=cloud.headers(),
                            json={"meta": {"one-more": "v"}}).status_code == 403
    # a replacement counts only what it keeps
    assert cloud.client.put(base, headers=cloud.headers(),
                            json={"metadata": {f"r{i}": "v" for i in range(128)}}).status_code == 200


def test_metadata_of_deleted_foreign_or_building_servers(cloud: Cloud):
    server_id = cloud.create_server(metadata={"role": "web"})
    base = f"{SERVERS}/{server_id}/metadata"
    building = cloud.client.post(base, headers=cloud.headers(), json={"metadata": {"a": "b"}})
    assert building.status_code == 409
    assert building.json()["conflictingRequest"]["message"] == (
        f"Cannot 'update metadata' instance {server_id} while it is in vm_state building")
    assert cloud.client.get(base, headers=cloud.headers()).status_code == 200  # reading is fine
    # a missing key is a 404 before the state is looked at, as in nova
    assert cloud.client.delete(f"{base}/nope", headers=cloud.headers()).status_code == 404
    assert cloud.client.delete(f"{base}/role", headers=cloud.headers()).status_code == 409
    cloud.advance(server_id, "active")
    assert cloud.client.get(base, headers=cloud.headers("alice")).status_code == 404
    foreign = cloud.client.post(base, headers=cloud.headers("alice"), json={"metadata": {"a": "b"}})
    assert foreign.status_code == 404
    reader = cloud.client.delete(f"{base}/role", headers=cloud.headers("reader"))
    assert reader.status_code == 403
    assert cloud.client.get(base, headers=cloud.headers("reader")).status_code == 200
    cloud.advance(server_id, "deleted")
    for answer in (cloud.client.get(base, headers=cloud.headers()),
                   cloud.client.get(f"{base}/role", headers=cloud.headers()),
                   cloud.client.delete(f"{base}/role", headers=cloud.headers())):
        assert answer.status_code == 404


def test_access_ips_given_at_create_are_kept_and_a_bad_one_is_nova_400(cloud: Cloud):
    server_id = cloud.create_server(accessIPv4="198.51.100.4", accessIPv6="2001:db8::4")
    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    assert (event.body["access_ipv4"], event.body["access_ipv6"]) == ("198.51.100.4", "2001:db8::4")
    shown = _show(cloud, server_id)
    assert (shown["accessIPv4"], shown["accessIPv6"]) == ("198.51.100.4", "2001:db8::4")
    before = len(cloud.records())
    for field, value in (("accessIPv6", "notvalid"), ("accessIPv4", "2001:db8::4"), ("accessIPv4", 4)):
        body = cloud.server_request(**{field: value})
        answer = cloud.client.post(SERVERS, json=body, headers=cloud.headers())
        assert answer.status_code == 400, answer.text
        assert f"Invalid input for field/attribute {field}" in answer.json()["badRequest"]["message"]
    assert len(cloud.records()) == before


def test_a_locked_servers_metadata_changes_only_for_an_admin(cloud: Cloud):
    server_id = _active(cloud, metadata={"role": "web"})
    base = f"{SERVERS}/{server_id}/metadata"
    lock = cloud.client.post(f"{SERVERS}/{server_id}/action", json={"lock": None}, headers=cloud.headers())
    assert lock.status_code == 202
    for answer in (cloud.client.post(base, headers=cloud.headers(), json={"metadata": {"a": "b"}}),
                   cloud.client.delete(f"{base}/role", headers=cloud.headers())):
        assert answer.status_code == 409
        assert answer.json()["conflictingRequest"]["message"] == f"Instance {server_id} is locked"
    # nova's update of the name takes no lock into account, and an admin passes the lock
    rename = cloud.client.put(f"{SERVERS}/{server_id}", headers=cloud.headers(),
                              json={"server": {"name": "n"}})
    assert rename.status_code == 200
    by_admin = cloud.client.post(base, headers=cloud.headers("admin"), json={"metadata": {"a": "b"}})
    assert by_admin.status_code == 200 and by_admin.json()["metadata"] == {"role": "web", "a": "b"}


def test_progress_is_shown_only_in_novas_progress_statuses(cloud: Cloud):
    active, failed = _active(cloud), cloud.create_server("vm-error")
    cloud.advance(failed, "error")
    assert _show(cloud, active)["progress"] == 0
    assert "progress" not in _show(cloud, failed)  # ERROR, as SHUTOFF or PAUSED: nova leaves it out
    renamed = cloud.client.put(f"{SERVERS}/{failed}", headers=cloud.headers(), json={"server": {"name": "x"}})
    assert "progress" not in renamed.json()["server"]
