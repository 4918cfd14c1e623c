"""The policy table is the single source of who may run a server action: an operator's
nova-policy.yaml that grants an admin-only action to a member lets the member do it (no second
check by hand in the handler refuses it anyway), and without the file the default still answers
nova's 403. What no rule can say stays in the handler: a locked server's 409."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api_support import Cloud, active_fixture, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.events.model import EventType
from eventsvm.identity.policy_rules import PolicyEnforcers

SERVERS = "/compute/v2.1/servers"
# an operator's loosening of four admin-only defaults: each to a member of the server's project
LOOSENED = """\
"os_compute_api:os-admin-actions:reset_state": "rule:project_member_or_admin"
"os_compute_api:os-lock-server:unlock:unlock_override": "rule:project_member_or_admin"
"os_compute_api:os-availability-zone:detail": "rule:project_reader_or_admin"
"os_compute_api:os-server-groups:create": "rule:project_reader_or_admin"
"""


@pytest.fixture
def operated(cloud: Cloud, tmp_path: Path) -> Iterator[TestClient]:
    """A second API over the same cloud, whose policy directory holds the operator's file."""
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    (policy_dir / "nova-policy.yaml").write_text(LOOSENED)
    context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens, policy=PolicyEnforcers(policy_dir))
    with TestClient(create_app(context)) as client:
        yield client


def refused(answer: Any, rule: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["forbidden"]["message"] == f"Policy doesn't allow {rule} to be performed."


def test_reset_state_is_a_members_once_the_operator_says_so(
    cloud: Cloud, active: str, operated: TestClient
) -> None:
    body = {"os-resetState": {"state": "error"}}
    member = cloud.headers("demo")
    refused(cloud.client.post(f"{SERVERS}/{active}/action", json=body, headers=member),
            "os_compute_api:os-admin-actions:reset_state")
    assert cloud.events(EventType.INSTANCE_ACTION_REQUESTED) == []
    answer = operated.post(f"{SERVERS}/{active}/action", json=body, headers=member)
    assert answer.status_code == 202, answer.text
    [reset] = cloud.events(EventType.INSTANCE_ACTION_REQUESTED)
    assert (reset.body["action"], reset.body["vm_state"], reset.user_id) == (
        "resetState", "error", cloud.ids["user:demo"])
    server = operated.get(f"{SERVERS}/{active}", headers=member).json()["server"]
    assert (server["status"], server["OS-EXT-STS:vm_state"]) == ("ERROR", "error")
    # a reader of the project is still no member
    refused(operated.post(f"{SERVERS}/{active}/action", json=body, headers=cloud.headers("reader")),
            "os_compute_api:os-admin-actions:reset_state")


def test_an_admins_lock_is_unlocked_by_the_owner_once_the_operator_says_so(
    cloud: Cloud, active: str, operated: TestClient
) -> None:
    member = cloud.headers("demo")
    admin = cloud.headers("admin")
    locked = cloud.client.post(f"{SERVERS}/{active}/action", json={"lock": None}, headers=admin)
    assert locked.status_code == 202 and cloud.instance(active).locked_by == "admin"
    # nova's default: only an admin lifts an admin's lock
    refused(cloud.client.post(f"{SERVERS}/{active}/action", json={"unlock": None}, headers=member),
            "os_compute_api:os-lock-server:unlock:unlock_override")
    # the lock's 409 is no policy rule: the owner's stop is refused under either policy
    for client in (cloud.client, operated):
        stop = client.post(f"{SERVERS}/{active}/action", json={"os-stop": None}, headers=member)
        assert stop.status_code == 409 and "is locked" in stop.json()["conflictingRequest"]["message"]
    unlocked = operated.post(f"{SERVERS}/{active}/action", json={"unlock": None}, headers=member)
    assert unlocked.status_code == 202, unlocked.text
    assert not cloud.instance(active).locked
    # and the owner's actions go through again
    stop = operated.post(f"{SERVERS}/{active}/action", json={"os-stop": None}, headers=member)
    assert stop.status_code == 202, stop.text


def test_admin_only_reads_and_creates_outside_the_action_route_follow_the_file_too(
    cloud: Cloud, operated: TestClient
) -> None:
    reader = cloud.headers("reader")
    refused(cloud.client.get("/compute/v2.1/os-availability-zone/detail", headers=reader),
            "os_compute_api:os-availability-zone:detail")
    zones = operated.get("/compute/v2.1/os-availability-zone/detail", headers=reader)
    assert zones.status_code == 200, zones.text
    group = {"server_group": {"name": "readers", "policies": ["anti-affinity"]}}
    refused(cloud.client.post("/compute/v2.1/os-server-groups", json=group, headers=reader),
            "os_compute_api:os-server-groups:create")
    created = operated.post("/compute/v2.1/os-server-groups", json=group, headers=reader)
    assert created.status_code == 200, created.text
    assert created.json()["server_group"]["name"] == "readers"


def test_force_delete_asks_its_own_rule_only(cloud: Cloud, active: str, tmp_path: Path) -> None:
    """An operator who keeps DELETE /servers for admins still lets members forceDelete (nova's
    force_delete checks os-deferred-delete:force, never servers:delete), and the reverse."""
    policy_dir = tmp_path / "strict"
    policy_dir.mkdir()
    (policy_dir / "nova-policy.yaml").write_text('"os_compute_api:servers:delete": "rule:context_is_admin"\n')
    context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens, policy=PolicyEnforcers(policy_dir))
    member = cloud.headers("demo")
    with TestClient(create_app(context)) as strict:
        refused(strict.delete(f"{SERVERS}/{active}", headers=member), "os_compute_api:servers:delete")
        forced = strict.post(f"{SERVERS}/{active}/action", json={"forceDelete": None}, headers=member)
        assert forced.status_code == 202, forced.text
    [delete] = cloud.events(EventType.INSTANCE_DELETE_REQUESTED)
    assert delete.aggregate_id == active and delete.user_id == cloud.ids["user:demo"]
