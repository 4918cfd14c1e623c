"""Every route of the app, walked with every role: what nova, neutron, glance, cinder and keystone's
default policies allow (reader reads, member acts in its own project, admin everywhere).

The routes come from the app itself, so a route added without a rule in
eventsvm.api.authorization.ROUTE_RULES fails here (it is refused with 403 for everyone, and the
table test names it). The expectations below are written from the services' documented defaults,
not read from the table, so a wrong rule in the table fails too.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.api.app import create_app
from eventsvm.api.authorization import ACTION_RULES, ROUTE_RULES
from eventsvm.api.context import ApiContext
from eventsvm.api.server_lifecycle import LIFECYCLE_ACTIONS
from eventsvm.app.cloud import serving_app
from eventsvm.app.seed import cirros_body
from eventsvm.events.model import EventType, new_event
from eventsvm.identity.policy_rules import SERVICES, PolicyEnforcers, credentials
from eventsvm.state.server_actions import REQUEST_KEYS


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the API app serves, as FastAPI matches them."""
    app = create_app(ApiContext(readmodel=None, tokens=None))  # type: ignore[arg-type]
    found = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            found.extend((method, context.path) for method in sorted(context.methods or ()))
    return sorted(set(found))


ROUTES = app_routes()

# who calls: (user, project, roles) by name; "admin" is the admin of another project (the admin one)
PERSONAS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "none": ("demo", "demo", ()),
    "reader": ("reader", "demo", ("reader",)),
    "member": ("demo", "demo", ("member", "reader")),
    "other_reader": ("alice", "other", ("reader",)),
    "other_member": ("alice", "other", ("member",)),
    "admin": ("admin", "admin", ("admin",)),
}

PUBLIC = {("POST", "/identity/v3/auth/tokens"),
          # monitoring, beside the API: counts for anyone, names only for an admin's token
          ("GET", "/metrics"), ("GET", "/dashboard"), ("GET", "/dashboard/state")}
_VERSION_PATH = re.compile(r"^/(identity|compute|image|network|volume)(/(v2|v2\.0|v2\.1|v3))?/?$")

# any valid token: nova has no policy on flavors, key pairs are their user's, keystone lets anyone
# list roles and show the domain of their project; a user's own projects are /v3/auth/projects
ANY_TOKEN = {
    ("GET", "/compute/v2.1/flavors"), ("GET", "/compute/v2.1/flavors/detail"),
    ("GET", "/compute/v2.1/flavors/{flavor_id}"), ("GET", "/compute/v2.1/os-keypairs"),
    ("POST", "/compute/v2.1/os-keypairs"), ("GET", "/compute/v2.1/os-keypairs/{name}"),
    ("DELETE", "/compute/v2.1/os-keypairs/{name}"), ("GET", "/compute/v2.1/limits"),
    ("GET", "/compute/v2.1/os-quota-sets/{project_id}/defaults"),
    ("GET", "/identity/v3/auth/catalog"), ("GET", "/identity/v3/auth/projects"),
    ("GET", "/identity/v3/roles"),
    ("GET", "/identity/v3/roles/{role_id}"), ("GET", "/identity/v3/domains/{domain_id}"),
    # what the networking and block-storage APIs offer, and cinder's zones: any caller's
    ("GET", "/network/v2.0/extensions"), ("GET", "/network/v2.0/extensions/{alias}"),
    ("GET", "/volume/v3/{project_id}/extensions"), ("GET", "/volume/v3/{project_id}/os-availability-zone"),
}
_GRANT = "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
ADMIN_ONLY = {
    ("POST", "/compute/v2.1/flavors"), ("DELETE", "/compute/v2.1/flavors/{flavor_id}"),
    ("PUT", "/compute/v2.1/os-quota-sets/{project_id}"), ("GET", "/compute/v2.1/os-simple-tenant-usage"),
    ("GET", "/compute/v2.1/os-hypervisors"), ("GET", "/compute/v2.1/os-hypervisors/detail"),
    ("GET", "/compute/v2.1/os-hypervisors/{hypervisor_id}"),
    ("GET", "/compute/v2.1/os-availability-zone/detail"),
    # keystone's list_projects: every project, an admin's (a domain reader's, with domain tokens)
    ("GET", "/identity/v3/projects"),
    ("POST", "/identity/v3/projects"), ("PATCH", "/identity/v3/projects/{project_id}"),
    ("DELETE", "/identity/v3/projects/{project_id}"), ("GET", "/identity/v3/users"),
    ("POST", "/identity/v3/users"), ("PATCH", "/identity/v3/users/{user_id}"),
    ("DELETE", "/identity/v3/users/{user_id}"), ("PUT", _GRANT), ("DELETE", _GRANT),
    ("GET", "/identity/v3/role_assignments"), ("GET", "/identity/v3/domains"),
}
# keystone: the user named (demo here), or the subject token's user (demo's), or an admin
OF_THE_USER = {
    ("GET", "/identity/v3/users/{user_id}"), ("GET", "/identity/v3/users/{user_id}/projects"),
    ("GET", "/identity/v3/auth/tokens"), ("HEAD", "/identity/v3/auth/tokens"),
    ("DELETE", "/identity/v3/auth/tokens"),
}
# keystone: any token scoped to the project named, or an admin
OF_THE_PROJECT = {("GET", "/identity/v3/projects/{project_id}")}
# reads that glance asks a member for, not a reader: an image's data (download_image)
MEMBER_READS = {("GET", "/image/v2/images/{image_id}/file")}
# path parameters naming something of the demo project: another project's caller is refused
TARGETED = ("{server_id}", "{image_id}", "{network_id}", "{subnet_id}", "{project_id}", "{tenant_id}",
            "{group_id}")


