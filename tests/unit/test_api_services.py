"""Glance images, Neutron networks/subnets/ports and Cinder volumes, as the clients read them."""

from __future__ import annotations

from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.model import EventType


def test_discovery_documents_answer_without_a_token(cloud: Cloud):
    image = cloud.client.get("/image")
    assert image.status_code == 300
    assert image.json()["versions"][0]["links"][0]["href"] == "http://testserver/image/v2/"
    assert cloud.client.get("/network").json()["versions"][0]["id"] == "v2.0"
    volume = cloud.client.get("/volume/v3/")
    assert volume.json()["versions"][0]["version"] == "3.0"


def test_images_name_filter_is_exact_and_id_in_works(cloud: Cloud):
    admin = cloud.headers("admin")
    other = cloud.client.post(
        "/image/v2/images",
        json={"name": "cirros-2", "visibility": "public", "disk_format": "raw", "os_distro": "cirros"},
        headers=admin,
    )
    assert other.status_code == 201
    assert other.json()["os_distro"] == "cirros"
    found = cloud.client.get("/image/v2/images", params={"name": "cirros"}, headers=cloud.headers()).json()[
        "images"
    ]
    assert [i["id"] for i in found] == [cloud.ids["image"]]
    both = cloud.client.get(
        "/image/v2/images",
        params={"id": f"in:{cloud.ids['image']},{other.json()['id']}"},
        headers=cloud.headers(),
    ).json()["images"]
    assert len(both) == 2
    shown = cloud.client.get(f"/image/v2/images/{cloud.ids['image']}", headers=cloud.headers()).json()
    assert (shown["name"], shown["status"], shown["hw_machine_type"]) == ("cirros", "active", "q35")
    assert cloud.client.get("/image/v2/images/cirros", headers=cloud.headers()).status_code == 404


def test_members_register_private_images_only(cloud: Cloud):
    public = cloud.client.post(
        "/image/v2/images", json={"name": "mine", "visibility": "public"}, headers=cloud.headers()
    )
    assert public.status_code == 403
    private = cloud.client.post("/image/v2/images", json={"name": "mine"}, headers=cloud.headers())
    assert private.status_code == 201 and private.json()["owner"] == cloud.ids["project:demo"]
    others = cloud.client.get("/image/v2/images", headers=cloud.headers("alice")).json()["images"]
    assert "mine" not in [i["name"] for i in others]
    assert len(cloud.events(EventType.IMAGE_CREATED)) == 2


def test_networks_exact_name_filter_and_neutron_errors(cloud: Cloud):
    found = cloud.client.get(
        "/network/v2.0/networks", params={"name": "private"}, headers=cloud.headers()
    ).json()
    assert [n["id"] for n in found["networks"]] == [cloud.ids["network:private"]]
    assert found["networks"][0]["subnets"] == [cloud.ids["subnet:private"]]
    external = cloud.client.get(
        "/network/v2.0/networks", params={"router:external": "true"}, headers=cloud.headers()
    ).json()["networks"]
    assert [n["name"] for n in external] == ["public"]
    missing = cloud.client.get("/network/v2.0/networks/private", headers=cloud.headers())
    assert missing.status_code == 404
    assert missing.json()["NeutronError"]["type"] == "NetworkNotFound"
    # the demo project's private network is not alice's
    assert (
        cloud.client.get(
            f"/network/v2.0/networks/{cloud.ids['network:private']}", headers=cloud.headers("alice")
        ).status_code
        == 404
    )


def test_create_a_network_with_a_subnet(cloud: Cloud):
    network = cloud.client.post(
        "/network/v2.0/networks", json={"network": {"name": "lab"}}, headers=cloud.headers()
    )
    assert network.status_code == 201
    network_id = network.json()["network"]["id"]
    subnet = cloud.client.post(
        "/network/v2.0/subnets",
        json={
            "subnet": {"network_id": network_id, "cidr": "192.168.7.0/24", "ip_version": 4, "name": "lab-v4"}
        },
        headers=cloud.headers(),
    )
    assert subnet.status_code == 201
    body = subnet.json()["subnet"]
    assert body["gateway_ip"] == "192.168.7.1"
    assert body["allocation_pools"] == [{"start": "192.168.7.2", "end": "192.168.7.254"}]
    overlap = cloud.client.post(
        "/network/v2.0/subnets",
        json={"subnet": {"network_id": network_id, "cidr": "192.168.7.128/25", "ip_version": 4}},
        headers=cloud.headers(),
    )
    assert overlap.status_code == 400 and "overlaps" in overlap.json()["NeutronError"]["message"]
    bad = cloud.client.post(
        "/network/v2.0/subnets",
        json={"subnet": {"network_id": network_id, "cidr": "192.168.8.1/24", "ip_version": 4}},
        headers=cloud.headers(),
    )
    assert bad.status_code == 400
    shared = cloud.client.post(
        "/network/v2.0/networks", json={"network": {"name": "s", "shared": True}}, headers=cloud.headers()
    )
    assert shared.status_code == 403
    assert len(cloud.events(EventType.SUBNET_CREATED)) == 3


