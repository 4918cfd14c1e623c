"""Keystone v3: version documents, password tokens with a catalog, validation, revocation, and
the admin-only identity writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_api_support import PASSWORD, Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType


def auth_body(user: str, project: str, password: str = PASSWORD) -> dict:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}


def test_version_documents_answer_without_a_token(cloud: Cloud):
    v3 = cloud.client.get("/identity/v3")
    assert v3.status_code == 200
    assert v3.json()["version"]["id"].startswith("v3.")
    assert v3.json()["version"]["links"][0]["href"] == "http://testserver/identity/v3/"
    listing = cloud.client.get("/identity")
    assert listing.status_code == 300
    assert listing.json()["versions"]["values"][0]["status"] == "stable"


def test_password_auth_issues_a_token_whose_catalog_points_at_this_server(cloud: Cloud):
    answer = cloud.client.post("/identity/v3/auth/tokens", json=auth_body("demo", "demo"))
    assert answer.status_code == 201
    token = answer.headers["X-Subject-Token"]
    body = answer.json()["token"]
    assert token not in answer.text
    assert body["project"]["id"] == cloud.ids["project:demo"]
    assert {r["name"] for r in body["roles"]} == {"member", "reader"}
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC) + timedelta(minutes=30)
    urls = {entry["type"]: entry["endpoints"][0]["url"] for entry in body["catalog"]}
    assert urls["compute"] == "http://testserver/compute/v2.1"
    assert urls["image"] == "http://testserver/image"
    assert urls["network"] == "http://testserver/network"
    assert urls["volumev3"] == f"http://testserver/volume/v3/{cloud.ids['project:demo']}"
    # the token works for the next call
    assert cloud.client.get("/compute/v2.1/servers", headers={"X-Auth-Token": token}).status_code == 200



def test_the_catalog_on_its_own_is_the_one_the_token_carries(cloud: Cloud):
    answer = cloud.client.post("/identity/v3/auth/tokens", json=auth_body("demo", "demo"))
    token = answer.headers["X-Subject-Token"]
    catalog = cloud.client.get("/identity/v3/auth/catalog", headers={"X-Auth-Token": token})
    assert catalog.status_code == 200
    assert catalog.json()["catalog"] == answer.json()["token"]["catalog"]
    assert cloud.client.get("/identity/v3/auth/catalog").status_code == 401

def test_a_wrong_password_answers_keystones_401_without_echoing_it(cloud: Cloud):
    answer = cloud.client.post("/identity/v3/auth/tokens", json=auth_body("demo", "demo", "hunter2-wrong"))
    assert answer.status_code == 401
    assert answer.json() == {"error": {"code": 401, "title": "Unauthorized",
                                       "message": "The request you have made requires authentication."}}
    assert answer.headers["WWW-Authenticate"] == 'Keystone uri="http://testserver/identity"'
    assert "hunter2" not in answer.text
    assert answer.headers["content-type"].startswith("application/json")


def test_a_project_the_user_has_no_role_on_is_refused(cloud: Cloud):
    assert cloud.client.post("/identity/v3/auth/tokens", json=auth_body("demo", "other")).status_code == 401
    assert cloud.client.post("/identity/v3/auth/tokens", json=auth_body("demo", "nosuch")).status_code == 401


def test_a_malformed_auth_body_is_a_400_not_a_500(cloud: Cloud):
    answer = cloud.client.post(
        "/identity/v3/auth/tokens", json={"auth": {"identity": {"methods": "password"}}}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400


def test_validate_and_revoke_a_token(cloud: Cloud):
    token = cloud.token("demo")
    headers = {"X-Auth-Token": cloud.token("demo"), "X-Subject-Token": token}
    valid = cloud.client.get("/identity/v3/auth/tokens", headers=headers)
    assert valid.status_code == 200
    assert valid.json()["token"]["user"]["name"] == "demo"
    assert cloud.client.delete("/identity/v3/auth/tokens", headers=headers).status_code == 204
    # the revoked token is refused everywhere, the other one still works
    assert cloud.client.get("/compute/v2.1/servers", headers={"X-Auth-Token": token}).status_code == 401
    assert cloud.client.get("/identity/v3/auth/tokens", headers=headers).status_code == 404
    assert (
        cloud.client.get(
            "/compute/v2.1/servers", headers={"X-Auth-Token": headers["X-Auth-Token"]}
        ).status_code
        == 200
    )
    revoked = cloud.events(EventType.TOKEN_REVOKED)
    assert len(revoked) == 1
    assert revoked[0].body["audit_id"] == cloud.tokens.validate(token).audit_id
    assert all(token.encode() not in r.value for r in cloud.records())


def test_a_member_cannot_validate_someone_elses_token(cloud: Cloud):
    headers = {"X-Auth-Token": cloud.token("alice"), "X-Subject-Token": cloud.token("demo")}
    assert cloud.client.get("/identity/v3/auth/tokens", headers=headers).status_code == 403


def test_admin_creates_a_project_and_a_user_who_can_then_log_in(cloud: Cloud):
    admin = cloud.headers("admin")
    project = cloud.client.post("/identity/v3/projects", json={"project": {"name": "team"}}, headers=admin)
    assert project.status_code == 201
    project_id = project.json()["project"]["id"]
    user = cloud.client.post(
        "/identity/v3/users",
        json={"user": {"name": "bob", "password": "s3cret-pass", "default_project_id": project_id}},
        headers=admin,
    )
    assert user.status_code == 201
    assert "password" not in user.json()["user"]
    user_id = user.json()["user"]["id"]
    grant = cloud.client.put(
        f"/identity/v3/projects/{project_id}/users/{user_id}/roles/member", headers=admin
    )
    assert grant.status_code == 204
    assert (
        cloud.client.post(
            "/identity/v3/auth/tokens", json=auth_body("bob", "team", "s3cret-pass")
        ).status_code
        == 201
    )
    created = cloud.events(EventType.USER_CREATED)[-1]
    assert created.body["password_hash"].startswith("scrypt$")
    assert all(b"s3cret-pass" not in r.value for r in cloud.records())
    duplicate = cloud.client.post("/identity/v3/projects", json={"project": {"name": "team"}}, headers=admin)
    assert duplicate.status_code == 409


def test_a_member_may_not_create_projects_or_list_users(cloud: Cloud):
    before = len(cloud.records())
    answer = cloud.client.post(
        "/identity/v3/projects", json={"project": {"name": "x"}}, headers=cloud.headers()
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == 403
    assert cloud.client.get("/identity/v3/users", headers=cloud.headers()).status_code == 403
    assert len(cloud.records()) == before


def test_projects_and_role_assignments(cloud: Cloud):
    # keystone's list_projects is an admin's: a user lists its own at /v3/auth/projects
    refused = cloud.client.get("/identity/v3/projects", headers=cloud.headers())
    assert refused.status_code == 403
    mine = cloud.client.get("/identity/v3/auth/projects", headers=cloud.headers()).json()["projects"]
    assert [p["name"] for p in mine] == ["demo"]
    everyone = cloud.client.get("/identity/v3/projects", headers=cloud.headers("admin")).json()["projects"]
    assert {p["name"] for p in everyone} == {"admin", "demo", "other"}
    assignments = cloud.client.get(
        "/identity/v3/role_assignments", params={"user.id": cloud.ids["user:demo"]}, headers=cloud.headers()
    ).json()
    assert {a["role"]["id"] for a in assignments["role_assignments"]} == {"member", "reader"}
