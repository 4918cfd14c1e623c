"""A real server, booted through the API on either engine, resized to another host and confirmed,
resized again and reverted, and rebuilt: after each saga the API shows nova's status, host and
flavor, the guests on the two hosts (libvirt's test driver) are where they must be, the claims
the log holds are the server's one claim, and os-instance-actions names every action and step."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consumers import scheduler, spawner
from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.events.codec import Codec
from eventsvm.events.model import Event, Topic
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.log.factory import open_log
from eventsvm.log.port import BEGINNING
from eventsvm.projections.billing import LedgerView
from eventsvm.projections.replay import Drain
from eventsvm.state.identity import quota_for
from eventsvm.virt.hypervisor import DomainState
from tests.e2e.conftest import Cloud, CloudFactory
from tests.e2e.test_server_lifecycle import SERVERS, login, settled


def _events(cloud: Cloud, topics: tuple[Topic, ...]) -> Iterator[Event]:
    log_ = open_log(cloud.options.log)
    codec = Codec()
    try:
        reader = log_.reader([str(t) for t in topics], BEGINNING)
        try:
            for records in Drain(reader):
                for record in records:
                    yield codec.decode(record.value)
        finally:
            reader.close()
    finally:
        log_.close()


def claims_in_log(cloud: Cloud) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The claim keys on each host as the scheduler and as the spawners rebuild them from the log."""
    sched = scheduler.SERVICE
    state = sched.initial_state()
    # one reader over all its state topics, as the runner reads them (in no fixed topic order)
    for event in _events(cloud, sched.state_topics):
        state = sched.evolve(state, event)
    by_scheduler = {name: set(host.claims) for name, host in state.hosts.items()}
    by_spawners: dict[str, set[str]] = {}
    for host in cloud.cluster.hosts:
        service = spawner.service_for(host.name)
        held = service.initial_state()
        for event in _events(cloud, service.state_topics):
            held = service.evolve(held, event)
        by_spawners[host.name] = set(held.claims)
    return by_scheduler, by_spawners


@pytest.fixture(params=[2, 1], ids=["a-spawner-a-host", "one-pool-of-both-hosts"])
def client(make_cloud: CloudFactory, tmp_path: Path, request: pytest.FixtureRequest
           ) -> Iterator[tuple[Cloud, TestClient]]:
    # on one partition both hosts are served by one spawner (a pool): each end of a move is
    # still decided, claimed and signed as its own host
    cloud = make_cloud(hosts=2, partitions=request.param)
    ensure_keys(tmp_path / "keys")
    # os-simple-tenant-usage from the billing service's ledger, as `eventsvm up` serves it
    ledger = LedgerView(open_log(cloud.options.log), Codec())
    api = create_app(ApiContext(readmodel=cloud.readmodel, tokens=TokenService(tmp_path / "keys"),
                                ledger=ledger))
    with TestClient(api) as client:
        yield cloud, client
    ledger.close()
    ledger.log.close()


