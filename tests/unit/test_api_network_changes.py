"""Neutron's PUT and DELETE of networks and subnets, as `openstack network set / delete` and
`openstack subnet set / delete` send them: events on the catalog, checked as on create, and
refused while a server holds (or awaits) an address there."""

from __future__ import annotations

from typing import Any

from test_api_support import Cloud, cloud_fixture  # noqa: F401

from eventsvm.events.codec import Codec
from eventsvm.events.model import EventType, new_event
from eventsvm.state.catalog import evolve_catalog, initial_catalog
from tests.factories import sample_event

NET = "/network/v2.0/networks"
SUBNETS = "/network/v2.0/subnets"


def _network(cloud: Cloud, name: str = "lab", user: str = "demo") -> str:
    made = cloud.client.post(NET, json={"network": {"name": name}}, headers=cloud.headers(user))
    assert made.status_code == 201, made.text
    return str(made.json()["network"]["id"])


def _subnet(cloud: Cloud, network_id: str, cidr: str = "192.168.7.0/24", **extra: Any) -> dict[str, Any]:
    made = cloud.client.post(SUBNETS, json={"subnet": {"network_id": network_id, "cidr": cidr,
                                                       "ip_version": 4, **extra}},
                             headers=cloud.headers())
    assert made.status_code == 201, made.text
    return dict(made.json()["subnet"])


def _error(answer: Any) -> tuple[int, str, str]:
    error = answer.json()["NeutronError"]
    return answer.status_code, error["type"], error["message"]


def test_a_network_update_changes_what_was_sent_and_only_once(cloud: Cloud) -> None:
    made = cloud.client.post(NET, json={"network": {"name": "lab", "mtu": 1400}}, headers=cloud.headers())
    network_id = made.json()["network"]["id"]
    put = cloud.client.put(f"{NET}/{network_id}", json={"network": {
        "name": "lab-2", "description": "the lab's", "admin_state_up": False}}, headers=cloud.headers())
    assert put.status_code == 200, put.text
    shown = cloud.client.get(f"{NET}/{network_id}", headers=cloud.headers()).json()["network"]
    assert (shown["name"], shown["description"], shown["admin_state_up"]) == ("lab-2", "the lab's", False)
    assert shown["revision_number"] == 2 and shown["mtu"] == 1400  # what was not sent stays
    assert put.json()["network"] == shown
    # the same values again change nothing, so nothing is written
    again = cloud.client.put(f"{NET}/{network_id}", json={"network": {"name": "lab-2"}},
                             headers=cloud.headers())
    assert again.status_code == 200
    updates = cloud.events(EventType.NETWORK_UPDATED)
    assert [sorted(e.body["changed"]) for e in updates] == [["admin_state_up", "description", "name"]]
    assert updates[0].aggregate_id == network_id  # keyed as its create: folded after it


def test_sharing_a_network_is_an_admins_and_read_only_fields_are_refused(cloud: Cloud) -> None:
    network_id = _network(cloud)
    shared = cloud.client.put(f"{NET}/{network_id}", json={"network": {"shared": True}},
                              headers=cloud.headers())
    assert shared.status_code == 403
    external = cloud.client.put(f"{NET}/{network_id}", json={"network": {"router:external": True}},
                                headers=cloud.headers())
    assert external.status_code == 403
    assert cloud.client.get(f"{NET}/{network_id}", headers=cloud.headers("alice")).status_code == 404
    by_admin = cloud.client.put(f"{NET}/{network_id}", json={"network": {"shared": True}},
                                headers=cloud.headers("admin"))
    assert by_admin.status_code == 200 and by_admin.json()["network"]["shared"] is True
    # shared: another project now sees it, and may not change or delete it
    assert cloud.client.get(f"{NET}/{network_id}", headers=cloud.headers("alice")).status_code == 200
    assert cloud.client.put(f"{NET}/{network_id}", json={"network": {"name": "mine"}},
                            headers=cloud.headers("alice")).status_code == 403
    assert cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers("alice")).status_code == 403
    status, _, message = _error(cloud.client.put(f"{NET}/{network_id}", json={"network": {"id": "x"}},
                                                 headers=cloud.headers()))
    assert (status, message) == (400, "Cannot update read-only attribute id")
    mtu = cloud.client.put(f"{NET}/{network_id}", json={"network": {"mtu": 10}}, headers=cloud.headers())
    assert mtu.status_code == 400
    missing = cloud.client.put(f"{NET}/{'0' * 32}", json={"network": {"name": "x"}}, headers=cloud.headers())
    assert _error(missing)[:2] == (404, "NetworkNotFound")


