"""The operator's nova-policy.yaml in the cloud's data directory is honoured by the API and by the
authenticator, the authoritative check: with a file that forbids members to create servers, the
API answers 403, and a request already on the log (appended before the file changed) is refused
by the authenticator with a failure naming the rule; an admin still creates; with the file
allowing members again, the same user's request is built."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.app.registry import policy_dir
from eventsvm.events.model import INSTANCE_TOPICS, EventType
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.policy_rules import PolicyEnforcers
from eventsvm.identity.tokens import TokenService
from tests.e2e.conftest import CloudFactory
from tests.e2e.test_resize_rebuild import _events
from tests.e2e.test_server_lifecycle import SERVERS, login, settled

REFUSED = "Policy doesn't allow os_compute_api:servers:create to be performed."


def write_policy(data_dir: Path, create_rule: str) -> None:
    directory = policy_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nova-policy.yaml"
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(f'"os_compute_api:servers:create": "{create_rule}"\n')
    later = max(path.stat().st_mtime, before + 1)  # oslo.policy reads it again when its mtime changes
    os.utime(path, (later, later))


def test_a_policy_file_forbidding_create_is_honoured_by_the_api_and_the_authenticator(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=1)
    data_dir = cloud.options.data_dir
    write_policy(data_dir, "role:admin")
    ensure_keys(tmp_path / "keys")
    context = ApiContext(readmodel=cloud.readmodel, tokens=TokenService(tmp_path / "keys"),
                         policy=PolicyEnforcers(policy_dir(data_dir)))
    with TestClient(create_app(context)) as client:
        demo, admin = login(client, "demo", "demo-pw"), login(client, "admin", "admin-pw")
        server = {"name": "vm", "imageRef": cloud.image_id(), "flavorRef": "1",
                  "networks": [{"uuid": cloud.network_id()}]}
        refused = client.post(SERVERS, headers=demo, json={"server": server})
        assert refused.status_code == 403, refused.text
        assert refused.json()["forbidden"]["message"] == REFUSED
        # a request the API admitted before the operator changed the file: the authenticator decides
        early = cloud.submit("early")
        assert cloud.wait_for([early], {"ACTIVE", "ERROR"})[early].status == "ERROR"
        [failure] = [e for e in _events(cloud, INSTANCE_TOPICS)
                     if e.aggregate_id == early and e.type == EventType.INSTANCE_FAILED]
        assert (failure.body["stage"], failure.body["code"], failure.body["reason"]) == (
            "authenticate", 403, REFUSED)
        assert failure.body["final"]
        # an admin still may
        allowed = client.post(SERVERS, headers=admin, json={"server": {**server, "name": "admins"}})
        assert allowed.status_code == 202, allowed.text
        settled(cloud, allowed.json()["server"]["id"], "ACTIVE")

        # the operator allows members again: both checks follow the file
        write_policy(data_dir, "rule:project_member_or_admin")
        later = cloud.submit("later")
        assert cloud.wait_for([later], {"ACTIVE", "ERROR"})[later].status == "ACTIVE"
        again = client.post(SERVERS, headers=demo, json={"server": {**server, "name": "again"}})
        assert again.status_code == 202, again.text
        settled(cloud, again.json()["server"]["id"], "ACTIVE")
