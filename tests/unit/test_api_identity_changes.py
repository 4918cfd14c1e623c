"""Keystone v3 PATCH / DELETE of projects and users, role unassignment, domains and the filters of
role_assignments: keystone's codes and bodies, one identity event each, and tokens that die with
the user, project or role they stood on."""

from __future__ import annotations

import pytest
from test_api_identity import auth_body
from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType
from eventsvm.log.port import partition_for
from eventsvm.state import names

V3 = "/identity/v3"


def _new_project(cloud: Cloud, name: str = "team") -> str:
    admin = cloud.headers("admin")
    answer = cloud.client.post(f"{V3}/projects", json={"project": {"name": name}}, headers=admin)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["project"]["id"])


def _new_user(cloud: Cloud, name: str, project_id: str, role: str = "member") -> str:
    admin = cloud.headers("admin")
    body = {"user": {"name": name, "password": "pw-123456"}}
    answer = cloud.client.post(f"{V3}/users", json=body, headers=admin)
    assert answer.status_code == 201, answer.text
    user_id = str(answer.json()["user"]["id"])
    grant = cloud.client.put(f"{V3}/projects/{project_id}/users/{user_id}/roles/{role}", headers=admin)
    assert grant.status_code == 204
    return user_id


def _login(cloud: Cloud, user: str, project: str) -> str:
    answer = cloud.client.post(f"{V3}/auth/tokens", json=auth_body(user, project, "pw-123456"))
    assert answer.status_code == 201, answer.text
    return str(answer.headers["X-Subject-Token"])


def _bob(cloud: Cloud) -> tuple[str, str, str]:
    """A new project "team" and bob, a new member of it, logged in: (project id, user id, token)."""
    project_id = _new_project(cloud)
    user_id = _new_user(cloud, "bob", project_id)
    return project_id, user_id, _login(cloud, "bob", "team")


def _works(cloud: Cloud, token: str) -> int:
    return cloud.client.get("/compute/v2.1/servers", headers={"X-Auth-Token": token}).status_code


def _not_found(answer, message: str) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == 404, answer.text
    assert answer.json() == {"error": {"code": 404, "title": "Not Found", "message": message}}