def test_deleting_a_network_takes_its_subnets(cloud: Cloud) -> None:
    network_id = _network(cloud)
    subnet = _subnet(cloud, network_id)
    assert cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers()).status_code == 204
    assert _error(cloud.client.get(f"{NET}/{network_id}", headers=cloud.headers()))[:2] == (
        404, "NetworkNotFound")
    assert _error(cloud.client.get(f"{SUBNETS}/{subnet['id']}", headers=cloud.headers()))[:2] == (
        404, "SubnetNotFound")
    assert subnet["id"] not in [s["id"] for s in cloud.client.get(SUBNETS, headers=cloud.headers())
                                .json()["subnets"]]
    assert cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers()).status_code == 404
    assert [e.body for e in cloud.events(EventType.NETWORK_DELETED)] == [{"id": network_id}]
    # a server cannot ask for it any more
    gone = cloud.client.post("/compute/v2.1/servers", json=cloud.server_request(
        networks=[{"uuid": network_id}]), headers=cloud.headers())
    assert gone.status_code in (400, 404), gone.text


def test_a_network_or_subnet_a_server_holds_or_awaits_an_address_on_is_not_deleted(cloud: Cloud) -> None:
    network_id = cloud.ids["network:private"]
    subnet_id = cloud.ids["subnet:private"]
    server_id = cloud.create_server()  # asked for the network, no address yet
    status, kind, message = _error(cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers()))
    assert (status, kind) == (409, "NetworkInUse") and "ports still in use" in message
    cloud.advance(server_id, "active")  # now it holds one from the subnet
    status, kind, _ = _error(cloud.client.delete(f"{SUBNETS}/{subnet_id}", headers=cloud.headers()))
    assert (status, kind) == (409, "SubnetInUse")
    assert cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers()).status_code == 409
    assert not cloud.events(EventType.NETWORK_DELETED) and not cloud.events(EventType.SUBNET_DELETED)
    cloud.advance(server_id, "deleted")
    assert cloud.client.delete(f"{SUBNETS}/{subnet_id}", headers=cloud.headers()).status_code == 204
    assert cloud.client.delete(f"{NET}/{network_id}", headers=cloud.headers()).status_code == 204


