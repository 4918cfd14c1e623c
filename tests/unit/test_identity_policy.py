"""Nova's default policy: readers look, members act, admins act anywhere."""

from eventsvm.identity.policy import (
    can_create_server,
    effective_roles,
    is_admin,
    lock_holds,
)


def test_roles_imply_each_other_like_keystones_bootstrap():
    assert effective_roles(["admin"]) == {"admin", "member", "reader"}
    assert effective_roles(["Member"]) == {"member", "reader"}
    assert effective_roles(["_member_"]) == {"member", "reader"}
    assert effective_roles(["custom"]) == {"custom"}


def test_a_locked_server_refuses_everyone_but_nova_s_admin():
    assert lock_holds(True, admin=False)
    assert not lock_holds(True, admin=True)
    assert not lock_holds(False, admin=False)


def test_only_the_admin_role_is_admin():
    assert is_admin(["admin"]) and is_admin(["reader", "Admin"])
    assert not is_admin(["member", "reader", "custom"])
    assert not is_admin([])


def test_members_create_in_their_own_project_only():
    assert can_create_server(["member"], "p1", "p1")
    assert not can_create_server(["member"], "p1", "p2")
    assert not can_create_server(["reader"], "p1", "p1")
    assert not can_create_server([], "p1", "p1")
    assert can_create_server(["admin"], "p-admin", "p1")
