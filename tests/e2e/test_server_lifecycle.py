"""A real server, booted through the API on either engine, taken through nova's power and lock
actions: stop, start, soft and hard reboot, pause / unpause, suspend / resume, lock / unlock. After
each one the API shows nova's status and the libvirt domain (the test driver's) is in the matching
state; a delete during an action still removes the guest; os-instance-actions names every action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.virt.hypervisor import DomainState
from tests.e2e.conftest import Cloud, CloudFactory

SERVERS = "/compute/v2.1/servers"


def login(client: TestClient, user: str, password: str) -> dict[str, str]:
    answer = client.post("/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {
            "user": {"name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": user, "domain": {"id": "default"}}}}})
    assert answer.status_code == 201, answer.text
    return {"X-Auth-Token": answer.headers["X-Subject-Token"]}


def api_over(cloud: Cloud, key_dir: Path) -> FastAPI:
    """The API over the cloud's read model, issuing tokens with Fernet keys of its own."""
    ensure_keys(key_dir)
    return create_app(ApiContext(readmodel=cloud.readmodel, tokens=TokenService(key_dir)))


def boot_active(client: TestClient, headers: dict[str, str], cloud: Cloud, name: str) -> str:
    """POST a server of flavor 1 on the cloud's network and wait until it is ACTIVE; its id."""
    answer = client.post(SERVERS, headers=headers, json={"server": {
        "name": name, "imageRef": cloud.image_id(), "flavorRef": "1",
        "networks": [{"uuid": cloud.network_id()}]}})
    assert answer.status_code == 202, answer.text
    server_id = str(answer.json()["server"]["id"])
    settled(cloud, server_id, "ACTIVE")
    return server_id


def settled(cloud: Cloud, server_id: str, status: str, timeout: float = 30.0) -> None:
    """Wait until the server shows `status` with no task in hand."""
    def done(models: Any) -> bool:
        inst = models.instances.get(server_id)
        return inst is not None and inst.status == status and inst.task_state is None

    if not cloud.readmodel.wait_until(done, timeout):
        inst = cloud.instance(server_id)
        raise AssertionError(f"not {status} after {timeout}s: {inst.status} / {inst.task_state}")


def test_power_and_lock_actions_through_the_api_reach_the_domain(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=1)
    hypervisor = cloud.cluster.hosts[0].hypervisor
    with TestClient(api_over(cloud, tmp_path / "keys")) as client:
        demo, admin = login(client, "demo", "demo-pw"), login(client, "admin", "admin-pw")
        server_id = boot_active(client, demo, cloud, "lifecycle")

        def action(body: dict[str, Any], headers: dict[str, str] = demo) -> Any:
            return client.post(f"{SERVERS}/{server_id}/action", headers=headers, json=body)

        steps = [
            ({"os-stop": None}, "SHUTOFF", "stopped", DomainState.SHUTDOWN),
            ({"os-start": None}, "ACTIVE", "active", DomainState.RUNNING),
            ({"reboot": {"type": "SOFT"}}, "ACTIVE", "active", DomainState.RUNNING),
            ({"reboot": {"type": "HARD"}}, "ACTIVE", "active", DomainState.RUNNING),
            ({"pause": None}, "PAUSED", "paused", DomainState.PAUSED),
            ({"unpause": None}, "ACTIVE", "active", DomainState.RUNNING),
            ({"suspend": None}, "SUSPENDED", "suspended", DomainState.SHUTDOWN),
            ({"resume": None}, "ACTIVE", "active", DomainState.RUNNING),
        ]
        for body, status, vm_state, domain_state in steps:
            answer = action(body)
            assert answer.status_code == 202, (body, answer.text)
            settled(cloud, server_id, status)
            server = client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"]
            assert (server["status"], server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:task_state"],
                    server["OS-EXT-STS:power_state"]) == (status, vm_state, None, int(domain_state)), body
            assert hypervisor.state(server_id) is domain_state, body
            if "suspend" in body:
                assert hypervisor.has_saved_memory(server_id)
        assert action({"os-start": None}).json()["conflictingRequest"]["message"] == (
            f"Cannot 'start' instance {server_id} while it is in vm_state active")

        # locked by its owner: the owner's actions are refused, an admin's are not
        assert action({"lock": None}).status_code == 202
        answer = action({"os-stop": None})
        assert (answer.status_code, answer.json()["conflictingRequest"]["message"]) == (
            409, f"Instance {server_id} is locked")
        assert hypervisor.state(server_id) is DomainState.RUNNING
        assert action({"os-stop": None}, admin).status_code == 202
        settled(cloud, server_id, "SHUTOFF")
        assert hypervisor.state(server_id) is DomainState.SHUTDOWN
        # a stopped server is still billed, as in nova's os-simple-tenant-usage
        project = cloud.demo[1]
        usage = client.get(f"/compute/v2.1/os-simple-tenant-usage/{project}", headers=demo).json()
        [billed] = usage["tenant_usage"]["server_usages"]
        assert (billed["instance_id"], billed["state"], billed["ended_at"]) == (server_id, "stopped", None)
        assert action({"unlock": None}).status_code == 202
        assert action({"os-start": None}).status_code == 202
        settled(cloud, server_id, "ACTIVE")

        listed = client.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=demo).json()
        assert [a["action"] for a in reversed(listed["instanceActions"])] == [
            "create", "stop", "start", "reboot", "reboot", "pause", "unpause", "suspend", "resume", "lock",
            "stop", "unlock", "start"]
        stop = next(a for a in listed["instanceActions"] if a["action"] == "stop")
        one = client.get(f"{SERVERS}/{server_id}/os-instance-actions/{stop['request_id']}", headers=demo)
        assert [(e["event"], e["result"]) for e in one.json()["instanceAction"]["events"]] == [
            ("compute_stop_instance", "Success")]

        # a delete right behind an action is not held up by it, and the guest goes
        assert action({"reboot": {"type": "SOFT"}}).status_code == 202
        assert client.delete(f"{SERVERS}/{server_id}", headers=demo).status_code == 204
        cloud.wait_for([server_id], {"DELETED"})
        assert hypervisor.state(server_id) is None
