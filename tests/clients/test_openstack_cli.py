"""The unmodified `openstack` command (python-openstackclient 10.5) against a live cloud."""

from __future__ import annotations

import json
import time
import uuid

from live_cloud import LiveCloud


def rows(cloud: LiveCloud, *args: str, as_cloud: str = "eventsvm") -> list[dict]:
    """An `openstack ... list` as parsed JSON rows."""
    return list(json.loads(cloud.openstack(*args, "-f", "json", cloud=as_cloud).stdout))


def test_token_and_catalog_lists(live_cloud: LiveCloud):
    token = json.loads(live_cloud.openstack("token", "issue", "-f", "json").stdout)
    assert token["project_id"] and token["expires"]
    assert "m1.tiny" in [f["Name"] for f in rows(live_cloud, "flavor", "list")]
    assert [i["Name"] for i in rows(live_cloud, "image", "list")] == ["cirros"]
    assert {"private", "public"} <= {n["Name"] for n in rows(live_cloud, "network", "list")}
    assert "keypair-1" in [k["Name"] for k in rows(live_cloud, "keypair", "list")]


def test_server_create_wait_list_show_delete(live_cloud: LiveCloud):
    name = f"osc-{uuid.uuid4().hex[:6]}"
    created = json.loads(live_cloud.openstack(
        "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--network", "private",
        "--key-name", "keypair-1", "--wait", name, "-f", "json").stdout)
    assert created["status"] == "ACTIVE"
    listed = {s["Name"]: s for s in rows(live_cloud, "server", "list")}
    assert listed[name]["Status"] == "ACTIVE"
    assert listed[name]["Networks"]["private"]
    shown = json.loads(live_cloud.openstack("server", "show", name, "-f", "json").stdout)
    [address] = shown["addresses"]["private"]
    assert address.startswith("10.0.0.")
    assert shown["flavor"].startswith("m1.tiny") and shown["image"].startswith("cirros")
    events = rows(live_cloud, "server", "event", "list", name)
    [create] = [e for e in events if e["Action"] == "create"]
    assert create["Request ID"].startswith("req-")
    detail = json.loads(live_cloud.openstack("server", "event", "show", name, create["Request ID"],
                                             "-f", "json").stdout)
    stages = [e["event"] for e in detail["events"]]
    assert "compute__do_build_and_run_instance" in stages
    assert all(e["result"] == "Success" for e in detail["events"])
    live_cloud.openstack("server", "delete", "--wait", name)
    gone = live_cloud.openstack("server", "show", name, check=False)
    assert gone.returncode != 0 and f"No Server found for {name}" in gone.stderr
    assert name not in [s["Name"] for s in rows(live_cloud, "server", "list")]


def test_admin_usage_list_shows_the_demo_project(live_cloud: LiveCloud):
    # A server of the demo project's own, so the list cannot pass by being empty.
    name = f"osc-usage-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    demo_project = json.loads(live_cloud.openstack("token", "issue", "-f", "json").stdout)["project_id"]
    usage = rows(live_cloud, "usage", "list", as_cloud="eventsvm-admin")
    assert usage, "usage list is empty although the demo project has a server"
    assert all({"Project", "Servers", "RAM MB-Hours", "CPU Hours", "Disk GB-Hours"} <= set(u) for u in usage)
    [demo] = [u for u in usage if u["Project"] in ("demo", demo_project)]
    [mine] = [s for s in demo["Servers"] if s["name"] == name]
    assert mine["flavor"] == "m1.tiny" and mine["hours"] > 0
    assert demo["RAM MB-Hours"] > 0 and demo["CPU Hours"] > 0
    live_cloud.openstack("server", "delete", "--wait", name)