def test_ports_are_derived_from_the_servers_that_hold_them(cloud: Cloud):
    server_id = cloud.create_server()
    assert cloud.client.get("/network/v2.0/ports", headers=cloud.headers()).json()["ports"] == []
    cloud.advance(server_id, "active")
    ports = cloud.client.get(
        "/network/v2.0/ports", params={"device_id": server_id}, headers=cloud.headers()
    ).json()["ports"]
    assert [p["fixed_ips"][0]["ip_address"] for p in ports] == ["10.0.0.5"]
    assert ports[0]["status"] == "ACTIVE"
    assert cloud.client.get("/network/v2.0/ports", headers=cloud.headers("alice")).json()["ports"] == []
    shown = cloud.client.get(f"/network/v2.0/ports/{ports[0]['id']}", headers=cloud.headers()).json()["port"]
    assert shown["device_id"] == server_id


def test_volumes_create_and_list(cloud: Cloud):
    project = cloud.ids["project:demo"]
    created = cloud.client.post(
        f"/volume/v3/{project}/volumes", json={"volume": {"size": 2, "name": "data"}}, headers=cloud.headers()
    )
    assert created.status_code == 202
    volume_id = created.json()["volume"]["id"]
    listed = cloud.client.get(f"/volume/v3/{project}/volumes/detail", headers=cloud.headers()).json()[
        "volumes"
    ]
    assert [(v["id"], v["size"], v["status"]) for v in listed] == [(volume_id, 2, "available")]
    assert (
        cloud.client.get(f"/volume/v3/{project}/volumes/{volume_id}", headers=cloud.headers()).status_code
        == 200
    )
    other = cloud.ids["project:other"]
    assert (
        cloud.client.get(f"/volume/v3/{other}/volumes", headers=cloud.headers("alice")).json()["volumes"]
        == []
    )
    assert (
        cloud.client.get(f"/volume/v3/{project}/volumes", headers=cloud.headers("alice")).status_code == 403
    )
    limits = cloud.client.get(f"/volume/v3/{project}/limits", headers=cloud.headers()).json()["limits"][
        "absolute"
    ]
    assert (limits["totalVolumesUsed"], limits["totalGigabytesUsed"]) == (1, 2)


def test_novas_network_proxy_lists_what_the_project_may_boot_on_by_label(cloud: Cloud):
    # tempest finds its fixed_network_name through this list (label == name), so its servers name
    # their network instead of relying on the project seeing exactly one
    listed = cloud.client.get("/compute/v2.1/os-networks", headers=cloud.headers())
    assert listed.status_code == 200, listed.text
    by_label = {n["label"]: n for n in listed.json()["networks"]}
    private = by_label["private"]
    assert (private["id"], private["cidr"], private["gateway"]) == (
        cloud.ids["network:private"], "10.0.0.0/24", "10.0.0.1")
    # demo's private network is not another project's to see, by list or by id
    others = cloud.client.get("/compute/v2.1/os-networks", headers=cloud.headers("alice")).json()["networks"]
    assert "private" not in {n["label"] for n in others}
    hidden = cloud.client.get(f"/compute/v2.1/os-networks/{cloud.ids['network:private']}",
                              headers=cloud.headers("alice"))
    assert hidden.status_code == 404 and hidden.json()["itemNotFound"]["code"] == 404
    private_path = f"/compute/v2.1/os-networks/{cloud.ids['network:private']}"
    shown = cloud.client.get(private_path, headers=cloud.headers())
    assert shown.json()["network"]["label"] == "private"
    # the admin's shared external network is any project's to see through the proxy, as in nova
    public = cloud.client.get(f"/compute/v2.1/os-networks/{cloud.ids['network:public']}",
                              headers=cloud.headers("alice"))
    assert public.status_code == 200, public.text
    assert public.json()["network"]["label"] == "public"


