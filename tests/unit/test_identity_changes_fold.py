"""The identity fold of keystone's PATCH and DELETE of projects and users and of role unassignment:
renames and deletes take and free names as creates do, and tokens die with what they stood on."""

from __future__ import annotations

import pytest
from test_identity_state import T0, claims_for, demo_events, project_created, role_assigned, user_created

from eventsvm.events.model import Event, EventType, new_event
from eventsvm.state import names
from eventsvm.state.identity import IdentityState


def event(kind: EventType, aggregate: str, at: int = T0 + 5000, **body: object) -> Event:
    return new_event(kind, aggregate, dict(body), occurred_at=at)


def project_updated(pid: str, name: str | None = None, enabled: bool | None = None,
                    description: str | None = None, at: int = T0 + 5000) -> Event:
    return event(EventType.PROJECT_UPDATED, pid, at, id=pid, domain_id="default", name=name, enabled=enabled,
                 description=description)


def user_renamed(uid: str, name: str) -> Event:
    return event(EventType.USER_UPDATED, uid, id=uid, domain_id="default", name=name, enabled=None,
                 password_hash=None, default_project_id=None)


@pytest.fixture
def state() -> IdentityState:
    return IdentityState.from_events(demo_events())


def test_a_project_rename_moves_its_name_and_a_taken_name_is_refused(state: IdentityState) -> None:
    renamed = project_updated("p-demo", name="shop", description="the shop")
    state.apply(renamed)
    assert state.project_by_name("shop", "Default").id == "p-demo"
    assert state.project_by_name("demo", "default") is None
    assert state.project("p-demo").description == "the shop"
    clash = project_updated("p-demo", name="admin", enabled=False)
    state.apply(clash)
    assert clash.event_id in state.refused and renamed.event_id not in state.refused
    # a refused update changes nothing at all, not even its other fields
    assert (state.project("p-demo").name, state.project("p-demo").enabled) == ("shop", True)
    state.apply(project_created("p-new", "demo"))
    assert state.project_by_name("demo", "default").id == "p-new"


def test_disabling_a_project_kills_its_tokens_even_after_re_enabling(state: IdentityState) -> None:
    claims = claims_for("u-demo", "p-demo", ["member"], issued_ms=T0 + 1000)
    state.apply(project_updated("p-demo", enabled=False, at=T0 + 5000))
    assert state.check_token_still_valid(claims) == "project disabled"
    state.apply(project_updated("p-demo", enabled=True, at=T0 + 6000))
    assert state.check_token_still_valid(claims) == "token issued before the project was disabled"
    later = claims_for("u-demo", "p-demo", ["member"], issued_ms=T0 + 7000)
    assert state.check_token_still_valid(later) is None


def test_a_deleted_project_frees_its_name_and_takes_its_assignments_and_tokens(state: IdentityState) -> None:
    claims = claims_for("u-demo", "p-demo", ["member"])
    state.apply(event(EventType.PROJECT_DELETED, "p-demo", id="p-demo", domain_id="default"))
    assert state.project("p-demo") is None and state.project_by_name("demo", "default") is None
    assert state.roles_of("u-demo", "p-demo") == frozenset()
    assert state.check_token_still_valid(claims) == "project not found"
    again = project_created("p-demo2", "demo")
    state.apply(again)
    assert again.event_id not in state.refused and state.project_by_name("demo", "default").id == "p-demo2"
    # the new project of the old name has none of the old one's grants
    assert state.roles_of("u-demo", "p-demo2") == frozenset()


def test_a_deleted_user_frees_its_name_and_its_tokens_die(state: IdentityState) -> None:
    claims = claims_for("u-demo", "p-demo", ["member"])
    state.apply(event(EventType.USER_DELETED, "u-demo", id="u-demo", domain_id="default"))
    assert state.user("u-demo") is None and state.user_by_name("demo", "default") is None
    assert state.check_token_still_valid(claims) == "user not found"
    assert state.roles_of("u-demo", "p-demo") == frozenset()
    state.apply(user_created("u-demo2", "demo"))
    assert state.user_by_name("demo", "default").id == "u-demo2"


def test_a_user_rename_moves_its_name_and_a_taken_name_is_refused(state: IdentityState) -> None:
    state.apply(user_renamed("u-demo", "dora"))
    assert state.user_by_name("dora", "default").id == "u-demo"
    assert state.user_by_name("demo", "default") is None
    clash = user_renamed("u-demo", "admin")
    state.apply(clash)
    assert clash.event_id in state.refused and state.user("u-demo").name == "dora"


def test_unassigning_a_role_kills_tokens_that_carry_it(state: IdentityState) -> None:
    member = claims_for("u-demo", "p-demo", ["member", "reader"])
    state.apply(event(EventType.ROLE_UNASSIGNED, "u-demo:p-demo", user_id="u-demo", project_id="p-demo",
                      role="member"))
    assert state.roles_of("u-demo", "p-demo") == {"reader"}
    assert state.check_token_still_valid(member) == "role assignment removed"
    state.apply(event(EventType.ROLE_UNASSIGNED, "u-demo:p-demo", user_id="u-demo", project_id="p-demo",
                      role="reader"))
    assert state.roles_of("u-demo", "p-demo") == frozenset()
    state.apply(role_assigned("u-demo", "p-demo", "reader"))
    assert state.roles_of("u-demo", "p-demo") == {"reader"}


def test_updates_and_deletes_go_to_their_namespaces_partition() -> None:
    assert names.namespace_of(project_updated("p1", name="x")) == names.projects_in("default")
    deleted = event(EventType.PROJECT_DELETED, "p1", id="p1", domain_id="Default")
    assert names.namespace_of(deleted) == names.projects_in("default")
    gone = event(EventType.USER_DELETED, "u1", id="u1", domain_id="default")
    assert names.namespace_of(gone) == names.users_in("default")
    assert names.namespace_of(user_renamed("u1", "y")) == names.users_in("default")
    # a v1 update names no domain and stays on its user's key
    v1 = event(EventType.USER_UPDATED, "u1", id="u1", enabled=False, password_hash=None)
    assert names.namespace_of(v1) is None
