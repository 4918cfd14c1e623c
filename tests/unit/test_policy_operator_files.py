"""An operator's <service>-policy.yaml decides, for every service, with nothing checked a second
time by hand: a file that loosens a rule lets the caller through (no handler refuses anyway), one
that tightens it answers that service's own 403 body. Also what a caller sees beyond a route's
rule: every project's resources for whom the service's context_is_admin rule names, and the
fields only an admin rule shows (OS-EXT-SRV-ATTR, os-vol-tenant-attr, binding:host_id)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api_support import Cloud, active_fixture, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.context import ApiContext
from eventsvm.events.model import EventType, new_event
from eventsvm.identity.policy_rules import PolicyEnforcers

SERVERS = "/compute/v2.1/servers"
Operated = Callable[..., TestClient]


@pytest.fixture
def operated(cloud: Cloud, tmp_path: Path) -> Iterator[Operated]:
    """A second API over the same cloud whose policy directory holds the files given, one per
    service by its file name (glance-policy.yaml ...), as `eventsvm up` reads <data-dir>/policy."""
    clients: list[TestClient] = []

    def make(**files: str) -> TestClient:
        policy_dir = tmp_path / f"policy-{len(clients)}"
        policy_dir.mkdir()
        for service, text in files.items():
            (policy_dir / f"{service}-policy.yaml").write_text(text)
        context = ApiContext(readmodel=cloud.readmodel, tokens=cloud.tokens,
                             policy=PolicyEnforcers(policy_dir))
        client = TestClient(create_app(context))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _volume(cloud: Cloud, project: str) -> str:
    volume_id = str(uuid.uuid4())
    cloud.readmodel.append([new_event(EventType.VOLUME_CREATED, volume_id, {
        "id": volume_id, "name": f"vol-{project}", "size_gb": 1, "owner": cloud.ids[f"project:{project}"],
        "status": "available"})])
    return volume_id


def _volumes(client: TestClient, cloud: Cloud, user: str, **query: str) -> Any:
    return client.get(f"/volume/v3/{cloud.ids[f'project:{cloud.home(user)}']}/volumes/detail",
                      params=query, headers=cloud.headers(user))


# -- glance --------------------------------------------------------------------------------------
def test_glance_tightened_get_images_answers_glances_403(cloud: Cloud, operated: Operated) -> None:
    client = operated(glance='"get_images": "role:admin"\n')
    refused = client.get("/image/v2/images", headers=cloud.headers("demo"))
    assert refused.status_code == 403
    assert refused.json() == {"code": 403, "title": "Forbidden",
                              "message": "You are not authorized to complete get_images action."}
    # nova's image proxy is glance's rule too
    assert client.get("/compute/v2.1/images", headers=cloud.headers("demo")).status_code == 403
    assert client.get("/image/v2/images", headers=cloud.headers("admin")).status_code == 200
    assert cloud.client.get("/image/v2/images", headers=cloud.headers("demo")).status_code == 200


def test_glance_loosened_publicize_image_lets_a_member_share(cloud: Cloud, operated: Operated) -> None:
    body = {"name": "shared", "disk_format": "raw", "container_format": "bare", "visibility": "public"}
    default = cloud.client.post("/image/v2/images", json=body, headers=cloud.headers("demo"))
    assert default.status_code == 403
    assert default.json()["message"] == "You are not authorized to complete publicize_image action."
    client = operated(glance='"publicize_image": "role:member"\n')
    created = client.post("/image/v2/images", json=body, headers=cloud.headers("demo"))
    assert created.status_code == 201, created.text
    assert created.json()["visibility"] == "public"


def test_glances_context_is_admin_decides_who_sees_private_images(cloud: Cloud, operated: Operated) -> None:
    mine = cloud.client.post("/image/v2/images", json={"name": "mine", "disk_format": "raw",
                                                      "container_format": "bare"}, headers=cloud.headers())
    assert mine.status_code == 201, mine.text
    image_id = mine.json()["id"]
    alice = cloud.headers("alice")
    assert cloud.client.get(f"/image/v2/images/{image_id}", headers=alice).status_code == 404
    listed = cloud.client.get("/image/v2/images", headers=alice).json()["images"]
    assert image_id not in {i["id"] for i in listed}
    client = operated(glance='"context_is_admin": "role:admin or role:member"\n')
    # an admin context lists every project's images (glance's database reads are not scoped) ...
    listed = client.get("/image/v2/images", headers=alice).json()["images"]
    assert image_id in {i["id"] for i in listed}
    # ... while get_image's default names the admin role itself, not context_is_admin: glance's 403
    shown = client.get(f"/image/v2/images/{image_id}", headers=alice)
    assert shown.status_code == 403
    assert shown.json()["message"] == "You are not authorized to complete get_image action."
    # nova's and cinder's admins are unchanged: alice still sees only her project's servers
    assert client.get(f"{SERVERS}?all_tenants=1", headers=alice).status_code == 403


# -- cinder --------------------------------------------------------------------------------------
def test_cinder_tightened_get_all_answers_cinders_403(cloud: Cloud, operated: Operated) -> None:
    client = operated(cinder='"volume:get_all": "role:admin"\n')
    refused = _volumes(client, cloud, "demo")
    assert refused.status_code == 403
    message = "Policy doesn't allow volume:get_all to be performed."
    assert refused.json() == {"forbidden": {"code": 403, "message": message}}
    assert _volumes(cloud.client, cloud, "demo").status_code == 200


def test_cinder_all_tenants_is_its_admins_and_loosened_with_context_is_admin(
    cloud: Cloud, operated: Operated
) -> None:
    own, others = _volume(cloud, "demo"), _volume(cloud, "other")
    # a member asking all_tenants gets its own, as cinder does (no 403)
    listed = _volumes(cloud.client, cloud, "demo", all_tenants="1").json()["volumes"]
    assert [v["id"] for v in listed] == [own]
    assert "os-vol-tenant-attr:tenant_id" not in listed[0]
    everyone = _volumes(cloud.client, cloud, "admin", all_tenants="1").json()["volumes"]
    assert {v["id"] for v in everyone} == {own, others}
    assert {v["os-vol-tenant-attr:tenant_id"] for v in everyone} == {
        cloud.ids["project:demo"], cloud.ids["project:other"]}
    client = operated(cinder='"context_is_admin": "role:admin or role:member"\n')
    widened = _volumes(client, cloud, "demo", all_tenants="1").json()["volumes"]
    assert {v["id"] for v in widened} == {own, others}
    assert client.get(f"/volume/v3/{cloud.ids['project:demo']}/volumes/{others}",
                      headers=cloud.headers()).status_code == 200


def test_cinder_loosened_tenant_attribute_shows_the_owner(cloud: Cloud, operated: Operated) -> None:
    own = _volume(cloud, "demo")
    client = operated(cinder='"volume_extension:volume_tenant_attribute": "rule:project_reader_or_admin"\n')
    [shown] = _volumes(client, cloud, "demo").json()["volumes"]
    assert (shown["id"], shown["os-vol-tenant-attr:tenant_id"]) == (own, cloud.ids["project:demo"])


# -- neutron -------------------------------------------------------------------------------------
def test_neutron_tightened_get_network_answers_neutrons_403(cloud: Cloud, operated: Operated) -> None:
    client = operated(neutron='"get_network": "rule:admin_only"\n')
    refused = client.get("/network/v2.0/networks", headers=cloud.headers())
    assert refused.status_code == 403
    assert refused.json() == {"NeutronError": {"type": "PolicyNotAuthorized",
                                               "message": "(rule:get_network) is disallowed by policy",
                                               "detail": ""}}
    assert client.get("/network/v2.0/networks", headers=cloud.headers("admin")).status_code == 200


def test_neutron_loosened_binding_host_shows_a_member_its_ports_host(
    cloud: Cloud, active: str, operated: Operated
) -> None:
    [port] = cloud.client.get("/network/v2.0/ports", headers=cloud.headers()).json()["ports"]
    assert "binding:host_id" not in port
    [admins] = cloud.client.get("/network/v2.0/ports", params={"device_id": active},
                                headers=cloud.headers("admin")).json()["ports"]
    assert admins["binding:host_id"] == cloud.instance(active).host
    client = operated(neutron='"get_port:binding:host_id": "rule:admin_only or role:member"\n')
    [port] = client.get("/network/v2.0/ports", headers=cloud.headers()).json()["ports"]
    assert port["binding:host_id"] == cloud.instance(active).host


# -- keystone ------------------------------------------------------------------------------------
def test_keystone_loosened_list_projects_and_list_users(cloud: Cloud, operated: Operated) -> None:
    reader = cloud.headers("reader")
    refused = cloud.client.get("/identity/v3/projects", headers=reader)
    assert refused.status_code == 403
    assert refused.json() == {"error": {"code": 403, "title": "Forbidden", "message": (
        "You are not authorized to perform the requested action: identity:list_projects.")}}
    client = operated(keystone='"identity:list_projects": "role:reader"\n'
                               '"identity:list_users": "role:reader"\n')
    projects = client.get("/identity/v3/projects", headers=reader)
    assert projects.status_code == 200, projects.text
    assert {p["name"] for p in projects.json()["projects"]} == {"admin", "demo", "other"}
    # no second, hand-written admin check behind the table
    users = client.get("/identity/v3/users", headers=reader)
    assert users.status_code == 200, users.text
    assert {"admin", "demo", "alice", "reader"} <= {u["name"] for u in users.json()["users"]}


def test_keystone_tightened_get_project_answers_keystones_403(cloud: Cloud, operated: Operated) -> None:
    demo = cloud.ids["project:demo"]
    assert cloud.client.get(f"/identity/v3/projects/{demo}", headers=cloud.headers()).status_code == 200
    client = operated(keystone='"identity:get_project": "rule:admin_required"\n')
    refused = client.get(f"/identity/v3/projects/{demo}", headers=cloud.headers())
    assert refused.status_code == 403
    assert refused.json()["error"] == {"code": 403, "title": "Forbidden", "message": (
        "You are not authorized to perform the requested action: identity:get_project.")}


# -- nova ----------------------------------------------------------------------------------------
def test_nova_all_tenants_rules_are_per_route(cloud: Cloud, active: str, operated: Operated) -> None:
    alice = cloud.headers("alice")
    for path, rule in ((SERVERS, "index"), (f"{SERVERS}/detail", "detail")):
        refused = cloud.client.get(path, params={"all_tenants": "1"}, headers=alice)
        assert refused.status_code == 403
        assert refused.json() == {"forbidden": {"code": 403, "message": (
            f"Policy doesn't allow os_compute_api:servers:{rule}:get_all_tenants to be performed.")}}
    # tightened for the index only: the admin still lists every project in detail
    client = operated(nova='"os_compute_api:servers:index:get_all_tenants": "!"\n')
    admin = cloud.headers("admin")
    assert client.get(SERVERS, params={"all_tenants": "1"}, headers=admin).status_code == 403
    detail = client.get(f"{SERVERS}/detail", params={"all_tenants": "1"}, headers=admin)
    assert [s["id"] for s in detail.json()["servers"]] == [active]
    # loosened for a member: alice lists the demo project's server
    client = operated(nova='"os_compute_api:servers:detail:get_all_tenants": "role:member"\n')
    listed = client.get(f"{SERVERS}/detail", params={"all_tenants": "1"}, headers=alice)
    assert [s["id"] for s in listed.json()["servers"]] == [active]


def test_nova_admin_filters_and_fields_follow_their_rules(
    cloud: Cloud, active: str, operated: Operated
) -> None:
    host = cloud.instance(active).host
    demo = cloud.headers()
    # host is an admin's filter: a member's is dropped quietly, its own servers listed
    assert [s["id"] for s in cloud.client.get(SERVERS, params={"host": "nowhere"},
                                              headers=demo).json()["servers"]] == [active]
    shown = cloud.client.get(f"{SERVERS}/{active}", headers=demo).json()["server"]
    assert "OS-EXT-SRV-ATTR:host" not in shown
    client = operated(nova=(
        '"os_compute_api:servers:allow_all_filters": "rule:project_reader_or_admin"\n'
        '"os_compute_api:os-extended-server-attributes": "rule:project_reader_or_admin"\n'))
    assert client.get(SERVERS, params={"host": "nowhere"}, headers=demo).json()["servers"] == []
    assert [s["id"] for s in client.get(SERVERS, params={"host": host},
                                        headers=demo).json()["servers"]] == [active]
    shown = client.get(f"{SERVERS}/{active}", headers=demo).json()["server"]
    assert shown["OS-EXT-SRV-ATTR:host"] == host


def test_nova_server_groups_all_projects_is_its_rule(cloud: Cloud, operated: Operated) -> None:
    group = cloud.client.post("/compute/v2.1/os-server-groups", json={
        "server_group": {"name": "g", "policies": ["affinity"]}}, headers=cloud.headers())
    assert group.status_code == 200, group.text
    alice = cloud.headers("alice")
    listed = cloud.client.get("/compute/v2.1/os-server-groups?all_projects=1", headers=alice)
    assert listed.json()["server_groups"] == []
    client = operated(nova='"os_compute_api:os-server-groups:index:all_projects": "role:member"\n')
    listed = client.get("/compute/v2.1/os-server-groups?all_projects=1", headers=alice)
    assert [g["id"] for g in listed.json()["server_groups"]] == [group.json()["server_group"]["id"]]