def test_a_volume_from_a_source_that_does_not_exist_is_refused(cloud: Cloud):
    """Cinder's 404 for a snapshot, source volume or volume type that is not there, and no volume
    made: it used to create an empty volume as if the source had been found."""
    project = cloud.ids["project:demo"]
    path = f"/volume/v3/{project}/volumes"
    missing = "8d5c4b8e-6d3c-4d0f-9a8e-2f4f3d1c0b7a"
    for field, message in (("snapshot_id", f"Snapshot {missing} could not be found."),
                           ("source_volid", f"Volume {missing} could not be found."),
                           ("volume_type", f"Volume type with name {missing} could not be found.")):
        refused = cloud.client.post(path, json={"volume": {"size": 1, field: missing}},
                                    headers=cloud.headers())
        assert refused.status_code == 404, (field, refused.text)
        assert refused.json() == {"itemNotFound": {"code": 404, "message": message}}
    # another project's volume is no source either
    theirs = cloud.client.post(f"/volume/v3/{cloud.ids['project:other']}/volumes",
                               json={"volume": {"size": 1}}, headers=cloud.headers("alice"))
    assert theirs.status_code == 202, theirs.text
    their_id = theirs.json()["volume"]["id"]
    hidden = cloud.client.post(path, json={"volume": {"size": 1, "source_volid": their_id}},
                               headers=cloud.headers())
    assert hidden.status_code == 404
    assert cloud.client.get(path, headers=cloud.headers()).json()["volumes"] == []
    # a source the caller sees, and the default type by name, still make a volume
    source = cloud.client.post(path, json={"volume": {"size": 1}}, headers=cloud.headers()).json()["volume"]
    made = cloud.client.post(path, json={"volume": {"size": 1, "source_volid": source["id"],
                                                    "volume_type": "__DEFAULT__"}}, headers=cloud.headers())
    assert made.status_code == 202, made.text
    assert len(cloud.client.get(path, headers=cloud.headers()).json()["volumes"]) == 2


def test_a_volume_path_with_an_empty_id_is_not_found(cloud: Cloud):
    project = cloud.ids["project:demo"]
    created = cloud.client.post(f"/volume/v3/{project}/volumes", json={"volume": {"size": 1}},
                                headers=cloud.headers())
    assert created.status_code == 202
    for method in ("GET", "PUT", "DELETE"):
        answer = cloud.client.request(method, f"/volume/v3/{project}/volumes/", headers=cloud.headers(),
                                      json={"volume": {"name": "x"}} if method == "PUT" else None)
        assert answer.status_code == 404, (method, answer.text)
        assert answer.json()["itemNotFound"]["code"] == 404
    # nothing was deleted by the DELETE without an id
    listed = cloud.client.get(f"/volume/v3/{project}/volumes", headers=cloud.headers()).json()["volumes"]
    assert [v["id"] for v in listed] == [created.json()["volume"]["id"]]
    unauthenticated = cloud.client.get(f"/volume/v3/{project}/volumes/")
    assert unauthenticated.status_code == 401