def allowed(method: str, path: str, persona: str) -> bool:
    """What the services' default policies answer for `persona` on the demo project's things."""
    key = (method, path)
    user, _, roles = PERSONAS[persona]
    if key in ANY_TOKEN:
        return True
    if key in ADMIN_ONLY:
        return persona == "admin"
    if key in OF_THE_USER:
        return user in ("demo", "admin")
    if key in OF_THE_PROJECT:
        return persona in ("none", "reader", "member", "admin")
    if persona == "admin":
        return True
    needed = "reader" if method in ("GET", "HEAD") and key not in MEMBER_READS else "member"
    if needed not in {*roles, *(("reader",) if "member" in roles else ())}:  # member implies reader
        return False
    return not (persona.startswith("other_") and any(p in path for p in TARGETED))


def _status_is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or (method == "GET" and _VERSION_PATH.match(path) is not None)


def test_every_route_has_a_rule_and_every_rule_is_registered() -> None:
    missing = [route for route in ROUTES if route not in ROUTE_RULES]
    assert missing == [], f"routes without a policy rule in eventsvm.api.authorization.ROUTE_RULES: {missing}"
    enforcers = PolicyEnforcers()
    creds = credentials("u", "p", ("admin",))
    for (method, path), entry in ROUTE_RULES.items():
        if entry.rule is not None:  # an unregistered name raises PolicyNotRegistered
            enforcers.allows(entry.service, entry.rule, {"project_id": "p"}, creds)
        assert entry.public == _status_is_public(method, path), (method, path)


def test_every_server_action_has_a_rule() -> None:
    dispatched = set(REQUEST_KEYS) | set(LIFECYCLE_ACTIONS) | {"os-getConsoleOutput"}
    assert dispatched - set(ACTION_RULES) == set()
    enforcers = PolicyEnforcers()
    for rule in ACTION_RULES.values():
        enforcers.allows("nova", f"os_compute_api:{rule}", {"project_id": "p"}, credentials("u", "p", ()))