def test_errors_are_openstack_messages(live_cloud: LiveCloud):
    missing = live_cloud.openstack("server", "show", "nosuch", check=False)
    assert missing.returncode == 1 and "No Server found for nosuch" in missing.stderr
    bad_image = live_cloud.openstack("server", "create", "--image", "nosuchimg", "--flavor", "m1.tiny",
                                     "--network", "private", "vmx", check=False)
    assert bad_image.returncode == 1 and "No Image found for nosuchimg" in bad_image.stderr
    bad_key = live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                                   "--network", "private", "--key-name", "nosuchkey", "vmx", check=False)
    assert bad_key.returncode == 1 and "Invalid key_name provided." in bad_key.stderr
    assert "vmx" not in [s["Name"] for s in rows(live_cloud, "server", "list")]


def _status_becomes(cloud: LiveCloud, name: str, status: str, timeout: float = 60.0) -> dict:
    """`openstack server show` until the server is in `status` with no task; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        shown = json.loads(cloud.openstack("server", "show", name, "-f", "json").stdout)
        if shown["status"] == status and shown["OS-EXT-STS:task_state"] is None:
            return dict(shown)
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} is {shown['status']} / {shown['OS-EXT-STS:task_state']}, "
                                 f"not {status}, after {timeout}s")
        time.sleep(0.3)


def test_server_stop_start_reboot_lock_unlock(live_cloud: LiveCloud):
    name = f"osc-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    live_cloud.openstack("server", "stop", name)
    shown = _status_becomes(live_cloud, name, "SHUTOFF")
    assert (shown["OS-EXT-STS:vm_state"], shown["OS-EXT-STS:power_state"]) == ("stopped", 4)
    again = live_cloud.openstack("server", "stop", name, check=False)
    assert again.returncode == 1 and "ConflictException: 409" in again.stderr
    assert "Cannot 'stop' instance" in again.stderr and "while it is in vm_state stopped" in again.stderr
    live_cloud.openstack("server", "start", name)
    _status_becomes(live_cloud, name, "ACTIVE")
    live_cloud.openstack("server", "reboot", "--soft", "--wait", name)
    live_cloud.openstack("server", "reboot", "--hard", "--wait", name)
    shown = _status_becomes(live_cloud, name, "ACTIVE")
    assert shown["OS-EXT-STS:power_state"] == 1
    live_cloud.openstack("server", "lock", name)
    locked = live_cloud.openstack("server", "stop", name, check=False)
    assert locked.returncode == 1 and "ConflictException: 409" in locked.stderr
    assert "is locked" in locked.stderr
    live_cloud.openstack("server", "unlock", name)
    live_cloud.openstack("server", "stop", name)
    _status_becomes(live_cloud, name, "SHUTOFF")
    actions = [e["Action"] for e in rows(live_cloud, "server", "event", "list", name)]
    assert actions[:7] == ["stop", "unlock", "lock", "reboot", "reboot", "start", "stop"]
    live_cloud.openstack("server", "delete", "--wait", name)


def _properties(shown: dict) -> dict:
    """`properties` of `server show -f json`: a dict, or OSC's "k='v', ..." text in older releases."""
    value = shown["properties"]
    if isinstance(value, dict):
        return value
    return dict(item.split("=", 1) for item in value.replace("'", "").split(", ")) if value else {}


def test_server_set_name_and_properties_then_unset(live_cloud: LiveCloud):
    name, renamed = f"osc-{uuid.uuid4().hex[:6]}", f"osc-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    live_cloud.openstack("server", "set", "--name", renamed, "--property", "role=web", "--property",
                         "tier=front", name)
    shown = json.loads(live_cloud.openstack("server", "show", renamed, "-f", "json").stdout)
    assert shown["name"] == renamed
    assert _properties(shown) == {"role": "web", "tier": "front"}
    live_cloud.openstack("server", "unset", "--property", "role", renamed)
    shown = json.loads(live_cloud.openstack("server", "show", renamed, "-f", "json").stdout)
    assert _properties(shown) == {"tier": "front"}
    # nova records no instance action for an update or for metadata
    assert [e["Action"] for e in rows(live_cloud, "server", "event", "list", renamed)] == ["create"]
    live_cloud.openstack("server", "delete", "--wait", renamed)


