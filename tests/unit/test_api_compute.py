"""Nova beside servers: flavors, keypairs, limits, quota sets, usage, hypervisors, zones."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api import microversion
from eventsvm.events.model import EventType
from eventsvm.state.instances import Instance

COMPUTE = "/compute/v2.1"
HOUR = 3_600_000
MAXIMUM = microversion.max_version()


def test_version_document_advertises_microversions_2_1_to_the_maximum(cloud: Cloud):
    version = cloud.client.get(COMPUTE).json()["version"]
    assert (version["id"], version["version"], version["min_version"]) == ("v2.1", MAXIMUM, "2.1")


def test_the_version_list_names_v2_0_first_then_v2_1_as_nova_does(cloud: Cloud):
    listed = cloud.client.get("/compute/").json()["versions"]
    assert [(v["id"], v["status"], v["version"]) for v in listed] == [
        ("v2.0", "SUPPORTED", ""), ("v2.1", "CURRENT", MAXIMUM)]
    for entry in listed:  # each links to its own document
        href = next(link["href"] for link in entry["links"] if link["rel"] == "self")
        path = href.split("://", 1)[1].split("/", 1)[1]
        assert cloud.client.get(f"/{path}").json()["version"]["id"] == entry["id"]



@pytest.mark.parametrize(
    ("asked", "served"),
    [({}, "2.1"), ({"X-OpenStack-Nova-API-Version": "2.1"}, "2.1"),
     ({"OpenStack-API-Version": "compute 2.2"}, "2.2"),
     ({"OpenStack-API-Version": "volume 3.0, compute latest"}, MAXIMUM)],
)
def test_every_compute_answer_names_the_microversion_that_served_it(
    cloud: Cloud, asked: dict[str, str], served: str
):
    # tempest refuses an answer whose version header differs from the one it sent
    answer = cloud.client.get(f"{COMPUTE}/flavors", headers={**cloud.headers(), **asked})
    assert answer.status_code == 200
    assert answer.headers["OpenStack-API-Version"] == f"compute {served}"
    assert answer.headers["X-OpenStack-Nova-API-Version"] == served
    assert "OpenStack-API-Version" in answer.headers["Vary"]
    # other services' answers carry no compute version
    image_answer = cloud.client.get("/image/v2/images", headers=cloud.headers())
    assert "X-OpenStack-Nova-API-Version" not in image_answer.headers


@pytest.mark.parametrize(
    ("asked", "status"),
    [(f"2.{microversion.MAX_VERSION[1] + 1}", 406), ("2.95", 406), ("3.0", 406), ("2", 400),
     ("two.one", 400)],
)
def test_a_microversion_this_api_does_not_serve_is_refused(cloud: Cloud, asked: str, status: int):
    answer = cloud.client.get(f"{COMPUTE}/flavors",
                              headers={**cloud.headers(), "X-OpenStack-Nova-API-Version": asked})
    assert answer.status_code == status
    fault = answer.json()["badRequest" if status == 400 else "computeFault"]
    assert fault["code"] == status and asked in fault["message"]


def test_flavors_list_detail_and_show_by_id_only(cloud: Cloud):
    brief = cloud.client.get(f"{COMPUTE}/flavors", headers=cloud.headers()).json()["flavors"]
    assert [f["name"] for f in brief] == ["m1.tiny", "m1.small", "m1.medium"]
    detail = cloud.client.get(f"{COMPUTE}/flavors/detail", params={"is_public": "None"},
                              headers=cloud.headers()).json()["flavors"]
    assert (detail[0]["ram"], detail[0]["vcpus"], detail[0]["disk"]) == (512, 1, 1)
    assert (
        cloud.client.get(f"{COMPUTE}/flavors/1", headers=cloud.headers()).json()["flavor"]["name"]
        == "m1.tiny"
    )
    # a name is not an id: the SDK relies on the 404 to fall back to listing
    assert cloud.client.get(f"{COMPUTE}/flavors/m1.tiny", headers=cloud.headers()).status_code == 404
    big = cloud.client.get(f"{COMPUTE}/flavors/detail", params={"minRam": 2048}, headers=cloud.headers())
    assert [f["id"] for f in big.json()["flavors"]] == ["2", "3"]


def test_admin_creates_and_deletes_flavors_members_may_not(cloud: Cloud):
    spec = {"flavor": {"name": "c1.big", "ram": 1024, "vcpus": 2, "disk": 10, "id": "c1"}}
    assert cloud.client.post(f"{COMPUTE}/flavors", json=spec, headers=cloud.headers()).status_code == 403
    created = cloud.client.post(f"{COMPUTE}/flavors", json=spec, headers=cloud.headers("admin"))
    assert created.status_code == 200 and created.json()["flavor"]["ram"] == 1024
    assert (
        cloud.client.post(f"{COMPUTE}/flavors", json=spec, headers=cloud.headers("admin")).status_code == 409
    )
    huge = {"flavor": {"name": "x", "ram": 2**40, "vcpus": 1, "disk": 1}}
    assert (
        cloud.client.post(f"{COMPUTE}/flavors", json=huge, headers=cloud.headers("admin")).status_code == 400
    )
    assert cloud.client.delete(f"{COMPUTE}/flavors/c1", headers=cloud.headers("admin")).status_code == 202
    assert cloud.client.get(f"{COMPUTE}/flavors/c1", headers=cloud.headers()).status_code == 404
    assert [e.type for e in cloud.events(EventType.FLAVOR_DELETED)] == [EventType.FLAVOR_DELETED]


def openssh_key() -> tuple[str, str]:
    public = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    digest = hashlib.md5(base64.b64decode(public.split()[1])).hexdigest()
    return public + " me@laptop", ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def test_keypair_import_list_show_delete(cloud: Cloud):
    public, fingerprint = openssh_key()
    created = cloud.client.post(
        f"{COMPUTE}/os-keypairs",
        json={"keypair": {"name": "laptop", "public_key": public}},
        headers=cloud.headers(),
    )
    assert created.status_code == 200
    assert created.json()["keypair"]["fingerprint"] == fingerprint
    names = [
        k["keypair"]["name"]
        for k in cloud.client.get(f"{COMPUTE}/os-keypairs", headers=cloud.headers()).json()["keypairs"]
    ]
    assert names == ["keypair-1", "laptop"]
    assert cloud.client.get(f"{COMPUTE}/os-keypairs", headers=cloud.headers("alice")).json()["keypairs"] == []
    again = cloud.client.post(
        f"{COMPUTE}/os-keypairs",
        json={"keypair": {"name": "laptop", "public_key": public}},
        headers=cloud.headers(),
    )
    assert again.status_code == 409
    shown = cloud.client.get(f"{COMPUTE}/os-keypairs/laptop", headers=cloud.headers()).json()["keypair"]
    assert shown["user_id"] == cloud.ids["user:demo"]
    assert cloud.client.delete(f"{COMPUTE}/os-keypairs/laptop", headers=cloud.headers()).status_code == 202
    assert cloud.client.get(f"{COMPUTE}/os-keypairs/laptop", headers=cloud.headers()).status_code == 404


@pytest.mark.parametrize(
    ("keypair", "message"),
    [
        ({"name": "gen", "type": "rsa"}, "type"),
        ({"name": "bad", "type": "x509", "public_key": "-----BEGIN CERTIFICATE-----"},
         "Keypair data is invalid"),
        ({"name": "bad", "public_key": "ssh-rsa not-base64!"}, "Keypair data is invalid"),
        ({"name": "bad/name", "public_key": "ssh-rsa AAAA"}, "unsafe characters"),
    ],
)
def test_keypair_refusals(cloud: Cloud, keypair: dict, message: str):
    headers = {**cloud.headers(), "OpenStack-API-Version": "compute 2.2"}  # where `type` is known
    answer = cloud.client.post(f"{COMPUTE}/os-keypairs", json={"keypair": keypair}, headers=headers)
    assert answer.status_code == 400
    assert message in answer.json()["badRequest"]["message"]
    assert cloud.events(EventType.KEYPAIR_CREATED)[1:] == []


def test_limits_count_the_projects_live_servers(cloud: Cloud):
    server_id = cloud.create_server()
    cloud.advance(server_id, "authenticated")
    cloud.create_server(flavorRef="3")
    absolute = cloud.client.get(f"{COMPUTE}/limits", headers=cloud.headers()).json()["limits"]["absolute"]
    assert (absolute["totalInstancesUsed"], absolute["totalCoresUsed"], absolute["totalRAMUsed"]) == (
        2,
        3,
        4608,
    )
    assert (absolute["maxTotalInstances"], absolute["maxTotalCores"], absolute["maxTotalRAMSize"]) == (
        10,
        20,
        51200,
    )


def test_quota_show_and_admin_update_with_unlimited(cloud: Cloud):
    project = cloud.ids["project:demo"]
    url = f"{COMPUTE}/os-quota-sets/{project}"
    assert cloud.client.get(url, headers=cloud.headers()).json()["quota_set"]["instances"] == 10
    assert cloud.client.get(url, headers=cloud.headers("alice")).status_code == 403
    assert (
        cloud.client.put(url, json={"quota_set": {"cores": -1}}, headers=cloud.headers()).status_code == 403
    )
    updated = cloud.client.put(
        url, json={"quota_set": {"instances": 3, "cores": -1}}, headers=cloud.headers("admin")
    )
    assert updated.status_code == 200
    shown = cloud.client.get(url, headers=cloud.headers()).json()["quota_set"]
    assert (shown["instances"], shown["cores"], shown["ram"]) == (3, -1, 51200)
    [event] = cloud.events(EventType.QUOTA_SET)
    assert (event.body["instances"], event.body["cores"]) == (3, -1)
    bad = cloud.client.put(url, json={"quota_set": {"instances": -2}}, headers=cloud.headers("admin"))
    assert bad.status_code == 400
    unknown = cloud.client.put(
        f"{COMPUTE}/os-quota-sets/nosuch",
        json={"quota_set": {"instances": 1}},
        headers=cloud.headers("admin"),
    )
    assert unknown.status_code == 400


def _instance(launched: int | None, terminated: int | None = None, project: str = "p") -> Instance:
    return Instance(
        id=f"i{launched}",
        name="vm",
        project_id=project,
        launched_at=launched,
        terminated_at=terminated,
        flavor={"id": "3", "name": "m1.medium", "vcpus": 2, "ram_mb": 4096, "disk_gb": 40, "ephemeral_gb": 0},
        vm_state="active",
    )


def test_usage_endpoints(cloud: Cloud):
    server_id = cloud.create_server(flavorRef="3")
    cloud.advance(
        server_id, "active", launched_at=cloud.readmodel.models.instances.get(server_id).created_at - HOUR
    )
    params = {"detailed": "True", "start": "2000-01-01T00:00:00.000000", "end": "2999-01-01T00:00:00"}
    listed = cloud.client.get(
        f"{COMPUTE}/os-simple-tenant-usage", params=params, headers=cloud.headers("admin")
    )
    [usage] = listed.json()["tenant_usages"]
    assert usage["tenant_id"] == cloud.ids["project:demo"]
    assert usage["total_vcpus_usage"] == pytest.approx(2.0, abs=0.01)
    assert len(usage["server_usages"]) == 1
    brief = cloud.client.get(
        f"{COMPUTE}/os-simple-tenant-usage",
        params={**params, "detailed": "0"},
        headers=cloud.headers("admin"),
    ).json()["tenant_usages"]
    assert "server_usages" not in brief[0]
    assert cloud.client.get(f"{COMPUTE}/os-simple-tenant-usage", headers=cloud.headers()).status_code == 403
    mine = cloud.client.get(
        f"{COMPUTE}/os-simple-tenant-usage/{cloud.ids['project:demo']}",
        params=params,
        headers=cloud.headers(),
    ).json()["tenant_usage"]
    assert mine["total_memory_mb_usage"] == pytest.approx(4096, rel=0.01)
    bad = cloud.client.get(
        f"{COMPUTE}/os-simple-tenant-usage", params={"start": "yesterday"}, headers=cloud.headers("admin")
    )
    assert bad.status_code == 400


def test_hypervisors_show_capacity_and_use_for_admin_only(cloud: Cloud):
    server_id = cloud.create_server(flavorRef="2")
    cloud.advance(server_id, "active")
    assert cloud.client.get(f"{COMPUTE}/os-hypervisors", headers=cloud.headers()).status_code == 403
    [host] = cloud.client.get(f"{COMPUTE}/os-hypervisors/detail", headers=cloud.headers("admin")).json()[
        "hypervisors"
    ]
    assert (host["hypervisor_hostname"], host["vcpus"], host["memory_mb"]) == ("host-1", 8, 16384)
    assert (host["vcpus_used"], host["memory_mb_used"], host["local_gb_used"], host["running_vms"]) == (
        1,
        2048,
        20,
        1,
    )
    zones = cloud.client.get(f"{COMPUTE}/os-availability-zone", headers=cloud.headers()).json()
    assert zones["availabilityZoneInfo"][0]["zoneName"] == "nova"