# -- the walk ------------------------------------------------------------------------------------
def _seed_demo_things(cloud: Cloud) -> dict[str, str]:
    """A server, a private image and a volume of the demo project, and alice a reader of hers."""
    ids = cloud.ids
    image_id, volume_id, group_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    image = {**cirros_body(image_id, ids["project:demo"], {}, None), "name": "mine", "visibility": "private"}
    volume = {"id": volume_id, "name": "vol", "size_gb": 1, "owner": ids["project:demo"],
              "status": "available"}
    # as events, not through the API: a create waits for the log's verdict on its name
    cloud.readmodel.append([
        new_event(EventType.ROLE_ASSIGNED, "alice:other",
                  {"user_id": ids["user:alice"], "project_id": ids["project:other"], "role": "reader"}),
        new_event(EventType.IMAGE_CREATED, image_id, image),
        new_event(EventType.VOLUME_CREATED, volume_id, volume),
        new_event(EventType.SERVER_GROUP_CREATED, group_id, {"id": group_id, "name": "g",
                                                             "policy": "affinity"},
                  user_id=ids["user:demo"], project_id=ids["project:demo"]),
    ])
    server = cloud.create_server("vm1")
    cloud.advance(server)
    return {
        "server_id": server, "image_id": image_id, "volume_id": volume_id,
        "network_id": ids["network:private"], "subnet_id": ids["subnet:private"],
        "project_id": ids["project:demo"], "tenant_id": ids["project:demo"], "user_id": ids["user:demo"],
        "role_id": "member", "domain_id": "default", "flavor_id": "1", "name": "keypair-1",
        "key": "k", "action_request_id": "req-none", "hypervisor_id": "1", "port_id": "none",
        "group_id": group_id, "network_label": "private", "tag": "t", "alias": "external-net",
    }


def _token(cloud: Cloud, persona: str) -> str:
    user, project, roles = PERSONAS[persona]
    return cloud.tokens.issue(cloud.ids[f"user:{user}"], cloud.ids[f"project:{project}"], roles).token


def _body(method: str, path: str) -> dict[str, Any] | None:
    if path.endswith("/action"):
        return {"os-stop": None}  # a member's action (nova's servers:stop)
    return {} if method in ("POST", "PUT", "PATCH") else None


def _forbidden_shape(path: str, body: dict[str, Any]) -> bool:
    service = path.split("/")[1]
    if service == "network":
        return body["NeutronError"]["type"] == "PolicyNotAuthorized"
    if service == "image":
        return body["code"] == 403
    if service == "identity":
        return body["error"]["code"] == 403
    return body["forbidden"]["code"] == 403  # nova and cinder


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_with_every_role(cloud: Cloud, method: str, path: str) -> None:
    fill = _seed_demo_things(cloud)
    url = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)], path)
    subject = _token(cloud, "member")  # the token the keystone token routes look at: demo's
    anonymous = cloud.client.request(method, url, json=_body(method, path),
                                     headers={"X-Subject-Token": subject})
    if _status_is_public(method, path):
        assert anonymous.status_code not in (401, 403), anonymous.text
        return
    assert anonymous.status_code == 401, anonymous.text
    # the refused first, so an allowed delete cannot hide a wrong answer behind a 404
    order = sorted(PERSONAS, key=lambda persona: allowed(method, path, persona))
    for persona in order:
        headers = {"X-Auth-Token": _token(cloud, persona), "X-Subject-Token": subject}
        answer = cloud.client.request(method, url, json=_body(method, path), headers=headers)
        if allowed(method, path, persona):
            assert answer.status_code not in (401, 403), (persona, answer.text)
            continue
        # another project's things do not exist for the caller (nova's, neutron's, glance's 404),
        # and nova checks a body's schema before it looks the server up (400): either way nothing
        # of the demo project was shown or changed
        hidden = persona.startswith("other_") and answer.status_code in (400, 404)
        assert answer.status_code == 403 or hidden, (persona, answer.status_code, answer.text)
        if answer.status_code == 403 and method != "HEAD":
            assert _forbidden_shape(path, answer.json()), (persona, answer.text)