def test_resize_confirm_revert_and_rebuild_through_the_api(client: tuple[Cloud, TestClient]) -> None:
    cloud, api = client
    hypervisors = {h.name: h.hypervisor for h in cloud.cluster.hosts}
    demo, admin = login(api, "demo", "demo-pw"), login(api, "admin", "admin-pw")
    server_id = cloud.submit("mover")
    settled(cloud, server_id, "ACTIVE")

    def action(body: dict[str, Any]) -> Any:
        return api.post(f"{SERVERS}/{server_id}/action", headers=demo, json=body)

    def shown() -> dict[str, Any]:
        server: dict[str, Any] = api.get(f"{SERVERS}/{server_id}", headers=admin).json()["server"]
        return server

    first = shown()
    source, address = first["OS-EXT-SRV-ATTR:host"], first["addresses"]
    [dest] = set(hypervisors) - {source}

    # nova's refusals: same flavor, unknown flavor, confirm of a server not resized
    same = action({"resize": {"flavorRef": "1"}})
    assert (same.status_code, same.json()["badRequest"]["message"]) == (
        400, "When resizing, instances must change flavor!")
    assert action({"resize": {"flavorRef": "nope"}}).status_code == 400
    assert action({"resize": {}}).status_code == 400
    # a bigger flavor is counted against the quota at the door, as nova does (403)
    project = cloud.demo[1]
    put = api.put(f"/compute/v2.1/os-quota-sets/{project}", headers=admin,
                  json={"quota_set": {"cores": 1}})
    assert put.status_code == 200, put.text
    assert cloud.readmodel.wait_until(lambda models: quota_for(models.identity, project).cores == 1, 10)
    over = action({"resize": {"flavorRef": "3"}})
    assert over.json()["forbidden"]["message"] == (
        "Quota exceeded for cores: Requested 1, but already used 1 of 1 cores")
    cloud.unlimited_quota()
    assert cloud.readmodel.wait_until(lambda models: quota_for(models.identity, project).cores < 0, 10)
    refused = action({"confirmResize": None})
    assert (refused.status_code, refused.json()["conflictingRequest"]["message"]) == (
        409, f"Cannot 'confirmResize' instance {server_id} while it is in vm_state active")

    # resize to m1.small: the scheduler leaves the source out (allow_resize_to_same_host off)
    assert action({"resize": {"flavorRef": "2"}}).status_code == 202
    settled(cloud, server_id, "VERIFY_RESIZE")
    server = shown()
    assert (server["OS-EXT-STS:vm_state"], server["flavor"]["id"], server["OS-EXT-SRV-ATTR:host"]) == (
        "resized", "2", dest)
    assert server["addresses"] == address
    assert hypervisors[dest].state(server_id) is DomainState.RUNNING
    assert hypervisors[source].state(server_id) is DomainState.SHUTDOWN
    # both claims are held until the resize is confirmed or reverted
    by_scheduler, by_spawners = claims_in_log(cloud)
    assert by_scheduler == by_spawners == {source: {server_id}, dest: {f"{server_id}:resize"}}
    again = action({"resize": {"flavorRef": "3"}})
    assert (again.status_code, again.json()["conflictingRequest"]["message"]) == (
        409, f"Cannot 'resize' instance {server_id} while it is in vm_state resized")

    assert action({"confirmResize": None}).status_code == 204
    settled(cloud, server_id, "ACTIVE")
    server = shown()
    assert (server["flavor"]["id"], server["OS-EXT-SRV-ATTR:host"]) == ("2", dest)
    assert hypervisors[source].state(server_id) is None
    assert hypervisors[dest].state(server_id) is DomainState.RUNNING
    by_scheduler, by_spawners = claims_in_log(cloud)
    assert by_scheduler == by_spawners == {source: set(), dest: {server_id}}

    # resize back towards the first host, then revert: the server is where it was, as it was
    assert action({"resize": {"flavorRef": "3"}}).status_code == 202
    settled(cloud, server_id, "VERIFY_RESIZE")
    assert shown()["OS-EXT-SRV-ATTR:host"] == source
    assert hypervisors[source].state(server_id) is DomainState.RUNNING
    assert action({"revertResize": None}).status_code == 202
    settled(cloud, server_id, "ACTIVE")
    server = shown()
    assert (server["flavor"]["id"], server["OS-EXT-SRV-ATTR:host"]) == ("2", dest)
    assert server["addresses"] == address
    assert hypervisors[source].state(server_id) is None
    assert hypervisors[dest].state(server_id) is DomainState.RUNNING
    by_scheduler, by_spawners = claims_in_log(cloud)
    assert by_scheduler == by_spawners == {source: set(), dest: {server_id}}

    # rebuild: same host, same address, the answer is the server in REBUILD with what changed
    bad = action({"rebuild": {"imageRef": "no-such-image"}})
    assert bad.status_code == 400, bad.text
    answer = action({"rebuild": {"imageRef": cloud.image_id(), "name": "rebuilt", "metadata": {"k": "v"},
                                 "adminPass": "rebuildPassw0rd"}})
    assert answer.status_code == 202, answer.text
    rebuilt = answer.json()["server"]
    assert (rebuilt["id"], rebuilt["name"], rebuilt["status"], rebuilt["metadata"]) == (
        server_id, "rebuilt", "REBUILD", {"k": "v"})
    assert rebuilt["image"]["id"] == cloud.image_id()
    # nova's rebuild answer is its basic view (no extended status) with the guest's new password
    assert rebuilt["adminPass"] == "rebuildPassw0rd" and "OS-EXT-STS:vm_state" not in rebuilt
    assert rebuilt["addresses"] == {net: [{"version": a["version"], "addr": a["addr"]} for a in shown]
                                    for net, shown in address.items()}
    settled(cloud, server_id, "ACTIVE")
    server = shown()
    assert (server["name"], server["OS-EXT-SRV-ATTR:host"], server["addresses"]) == ("rebuilt", dest, address)
    assert hypervisors[dest].state(server_id) is DomainState.RUNNING

    listed = api.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=demo).json()["instanceActions"]
    assert [a["action"] for a in reversed(listed)] == [
        "create", "resize", "confirmResize", "resize", "revertResize", "rebuild"]
    resize = next(a for a in reversed(listed) if a["action"] == "resize")
    steps = api.get(f"{SERVERS}/{server_id}/os-instance-actions/{resize['request_id']}", headers=demo)
    assert [(e["event"], e["result"]) for e in steps.json()["instanceAction"]["events"]] == [
        ("conductor_migrate_server", "Success"), ("compute_finish_resize", "Success"),
        ("compute_resize_instance", "Success")]

    # a deleted server cannot be rebuilt: 404, as nova
    assert api.delete(f"{SERVERS}/{server_id}", headers=demo).status_code == 204
    cloud.wait_for([server_id], {"DELETED"})
    gone = action({"rebuild": {"imageRef": cloud.image_id()}})
    assert gone.status_code == 404

    # billed by the flavor it had: m1.tiny until the confirmation, m1.small after (the revert and
    # the rebuild change nothing); the billing service writes it behind the instance events
    def billed() -> list[tuple[str, bool]]:
        period = {"start": "2000-01-01T00:00:00", "end": "2100-01-01T00:00:00"}
        usage = api.get(f"/compute/v2.1/os-simple-tenant-usage/{cloud.demo[1]}", params=period,
                        headers=demo).json()
        return [(s["flavor"], s["ended_at"] is not None) for s in usage["tenant_usage"]["server_usages"]
                if s["instance_id"] == server_id]

    deadline = time.monotonic() + 30
    while billed() != [("m1.tiny", True), ("m1.small", True)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert billed() == [("m1.tiny", True), ("m1.small", True)]


def test_a_resize_no_host_can_take_fails_and_leaves_the_server_where_it_was(
    client: tuple[Cloud, TestClient],
) -> None:
    cloud, api = client
    demo = login(api, "demo", "demo-pw")
    server_id = cloud.submit("stays")
    settled(cloud, server_id, "ACTIVE")
    before = cloud.instance(server_id)
    cloud.unlimited_quota()
    # more vCPUs than any host offers (64 at a ratio of 4.0): no destination passes the filters
    admin = login(api, "admin", "admin-pw")
    made = api.post("/compute/v2.1/flavors", headers=admin, json={"flavor": {
        "name": "huge", "vcpus": 1000, "ram": 512, "disk": 1, "id": "huge"}})
    assert made.status_code == 200, made.text
    assert api.post(f"{SERVERS}/{server_id}/action", headers=demo,
                    json={"resize": {"flavorRef": "huge"}}).status_code == 202
    settled(cloud, server_id, "ACTIVE")
    after = cloud.instance(server_id)
    assert (after.host, after.flavor, after.vm_state) == (before.host, before.flavor, "active")
    assert after.fault is not None and "No valid host" in after.fault["message"]
    listed = api.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=demo).json()["instanceActions"]
    assert (listed[0]["action"], listed[0]["message"]) == ("resize", "Error")
    by_scheduler, by_spawners = claims_in_log(cloud)
    assert {h: c for h, c in by_scheduler.items() if c} == {before.host: {server_id}}
    assert {h: c for h, c in by_spawners.items() if c} == {before.host: {server_id}}
