"""The identity fold: state from identity events, password authentication, token re-checks."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from eventsvm.events.model import EventType, new_event
from eventsvm.identity.keys import ensure_keys
from eventsvm.identity.passwords import hash_password
from eventsvm.identity.quota import DEFAULT_LIMITS, QuotaLimits
from eventsvm.identity.tokens import TokenClaims, TokenService
from eventsvm.state.identity import AUTH_FAILED_MESSAGE, IdentityState, Unauthorized, evolve, quota_for

PASSWORD = "s3cret-demo-pass"
HASH = hash_password(PASSWORD)
T0 = 1_790_000_000_000  # ms


def project_created(pid, name, enabled=True, domain_id="default", at=T0):
    body = {"id": pid, "name": name, "domain_id": domain_id, "enabled": enabled, "description": ""}
    return new_event(EventType.PROJECT_CREATED, pid, body, occurred_at=at)


def user_created(uid, name, password_hash=HASH, enabled=True, at=T0):
    body = {
        "id": uid,
        "name": name,
        "domain_id": "default",
        "default_project_id": None,
        "enabled": enabled,
        "password_hash": password_hash,
    }
    return new_event(EventType.USER_CREATED, uid, body, occurred_at=at)


def user_updated(uid, enabled=None, password_hash=None, at=T0):
    body = {"id": uid, "enabled": enabled, "password_hash": password_hash}
    return new_event(EventType.USER_UPDATED, uid, body, occurred_at=at)


def role_assigned(uid, pid, role):
    body = {"user_id": uid, "project_id": pid, "role": role}
    return new_event(EventType.ROLE_ASSIGNED, uid, body, occurred_at=T0)


def token_revoked(audit_id, expires_at_ms):
    body = {"audit_id": audit_id, "expires_at": expires_at_ms}
    return new_event(EventType.TOKEN_REVOKED, audit_id, body, occurred_at=T0)


def quota_set(pid, instances, cores, ram_mb):
    body = {"project_id": pid, "instances": instances, "cores": cores, "ram_mb": ram_mb}
    return new_event(EventType.QUOTA_SET, pid, body, occurred_at=T0)


def demo_events():
    return [
        project_created("p-demo", "demo"),
        project_created("p-admin", "admin"),
        user_created("u-demo", "demo"),
        user_created("u-admin", "admin"),
        role_assigned("u-demo", "p-demo", "member"),
        role_assigned("u-demo", "p-demo", "reader"),
        role_assigned("u-admin", "p-admin", "admin"),
    ]


@pytest.fixture
def state():
    return IdentityState.from_events(demo_events())


def claims_for(user_id, project_id, roles, audit_id="audit-1", issued_ms=T0 + 1000):
    issued = datetime.fromtimestamp(issued_ms / 1000, tz=UTC)
    return TokenClaims(
        user_id=user_id,
        project_id=project_id,
        roles=tuple(roles),
        methods=("password",),
        audit_id=audit_id,
        issued_at=issued,
        expires_at=issued + timedelta(hours=1),
    )


def recheck(state, user_id, project_id, roles, **kwargs):
    return state.check_token_still_valid(claims_for(user_id, project_id, roles, **kwargs))


# the fold


def test_the_fold_indexes_projects_users_and_roles(state):
    assert state.project("p-demo").name == "demo"
    assert state.project_by_name("demo", "default").id == "p-demo"
    assert state.user_by_name("admin", "default").id == "u-admin"
    assert state.roles_of("u-demo", "p-demo") == {"member", "reader"}
    assert state.roles_of("u-demo", "p-admin") == frozenset()
    assert state.project("nope") is None and state.user_by_name("demo", "other-domain") is None


def test_keystones_default_domain_name_and_id_both_find_it(state):
    assert state.project_by_name("demo", "Default").id == "p-demo"
    assert state.user_by_name("demo", "Default").id == "u-demo"


def test_evolve_is_the_same_fold_step_by_step():
    state = IdentityState()
    for event in demo_events():
        state = evolve(state, event)
    assert state.roles_of("u-admin", "p-admin") == {"admin"}


def test_events_of_other_kinds_change_nothing(state):
    before = (dict(state.projects), dict(state.users))
    state.apply(new_event(EventType.HOST_REGISTERED, "host-1", {"name": "host-1"}))
    assert (state.projects, state.users) == before


def test_a_later_update_wins_in_log_order(state):
    state.apply(user_updated("u-demo", enabled=False))
    assert not state.user("u-demo").enabled
    state.apply(user_updated("u-demo", enabled=True))
    assert state.user("u-demo").enabled


def test_an_update_without_a_field_leaves_it_alone(state):
    state.apply(user_updated("u-demo", enabled=False))
    state.apply(user_updated("u-demo", password_hash=hash_password("new")))
    assert not state.user("u-demo").enabled


def test_the_password_hash_is_not_in_a_users_repr(state):
    assert HASH not in repr(state.user("u-demo"))


def test_a_duplicate_project_name_keeps_the_first(state):
    duplicate = project_created("p-other", "demo")
    state.apply(duplicate)
    assert state.project_by_name("demo", "default").id == "p-demo"
    # the later claim lost the name, so the project never came to exist (eventsvm.state.names)
    assert state.project("p-other") is None
    assert duplicate.event_id in state.refused


# authenticate


def test_authenticate_returns_user_project_and_roles(state):
    user, project, roles = state.authenticate("demo", "Default", PASSWORD, "demo", "Default")
    assert (user.id, project.id, roles) == ("u-demo", "p-demo", ("member", "reader"))


def _refused(state, user="demo", password=PASSWORD, project="demo"):
    with pytest.raises(Unauthorized) as caught:
        state.authenticate(user, "Default", password, project, "Default")
    message = str(caught.value)
    assert message == AUTH_FAILED_MESSAGE
    assert password not in message
    return message


def test_every_authentication_failure_gives_the_same_message(state):
    state.apply(project_created("p-off", "off", enabled=False))
    state.apply(role_assigned("u-demo", "p-off", "member"))
    messages = {
        _refused(state, password="wrong-password"),
        _refused(state, user="nobody"),
        _refused(state, project="nosuchproject"),
        _refused(state, project="admin"),  # exists, but demo has no role on it
        _refused(state, project="off"),  # disabled project
    }
    assert messages == {AUTH_FAILED_MESSAGE}


def test_a_disabled_user_cannot_authenticate_even_with_the_right_password(state):
    state.apply(user_updated("u-demo", enabled=False))
    _refused(state)
    state.apply(user_updated("u-demo", enabled=True))
    assert state.authenticate("demo", "default", PASSWORD, "demo", "default")[0].id == "u-demo"


def test_a_changed_password_replaces_the_old_one(state):
    state.apply(user_updated("u-demo", password_hash=hash_password("brand-new")))
    _refused(state)
    assert state.authenticate("demo", "default", "brand-new", "demo", "default")[0].id == "u-demo"


# token re-checks


def test_a_token_of_a_standing_identity_is_still_valid(state):
    assert state.check_token_still_valid(claims_for("u-demo", "p-demo", ["member", "reader"])) is None


def test_a_revoked_token_is_no_longer_valid(state):
    claims = claims_for("u-demo", "p-demo", ["member"], audit_id="audit-x")
    state.apply(token_revoked("audit-x", claims.expires_at_ms))
    assert state.is_revoked("audit-x")
    assert state.check_token_still_valid(claims) == "token revoked"
    assert state.check_token_still_valid(claims_for("u-demo", "p-demo", ["member"], "audit-y")) is None


def test_revoking_a_first_token_revokes_the_tokens_rescoped_from_it_but_not_the_reverse(state):
    first = claims_for("u-demo", "p-demo", ["member"], audit_id="audit-first")
    child = dataclasses.replace(first, audit_id="audit-child", chain_audit_id="audit-first")
    sibling = dataclasses.replace(first, audit_id="audit-sibling", chain_audit_id="audit-first")
    state.apply(token_revoked("audit-child", child.expires_at_ms))
    assert state.check_token_still_valid(child) == "token revoked"
    assert state.check_token_still_valid(first) is None and state.check_token_still_valid(sibling) is None
    state.apply(token_revoked("audit-first", first.expires_at_ms))
    assert state.check_token_still_valid(sibling) == "token revoked"


def test_revocations_are_dropped_once_the_token_has_expired_anyway(state):
    state.apply(token_revoked("old", T0))
    state.apply(token_revoked("fresh", T0 + 3_600_000))
    assert state.drop_expired_revocations(now_ms=T0 + 1) == 1
    assert not state.is_revoked("old") and state.is_revoked("fresh")


def test_disabling_a_user_kills_their_tokens_even_after_re_enabling(state):
    claims = claims_for("u-demo", "p-demo", ["member"], issued_ms=T0 + 1000)
    state.apply(user_updated("u-demo", enabled=False, at=T0 + 2000))
    assert state.check_token_still_valid(claims) == "user disabled"
    state.apply(user_updated("u-demo", enabled=True, at=T0 + 3000))
    assert state.check_token_still_valid(claims) is not None
    assert recheck(state, "u-demo", "p-demo", ["member"], issued_ms=T0 + 4000) is None


def test_a_password_change_kills_older_tokens(state):
    state.apply(user_updated("u-demo", password_hash=hash_password("x"), at=T0 + 2000))
    assert recheck(state, "u-demo", "p-demo", ["member"], issued_ms=T0 + 1000) is not None
    assert recheck(state, "u-demo", "p-demo", ["member"], issued_ms=T0 + 2000) is None


def test_a_disabled_project_or_missing_role_or_identity_invalidates_a_token(state):
    state.apply(project_created("p-off", "off", enabled=False))
    assert recheck(state, "u-demo", "p-off", ["member"]) == "project disabled"
    assert recheck(state, "u-demo", "p-admin", ["admin"]) == "role assignment removed"
    assert recheck(state, "u-gone", "p-demo", ["member"]) == "user not found"
    assert recheck(state, "u-demo", "p-gone", ["member"]) == "project not found"


def test_authenticate_then_issue_then_recheck_end_to_end(state, tmp_path):
    ensure_keys(tmp_path)
    tokens = TokenService(tmp_path)
    user, project, roles = state.authenticate("demo", "Default", PASSWORD, "demo", "Default")
    claims = tokens.validate(tokens.issue(user.id, project.id, roles).token)
    assert state.check_token_still_valid(claims) is None
    state.apply(token_revoked(claims.audit_id, claims.expires_at_ms))
    assert state.check_token_still_valid(claims) == "token revoked"


# quota sets


def test_quota_defaults_until_a_quota_set_event_then_the_latest_wins(state):
    assert quota_for(state, "p-demo") == DEFAULT_LIMITS == QuotaLimits(10, 20, 51200)
    state.apply(quota_set("p-demo", 2, 4, 4096))
    state.apply(quota_set("p-demo", 5, -1, 8192))
    assert quota_for(state, "p-demo") == QuotaLimits(instances=5, cores=-1, ram_mb=8192)
    assert quota_for(state, "p-admin") == DEFAULT_LIMITS


def test_an_unknown_user_costs_the_same_password_check_as_a_known_one(state, monkeypatch):
    import eventsvm.state.identity as module

    checked: list[str] = []
    real = module.verify_password
    monkeypatch.setattr(module, "verify_password", lambda pw, enc: checked.append(enc) or real(pw, enc))
    _refused(state, user="nobody")
    _refused(state, password="wrong-password")
    assert len(checked) == 2
    assert checked[0].split("$")[:4] == checked[1].split("$")[:4]  # same scrypt cost


def test_a_request_event_is_checked_by_its_audit_id_user_and_project(state):
    assert state.check_request("u-demo", "p-demo", "audit-r") is None
    assert state.check_request("u-demo", "p-admin", "audit-r") == "role assignment removed"
    state.apply(token_revoked("audit-r", T0 + 3_600_000))
    assert state.check_request("u-demo", "p-demo", "audit-r") == "token revoked"
    state.apply(user_updated("u-admin", enabled=False))
    assert state.check_request("u-admin", "p-admin", "audit-z") == "user disabled"
