"""openstacksdk's create_server + wait_for_server and the novaclient listing of the contract,
both as libraries in this process, against a live cloud."""

from __future__ import annotations

import time
import uuid

import openstack
import pytest
import yaml
from keystoneauth1 import loading, session
from live_cloud import LiveCloud
from novaclient import client as nova


def test_sdk_create_server_and_wait_for_it(live_cloud: LiveCloud, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(live_cloud.clouds_yaml))
    conn = openstack.connect(cloud="eventsvm")
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    server = conn.create_server(
        name, image="cirros", flavor="m1.tiny", network="private", key_name="keypair-1"
    )
    server = conn.wait_for_server(server, timeout=60)
    assert server.status == "ACTIVE"
    assert server.addresses["private"][0]["addr"].startswith("10.0.0.")
    conn.delete_server(server.id, wait=True, timeout=60)
    assert conn.get_server(server.id) is None


def test_novaclient_listing_from_the_contract(live_cloud: LiveCloud):
    auth = yaml.safe_load(live_cloud.clouds_yaml.read_text())["clouds"]["eventsvm"]["auth"]
    sess = session.Session(auth=loading.get_plugin_loader("password").load_from_options(**auth))
    nova_client = nova.Client("2.1", session=sess)
    image = nova_client.glance.find_image("cirros")
    flavor = nova_client.flavors.find(name="m1.tiny")
    network = nova_client.neutron.find_network("private")
    instance = nova_client.servers.create(
        name="vm2", image=image, flavor=flavor, key_name="keypair-1", nics=[{"net-id": network.id}]
    )
    assert "vm2" in [s.name for s in nova_client.servers.list()]
    deadline = time.monotonic() + 60
    while nova_client.servers.get(instance.id).status != "ACTIVE":
        assert time.monotonic() < deadline, "vm2 did not become ACTIVE"
        time.sleep(0.5)
    nova_client.servers.delete(instance.id)
