"""The unmodified `openstack` command with server tags (compute 2.26, which the client negotiates
as the cloud's maximum): `server set --tag` adds them, `server list --tags` / `--not-tags` finds
servers by them, `server unset --tag` takes them off, `server show` lists them; and the newer
microversions' fields the CLI now reads (description, locked, a soft-anti-affinity group)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from live_cloud import LiveCloud


def _json(cloud: LiveCloud, *args: str) -> Any:
    return json.loads(cloud.openstack(*args, "-f", "json").stdout)


def _names(cloud: LiveCloud, *filters: str) -> set[str]:
    return {s["Name"] for s in _json(cloud, "server", "list", *filters)}


def test_the_cli_tags_servers_lists_them_by_tag_and_untags_them(live_cloud: LiveCloud):
    name = f"osc-tag-{uuid.uuid4().hex[:6]}"
    tagged, plain = f"{name}-a", f"{name}-b"
    for server in (tagged, plain):
        live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                             "--network", "private", "--wait", server)
    live_cloud.openstack("server", "set", "--tag", "web", "--tag", name, tagged)
    live_cloud.openstack("server", "set", "--tag", name, plain)
    assert sorted(_json(live_cloud, "server", "show", tagged)["tags"]) == sorted(["web", name])
    assert _names(live_cloud, "--tags", f"web,{name}") == {tagged}
    assert _names(live_cloud, "--tags", name) == {tagged, plain}
    assert {tagged, plain} & _names(live_cloud, "--not-tags", "web") == {plain}

    # nova's limits, as the CLI reports them
    refused = live_cloud.openstack("server", "set", "--tag", "a,b", tagged, check=False)
    assert refused.returncode != 0 and "400" in refused.stderr

    live_cloud.openstack("server", "unset", "--tag", "web", tagged)
    assert _json(live_cloud, "server", "show", tagged)["tags"] == [name]
    assert _names(live_cloud, "--tags", "web") & {tagged, plain} == set()
    assert _names(live_cloud, "--tags", name) == {tagged, plain}
    for server in (tagged, plain):
        live_cloud.openstack("server", "delete", "--wait", server)


def test_the_cli_reads_the_newer_microversions_fields(live_cloud: LiveCloud):
    name = f"osc-mv-{uuid.uuid4().hex[:6]}"
    group = _json(live_cloud, "server", "group", "create", "--policy", "soft-anti-affinity", name)
    assert group["policies"] == ["soft-anti-affinity"] or group.get("policy") == "soft-anti-affinity", group
    server = _json(live_cloud, "server", "create", "--image", "cirros", "--flavor", "m1.tiny",
                   "--network", "private", "--hint", f"group={group['id']}", "--description", "the web tier",
                   "--wait", name)
    assert server["status"] == "ACTIVE"
    shown = _json(live_cloud, "server", "show", name)
    assert shown["description"] == "the web tier" and shown["locked"] is False
    live_cloud.openstack("server", "set", "--description", "still the web tier", name)
    live_cloud.openstack("server", "lock", name)
    shown = _json(live_cloud, "server", "show", name)
    assert (shown["description"], shown["locked"]) == ("still the web tier", True)
    live_cloud.openstack("server", "unlock", name)
    live_cloud.openstack("server", "delete", "--wait", name)
    live_cloud.openstack("server", "group", "delete", name)
