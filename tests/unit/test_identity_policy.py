"""Nova's default policy: readers look, members act, admins act anywhere."""

from eventsvm.identity.policy import (
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