def test_project_set_and_delete_and_user_delete(live_cloud: LiveCloud):
    project, renamed, user = (f"p-{uuid.uuid4().hex[:6]}", f"p-{uuid.uuid4().hex[:6]}",
                              f"u-{uuid.uuid4().hex[:6]}")
    admin = "eventsvm-admin"
    live_cloud.openstack("project", "create", project, cloud=admin)
    live_cloud.openstack("project", "set", "--name", renamed, "--description", "renamed by osc", "--disable",
                         project, cloud=admin)
    shown = json.loads(live_cloud.openstack("project", "show", renamed, "-f", "json", cloud=admin).stdout)
    assert (shown["name"], shown["description"], shown["enabled"]) == (renamed, "renamed by osc", False)
    live_cloud.openstack("user", "create", "--password", "pw-osc-123", user, cloud=admin)
    live_cloud.openstack("role", "add", "--user", user, "--project", renamed, "member", cloud=admin)
    granted = rows(live_cloud, "role", "assignment", "list", "--user", user, "--names", as_cloud=admin)
    assert [(g["Role"], g["User"], g["Project"]) for g in granted] == [
        ("member", f"{user}@Default", f"{renamed}@Default")]
    live_cloud.openstack("role", "remove", "--user", user, "--project", renamed, "member", cloud=admin)
    assert rows(live_cloud, "role", "assignment", "list", "--user", user, as_cloud=admin) == []
    live_cloud.openstack("user", "delete", user, cloud=admin)
    gone_user = live_cloud.openstack("user", "show", user, cloud=admin, check=False)
    assert gone_user.returncode == 1 and user in gone_user.stderr
    assert user not in [u["Name"] for u in rows(live_cloud, "user", "list", as_cloud=admin)]
    live_cloud.openstack("project", "delete", renamed, cloud=admin)
    gone = live_cloud.openstack("project", "show", renamed, cloud=admin, check=False)
    assert gone.returncode == 1 and renamed in gone.stderr
    assert renamed not in [p["Name"] for p in rows(live_cloud, "project", "list", as_cloud=admin)]


def test_server_image_create_then_shelve_and_unshelve(live_cloud: LiveCloud):
    name = f"osc-snap-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    image = json.loads(live_cloud.openstack("server", "image", "create", "--name", f"{name}-img",
                                            "--property", "purpose=backup", "--wait", name,
                                            "-f", "json").stdout)
    shown = json.loads(live_cloud.openstack("image", "show", image["id"], "-f", "json").stdout)
    assert (shown["name"], shown["status"], shown["visibility"]) == (f"{name}-img", "active", "private")
    properties = shown["properties"]
    assert properties["purpose"] == "backup" and properties["image_type"] == "snapshot"
    assert properties["instance_uuid"] == json.loads(
        live_cloud.openstack("server", "show", name, "-f", "json").stdout)["id"]

    live_cloud.openstack("server", "shelve", "--wait", name)
    shelved = _status_becomes(live_cloud, name, "SHELVED_OFFLOADED")
    assert shelved["OS-EXT-STS:vm_state"] == "shelved_offloaded"
    assert [i["Name"] for i in rows(live_cloud, "image", "list", "--name", f"{name}-shelved")] == [
        f"{name}-shelved"]
    # (osc skips a shelve of a shelved server itself; a start reaches the API and is refused)
    start = live_cloud.openstack("server", "start", name, check=False)
    assert start.returncode == 1 and "ConflictException: 409" in start.stderr
    assert "while it is in vm_state shelved_offloaded" in start.stderr
    live_cloud.openstack("server", "unshelve", "--wait", name)
    back = _status_becomes(live_cloud, name, "ACTIVE")
    assert back["OS-EXT-STS:power_state"] == 1
    actions = [e["Action"] for e in rows(live_cloud, "server", "event", "list", name)]
    assert actions[:3] == ["unshelve", "shelve", "createImage"]
    # the shelved image goes once the server runs again; the snapshot stays until deleted
    deadline = time.monotonic() + 30
    while rows(live_cloud, "image", "list", "--name", f"{name}-shelved") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rows(live_cloud, "image", "list", "--name", f"{name}-shelved") == []
    live_cloud.openstack("image", "delete", image["id"])
    assert live_cloud.openstack("image", "show", image["id"], check=False).returncode == 1
    live_cloud.openstack("server", "delete", "--wait", name)


