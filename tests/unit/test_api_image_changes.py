"""Glance's PATCH of an image (JSON patch) and its tag calls, as `openstack image set / unset`
and the SDK send them: one catalog event per change that changes something, checked as glance
checks it, and a protected image refused a delete."""

from __future__ import annotations

from typing import Any

from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType
from eventsvm.state.catalog import evolve_catalog, initial_catalog
from tests.factories import sample_event

IMAGES = "/image/v2/images"
PATCH = "application/openstack-images-v2.1-json-patch"


def _image(cloud: Cloud, **extra: Any) -> str:
    made = cloud.client.post(IMAGES, json={"name": "base", "hw_disk_bus": "virtio", **extra},
                             headers=cloud.headers())
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _patch(cloud: Cloud, image_id: str, operations: Any, user: str = "demo",
           media: str = PATCH) -> Any:
    return cloud.client.patch(f"{IMAGES}/{image_id}", json=operations,
                              headers={**cloud.headers(user), "Content-Type": media})


def test_a_patch_changes_the_image_once_and_keeps_the_rest(cloud: Cloud) -> None:
    image_id = _image(cloud)
    operations = [
        {"op": "replace", "path": "/name", "value": "base-2"},
        {"op": "add", "path": "/os_distro", "value": "cirros"},
        {"op": "add", "path": "/tags", "value": ["golden", "golden", "v1"]},
        {"op": "replace", "path": "/min_ram", "value": 256},
        {"op": "remove", "path": "/hw_disk_bus"},
    ]
    patched = _patch(cloud, image_id, operations)
    assert patched.status_code == 200, patched.text
    shown = cloud.client.get(f"{IMAGES}/{image_id}", headers=cloud.headers()).json()
    assert patched.json() == shown
    assert (shown["name"], shown["os_distro"], shown["tags"], shown["min_ram"]) == (
        "base-2", "cirros", ["golden", "v1"], 256)
    assert "hw_disk_bus" not in shown and shown["min_disk"] == 0 and shown["visibility"] == "private"
    assert _patch(cloud, image_id, operations[:4]).status_code == 200  # changes nothing: not written
    [changed] = cloud.events(EventType.IMAGE_CHANGED)
    assert changed.aggregate_id == image_id
    assert (sorted(changed.body["changed"]), changed.body["set"], changed.body["removed"]) == (
        ["min_ram", "name", "properties", "tags"], {"os_distro": "cirros"}, ["hw_disk_bus"])


def test_a_patch_is_checked_as_glance_checks_it(cloud: Cloud) -> None:
    image_id = _image(cloud)
    refused = [
        ([{"op": "replace", "path": "/name", "value": "x"}], "application/json", 415),
        ({"op": "replace", "path": "/name", "value": "x"}, PATCH, 400),  # not a list
        ([{"op": "move", "path": "/name", "value": "x"}], PATCH, 400),
        ([{"op": "replace", "path": "/name"}], PATCH, 400),  # no value
        ([{"op": "replace", "path": "/a/b", "value": "x"}], PATCH, 400),
        ([{"op": "replace", "path": "/min_disk", "value": -1}], PATCH, 400),
        ([{"op": "replace", "path": "/visibility", "value": "everyone"}], PATCH, 400),
        ([{"op": "add", "path": "/tags", "value": [f"t{n}" for n in range(129)]}], PATCH, 413),
        ([{"op": "replace", "path": "/status", "value": "active"}], PATCH, 403),
        ([{"op": "remove", "path": "/name"}], PATCH, 403),
        ([{"op": "replace", "path": "/os_distro", "value": "x"}], PATCH, 409),  # no such property
        ([{"op": "remove", "path": "/os_distro"}], PATCH, 409),
        ([{"op": "add", "path": "/os_distro", "value": 7}], PATCH, 400),  # not a string
        ([{"op": "replace", "path": "/visibility", "value": "public"}], PATCH, 403),  # an admin's
    ]
    for operations, media, status in refused:
        answer = _patch(cloud, image_id, operations, media=media)
        assert answer.status_code == status, (operations, answer.text)
    assert not cloud.events(EventType.IMAGE_CHANGED)
    # the admin may publish it; another project neither sees a private image nor changes a public one
    assert _patch(cloud, image_id, [{"op": "replace", "path": "/visibility", "value": "public"}],
                  user="admin").json()["visibility"] == "public"
    assert _patch(cloud, image_id, [{"op": "replace", "path": "/name", "value": "mine"}],
                  user="alice").status_code == 403
    private = _image(cloud)
    assert _patch(cloud, private, [{"op": "replace", "path": "/name", "value": "mine"}],
                  user="alice").status_code == 404
    assert _patch(cloud, "0" * 32, [{"op": "replace", "path": "/name", "value": "x"}]).status_code == 404


