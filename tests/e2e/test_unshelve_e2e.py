"""An unshelve through the API shows nova's states the whole way, on a real pipeline: the server
is SHELVED_OFFLOADED / unshelving while it is placed, spawning once its host has it, ACTIVE when
the guest runs. The host's spawn is held (the real libvirt call waits until the test lets it go),
so the state is read at the moment the log proves the unshelve placed and resolved but not
spawned. With no room left, the unshelve fails and the server stays SHELVED_OFFLOADED, the failure
on its os-instance-actions record, as nova's conductor leaves it; with room again it unshelves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from eventsvm.events.model import INSTANCE_TOPICS, Event, EventType
from eventsvm.state.instances import evolve_projection, initial_projection
from eventsvm.virt.compute_host import HostCapacity
from eventsvm.virt.hypervisor import DomainState
from tests.e2e.conftest import Cloud, CloudFactory
from tests.e2e.test_delete_mid_action import held
from tests.e2e.test_resize_rebuild import _events
from tests.e2e.test_server_lifecycle import SERVERS, api_over, boot_active, login, settled


def shown(server: dict[str, Any]) -> tuple[str, str, str | None]:
    return server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"]


def act(client: TestClient, headers: dict[str, str], server_id: str, body: dict[str, Any]) -> None:
    answer = client.post(f"{SERVERS}/{server_id}/action", headers=headers, json=body)
    assert answer.status_code == 202, (body, answer.text)


def offloaded(client: TestClient, headers: dict[str, str], cloud: Cloud, name: str) -> str:
    """A server booted ACTIVE and shelved (offloaded at once, as with nova's shelved_offload_time 0)."""
    server_id = boot_active(client, headers, cloud, name)
    act(client, headers, server_id, {"shelve": None})
    settled(cloud, server_id, "SHELVED_OFFLOADED")
    return server_id


def since(events: list[Event], request: Event) -> list[EventType]:
    """The types of the events that followed `request`, in the instance's order."""
    return [e.type for e in sorted(events, key=lambda e: e.sequence) if e.sequence > request.sequence]


def test_an_unshelve_shows_unshelving_and_spawning_not_build(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    hosts = cloud.cluster.hosts
    with TestClient(api_over(cloud, tmp_path / "keys")) as client:
        demo = login(client, "demo", "demo-pw")
        server_id = offloaded(client, demo, cloud, "sleeper")

        def server() -> dict[str, Any]:
            return dict(client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"])

        with held(hosts, "spawn") as (entered, release):
            act(client, demo, server_id, {"unshelve": None})
            # the command is folded as it is appended: nova's API state at once
            assert shown(server())[:2] == ("SHELVED_OFFLOADED", "shelved_offloaded")
            assert server()["OS-EXT-STS:task_state"] in ("unshelving", "spawning")
            assert entered.wait(30), "the unshelve never reached a host"
            # the log proves where it is: placed and resolved, not spawned
            events = [e for e in _events(cloud, INSTANCE_TOPICS) if e.aggregate_id == server_id]
            [unshelve] = [e for e in events if e.type == EventType.INSTANCE_ACTION_REQUESTED
                          and e.body["action"] == "unshelve"]
            assert since(events, unshelve) == [EventType.INSTANCE_SCHEDULED,
                                               EventType.INSTANCE_RESOURCES_RESOLVED]
            resolved = max(events, key=lambda e: e.sequence)
            assert resolved.body["spec"]["unshelve"] is True
            assert cloud.readmodel.wait_until(
                lambda models: models.instances.get(server_id).last_sequence >= resolved.sequence, 30)
            assert shown(server()) == ("SHELVED_OFFLOADED", "shelved_offloaded", "spawning")
            # and the state the log held when it had only placed the unshelve (replay --until there)
            placed = initial_projection()
            for event in sorted(events, key=lambda e: e.sequence):
                if event.sequence < resolved.sequence:
                    evolve_projection(placed, event)
            inst = placed.instances[server_id]
            assert (inst.status, inst.vm_state, inst.task_state) == (
                "SHELVED_OFFLOADED", "shelved_offloaded", "unshelving")
            release.set()
            settled(cloud, server_id, "ACTIVE")
        assert shown(server()) == ("ACTIVE", "active", None)
        host = cloud.instance(server_id).host
        assert next(h for h in hosts if h.name == host).hypervisor.state(server_id) is DomainState.RUNNING


def test_an_unshelve_with_no_valid_host_stays_shelved_offloaded(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    # one host with room for one m1.tiny (512 MB at a RAM allocation ratio of 1)
    cloud = make_cloud(hosts=1, capacity=HostCapacity(vcpus=4, ram_mb=512, disk_gb=20))
    with TestClient(api_over(cloud, tmp_path / "keys")) as client:
        demo = login(client, "demo", "demo-pw")
        shelved = offloaded(client, demo, cloud, "shelved")
        # the offload freed the host's room, and another server takes it
        squatter = boot_active(client, demo, cloud, "squatter")
        act(client, demo, shelved, {"unshelve": None})
        assert cloud.readmodel.wait_until(
            lambda models: any(kind == EventType.INSTANCE_ACTION_FAILED.value
                               for kind, *_ in models.instances.get(shelved).actions), 30)
        settled(cloud, shelved, "SHELVED_OFFLOADED")
        server = client.get(f"{SERVERS}/{shelved}", headers=demo).json()["server"]
        assert shown(server) == ("SHELVED_OFFLOADED", "shelved_offloaded", None)
        assert cloud.instance(shelved).host is None
        assert cloud.cluster.hosts[0].hypervisor.state(shelved) is None
        # the failure is on the unshelve's record, as nova's Error event of conductor scheduling
        listed = client.get(f"{SERVERS}/{shelved}/os-instance-actions", headers=demo)
        actions = listed.json()["instanceActions"]
        assert [(a["action"], a["message"]) for a in actions][0] == ("unshelve", "Error")
        one = client.get(f"{SERVERS}/{shelved}/os-instance-actions/{actions[0]['request_id']}", headers=demo)
        assert [e["result"] for e in one.json()["instanceAction"]["events"]] == ["Error"]
        failure = next(e for e in _events(cloud, INSTANCE_TOPICS)
                       if e.aggregate_id == shelved and e.type == EventType.INSTANCE_ACTION_FAILED)
        assert "No valid host was found" in failure.body["reason"]

        # nothing is stuck: with the room back, the same server unshelves
        assert client.delete(f"{SERVERS}/{squatter}", headers=demo).status_code == 204
        cloud.wait_for([squatter], {"DELETED"})
        act(client, demo, shelved, {"unshelve": None})
        settled(cloud, shelved, "ACTIVE")
        assert cloud.cluster.hosts[0].hypervisor.state(shelved) is DomainState.RUNNING


def test_an_unshelve_whose_spawn_fails_everywhere_stays_shelved_offloaded(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    # two hosts with room for one m1.tiny each: a claim left behind on either would show below
    cloud = make_cloud(hosts=2, capacity=HostCapacity(vcpus=4, ram_mb=512, disk_gb=20))
    hosts = cloud.cluster.hosts
    with TestClient(api_over(cloud, tmp_path / "keys")) as client:
        demo = login(client, "demo", "demo-pw")
        server_id = offloaded(client, demo, cloud, "unlucky")

        def usage() -> dict[str, int]:
            absolute = client.get("/compute/v2.1/limits", headers=demo).json()["limits"]["absolute"]
            return {k: absolute[k] for k in ("totalInstancesUsed", "totalCoresUsed", "totalRAMUsed")}

        before = usage()
        for host in hosts:
            host.broken = "disk on fire"  # every spawn fails: the first host, then its alternate
        act(client, demo, server_id, {"unshelve": None})
        assert cloud.readmodel.wait_until(
            lambda models: any(kind == EventType.INSTANCE_ACTION_FAILED.value
                               for kind, *_ in models.instances.get(server_id).actions), 30)
        settled(cloud, server_id, "SHELVED_OFFLOADED")
        events = [e for e in _events(cloud, INSTANCE_TOPICS) if e.aggregate_id == server_id]
        tried = [e.body["host"] for e in events if e.type == EventType.INSTANCE_FAILED]
        assert sorted(tried) == sorted(h.name for h in hosts)  # rescheduled, then given up
        assert not any(e.type == EventType.INSTANCE_FAILED and e.body["final"] for e in events)
        server = client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"]
        assert shown(server) == ("SHELVED_OFFLOADED", "shelved_offloaded", None)
        assert cloud.instance(server_id).host is None
        fault = cloud.instance(server_id).fault
        assert fault is not None and "disk on fire" in fault["message"]
        assert all(h.hypervisor.state(server_id) is None for h in hosts)
        # the error is on the unshelve's record
        record = f"{SERVERS}/{server_id}/os-instance-actions"
        actions = client.get(record, headers=demo).json()["instanceActions"]
        assert (actions[0]["action"], actions[0]["message"]) == ("unshelve", "Error")
        one = client.get(f"{record}/{actions[0]['request_id']}", headers=demo)
        assert "Error" in [e["result"] for e in one.json()["instanceAction"]["events"]]
        assert usage() == before  # the server kept its quota, nothing given back, nothing twice

        # nothing is held on either host: another server and the unshelved one fill both
        for host in hosts:
            host.broken = None
        other = boot_active(client, demo, cloud, "other")
        act(client, demo, server_id, {"unshelve": None})
        settled(cloud, server_id, "ACTIVE")
        assert {cloud.instance(other).host, cloud.instance(server_id).host} == {h.name for h in hosts}
