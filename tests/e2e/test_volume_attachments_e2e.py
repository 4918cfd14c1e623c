"""Volumes attached to real servers through the API, on both engines: os-volume_attachments attaches
and detaches the disk on the host's libvirt domain while cinder's view follows (available → in-use →
available); a volume is never attached to two servers, not even when two boots race for it through
two API processes at once; deleting a server frees its volumes, or deletes them as it was asked."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.events.codec import Codec
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.tokens import TokenService
from eventsvm.log.factory import open_log
from eventsvm.projections.audit import verify
from eventsvm.projections.readmodel import ReadModel
from tests.e2e.conftest import Cloud, CloudFactory, wait_quiet
from tests.e2e.test_server_lifecycle import login, settled

SERVERS = "/compute/v2.1/servers"


@contextmanager
def api(cloud: Cloud, keys: Path, readmodel: ReadModel | None = None) -> Iterator[TestClient]:
    """An API process over the cloud's log (its own read model when given one)."""
    ensure_keys(keys)
    app = create_app(ApiContext(readmodel=readmodel or cloud.readmodel, tokens=TokenService(keys)))
    with TestClient(app) as client:
        yield client


def volumes_url(client: TestClient, headers: dict[str, str]) -> str:
    token = headers["X-Auth-Token"]
    project = client.get("/identity/v3/auth/tokens", headers={**headers, "X-Subject-Token": token})
    return f"/volume/v3/{project.json()['token']['project']['id']}/volumes"


def boot(client: TestClient, headers: dict[str, str], cloud: Cloud, name: str,
         volume_id: str | None = None, delete_on_termination: bool = False) -> httpx.Response:
    server: dict[str, Any] = {"name": name, "imageRef": cloud.image_id(), "flavorRef": "1",
                              "networks": [{"uuid": cloud.network_id()}]}
    if volume_id is not None:
        server["block_device_mapping_v2"] = [
            {"boot_index": 0, "uuid": cloud.image_id(), "source_type": "image", "destination_type": "local"},
            {"boot_index": -1, "uuid": volume_id, "source_type": "volume", "destination_type": "volume",
             "delete_on_termination": delete_on_termination}]
    return client.post(SERVERS, headers=headers, json={"server": server})


def wait_volume(client: TestClient, url: str, headers: dict[str, str], status: str,
                timeout: float = 30.0) -> dict[str, Any]:
    """The volume once cinder's view shows `status`."""
    seen: dict[str, Any] = {}
    for _ in range(int(timeout / 0.1)):
        seen = client.get(url, headers=headers).json().get("volume", {})
        if seen.get("status") == status:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"volume not {status} after {timeout}s: {seen}")


def disks(cloud: Cloud, server_id: str) -> list[str]:
    """The disk targets of the server's domain on whichever host holds it."""
    host = next(h for h in cloud.cluster.hosts if server_id in h.hypervisor.list_instances())
    return host.hypervisor.disk_targets(server_id)


