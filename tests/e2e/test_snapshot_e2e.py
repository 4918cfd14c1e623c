"""createImage on a real cluster, on either engine: the API registers a queued image, the host's
spawner (libvirt's test driver) takes the snapshot and the image turns active in Glance and in
nova's image proxy; the image is deleted through nova; a snapshot of a stopped server keeps it
stopped; a server deleted right behind its createImage goes, and its image is not left queued.
os-instance-actions names createImage and the log's history shows every step."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from eventsvm.events.codec import Codec
from eventsvm.log.factory import open_log
from eventsvm.projections.history import instance_stages, timeline_lines
from eventsvm.projections.replay import replay
from eventsvm.virt.hypervisor import DomainState
from tests.e2e.conftest import Cloud, CloudFactory, wait_quiet
from tests.e2e.test_replay import beyond_fork_ties
from tests.e2e.test_server_lifecycle import api_over, boot_active, login, settled

SERVERS = "/compute/v2.1/servers"
IMAGES = "/compute/v2.1/images"


def image_settled(cloud: Cloud, image_id: str, timeout: float = 30.0) -> str | None:
    """Wait until the image is active or gone; its glance status then (None: gone)."""
    def done(models: Any) -> bool:
        image = models.catalog.images.get(image_id)
        return image is None or image.get("status") == "active"

    assert cloud.readmodel.wait_until(done, timeout), f"image {image_id} still queued after {timeout}s"
    with cloud.readmodel.lock:
        image = cloud.readmodel.models.catalog.images.get(image_id)
    return None if image is None else str(image["status"])


def test_create_image_fills_a_glance_image_from_the_host_and_deletes_through_nova(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=1)
    hypervisor = cloud.cluster.hosts[0].hypervisor
    api = api_over(cloud, tmp_path / "keys")
    with TestClient(api) as client:
        demo = login(client, "demo", "demo-pw")

        boot = functools.partial(boot_active, client, demo, cloud)

        def snapshot(server_id: str, name: str, **metadata: str) -> str:
            answer = client.post(f"{SERVERS}/{server_id}/action", headers=demo,
                                 json={"createImage": {"name": name, "metadata": metadata}})
            assert answer.status_code == 202, answer.text
            return str(answer.headers["location"].rsplit("/", 1)[-1])

        server_id = boot("snapshotted")
        image_id = snapshot(server_id, "snap-\u20a1", image_type="test")
        assert image_settled(cloud, image_id) == "active"
        settled(cloud, server_id, "ACTIVE")
        assert hypervisor.state(server_id) is DomainState.RUNNING
        glance = client.get(f"/image/v2/images/{image_id}", headers=demo).json()
        assert (glance["status"], glance["name"], glance["instance_uuid"], glance["image_type"]) == (
            "active", "snap-\u20a1", server_id, "test")
        proxy = client.get(f"{IMAGES}/{image_id}", headers=demo).json()["image"]
        assert (proxy["status"], proxy["server"]["id"], proxy["metadata"]["base_image_ref"]) == (
            "ACTIVE", server_id, cloud.image_id())

        actions = client.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=demo).json()
        assert [a["action"] for a in actions["instanceActions"]] == ["createImage", "create"]
        one = client.get(f"{SERVERS}/{server_id}/os-instance-actions/"
                         f"{actions['instanceActions'][0]['request_id']}", headers=demo).json()
        assert [(e["event"], e["result"]) for e in one["instanceAction"]["events"]] == [
            ("compute_snapshot_instance", "Success")]
        history = "\n".join(timeline_lines(instance_stages(cloud.readmodel.log, Codec(), server_id)))
        host = cloud.cluster.hosts[0].name
        assert f"action=createImage host={host} image={image_id}" in history
        assert f"image {image_id}" in history  # the completed step names what it filled

        assert client.delete(f"{IMAGES}/{image_id}", headers=demo).status_code == 204
        assert client.get(f"/image/v2/images/{image_id}", headers=demo).status_code == 404

        # a stopped server is snapshotted and stays stopped
        assert client.post(f"{SERVERS}/{server_id}/action", headers=demo,
                           json={"os-stop": None}).status_code == 202
        settled(cloud, server_id, "SHUTOFF")
        stopped_image = snapshot(server_id, "stopped-snap")
        assert image_settled(cloud, stopped_image) == "active"
        settled(cloud, server_id, "SHUTOFF")
        assert hypervisor.state(server_id) is DomainState.SHUTDOWN

        # deleted right behind its createImage: the server goes, the image is filled or dropped
        doomed = boot("doomed")
        doomed_image = snapshot(doomed, "doomed-snap")
        assert client.delete(f"{SERVERS}/{doomed}", headers=demo).status_code == 204
        cloud.wait_for([doomed], {"DELETED"})
        assert hypervisor.state(doomed) is None
        assert image_settled(cloud, doomed_image) in ("active", None)


def test_shelve_offloads_and_unshelve_spawns_again_through_the_scheduler(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    api = api_over(cloud, tmp_path / "keys")
    hypervisors = {h.name: h.hypervisor for h in cloud.cluster.hosts}

    def guests(server_id: str) -> dict[str, DomainState | None]:
        return {name: hv.state(server_id) for name, hv in hypervisors.items() if hv.state(server_id)}

    with TestClient(api) as client:
        demo = login(client, "demo", "demo-pw")

        boot = functools.partial(boot_active, client, demo, cloud)

        def action(server_id: str, body: dict[str, Any]) -> None:
            answer = client.post(f"{SERVERS}/{server_id}/action", headers=demo, json=body)
            assert answer.status_code == 202, (body, answer.text)

        server_id = boot("shelved")
        first_host = cloud.instance(server_id).host
        ports = client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"]["addresses"]
        action(server_id, {"shelve": None})
        settled(cloud, server_id, "SHELVED_OFFLOADED")
        assert guests(server_id) == {} and cloud.instance(server_id).host is None
        [shelved] = client.get("/image/v2/images?name=shelved-shelved", headers=demo).json()["images"]
        assert (shelved["status"], shelved["instance_uuid"]) == ("active", server_id)

        action(server_id, {"unshelve": None})
        settled(cloud, server_id, "ACTIVE")
        server = client.get(f"{SERVERS}/{server_id}", headers=demo).json()["server"]
        assert guests(server_id) == {cloud.instance(server_id).host: DomainState.RUNNING}
        assert server["addresses"] == ports  # the same port and IP, wherever it landed
        assert server["image"]["id"] == cloud.image_id()
        # nova deletes the shelved image once the server runs (folded from the catalog topic, which
        # the read model may reach after the spawned event)
        assert cloud.readmodel.wait_until(lambda models: shelved["id"] not in models.catalog.images, 30)
        actions = client.get(f"{SERVERS}/{server_id}/os-instance-actions", headers=demo).json()
        assert [a["action"] for a in actions["instanceActions"]] == ["unshelve", "shelve", "create"]
        history = "\n".join(timeline_lines(instance_stages(cloud.readmodel.log, Codec(), server_id)))
        assert f"action=shelve host={first_host}" in history and "action=unshelve" in history

        # a shelved server still deletes, and so does one deleted right behind its shelve
        action(server_id, {"shelve": None})
        settled(cloud, server_id, "SHELVED_OFFLOADED")
        assert client.delete(f"{SERVERS}/{server_id}", headers=demo).status_code == 204
        doomed = boot("doomed")
        action(doomed, {"shelve": None})
        assert client.delete(f"{SERVERS}/{doomed}", headers=demo).status_code == 204
        # and one deleted right behind its unshelve, while the scheduler places it again
        returning = boot("returning")
        action(returning, {"shelve": None})
        settled(cloud, returning, "SHELVED_OFFLOADED")
        action(returning, {"unshelve": None})
        assert client.delete(f"{SERVERS}/{returning}", headers=demo).status_code == 204
        cloud.wait_for([server_id, doomed, returning], {"DELETED"})
        wait_quiet(cloud)
        assert guests(server_id) == {} and guests(doomed) == {} and guests(returning) == {}
        # every snapshot was filled or dropped: none is left queued
        with cloud.readmodel.lock:
            images = list(cloud.readmodel.models.catalog.images.values())
        assert [i["name"] for i in images if i.get("status") == "queued"] == []
        # the log alone rebuilds the same servers and images: shelve, offload, unshelve, deletes
        log = open_log(cloud.options.log)
        try:
            replayed, _ = replay(log, Codec())
            with cloud.readmodel.lock:
                assert beyond_fork_ties(log, replayed, cloud.readmodel.models) == []
        finally:
            log.close()
