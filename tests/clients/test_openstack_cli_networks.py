"""`openstack network set / delete` and `openstack subnet set / delete` (python-openstackclient,
unmodified) against a live cloud: changes show, a network a server is on is refused, and once the
server is gone its subnet and network go."""

from __future__ import annotations

import json
import uuid
from typing import Any

from live_cloud import LiveCloud


def shown(cloud: LiveCloud, *args: str) -> Any:
    return json.loads(cloud.openstack(*args, "-f", "json").stdout)


def test_network_and_subnet_set_and_delete(live_cloud: LiveCloud):
    tag = uuid.uuid4().hex[:6]
    network, subnet = f"osc-net-{tag}", f"osc-subnet-{tag}"
    live_cloud.openstack("network", "create", network)
    created = shown(live_cloud, "subnet", "create", "--network", network, "--subnet-range",
                    "192.168.40.0/24", "--dns-nameserver", "8.8.4.4",
                    "--host-route", "destination=10.20.0.0/24,gateway=192.168.40.254", subnet)
    assert created["host_routes"] == [{"destination": "10.20.0.0/24", "nexthop": "192.168.40.254"}]

    live_cloud.openstack("network", "set", "--name", f"{network}-2", "--description", "the lab's", network)
    network = f"{network}-2"
    renamed = shown(live_cloud, "network", "show", network)
    assert (renamed["name"], renamed["description"]) == (network, "the lab's")
    live_cloud.openstack("subnet", "set", "--gateway", "192.168.40.1", "--no-dns-nameservers",
                         "--dns-nameserver", "9.9.9.9", subnet)
    changed = shown(live_cloud, "subnet", "show", subnet)
    assert (changed["gateway_ip"], changed["dns_nameservers"]) == ("192.168.40.1", ["9.9.9.9"])
    refused = live_cloud.openstack("subnet", "set", "--gateway", "10.0.0.1", subnet, check=False)
    assert refused.returncode == 1 and "not in 192.168.40.0/24" in refused.stderr, refused.stderr

    server = f"osc-net-vm-{tag}"
    live_cloud.openstack("server", "create", "--image", "cirros", "--flavor", "m1.tiny", "--network", network,
                         "--wait", server)
    address = shown(live_cloud, "server", "show", server)["addresses"]
    assert str(address).count("192.168.40.") == 1, address
    in_use = live_cloud.openstack("network", "delete", network, check=False)
    assert in_use.returncode == 1 and "still in use" in in_use.stderr, in_use.stderr
    in_use = live_cloud.openstack("subnet", "delete", subnet, check=False)
    assert in_use.returncode == 1 and "IP allocation" in in_use.stderr, in_use.stderr

    live_cloud.openstack("server", "delete", "--wait", server)
    live_cloud.openstack("subnet", "delete", subnet)
    live_cloud.openstack("network", "delete", network)
    names = {n["Name"] for n in json.loads(live_cloud.openstack("network", "list", "-f", "json").stdout)}
    assert network not in names and "private" in names
    gone = live_cloud.openstack("network", "show", network, check=False)
    assert gone.returncode == 1
    assert "external-net" in live_cloud.openstack("extension", "list", "--network", "-c", "Alias").stdout
