"""Keystone's token chains (issue 14): a re-scoped token keeps its parent's expiry and audit chain,
revoking the chain's first token revokes the chain, and a password holding NUL is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_api_support import PASSWORD, Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType
from eventsvm.identity.tokens import TokenService

TOKENS = "/identity/v3/auth/tokens"


def rescope(cloud: Cloud, token: str, project: str | None = "demo") -> tuple[str, dict]:
    body: dict = {"auth": {"identity": {"methods": ["token"], "token": {"id": token}}}}
    if project is not None:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    answer = cloud.client.post(TOKENS, json=body)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"], answer.json()["token"]


def chain(cloud: Cloud) -> tuple[str, str, dict]:
    """A token of demo, a child re-scoped from it, and the child's body."""
    parent = cloud.token("demo")
    child, body = rescope(cloud, parent)
    return parent, child, body


def shown(cloud: Cloud, token: str) -> dict:
    answer = cloud.client.get(TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert answer.status_code == 200, answer.text
    return answer.json()["token"]


def test_a_rescoped_token_keeps_its_parents_expiry_and_audit_chain(cloud: Cloud, tmp_path):
    # a parent issued half an hour ago has half an hour left; its child may not have more
    earlier = TokenService(tmp_path / "keys", clock=lambda: datetime.now(UTC) - timedelta(minutes=30))
    parent = earlier.issue(cloud.ids["user:demo"], cloud.ids["project:demo"], ("member", "reader")).token
    parent_body = shown(cloud, parent)
    child, child_body = rescope(cloud, parent)
    assert child_body["expires_at"] == parent_body["expires_at"]
    assert child_body["methods"] == ["token"]
    [parent_audit] = parent_body["audit_ids"]
    assert child_body["audit_ids"][1] == parent_audit
    assert len(child_body["audit_ids"]) == 2 and child_body["audit_ids"][0] != parent_audit
    assert shown(cloud, child)["audit_ids"] == child_body["audit_ids"]
    # a grandchild names the chain's first token, not its parent, as keystone's audit_chain_id
    _, grandchild = rescope(cloud, child, project=None)
    assert grandchild["audit_ids"][1] == parent_audit
    assert grandchild["expires_at"] == parent_body["expires_at"]


def as_admin(cloud: Cloud, method: str, token: str) -> int:
    """The status of an admin's `method` on /auth/tokens about `token` (X-Subject-Token)."""
    headers = {**cloud.headers("admin"), "X-Subject-Token": token}
    return cloud.client.request(method, TOKENS, headers=headers).status_code


def test_revoking_the_first_token_revokes_its_rescoped_children(cloud: Cloud):
    parent, child, _ = chain(cloud)
    assert as_admin(cloud, "DELETE", parent) == 204
    assert as_admin(cloud, "GET", child) == 404
    assert as_admin(cloud, "HEAD", child) == 404
    assert cloud.client.get("/compute/v2.1/flavors", headers={"X-Auth-Token": child}).status_code == 401
    # nor can the revoked chain be renewed
    body = {"auth": {"identity": {"methods": ["token"], "token": {"id": child}}}}
    assert cloud.client.post(TOKENS, json=body).status_code == 401
    [revoked] = cloud.events(EventType.TOKEN_REVOKED)
    assert all(t.encode() not in r.value for r in cloud.records() for t in (parent, child))


def test_a_server_request_names_its_tokens_chain_so_the_authenticator_can_check_it(cloud: Cloud):
    _, child, body = chain(cloud)
    answer = cloud.client.post("/compute/v2.1/servers", json=cloud.server_request("vm"),
                               headers={"X-Auth-Token": child})
    assert answer.status_code == 202
    [event] = cloud.events(EventType.INSTANCE_REQUESTED)
    assert [event.body["token_audit_id"], event.body["token_chain_audit_id"]] == body["audit_ids"]


def test_revoking_a_rescoped_token_revokes_only_it(cloud: Cloud):
    # keystone's DELETE /v3/auth/tokens revokes by the token's own audit id
    parent, child, _ = chain(cloud)
    assert as_admin(cloud, "DELETE", child) == 204
    assert as_admin(cloud, "GET", child) == 404
    assert as_admin(cloud, "GET", parent) == 200


def _password_auth(password: str) -> dict:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}


def test_a_password_with_nul_is_refused_at_login(cloud: Cloud):
    assert cloud.client.post(TOKENS, json=_password_auth(PASSWORD)).status_code == 201
    for password in (PASSWORD + "\x00", PASSWORD + "\x00tail", "\x00"):
        answer = cloud.client.post(TOKENS, json=_password_auth(password))
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == 400 and answer.json()["error"]["title"] == "Bad Request"
        assert "NUL" in answer.json()["error"]["message"]
        assert "horse" not in answer.text


def test_a_password_with_nul_is_refused_when_a_user_is_created_or_updated(cloud: Cloud):
    admin = cloud.headers("admin")
    before = len(cloud.records())
    created = cloud.client.post("/identity/v3/users", headers=admin,
                                json={"user": {"name": "bob", "password": "s3cret\x00pass"}})
    assert created.status_code == 400 and "s3cret" not in created.text
    assert created.json()["error"]["code"] == 400
    updated = cloud.client.patch(f"/identity/v3/users/{cloud.ids['user:demo']}", headers=admin,
                                 json={"user": {"password": "n3w\x00pass"}})
    assert updated.status_code == 400 and "n3w" not in updated.text
    assert len(cloud.records()) == before
    # nor is a password echoed when it is merely too long
    long = cloud.client.patch(f"/identity/v3/users/{cloud.ids['user:demo']}", headers=admin,
                              json={"user": {"password": "s3cret" * 1000}})
    assert long.status_code == 400 and "s3cret" not in long.text
