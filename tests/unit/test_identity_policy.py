"""Nova's default policy: readers look, members act, admins act anywhere."""

import pytest

from eventsvm.identity.policy import (
    can_list_all_projects,
    can_manage_flavors,
    can_set_quota,
    can_view_hypervisors,
    can_view_quota,
    can_view_server,
    can_view_usage,
    denied_message,
    effective_roles,
    is_admin,
)


def test_roles_imply_each_other_like_keystones_bootstrap():
    assert effective_roles(["admin"]) == {"admin", "member", "reader"}
    assert effective_roles(["Member"]) == {"member", "reader"}
    assert effective_roles(["_member_"]) == {"member", "reader"}
    assert effective_roles(["custom"]) == {"custom"}


def test_only_the_admin_role_is_admin():
    assert is_admin(["admin"]) and is_admin(["reader", "Admin"])
    assert not is_admin(["member", "reader", "custom"])
    assert not is_admin([])


def test_readers_see_their_projects_servers_and_admins_see_all():
    assert can_view_server(["reader"], "p1", "p1")
    assert can_view_server(["member"], "p1", "p1")
    assert not can_view_server(["member"], "p1", "p2")
    assert not can_view_server(["custom"], "p1", "p1")
    assert can_view_server(["admin"], "p-admin", "p2")


def test_usage_and_quota_are_visible_to_the_project_and_to_admins():
    for check in (can_view_usage, can_view_quota):
        assert check(["reader"], "p1", "p1")
        assert not check(["member"], "p1", "p2")
        assert check(["admin"], "p-admin", "p2")


@pytest.mark.parametrize(
    "check", [can_manage_flavors, can_view_hypervisors, can_list_all_projects, can_set_quota]
)
def test_cloud_wide_operations_are_admin_only(check):
    assert check(["admin"])
    assert not check(["member", "reader"])


def test_the_denial_message_is_novas():
    assert denied_message("os_compute_api:servers:create") == (
        "Policy doesn't allow os_compute_api:servers:create to be performed."
    )