def test_attach_and_detach_reach_the_domain_and_cinder_s_view(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    with api(cloud, tmp_path / "keys") as client:
        demo = login(client, "demo", "demo-pw")
        volumes = volumes_url(client, demo)
        servers = []
        for name in ("first", "second"):
            answer = boot(client, demo, cloud, name)
            assert answer.status_code == 202, answer.text
            servers.append(answer.json()["server"]["id"])
        for server_id in servers:
            settled(cloud, server_id, "ACTIVE")
        first, second = servers
        created = client.post(volumes, headers=demo, json={"volume": {"size": 1, "name": "data"}})
        volume_id = created.json()["volume"]["id"]
        volume_url = f"{volumes}/{volume_id}"
        creator = created.json()["volume"]["user_id"]
        assert creator and client.get(volume_url, headers=demo).json()["volume"]["user_id"] == creator
        before = disks(cloud, first)
        # os-server-ips, which tempest reads before it attaches anything
        ips = client.get(f"{SERVERS}/{first}/ips", headers=demo).json()["addresses"]
        [address] = ips["private"]
        assert set(address) == {"version", "addr"} and address["version"] == 4
        assert client.get(f"{SERVERS}/{first}/ips/private", headers=demo).json() == {"private": [address]}
        assert client.get(f"{SERVERS}/{first}/ips/nosuch", headers=demo).status_code == 404
        attachments = f"{SERVERS}/{first}/os-volume_attachments"
        for bad, code in (({"volumeAttachment": {}}, 400), ({"volumeAttachment": {"volumeId": "x"}}, 400),
                          ({"volumeAttachment": {"volumeId": volume_id, "color": "red"}}, 400),
                          ({"volumeAttachment": {"volumeId": volume_id, "device": "vdb; rm"}}, 400),
                          ({"volumeAttachment": {"volumeId": str(uuid.uuid4())}}, 404)):
            answer = client.post(attachments, headers=demo, json=bad)
            assert answer.status_code == code, (bad, answer.text)
        missing = client.post(f"{SERVERS}/{uuid.uuid4()}/os-volume_attachments", headers=demo,
                              json={"volumeAttachment": {"volumeId": volume_id}})
        assert missing.status_code == 404
        assert client.get(f"{attachments}/{volume_id}", headers=demo).status_code == 404

        attach = client.post(f"{SERVERS}/{first}/os-volume_attachments", headers=demo,
                             json={"volumeAttachment": {"volumeId": volume_id}})
        assert attach.status_code == 200, attach.text
        assert attach.json() == {"volumeAttachment": {
            "id": volume_id, "serverId": first, "volumeId": volume_id, "device": "/dev/vdb"}}
        shown = wait_volume(client, volume_url, demo, "in-use")
        [attachment] = shown["attachments"]
        assert (attachment["server_id"], attachment["volume_id"], attachment["device"]) == (first, volume_id,
                                                                                               "/dev/vdb")
        assert attachment["host_name"] == cloud.instance(first).host
        assert disks(cloud, first) == [*before, "vdb"]
        listed = client.get(f"{SERVERS}/{first}/os-volume_attachments", headers=demo).json()
        assert listed == {"volumeAttachments": [attach.json()["volumeAttachment"]]}
        one = client.get(f"{SERVERS}/{first}/os-volume_attachments/{volume_id}", headers=demo)
        assert one.json() == attach.json()
        server = client.get(f"{SERVERS}/{first}", headers=demo).json()["server"]
        assert server["os-extended-volumes:volumes_attached"] == [{"id": volume_id}]

        # not to a second server, nor twice to the same one
        for target in (second, first):
            again = client.post(f"{SERVERS}/{target}/os-volume_attachments", headers=demo,
                                json={"volumeAttachment": {"volumeId": volume_id}})
            assert again.status_code == 400, again.text
            assert volume_id in again.json()["badRequest"]["message"]
        assert disks(cloud, second) == before

        detach = client.delete(f"{SERVERS}/{first}/os-volume_attachments/{volume_id}", headers=demo)
        assert detach.status_code == 202, detach.text
        shown = wait_volume(client, volume_url, demo, "available")
        assert shown["attachments"] == []
        assert disks(cloud, first) == before
        gone = client.delete(f"{SERVERS}/{first}/os-volume_attachments/{volume_id}", headers=demo)
        assert gone.status_code == 404
        assert client.get(f"{SERVERS}/{first}/os-volume_attachments", headers=demo).json() == {
            "volumeAttachments": []}

        # free again: the second server may have it now
        attach = client.post(f"{SERVERS}/{second}/os-volume_attachments", headers=demo,
                             json={"volumeAttachment": {"volumeId": volume_id}})
        assert attach.status_code == 200, attach.text
        assert wait_volume(client, volume_url, demo, "in-use")["attachments"][0]["server_id"] == second
        assert "vdb" in disks(cloud, second)

        # a stopped server may have volumes attached, one being built may not
        stop = client.post(f"{SERVERS}/{first}/action", headers=demo, json={"os-stop": None})
        assert stop.status_code == 202
        settled(cloud, first, "SHUTOFF")
        other = client.post(volumes, headers=demo, json={"volume": {"size": 1}}).json()["volume"]["id"]
        attach = client.post(f"{SERVERS}/{first}/os-volume_attachments", headers=demo,
                             json={"volumeAttachment": {"volumeId": other}})
        assert attach.status_code == 200, attach.text
        wait_volume(client, f"{volumes}/{other}", demo, "in-use")
        building = boot(client, demo, cloud, "building").json()["server"]["id"]
        early = client.post(f"{SERVERS}/{building}/os-volume_attachments", headers=demo,
                            json={"volumeAttachment": {"volumeId": other}})
        assert early.status_code in (400, 409), early.text  # 409 while building, 400 if already active

        # deleting a server frees what it held
        assert client.delete(f"{SERVERS}/{second}", headers=demo).status_code == 204
        assert wait_volume(client, volume_url, demo, "available")["attachments"] == []

        # cinder deletes an available volume only
        busy = client.delete(f"{volumes}/{other}", headers=demo)
        assert busy.status_code == 400 and "Invalid volume" in busy.json()["badRequest"]["message"]
        assert client.delete(volume_url, headers=demo).status_code == 202
        assert client.get(volume_url, headers=demo).status_code == 404

        # the server's history names its attaches and detach, and every chain still verifies
        actions = client.get(f"{SERVERS}/{first}/os-instance-actions", headers=demo).json()["instanceActions"]
        newest = [a["action"] for a in actions][:4]
        assert newest == ["attach_volume", "stop", "detach_volume", "attach_volume"]
    wait_quiet(cloud)
    log = open_log(cloud.options.log)
    try:
        report = verify(log, Codec())
    finally:
        log.close()
    assert report.clean, report.findings


def test_two_boots_racing_for_one_volume_through_two_api_processes_one_wins(
    make_cloud: CloudFactory, tmp_path: Path
) -> None:
    cloud = make_cloud(hosts=2)
    other_process = ReadModel(cloud.cluster.open_log(), cloud.cluster.codec_of("api"))  # signs as an API
    other_process.start()
    try:
        with api(cloud, tmp_path / "keys") as one, api(cloud, tmp_path / "keys", other_process) as two:
            demo = login(one, "demo", "demo-pw")
            volumes = volumes_url(one, demo)
            volume_id = one.post(volumes, headers=demo, json={"volume": {"size": 1}}).json()["volume"]["id"]
            other_process.wait_until(lambda m: volume_id in m.catalog.volumes, 10)
            answers: dict[str, httpx.Response] = {}
            start = threading.Barrier(2)

            def race(name: str, client: TestClient) -> None:
                start.wait()
                answers[name] = boot(client, demo, cloud, name, volume_id, delete_on_termination=True)

            threads = [threading.Thread(target=race, args=(n, c)) for n, c in (("a", one), ("b", two))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            codes = sorted(a.status_code for a in answers.values())
            assert codes == [202, 400], {n: a.text for n, a in answers.items()}
            [loser] = [a for a in answers.values() if a.status_code == 400]
            message = loser.json()["badRequest"]["message"]
            assert message.startswith("Invalid volume:") and volume_id in message
            [winner] = [a.json()["server"]["id"] for a in answers.values() if a.status_code == 202]
            settled(cloud, winner, "ACTIVE")
            shown = wait_volume(one, f"{volumes}/{volume_id}", demo, "in-use")
            [attachment] = shown["attachments"]
            assert attachment["server_id"] == winner
            # the second entry of its block device mapping: vdc, and the guest has it as that disk
            assert attachment["device"] == "/dev/vdc" and "vdc" in disks(cloud, winner)
            # only the winner exists: the refused boot was never appended
            with cloud.readmodel.lock:
                named = {i.name for i in cloud.readmodel.models.instances.instances.values()}
            assert named & {"a", "b"} == {next(n for n, a in answers.items() if a.status_code == 202)}

            # the root volume of a boot: deleting its server deletes it (delete_on_termination)
            assert one.delete(f"{SERVERS}/{winner}", headers=demo).status_code == 204
            for _ in range(300):
                if one.get(f"{volumes}/{volume_id}", headers=demo).status_code == 404:
                    break
                time.sleep(0.1)
            assert one.get(f"{volumes}/{volume_id}", headers=demo).status_code == 404
    finally:
        other_process.close()