def test_a_reader_may_not_run_any_server_action(cloud: Cloud) -> None:
    fill = _seed_demo_things(cloud)
    reader = {"X-Auth-Token": _token(cloud, "reader")}
    for action, rule in ACTION_RULES.items():
        answer = cloud.client.post(f"/compute/v2.1/servers/{fill['server_id']}/action",
                                   json={action: None}, headers=reader)
        assert answer.status_code == 403, (action, answer.text)
        message = f"Policy doesn't allow os_compute_api:{rule} to be performed."
        assert answer.json()["forbidden"]["message"] == message
    member = {"X-Auth-Token": _token(cloud, "member")}
    for admin_action in ("os-resetState", "shelveOffload"):
        answer = cloud.client.post(f"/compute/v2.1/servers/{fill['server_id']}/action",
                                   json={admin_action: None}, headers=member)
        assert answer.status_code == 403, (admin_action, answer.text)
    # an action no rule names still needs a member: a reader is refused before the handler's 400
    unknown = cloud.client.post(f"/compute/v2.1/servers/{fill['server_id']}/action",
                                json={"os-migrateLive": None}, headers=reader)
    assert unknown.status_code == 403
    assert cloud.client.post(f"/compute/v2.1/servers/{fill['server_id']}/action",
                             json={"os-migrateLive": None}, headers=member).status_code == 400


def test_the_issue_a_reader_creates_nothing(cloud: Cloud) -> None:
    """Issue 14 item 3: a reader got 201 for networks and images and 202 for volumes."""
    reader = cloud.headers("reader")
    project = cloud.ids["project:demo"]
    network = cloud.client.post("/network/v2.0/networks", json={"network": {"name": "n"}}, headers=reader)
    assert network.status_code == 403
    assert network.json()["NeutronError"]["message"] == "(rule:create_network) is disallowed by policy"
    image = cloud.client.post("/image/v2/images", json={"name": "i", "disk_format": "raw",
                                                        "container_format": "bare"}, headers=reader)
    assert image.status_code == 403
    assert image.json()["message"] == "You are not authorized to complete add_image action."
    volume = cloud.client.post(f"/volume/v3/{project}/volumes", json={"volume": {"size": 1}}, headers=reader)
    assert volume.status_code == 403
    assert volume.json()["forbidden"]["message"] == "Policy doesn't allow volume:create to be performed."
    assert cloud.events(EventType.NETWORK_CREATED)[-1].body["name"] != "n"


def test_the_defaults_of_each_service_are_registered() -> None:
    assert set(SERVICES) == {"nova", "neutron", "glance", "cinder", "keystone"}
    enforcers = PolicyEnforcers()
    reader, member = credentials("u", "p", ("reader",)), credentials("u", "p", ("member",))
    for service, rule in (("nova", "os_compute_api:servers:create"), ("neutron", "create_network"),
                          ("glance", "add_image"), ("cinder", "volume:create")):
        target = {"project_id": "p", "owner": "p"}
        assert not enforcers.allows(service, rule, target, reader)
        assert enforcers.allows(service, rule, target, member)
        assert not enforcers.allows(service, rule, {"project_id": "q", "owner": "q"}, member)
        admin = credentials("u", "p", ("admin",))
        assert enforcers.allows(service, rule, {"project_id": "q", "owner": "q"}, admin)


def test_an_operator_policy_file_overrides_a_default(tmp_path: Path) -> None:
    (tmp_path / "neutron-policy.yaml").write_text('"create_network": "role:reader"\n')
    enforcers = PolicyEnforcers(tmp_path)
    reader = credentials("u", "p", ("reader",))
    assert enforcers.allows("neutron", "create_network", {"project_id": "p"}, reader)
    # the other services keep their defaults
    assert not enforcers.allows("glance", "add_image", {"project_id": "p"}, reader)