def test_a_volume_keeps_its_description_and_metadata_and_takes_updates(cloud: Cloud):
    """`openstack volume create --description --property`, `volume set`, and cinder's metadata
    calls: each change is an event, read back as cinder shows it."""
    project = cloud.ids["project:demo"]
    volumes = f"/volume/v3/{project}/volumes"
    created = cloud.client.post(volumes, json={"volume": {"size": 1, "name": "db", "description": "orders",
                                                          "metadata": {"tier": "gold", "owner": "ops"}}},
                                headers=cloud.headers())
    assert created.status_code == 202, created.text
    volume = created.json()["volume"]
    assert (volume["description"], volume["metadata"]) == ("orders", {"tier": "gold", "owner": "ops"})
    path = f"{volumes}/{volume['id']}"

    renamed = cloud.client.put(path, json={"volume": {"name": "db-2", "description": "orders, 2026"}},
                               headers=cloud.headers())
    assert renamed.status_code == 200, renamed.text
    shown = cloud.client.get(path, headers=cloud.headers()).json()["volume"]
    assert (shown["name"], shown["description"]) == ("db-2", "orders, 2026")
    assert shown["metadata"] == {"tier": "gold", "owner": "ops"}, "an update without metadata keeps it"
    assert shown["updated_at"] >= shown["created_at"]

    merged = cloud.client.post(f"{path}/metadata", json={"metadata": {"tier": "silver", "zone": "b"}},
                               headers=cloud.headers())
    assert merged.json() == {"metadata": {"tier": "silver", "owner": "ops", "zone": "b"}}
    item = cloud.client.put(f"{path}/metadata/zone", json={"meta": {"zone": "c"}}, headers=cloud.headers())
    assert item.status_code == 200 and item.json() == {"meta": {"zone": "c"}}
    mismatch = cloud.client.put(f"{path}/metadata/zone", json={"meta": {"other": "c"}},
                                headers=cloud.headers())
    assert mismatch.status_code == 400
    zone = cloud.client.get(f"{path}/metadata/zone", headers=cloud.headers())
    assert zone.json() == {"meta": {"zone": "c"}}
    assert cloud.client.delete(f"{path}/metadata/owner", headers=cloud.headers()).status_code == 200
    assert cloud.client.delete(f"{path}/metadata/owner", headers=cloud.headers()).status_code == 404
    assert cloud.client.get(f"{path}/metadata/owner", headers=cloud.headers()).status_code == 404
    replaced = cloud.client.put(f"{path}/metadata", json={"metadata": {"only": "this"}},
                                headers=cloud.headers())
    assert replaced.json() == {"metadata": {"only": "this"}}
    listed = cloud.client.get(f"{path}/metadata", headers=cloud.headers())
    assert listed.json() == {"metadata": {"only": "this"}}
    # metadata given to an update replaces the volume's
    cloud.client.put(path, json={"volume": {"metadata": {"a": "1"}}}, headers=cloud.headers())
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"] == {"a": "1"}

    # bad input is cinder's 400, a volume the caller does not see its 404; nothing changes
    too_long = cloud.client.put(path, json={"volume": {"metadata": {"k": "v" * 256}}},
                                headers=cloud.headers())
    assert too_long.status_code == 400
    assert cloud.client.put(path, json={"name": "no volume key"}, headers=cloud.headers()).status_code == 400
    missing = cloud.client.put(f"{volumes}/8d5c4b8e-6d3c-4d0f-9a8e-2f4f3d1c0b7a",
                               json={"volume": {"name": "x"}}, headers=cloud.headers())
    assert missing.status_code == 404 and missing.json()["itemNotFound"]["code"] == 404
    other = cloud.ids["project:other"]
    hidden = cloud.client.put(f"/volume/v3/{other}/volumes/{volume['id']}", json={"volume": {"name": "x"}},
                              headers=cloud.headers("alice"))
    assert hidden.status_code == 404
    shown = cloud.client.get(path, headers=cloud.headers()).json()["volume"]
    assert (shown["name"], shown["metadata"]) == ("db-2", {"a": "1"})
    # after a delete, an update of the volume is a 404 too
    assert cloud.client.delete(path, headers=cloud.headers()).status_code == 202
    gone = cloud.client.put(path, json={"volume": {"name": "x"}}, headers=cloud.headers())
    assert gone.status_code == 404