def test_the_older_draft_patch_names_the_path_under_its_verb(cloud: Cloud) -> None:
    """glance's v2.0 patch media type, which tempest's images client sends."""
    draft = "application/openstack-images-v2.0-json-patch"
    image_id = _image(cloud)
    operations = [{"replace": "/name", "value": "draft"}, {"add": "/os_distro", "value": "cirros"},
                  {"remove": "/hw_disk_bus"}]
    patched = _patch(cloud, image_id, operations, media=draft)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["os_distro"]) == ("draft", "cirros")
    assert "hw_disk_bus" not in patched.json()
    for refused in ([{"replace": "/name", "add": "/x", "value": "y"}], [{"path": "/name", "value": "y"}],
                    [{"op": "replace", "path": "/name", "value": "y"}]):
        answer = _patch(cloud, image_id, refused, media=draft)
        assert answer.status_code == 400, (refused, answer.text)
    # and the RFC 6902 media type does not take the draft's form
    assert _patch(cloud, image_id, [{"replace": "/name", "value": "y"}]).status_code == 400
    assert len(cloud.events(EventType.IMAGE_CHANGED)) == 1


def test_tags_are_added_once_and_removed(cloud: Cloud) -> None:
    image_id = _image(cloud)
    tag_url = f"{IMAGES}/{image_id}/tags/golden"
    assert cloud.client.put(tag_url, headers=cloud.headers()).status_code == 204
    assert cloud.client.put(tag_url, headers=cloud.headers()).status_code == 204
    assert cloud.client.get(f"{IMAGES}/{image_id}", headers=cloud.headers()).json()["tags"] == ["golden"]
    assert len(cloud.events(EventType.IMAGE_CHANGED)) == 1
    assert cloud.client.put(tag_url, headers=cloud.headers("alice")).status_code == 404
    assert cloud.client.delete(tag_url, headers=cloud.headers()).status_code == 204
    assert cloud.client.get(f"{IMAGES}/{image_id}", headers=cloud.headers()).json()["tags"] == []
    assert cloud.client.delete(tag_url, headers=cloud.headers()).status_code == 404
    too_long = cloud.client.put(f"{IMAGES}/{image_id}/tags/{'x' * 256}", headers=cloud.headers())
    assert too_long.status_code == 400


def test_a_protected_image_is_not_deleted(cloud: Cloud) -> None:
    image_id = _image(cloud)
    assert _patch(cloud, image_id, [{"op": "replace", "path": "/protected", "value": True}]).json()[
        "protected"] is True
    refused = cloud.client.delete(f"{IMAGES}/{image_id}", headers=cloud.headers())
    assert refused.status_code == 403 and "protected" in refused.text
    assert cloud.client.get(f"{IMAGES}/{image_id}", headers=cloud.headers()).status_code == 200
    _patch(cloud, image_id, [{"op": "replace", "path": "/protected", "value": False}])
    assert cloud.client.delete(f"{IMAGES}/{image_id}", headers=cloud.headers()).status_code == 204


def test_a_change_of_a_gone_image_changes_nothing_and_never_the_creates_body() -> None:
    change = sample_event(EventType.IMAGE_CHANGED)
    catalog = evolve_catalog(initial_catalog(), change)
    assert catalog.images == {} and change.event_id in catalog.refused
    created = sample_event(EventType.IMAGE_CREATED)
    created.body["properties"] = {"hw_qemu_guest_agent": "yes", "hw_disk_bus": "virtio"}
    catalog = evolve_catalog(evolve_catalog(initial_catalog(), created), change)
    image = catalog.images[created.body["id"]]
    assert (image["name"], image["tags"]) == ("cirros-0.6", ["golden"])
    assert image["properties"] == {"hw_disk_bus": "virtio", "os_distro": "cirros"}
    assert image["visibility"] == created.body["visibility"]  # not named in `changed`
    assert created.body["properties"] == {"hw_qemu_guest_agent": "yes", "hw_disk_bus": "virtio"}