def test_kept_decisions_are_the_ones_oslo_policy_makes(tmp_path: Path) -> None:
    """Every rule of every service, for every persona, on its own project and another, asked twice
    (the second answer is the kept one): the same as a fresh oslo.policy Enforcer's."""
    (tmp_path / "nova-policy.yaml").write_text('"os_compute_api:servers:create": "role:reader"\n')
    kept, fresh = PolicyEnforcers(tmp_path), PolicyEnforcers(tmp_path)
    personas = [credentials("u", "p", roles) for roles in (("reader",), ("member",), ("admin",), ())]
    targets = [{"project_id": "p", "tenant_id": "p", "owner": "p", "user_id": "u"},
               {"project_id": "q", "tenant_id": "q", "owner": "q", "user_id": "v"}, {}]
    asked = 0
    for service, rules in SERVICES.items():
        plain = fresh._enforcers[service]
        for rule in rules:
            for creds in personas:
                for target in targets:
                    expected = bool(plain.authorize(rule, dict(target), dict(creds)))
                    assert kept.allows(service, rule, target, creds) is expected, (service, rule, creds)
                    assert kept.allows(service, rule, target, creds) is expected, (service, rule, creds)
                    asked += 1
    assert asked > 1000
    assert kept.allows("nova", "os_compute_api:servers:create", targets[0], personas[0])


def test_a_policy_file_edited_twice_in_one_second_applies_at_the_next_check(tmp_path: Path) -> None:
    policy = tmp_path / "neutron-policy.yaml"
    enforcers = PolicyEnforcers(tmp_path)
    reader = credentials("u", "p", ("reader",))
    target = {"project_id": "p"}
    assert not enforcers.allows("neutron", "create_network", target, reader)
    policy.write_text('"create_network": "role:reader"\n')
    assert enforcers.allows("neutron", "create_network", target, reader)
    policy.write_text('"create_network": "role:admin"\n')  # within the same second
    assert not enforcers.allows("neutron", "create_network", target, reader)
    policy.unlink()
    policy.write_text('"create_network": "role:reader or role:member"\n')
    assert enforcers.allows("neutron", "create_network", target, reader)


def test_a_policy_file_in_the_data_dir_changes_what_the_api_allows(cloud: Cloud, tmp_path: Path) -> None:
    """The app `eventsvm up` serves reads <data-dir>/policy/<service>-policy.yaml, as an operator
    writes /etc/neutron/policy.yaml; a file written while it runs applies at the next request."""
    data_dir = tmp_path / "data"
    app, context, monitoring = serving_app(cloud.readmodel, data_dir, "http://127.0.0.1:1")
    try:
        client = TestClient(app)
        reader = {"X-Auth-Token": context.tokens.issue(
            cloud.ids["user:reader"], cloud.ids["project:demo"], ("reader",)).token}
        body = {"network": {"name": "readers-net"}}
        assert client.post("/network/v2.0/networks", json=body, headers=reader).status_code == 403
        (data_dir / "policy").mkdir()
        (data_dir / "policy" / "neutron-policy.yaml").write_text(
            '# let readers make networks\n"create_network": "rule:admin_only or role:reader"\n')
        created = client.post("/network/v2.0/networks", json=body, headers=reader)
        assert created.status_code == 201, created.text
        assert created.json()["network"]["project_id"] == cloud.ids["project:demo"]
        # nova's, glance's and cinder's defaults still hold
        image = {"name": "i", "disk_format": "raw", "container_format": "bare"}
        assert client.post("/image/v2/images", json=image, headers=reader).status_code == 403
        server = client.post("/compute/v2.1/servers", json=cloud.server_request(), headers=reader)
        assert server.status_code == 403
    finally:
        monitoring.close()