def test_a_subnet_update_is_checked_as_a_create(cloud: Cloud) -> None:
    network_id = _network(cloud)
    subnet = _subnet(cloud, network_id, name="v4", gateway_ip="192.168.7.1",
                     allocation_pools=[{"start": "192.168.7.10", "end": "192.168.7.20"}],
                     dns_nameservers=["8.8.4.4"],
                     host_routes=[{"destination": "10.20.0.0/32", "nexthop": "10.100.1.1"}])
    assert subnet["host_routes"] == [{"destination": "10.20.0.0/32", "nexthop": "10.100.1.1"}]
    url = f"{SUBNETS}/{subnet['id']}"
    changes = {"name": "New_subnet", "gateway_ip": "192.168.7.2", "enable_dhcp": False,
               "dns_nameservers": ["7.8.8.8", "7.8.4.4"],
               "host_routes": [{"destination": "10.20.0.0/32", "nexthop": "10.100.1.2"}]}
    put = cloud.client.put(url, json={"subnet": changes}, headers=cloud.headers())
    assert put.status_code == 200, put.text
    shown = cloud.client.get(url, headers=cloud.headers()).json()["subnet"]
    assert {k: shown[k] for k in changes} == changes
    assert shown["allocation_pools"] == [{"start": "192.168.7.10", "end": "192.168.7.20"}]
    assert shown["cidr"] == "192.168.7.0/24" and shown["revision_number"] == 1
    # no gateway at all, then a pool that moves
    no_gateway = cloud.client.put(url, json={"subnet": {"gateway_ip": None}}, headers=cloud.headers())
    assert no_gateway.json()["subnet"]["gateway_ip"] is None
    assert {k: no_gateway.json()["subnet"][k] for k in changes if k != "gateway_ip"} == {
        k: v for k, v in changes.items() if k != "gateway_ip"}  # the rest as it was
    moved = cloud.client.put(url, json={"subnet": {"allocation_pools": [
        {"start": "192.168.7.100", "end": "192.168.7.200"}]}}, headers=cloud.headers())
    assert moved.json()["subnet"]["allocation_pools"] == [{"start": "192.168.7.100", "end": "192.168.7.200"}]
    refused = [
        ({"gateway_ip": "192.168.7.150"}, 409),  # inside the pool
        ({"gateway_ip": "10.0.0.1"}, 400),  # outside the cidr
        ({"host_routes": [{"destination": "nowhere", "nexthop": "10.0.0.1"}]}, 400),
        ({"host_routes": [{"destination": "2001::/64", "nexthop": "2003::1"}]}, 400),  # not IPv4
        ({"dns_nameservers": ["8.8.8.8", "8.8.8.8"]}, 400),
        ({"allocation_pools": [{"start": "192.168.7.20", "end": "192.168.7.10"}]}, 400),
        ({"cidr": "192.168.8.0/24"}, 400),  # read-only
        ({"network_id": cloud.ids["network:private"]}, 400),
    ]
    for body, status in refused:
        answer = cloud.client.put(url, json={"subnet": body}, headers=cloud.headers())
        assert answer.status_code == status, (body, answer.text)
        assert "NeutronError" in answer.json()
    other = cloud.client.put(url, json={"subnet": {"name": "x"}}, headers=cloud.headers("alice"))
    assert other.status_code == 404
    assert len(cloud.events(EventType.SUBNET_UPDATED)) == 3


def test_a_deleted_network_stays_deleted_whatever_order_a_replay_meets_its_events() -> None:
    created = sample_event(EventType.NETWORK_CREATED)
    subnet = sample_event(EventType.SUBNET_CREATED)
    deleted = new_event(EventType.NETWORK_DELETED, created.body["id"], {"id": created.body["id"]})
    # the subnet's create is keyed by the subnet, the delete by the network: two partitions
    for order in ([created, subnet, deleted], [created, deleted, subnet]):
        catalog = initial_catalog()
        for event in order:
            catalog = evolve_catalog(catalog, event)
        assert catalog.networks == {} and catalog.subnets == {}
        assert created.body["id"] not in catalog.created_at


def test_an_update_of_a_gone_network_or_subnet_changes_nothing() -> None:
    catalog = initial_catalog()
    update = sample_event(EventType.NETWORK_UPDATED)
    catalog = evolve_catalog(catalog, update)
    catalog = evolve_catalog(catalog, sample_event(EventType.SUBNET_UPDATED))
    assert catalog.networks == {} and catalog.subnets == {}
    assert update.event_id in catalog.refused
    # and an update never changes the create's body, which the event still holds
    created = sample_event(EventType.NETWORK_CREATED)
    catalog = evolve_catalog(evolve_catalog(initial_catalog(), created), update)
    assert created.body["name"] == "private" and catalog.networks[created.body["id"]]["name"] == "web"


def test_a_network_and_subnet_written_without_the_v2_fields_fold_as_their_replay() -> None:
    codec = Codec()
    for kind, missing in ((EventType.NETWORK_CREATED, ("description", "admin_state_up")),
                          (EventType.SUBNET_CREATED, ("description", "host_routes"))):
        written = sample_event(kind)
        for name in missing:  # as the seed (or a writer of schema v1) writes it
            del written.body[name]
        live = evolve_catalog(initial_catalog(), written)
        replayed = evolve_catalog(initial_catalog(), codec.decode(codec.encode(written)))
        assert (live.networks, live.subnets) == (replayed.networks, replayed.subnets)
