"""An unshelve reconnects the server's volumes on the host it lands on, as nova's _unshelve_instance
does with the server's block device mappings: the root volume it boots from, a volume attached
through os-volume_attachments, and one attached while it was shelved-offloaded (2.20). While it is
offloaded every volume stays in-use with its attachment; once the unshelve spawned it, the guest on
the new host has every volume's disk again and each attachment names that host. The host's spawn is
held, so the test reads the log at the moment the unshelve is resolved and not yet spawned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from eventsvm.events.model import INSTANCE_TOPICS, EventType
from tests.e2e.conftest import Cloud, CloudFactory
from tests.e2e.test_delete_mid_action import held
from tests.e2e.test_resize_rebuild import _events
from tests.e2e.test_server_lifecycle import login, settled
from tests.e2e.test_unshelve_e2e import act, shown
from tests.e2e.test_volume_attachments_e2e import SERVERS, api, disks, volumes_url, wait_volume

SHELVED_VOLUMES = {"OpenStack-API-Version": "compute 2.20", "X-OpenStack-Nova-API-Version": "2.20"}


def new_volume(client: TestClient, volumes: str, headers: dict[str, str], name: str) -> str:
    created = client.post(volumes, headers=headers, json={"volume": {"size": 1, "name": name}})
    assert created.status_code == 202, created.text
    volume_id = str(created.json()["volume"]["id"])
    wait_volume(client, f"{volumes}/{volume_id}", headers, "available")
    return volume_id


def boot_from_volume(client: TestClient, headers: dict[str, str], cloud: Cloud, root: str) -> str:
    # the image too: a volume-backed boot with none is refused today (the resolver asks glance for "")
    server = {"name": "from-volume", "flavorRef": "1", "imageRef": cloud.image_id(),
              "networks": [{"uuid": cloud.network_id()}],
              "block_device_mapping_v2": [{"boot_index": 0, "uuid": root, "source_type": "volume",
                                           "destination_type": "volume", "delete_on_termination": False}]}
    answer = client.post(SERVERS, headers=headers, json={"server": server})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["server"]["id"])


def attach(client: TestClient, headers: dict[str, str], server_id: str, volume_id: str) -> str:
    answer = client.post(f"{SERVERS}/{server_id}/os-volume_attachments", headers=headers,
                         json={"volumeAttachment": {"volumeId": volume_id}})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["volumeAttachment"]["device"])


def attachment(client: TestClient, volumes: str, headers: dict[str, str], volume_id: str) -> dict[str, Any]:
    shown_ = client.get(f"{volumes}/{volume_id}", headers=headers).json()["volume"]
    assert shown_["status"] == "in-use", shown_
    [one] = shown_["attachments"]
    return dict(one)


def test_an_unshelve_reattaches_every_volume_on_the_new_host(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    hosts = cloud.cluster.hosts
    with api(cloud, tmp_path / "keys") as client:
        demo = login(client, "demo", "demo-pw")
        volumes = volumes_url(client, demo)
        root, data, late = (new_volume(client, volumes, demo, name) for name in ("root", "data", "late"))
        server_id = boot_from_volume(client, demo, cloud, root)
        cloud.wait_for([server_id], {"ACTIVE", "ERROR"})
        settled(cloud, server_id, "ACTIVE")
        first_host = cloud.instance(server_id).host
        neighbour = client.post(SERVERS, headers=demo, json={"server": {
            "name": "neighbour", "imageRef": cloud.image_id(), "flavorRef": "1",
            "networks": [{"uuid": cloud.network_id()}]}}).json()["server"]["id"]
        settled(cloud, neighbour, "ACTIVE")
        assert cloud.instance(neighbour).host != first_host  # the weighers spread the two
        data_device = attach(client, demo, server_id, data)
        wait_volume(client, f"{volumes}/{data}", demo, "in-use")
        booted_disks = disks(cloud, server_id)
        assert len(booted_disks) == 2, booted_disks

        act(client, demo, server_id, {"shelve": None})
        settled(cloud, server_id, "SHELVED_OFFLOADED")
        assert all(h.hypervisor.state(server_id) is None for h in hosts)
        # offloaded, the volumes stay the server's, in-use with their attachments
        for volume_id in (root, data):
            assert attachment(client, volumes, demo, volume_id)["server_id"] == server_id
        late_device = attach(client, {**demo, **SHELVED_VOLUMES}, server_id, late)
        wait_volume(client, f"{volumes}/{late}", demo, "in-use")
        assert attachment(client, volumes, demo, late)["host_name"] is None
        # the server's first host is taken by a bigger server: the unshelve lands on the other
        bigger = client.post(SERVERS, headers=demo, json={"server": {
            "name": "bigger", "imageRef": cloud.image_id(), "flavorRef": "2",
            "networks": [{"uuid": cloud.network_id()}]}}).json()["server"]["id"]
        settled(cloud, bigger, "ACTIVE")
        assert cloud.instance(bigger).host == first_host

        with held(hosts, "spawn") as (entered, release):
            act(client, demo, server_id, {"unshelve": None})
            assert entered.wait(30), "the unshelve never reached a host"
            events = [e for e in _events(cloud, INSTANCE_TOPICS) if e.aggregate_id == server_id]
            resolved = max((e for e in events if e.type == EventType.INSTANCE_RESOURCES_RESOLVED),
                           key=lambda e: e.sequence)
            assert resolved.body["spec"]["unshelve"] is True
            # the resolved placement carries every attachment the server holds, under its own id
            carried = {v["volume_id"]: (v["device"], v["attachment_id"]) for v in resolved.body["volumes"]}
            assert set(carried) == {root, data, late}
            assert carried[data][0] == data_device and carried[late][0] == late_device
            for volume_id, (_, attachment_id) in carried.items():
                assert attachment(client, volumes, demo, volume_id)["attachment_id"] == attachment_id
            release.set()
            settled(cloud, server_id, "ACTIVE")
        new_host = cloud.instance(server_id).host
        assert new_host is not None and new_host != first_host
        assert next(h for h in hosts if h.name == first_host).hypervisor.state(server_id) is None
        # the guest has every volume's disk again: the two it had and the one attached while offloaded
        wanted = sorted([*booted_disks, late_device.rsplit("/", 1)[-1]])
        assert sorted(disks(cloud, server_id)) == wanted
        for volume_id in (root, data, late):
            assert cloud.readmodel.wait_until(
                lambda models, v=volume_id: (models.catalog.volumes[v]["attachments"] or {}) and next(
                    iter(models.catalog.volumes[v]["attachments"].values()))["host_name"] == new_host, 30)
            found = attachment(client, volumes, demo, volume_id)
            assert (found["server_id"], found["host_name"]) == (server_id, new_host)
        listed = client.get(f"{SERVERS}/{server_id}/os-volume_attachments", headers=demo).json()
        assert sorted(a["volumeId"] for a in listed["volumeAttachments"]) == sorted([root, data, late])
        server = client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"]
        assert shown(server) == ("ACTIVE", "active", None)
        assert sorted(v["id"] for v in server["os-extended-volumes:volumes_attached"]) == sorted(
            [root, data, late])

        # the reconnected volume detaches from the guest on its new host, as any other
        detach = client.delete(f"{SERVERS}/{server_id}/os-volume_attachments/{data}", headers=demo)
        assert detach.status_code == 202, detach.text
        assert wait_volume(client, f"{volumes}/{data}", demo, "available")["attachments"] == []
        assert data_device.rsplit("/", 1)[-1] not in disks(cloud, server_id)
