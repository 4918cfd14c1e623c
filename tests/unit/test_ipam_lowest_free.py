"""The resolver's address search starts past the addresses known to be in use, and still gives the
lowest free address of the stripe after any sequence of allocations, holds and releases (checked
against a search from the subnet's start)."""

from __future__ import annotations

import ipaddress
import pickle
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventsvm.state.ipam import IpAllocations, NoMoreAddresses

SUBNET: dict[str, Any] = {"id": "sub", "network_id": "net", "cidr": "10.0.0.0/26",
                          "allocation_start": "10.0.0.2", "allocation_end": "10.0.0.40"}


def _lowest_free(ipam: IpAllocations, stripe: int, stripes: int) -> str | None:
    start = int(ipaddress.ip_address(SUBNET["allocation_start"]))
    end = int(ipaddress.ip_address(SUBNET["allocation_end"]))
    first = start + ((stripe - start) % stripes) if stripes > 1 else start
    used = ipam.used.get("sub", set())
    free = [str(ipaddress.ip_address(v)) for v in range(first, end + 1, stripes)
            if str(ipaddress.ip_address(v)) not in used]
    return free[0] if free else None


steps = st.lists(st.tuples(st.sampled_from(["boot", "boot2", "delete", "snapshot"]),
                           st.integers(0, 30), st.integers(0, 3)), max_size=120)


@settings(max_examples=200, deadline=None)
@given(steps=steps, stripes=st.sampled_from([1, 4]))
def test_every_allocation_is_the_lowest_free_address_of_its_stripe(steps: list[tuple[str, int, int]],
                                                                   stripes: int) -> None:
    ipam = IpAllocations()
    for op, instance, stripe in steps:
        stripe %= stripes
        name = f"i{instance}"
        if op == "delete":
            ipam.release(name)
        elif op == "snapshot":  # a state read back from a snapshot searches as well
            ipam = pickle.loads(pickle.dumps(ipam))
        elif name not in ipam.ports_by_instance:
            ports, held = [], []
            for _ in range(2 if op == "boot2" else 1):  # two ports: the first is held meanwhile
                expected = _lowest_free(ipam, stripe, stripes)
                try:
                    ip, _ = ipam.allocate(SUBNET, stripe, stripes)
                except NoMoreAddresses:
                    assert expected is None
                    break
                assert ip == expected
                ipam.used.setdefault("sub", set()).add(ip)
                held.append(ip)
                ports.append({"subnet_id": "sub", "ip_address": ip, "network_id": "net"})
            for ip in held:
                ipam.free("sub", ip)
            if len(ports) == (2 if op == "boot2" else 1):
                ipam.record(name, ports)