def test_server_create_min_max_boots_each_server_and_over_quota_is_novas_403(live_cloud: LiveCloud):
    name = f"osc-multi-{uuid.uuid4().hex[:6]}"
    created = json.loads(live_cloud.openstack(
        "server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--network", "private",
        "--min", "3", "--max", "3", "--wait", name, "-f", "json").stdout)
    assert created["name"] == f"{name}-1" and created["adminPass"]
    names = [f"{name}-{n}" for n in (1, 2, 3)]
    servers = [_status_becomes(live_cloud, n, "ACTIVE") for n in names]
    assert len({s["id"] for s in servers}) == 3
    assert len({s["addresses"]["private"][0] for s in servers}) == 3
    over = live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                                "--network", "private", "--min", "11", "--max", "11", name, check=False)
    assert over.returncode == 1
    assert "ForbiddenException: 403" in over.stderr
    assert "Quota exceeded for instances: Requested 11" in over.stderr
    assert name not in [s["Name"] for s in rows(live_cloud, "server", "list")]
    live_cloud.openstack("server", "delete", "--wait", *names)


def test_server_resize_confirm_revert_and_rebuild(live_cloud: LiveCloud):
    name = f"osc-{uuid.uuid4().hex[:6]}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                         "--network", "private", "--wait", name)
    server_id = json.loads(live_cloud.openstack("server", "show", name, "-f", "json").stdout)["id"]
    admin_show = ("server", "show", server_id, "-f", "json")
    first = json.loads(live_cloud.openstack(*admin_show, cloud="eventsvm-admin").stdout)
    source, address = first["OS-EXT-SRV-ATTR:host"], first["addresses"]
    same = live_cloud.openstack("server", "resize", "--flavor", "m1.tiny", name, check=False)
    assert same.returncode == 1 and "When resizing, instances must change flavor!" in same.stderr
    live_cloud.openstack("server", "resize", "--flavor", "m1.small", "--wait", name)
    shown = _status_becomes(live_cloud, name, "VERIFY_RESIZE")
    assert shown["flavor"].startswith("m1.small") and shown["OS-EXT-STS:vm_state"] == "resized"
    live_cloud.openstack("server", "resize", "confirm", name)
    shown = _status_becomes(live_cloud, name, "ACTIVE")
    moved = json.loads(live_cloud.openstack(*admin_show, cloud="eventsvm-admin").stdout)
    # `eventsvm up --hosts 2` keeps nova's allow_resize_to_same_host off: the server moved
    assert moved["OS-EXT-SRV-ATTR:host"] != source and moved["addresses"] == address
    assert shown["flavor"].startswith("m1.small")

    live_cloud.openstack("server", "resize", "--flavor", "m1.medium", "--wait", name)
    _status_becomes(live_cloud, name, "VERIFY_RESIZE")
    live_cloud.openstack("server", "resize", "revert", name)
    shown = _status_becomes(live_cloud, name, "ACTIVE")
    assert shown["flavor"].startswith("m1.small")
    refused = live_cloud.openstack("server", "resize", "confirm", name, check=False)
    assert refused.returncode == 1 and "ConflictException: 409" in refused.stderr
    assert "while it is in vm_state active" in refused.stderr

    live_cloud.openstack("server", "rebuild", "--image", "cirros", "--wait", name)
    shown = _status_becomes(live_cloud, name, "ACTIVE")
    assert shown["image"].startswith("cirros") and shown["addresses"] == address
    actions = [e["Action"] for e in rows(live_cloud, "server", "event", "list", name)]
    assert actions[:5] == ["rebuild", "revertResize", "resize", "confirmResize", "resize"]
    live_cloud.openstack("server", "delete", "--wait", name)