# -- projects ------------------------------------------------------------------------------------
def test_patch_project_renames_disables_and_its_tokens_stop_working(cloud: Cloud):
    admin = cloud.headers("admin")
    project_id, _, token = _bob(cloud)
    assert _works(cloud, token) == 200
    answer = cloud.client.patch(f"{V3}/projects/{project_id}", headers=admin, json={"project": {
        "name": "squad", "description": "renamed"}})
    assert answer.status_code == 200, answer.text
    shown = answer.json()["project"]
    assert (shown["id"], shown["name"], shown["description"], shown["enabled"]) == (
        project_id, "squad", "renamed", True)
    [event] = cloud.events(EventType.PROJECT_UPDATED)
    assert event.body == {"id": project_id, "domain_id": "default", "name": "squad", "enabled": None,
                          "description": "renamed"}
    # it took its name where every claim of a project name in the domain is ordered
    [record] = [r for r in cloud.records() if r.key == project_id.encode() and b"squad" in r.value]
    namespace = names.projects_in("default").encode()
    assert record.partition == partition_for(namespace, cloud.readmodel.log.partitions(record.topic))
    assert _works(cloud, token) == 200  # a rename leaves tokens alone
    listed = cloud.client.get(f"{V3}/projects", params={"name": "squad"}, headers=admin).json()["projects"]
    assert [p["id"] for p in listed] == [project_id]
    # the old name is free again
    assert _new_project(cloud, "team") != project_id
    off = {"project": {"enabled": False}}
    disabled = cloud.client.patch(f"{V3}/projects/{project_id}", headers=admin, json=off)
    assert disabled.json()["project"]["enabled"] is False
    assert _works(cloud, token) == 401
    cloud.client.patch(f"{V3}/projects/{project_id}", headers=admin, json={"project": {"enabled": True}})
    assert _works(cloud, token) == 401  # keystone revoked them; enabling does not revive them
    assert _works(cloud, _login(cloud, "bob", "squad")) == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"project": {"name": "admin"}}, 409, "Conflict occurred attempting to store"),
        ({"project": {"name": ""}}, 400, "Invalid input for field 'name'"),
        ({"project": {"name": "x" * 65}}, 400, "is too long"),
        ({"project": {"enabled": "no"}}, 400, "Invalid input for field 'enabled'"),
        ({"project": {"description": "d" * 1025}}, 400, "Invalid input for field 'description'"),
        ({"project": {"domain_id": "other"}}, 400, "Update of `domain_id` is not allowed."),
        ({"project": {}}, 400, "does not have enough properties"),
        ({"name": "x"}, 400, "'project' is a required property"),
    ],
)
def test_patch_project_refusals(cloud: Cloud, body: dict, status: int, message: str):
    project_id = _new_project(cloud)
    before = len(cloud.records())
    answer = cloud.client.patch(f"{V3}/projects/{project_id}", headers=cloud.headers("admin"), json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == status and message in answer.json()["error"]["message"]
    assert len(cloud.records()) == before


def test_delete_project_frees_its_name_and_kills_its_tokens(cloud: Cloud):
    admin = cloud.headers("admin")
    project_id, user_id, token = _bob(cloud)
    assert cloud.client.delete(f"{V3}/projects/{project_id}", headers=admin).status_code == 204
    assert cloud.events(EventType.PROJECT_DELETED)[0].body == {"id": project_id, "domain_id": "default"}
    gone = f"Could not find project: {project_id}."
    path = f"{V3}/projects/{project_id}"
    _not_found(cloud.client.get(path, headers=admin), gone)
    _not_found(cloud.client.delete(path, headers=admin), gone)
    _not_found(cloud.client.patch(path, headers=admin, json={"project": {"name": "n"}}), gone)
    assert _works(cloud, token) == 401
    grants = cloud.client.get(f"{V3}/role_assignments", params={"user.id": user_id}, headers=admin).json()
    assert grants["role_assignments"] == []
    assert _new_project(cloud, "team") != project_id


def test_a_member_may_not_patch_or_delete_projects_or_users(cloud: Cloud):
    demo = cloud.headers()
    project = cloud.ids["project:demo"]
    rename = {"project": {"name": "x"}}
    for answer in (cloud.client.patch(f"{V3}/projects/{project}", headers=demo, json=rename),
                   cloud.client.delete(f"{V3}/projects/{project}", headers=demo),
                   cloud.client.patch(f"{V3}/users/{cloud.ids['user:demo']}", headers=demo,
                                      json={"user": {"name": "x"}}),
                   cloud.client.delete(f"{V3}/users/{cloud.ids['user:alice']}", headers=demo),
                   cloud.client.delete(f"{V3}/projects/{project}/users/{cloud.ids['user:demo']}/roles/member",
                                       headers=demo)):
        assert answer.status_code == 403
        message = answer.json()["error"]["message"]
        assert message.startswith("You are not authorized to perform the requested action")


# -- users ---------------------------------------------------------------------------------------
def test_patch_user_renames_and_changes_the_password_and_a_taken_name_is_409(cloud: Cloud):
    admin = cloud.headers("admin")
    project_id, user_id, old_token = _bob(cloud)
    answer = cloud.client.patch(f"{V3}/users/{user_id}", headers=admin, json={"user": {
        "name": "robert", "password": "new-pass-1", "email": "ignored@example.com"}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["name"] == "robert" and "password" not in answer.json()["user"]
    assert all(b"new-pass-1" not in r.value for r in cloud.records())
    assert _works(cloud, old_token) == 401  # keystone revokes a user's tokens on a password change
    login = cloud.client.post(f"{V3}/auth/tokens", json=auth_body("robert", "team", "new-pass-1"))
    assert login.status_code == 201
    taken = cloud.client.patch(f"{V3}/users/{user_id}", headers=admin, json={"user": {"name": "demo"}})
    assert taken.status_code == 409 and taken.json()["error"]["title"] == "Conflict"
    cross = cloud.client.patch(f"{V3}/users/{user_id}", headers=admin, json={"user": {"domain_id": "other"}})
    assert cross.status_code == 400


def test_delete_user_kills_its_tokens_and_frees_its_name(cloud: Cloud):
    admin = cloud.headers("admin")
    project_id, user_id, token = _bob(cloud)
    assert cloud.client.delete(f"{V3}/users/{user_id}", headers=admin).status_code == 204
    assert _works(cloud, token) == 401
    gone, path = f"Could not find user: {user_id}.", f"{V3}/users/{user_id}"
    _not_found(cloud.client.get(path, headers=admin), gone)
    _not_found(cloud.client.delete(path, headers=admin), gone)
    _not_found(cloud.client.patch(path, headers=admin, json={"user": {"enabled": False}}), gone)
    assert cloud.client.post(f"{V3}/auth/tokens", json=auth_body("bob", "team")).status_code == 401
    assert _new_user(cloud, "bob", project_id) != user_id


# -- roles -----------------------------------------------------------------------------------------
def test_unassigning_a_role_kills_tokens_that_carry_it(cloud: Cloud):
    admin = cloud.headers("admin")
    project_id, user_id, token = _bob(cloud)
    path = f"{V3}/projects/{project_id}/users/{user_id}/roles/member"
    assert cloud.client.delete(path, headers=admin).status_code == 204
    [event] = cloud.events(EventType.ROLE_UNASSIGNED)
    assert event.body == {"user_id": user_id, "project_id": project_id, "role": "member"}
    assert _works(cloud, token) == 401
    _not_found(cloud.client.delete(path, headers=admin),
               f"Could not find role assignment with role: member, user or group: {user_id}, "
               f"project, domain, or system: {project_id}.")
    _not_found(cloud.client.delete(f"{V3}/projects/{project_id}/users/{user_id}/roles/owner", headers=admin),
               "Could not find role: owner.")
    _not_found(cloud.client.delete(f"{V3}/projects/nope/users/{user_id}/roles/member", headers=admin),
               "Could not find project: nope.")


def test_role_assignment_filters_as_keystone_reads_them(cloud: Cloud):
    admin = cloud.headers("admin")
    query = {"user.id": cloud.ids["user:admin"], "scope.project.id": cloud.ids["project:admin"]}
    plain = cloud.client.get(f"{V3}/role_assignments", params=query, headers=admin).json()["role_assignments"]
    assert [a["role"]["id"] for a in plain] == ["admin"] and "name" not in plain[0]["role"]
    # keystone: include_names=0 is false; present with any other value (or none) is true
    off = cloud.client.get(f"{V3}/role_assignments", params={**query, "include_names": "0"}, headers=admin)
    assert "name" not in off.json()["role_assignments"][0]["user"]
    named = cloud.client.get(f"{V3}/role_assignments?include_names&user.id={cloud.ids['user:admin']}",
                             headers=admin).json()["role_assignments"][0]
    assert named["user"]["name"] == "admin"
    assert named["user"]["domain"] == {"id": "default", "name": "Default"}
    assert named["scope"]["project"]["name"] == "admin" and named["role"]["name"] == "admin"
    effective = cloud.client.get(f"{V3}/role_assignments", params={**query, "effective": "true"},
                                 headers=admin).json()["role_assignments"]
    assert [a["role"]["id"] for a in effective] == ["admin", "member", "reader"]
    assert effective[1]["links"]["prior_role"].endswith("/identity/v3/roles/admin")
    by_role = cloud.client.get(f"{V3}/role_assignments", params={"role.id": "reader"}, headers=admin).json()
    assert {a["user"]["id"] for a in by_role["role_assignments"]} == {cloud.ids["user:demo"],
                                                                     cloud.ids["user:reader"]}
    domain = cloud.client.get(f"{V3}/role_assignments", params={"scope.domain.id": "default"}, headers=admin)
    assert domain.json()["role_assignments"] == []


# -- domains -------------------------------------------------------------------------------------
def test_domains_show_keystones_default_domain(cloud: Cloud):
    admin = cloud.headers("admin")
    listed = cloud.client.get(f"{V3}/domains", headers=admin)
    assert listed.status_code == 200
    [default] = listed.json()["domains"]
    assert {k: default[k] for k in ("id", "name", "description", "enabled")} == {
        "id": "default", "name": "Default", "description": "The default domain", "enabled": True}
    assert default["links"]["self"] == "http://testserver/identity/v3/domains/default"
    assert cloud.client.get(f"{V3}/domains", params={"name": "Default"}, headers=admin).json()["domains"]
    assert cloud.client.get(f"{V3}/domains", params={"name": "nope"}, headers=admin).json()["domains"] == []
    assert cloud.client.get(f"{V3}/domains/default", headers=admin).json()["domain"] == default
    assert cloud.client.get(f"{V3}/domains/default", headers=cloud.headers()).status_code == 200
    assert cloud.client.get(f"{V3}/domains", headers=cloud.headers()).status_code == 403
    _not_found(cloud.client.get(f"{V3}/domains/nope", headers=admin), "Could not find domain: nope.")
