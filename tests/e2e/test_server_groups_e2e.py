"""Server groups through the API on either engine: servers booted with the `group` hint land as
the group's policy says (affinity: one host; anti-affinity: each its own), are the group's members
until deleted, and the quota detail and limits count the groups and servers; every bit of it is
rebuilt from the log alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.api.server_groups import group_members
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from tests.e2e.conftest import CloudFactory, fold_log
from tests.e2e.test_server_lifecycle import login

COMPUTE = "/compute/v2.1"
GROUPS = f"{COMPUTE}/os-server-groups"


def test_affinity_groups_place_their_members_and_are_counted_and_rebuilt_from_the_log(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=3)
    cloud.unlimited_quota()
    ensure_keys(tmp_path / "keys")
    api = create_app(ApiContext(readmodel=cloud.readmodel, tokens=TokenService(tmp_path / "keys")))
    with TestClient(api) as client:
        demo = login(client, "demo", "demo-pw")
        _, project_id = cloud.demo

        def group(name: str, policy: str) -> str:
            body = {"server_group": {"name": name, "policies": [policy]}}
            answer = client.post(GROUPS, headers=demo, json=body)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["server_group"]["id"])

        def boot(name: str, group_id: str) -> str:
            answer = client.post(f"{COMPUTE}/servers", headers=demo, json={
                "server": {"name": name, "imageRef": cloud.image_id(), "flavorRef": "1",
                           "networks": [{"uuid": cloud.network_id()}]},
                "os:scheduler_hints": {"group": group_id}})
            assert answer.status_code == 202, answer.text
            server_id = str(answer.json()["server"]["id"])
            # one at a time: each placement sees where the group's earlier members went
            cloud.wait_for([server_id], {"ACTIVE"})
            return server_id

        together, apart = group("together", "affinity"), group("apart", "anti-affinity")
        close = [boot(f"close-{n}", together) for n in range(3)]
        spread = [boot(f"spread-{n}", apart) for n in range(3)]
        models = fold_log(cloud.options.log)
        assert len({models.instances.instances[i].host for i in close}) == 1
        assert len({models.instances.instances[i].host for i in spread}) == 3

        def show(group_id: str) -> dict[str, Any]:
            answer = client.get(f"{GROUPS}/{group_id}", headers=demo)
            assert answer.status_code == 200, answer.text
            shown: dict[str, Any] = answer.json()["server_group"]
            return shown

        assert show(together)["members"] == close
        assert (show(apart)["members"], show(apart)["policies"]) == (spread, ["anti-affinity"])
        # a fourth anti-affinity member has no host left: it fails, as nova's NoValidHost does
        extra = client.post(f"{COMPUTE}/servers", headers=demo, json={
            "server": {"name": "spread-3", "imageRef": cloud.image_id(), "flavorRef": "1",
                       "networks": [{"uuid": cloud.network_id()}]},
            "os:scheduler_hints": {"group": apart}}).json()["server"]["id"]
        assert cloud.wait_for([extra], {"ERROR"})[extra].host is None

        detail = client.get(f"{COMPUTE}/os-quota-sets/{project_id}/detail", headers=demo).json()["quota_set"]
        assert detail["server_groups"]["in_use"] == 2
        assert detail["instances"]["in_use"] == 7  # the ERROR one included, as nova counts it
        absolute = client.get(f"{COMPUTE}/limits", headers=demo).json()["limits"]["absolute"]
        assert (absolute["totalServerGroupsUsed"], absolute["totalInstancesUsed"]) == (2, 7)

        # a deleted server leaves its group
        assert client.delete(f"{COMPUTE}/servers/{close[0]}", headers=demo).status_code == 204
        cloud.wait_for([close[0]], {"DELETED"})
        assert show(together)["members"] == close[1:]
        # a deleted group is gone; its servers stay where they are
        assert client.delete(f"{GROUPS}/{apart}", headers=demo).status_code == 204
        assert client.get(f"{GROUPS}/{apart}", headers=demo).status_code == 404
        listed = client.get(GROUPS, headers=demo).json()["server_groups"]
        assert [g["id"] for g in listed] == [together]
        after = client.get(f"{COMPUTE}/os-quota-sets/{project_id}/detail", headers=demo).json()["quota_set"]
        assert after["server_groups"]["in_use"] == 1

    # the log alone holds it all: a fresh fold sees the same groups and members
    rebuilt = fold_log(cloud.options.log)
    assert set(rebuilt.catalog.server_groups) == {together}
    assert group_members(rebuilt, together) == close[1:]
    assert rebuilt.instances.instances[spread[0]].status == "ACTIVE"