def test_a_volume_takes_cinders_read_only_flag_apart_from_its_metadata(cloud: Cloud):
    """`openstack volume set --read-only / --read-write` (os-update_readonly_flag): cinder shows the
    flag among the metadata as "True" / "False", and a metadata replace keeps it."""
    project = cloud.ids["project:demo"]
    volumes = f"/volume/v3/{project}/volumes"
    created = cloud.client.post(volumes, json={"volume": {"size": 1, "metadata": {"tier": "gold"}}},
                                headers=cloud.headers())
    path = f"{volumes}/{created.json()['volume']['id']}"
    assert "readonly" not in cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"]

    def flag(value: object, user: str = "demo") -> int:
        answer = cloud.client.post(f"{path}/action", json={"os-update_readonly_flag": {"readonly": value}},
                                   headers=cloud.headers(user))
        return answer.status_code

    assert flag(True) == 202
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"] == {
        "tier": "gold", "readonly": "True"}
    cloud.client.put(f"{path}/metadata", json={"metadata": {"only": "this"}}, headers=cloud.headers())
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"] == {
        "only": "this", "readonly": "True"}
    assert flag("false") == 202  # cinder's booleans take strings too
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"]["readonly"] == "False"
    flags = [e.body["readonly"] for e in cloud.events(EventType.VOLUME_UPDATED)]
    assert [f for f in flags if f is not None] == [True, False]

    # bad input is a 400 with cinder's body, another project's volume a 404; nothing changes
    for refused in ({"os-update_readonly_flag": {"readonly": "maybe"}}, {"os-update_readonly_flag": {}},
                    {"os-update_readonly_flag": {"readonly": True, "x": 1}}, {"os-extend": {"new_size": 2}},
                    {"os-update_readonly_flag": {"readonly": True}, "os-extend": {}}):
        answer = cloud.client.post(f"{path}/action", json=refused, headers=cloud.headers())
        assert answer.status_code == 400, (refused, answer.text)
        assert answer.json()["badRequest"]["code"] == 400
    other = cloud.ids["project:other"]
    hidden = cloud.client.post(f"/volume/v3/{other}/volumes/{path.rsplit('/', 1)[1]}/action",
                               json={"os-update_readonly_flag": {"readonly": True}},
                               headers=cloud.headers("alice"))
    assert hidden.status_code == 404
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["metadata"]["readonly"] == "False"


def test_a_volume_takes_cinders_bootable_flag_and_a_reader_changes_no_flag(cloud: Cloud):
    """`openstack volume set --bootable / --non-bootable` and `volume create --bootable`
    (os-set_bootable, cinder's 200); both flags are a member's (volume:update,
    volume:update_readonly_flag), never a reader's."""
    project = cloud.ids["project:demo"]
    created = cloud.client.post(f"/volume/v3/{project}/volumes", json={"volume": {"size": 1}},
                                headers=cloud.headers())
    path = f"/volume/v3/{project}/volumes/{created.json()['volume']['id']}"
    assert created.json()["volume"]["bootable"] == "false"

    def bootable(value: object, user: str = "demo") -> int:
        answer = cloud.client.post(f"{path}/action", json={"os-set_bootable": {"bootable": value}},
                                   headers=cloud.headers(user))
        return answer.status_code

    assert bootable(True) == 200
    assert cloud.client.get(path, headers=cloud.headers()).json()["volume"]["bootable"] == "true"
    for action in ({"os-set_bootable": {"bootable": False}}, {"os-update_readonly_flag": {"readonly": True}}):
        refused = cloud.client.post(f"{path}/action", json=action, headers=cloud.headers("reader"))
        assert refused.status_code == 403, (action, refused.text)
    assert bootable("no") == 200
    shown = cloud.client.get(path, headers=cloud.headers()).json()["volume"]
    assert (shown["bootable"], shown["metadata"]) == ("false", {})
    assert bootable("sometimes") == 400


def test_volume_lists_sort_as_cinder_and_page_with_a_next_link(cloud: Cloud):
    project = cloud.ids["project:demo"]
    volumes = f"/volume/v3/{project}/volumes"
    made = []
    for name, size in (("b", 3), ("c", 1), ("a", 2)):
        answer = cloud.client.post(volumes, json={"volume": {"size": size, "name": name}},
                                   headers=cloud.headers())
        made.append(answer.json()["volume"]["id"])

    def names(query: str, detail: bool = True) -> list[str]:
        path = f"{volumes}/detail" if detail else volumes
        answer = cloud.client.get(f"{path}?{query}", headers=cloud.headers())
        assert answer.status_code == 200, answer.text
        return [v["name"] for v in answer.json()["volumes"]]

    listed = cloud.client.get(f"{volumes}/detail", headers=cloud.headers()).json()["volumes"]
    newest_first = sorted(listed, key=lambda v: (v["created_at"], v["id"]), reverse=True)
    assert [v["id"] for v in listed] == [v["id"] for v in newest_first], "cinder's default order"
    assert names("sort=name:asc") == ["a", "b", "c"]
    assert names("sort_key=size&sort_dir=asc", detail=False) == ["c", "a", "b"]
    assert names("sort=id:asc") == [n for _, n in sorted(zip(made, "bca", strict=True))]
    first = cloud.client.get(f"{volumes}?limit=2&sort=name:asc", headers=cloud.headers()).json()
    assert [v["name"] for v in first["volumes"]] == ["a", "b"]
    (link,) = first["volumes_links"]
    assert link["rel"] == "next" and link["href"].startswith(f"http://testserver/volume/v3/{project}/volumes?")
    following = cloud.client.get(link["href"], headers=cloud.headers()).json()
    assert [v["name"] for v in following["volumes"]] == ["c"] and "volumes_links" not in following
    for bad in ("sort=colour:asc", "sort_key=name&sort_dir=sideways"):
        refused = cloud.client.get(f"{volumes}?{bad}", headers=cloud.headers())
        assert refused.status_code == 400 and refused.json()["badRequest"]["code"] == 400