def test_monitoring_beside_the_api_answers_without_a_token(cloud: Cloud, tmp_path: Path) -> None:
    """`eventsvm up` mounts /metrics and the dashboard on the API's app, whose every route runs the
    policy table: a Prometheus scraper and a browser without a token still get counts."""
    app, _, monitoring = serving_app(cloud.readmodel, tmp_path / "data", "http://127.0.0.1:1")
    try:
        client = TestClient(app)
        for path in ("/metrics", "/dashboard", "/dashboard/state"):
            assert client.get(path).status_code == 200, path
        # and the API beside them still wants a token
        assert client.get("/compute/v2.1/servers").status_code == 401
    finally:
        monitoring.close()


# -- lists asking for every project, with every role ----------------------------------------------
# (route, query): how each service answers a caller its admin rule does not name. Nova refuses
# all_tenants with its get_all_tenants rule's 403; cinder's volume list and nova's server-group list
# fall back quietly to the caller's own project, as their APIs do.
_EVERY_PROJECT = (  # (path, the flag, nova's rule refusing it or None, the demo thing it lists)
    ("/compute/v2.1/servers", "all_tenants", "os_compute_api:servers:index:get_all_tenants", "server_id"),
    ("/compute/v2.1/servers/detail", "all_tenants", "os_compute_api:servers:detail:get_all_tenants",
     "server_id"),
    ("/volume/v3/{project_id}/volumes/detail", "all_tenants", None, "volume_id"),
    ("/compute/v2.1/os-server-groups", "all_projects", None, "group_id"),
)


def _listed_ids(answer: Any) -> set[str]:
    items = next(v for k, v in answer.json().items() if not k.endswith("_links"))
    return {item["id"] for item in items}


@pytest.mark.parametrize("persona", sorted(PERSONAS))
def test_every_list_asking_for_every_project_with_every_role(cloud: Cloud, persona: str) -> None:
    fill = _seed_demo_things(cloud)
    _, project, roles = PERSONAS[persona]
    headers = {"X-Auth-Token": _token(cloud, persona)}
    for path, flag, nova_rule, thing in _EVERY_PROJECT:
        url = path.format(project_id=cloud.ids[f"project:{project}"])
        answer = cloud.client.get(url, params={flag: "1"}, headers=headers)
        if persona == "admin":  # the admin of another project sees the demo project's
            assert answer.status_code == 200, (path, answer.text)
            assert fill[thing] in _listed_ids(answer), path
            continue
        if not roles or nova_rule is not None:
            # no role: the route's own rule; a reader or member: nova's get_all_tenants
            assert answer.status_code == 403, (persona, path, answer.text)
            if nova_rule is not None and roles:
                message = f"Policy doesn't allow {nova_rule} to be performed."
                assert answer.json() == {"forbidden": {"code": 403, "message": message}}
            continue
        # quietly the caller's own project: the demo thing for demo's reader and member only
        assert answer.status_code == 200, (persona, path, answer.text)
        assert (fill[thing] in _listed_ids(answer)) == (project == "demo"), (persona, path)


# the fields an admin rule shows (nova's os-extended-server-attributes, cinder's
# volume_tenant_attribute, neutron's get_port:binding:host_id): (path, list key or None, field)
_ADMIN_FIELDS = (
    ("/compute/v2.1/servers/{server_id}", None, "OS-EXT-SRV-ATTR:host"),
    ("/volume/v3/{project_id}/volumes/{volume_id}", None, "os-vol-tenant-attr:tenant_id"),
    ("/network/v2.0/ports?device_id={server_id}", "ports", "binding:host_id"),
)


@pytest.mark.parametrize("persona", ["reader", "member", "admin"])
def test_admin_only_fields_with_every_role_that_sees_the_thing(cloud: Cloud, persona: str) -> None:
    fill = _seed_demo_things(cloud)
    headers = {"X-Auth-Token": _token(cloud, persona)}
    for path, listed, field in _ADMIN_FIELDS:
        answer = cloud.client.get(path.format(**fill), headers=headers)
        assert answer.status_code == 200, (path, answer.text)
        body = answer.json()
        [shown] = body[listed] if listed else body.values()
        assert (field in shown) == (persona == "admin"), (persona, path, shown)