def test_an_image_path_with_an_empty_id_is_not_found(cloud: Cloud):
    before = cloud.client.get("/image/v2/images", headers=cloud.headers()).json()["images"]
    assert before, "the seeded images"
    for method in ("GET", "DELETE"):
        answer = cloud.client.request(method, "/image/v2/images/", headers=cloud.headers())
        assert answer.status_code == 404, (method, answer.text)
    after = cloud.client.get("/image/v2/images", headers=cloud.headers()).json()["images"]
    assert [i["id"] for i in after] == [i["id"] for i in before]
    assert cloud.client.get("/image/v2/images/").status_code == 401


def test_neutron_fields_select_what_a_network_subnet_or_port_shows(cloud: Cloud):
    """`fields=id&fields=name`: only those (an unknown one left out); without it, everything."""
    private = cloud.ids["network:private"]
    listed = cloud.client.get("/network/v2.0/networks?fields=id&fields=name&fields=nonsense",
                              headers=cloud.headers())
    assert listed.status_code == 200
    assert {"id": private, "name": "private"} in listed.json()["networks"]
    assert all(set(n) == {"id", "name"} for n in listed.json()["networks"])
    shown = cloud.client.get(f"/network/v2.0/networks/{private}?fields=status", headers=cloud.headers())
    assert shown.json() == {"network": {"status": "ACTIVE"}}
    whole = cloud.client.get(f"/network/v2.0/networks/{private}", headers=cloud.headers()).json()["network"]
    assert {"id", "name", "status", "subnets", "mtu"} <= set(whole)
    subnet_id = whole["subnets"][0]
    subnets = cloud.client.get(f"/network/v2.0/subnets?fields=cidr&network_id={private}",
                               headers=cloud.headers()).json()
    assert subnets == {"subnets": [{"cidr": "10.0.0.0/24"}]}
    subnet = cloud.client.get(f"/network/v2.0/subnets/{subnet_id}?fields=id&fields=gateway_ip",
                              headers=cloud.headers()).json()
    assert subnet == {"subnet": {"id": subnet_id, "gateway_ip": "10.0.0.1"}}
    hidden = cloud.client.get(f"/network/v2.0/networks/{private}?fields=id", headers=cloud.headers("alice"))
    assert hidden.status_code == 404, "a selection shows nothing the caller could not see whole"


def test_the_extensions_each_api_lists_are_the_ones_it_serves(cloud: Cloud):
    listed = cloud.client.get("/network/v2.0/extensions", headers=cloud.headers())
    aliases = {e["alias"] for e in listed.json()["extensions"]}
    assert {"external-net", "standard-attr-description"} <= aliases
    assert not aliases & {"router", "security-group", "floatingip"}  # not served here
    shown = cloud.client.get("/network/v2.0/extensions/external-net", headers=cloud.headers())
    assert shown.json()["extension"]["name"] == "Neutron external network"
    missing = cloud.client.get("/network/v2.0/extensions/router", headers=cloud.headers())
    assert missing.status_code == 404 and missing.json()["NeutronError"]["type"] == "ExtensionNotFound"
    assert cloud.client.get("/network/v2.0/extensions").status_code == 401
    project = cloud.ids["project:demo"]
    volume = cloud.client.get(f"/volume/v3/{project}/extensions", headers=cloud.headers()).json()
    assert {e["alias"] for e in volume["extensions"]} == {"os-availability-zone", "os-vol-tenant-attr",
                                                         "os-used-limits"}
    zones = cloud.client.get(f"/volume/v3/{project}/os-availability-zone", headers=cloud.headers("reader"))
    assert zones.json() == {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}}]}
