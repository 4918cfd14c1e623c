"""Fixed IPs and MACs (neutron's IPAM), as a fold over what the resolver handed out.

No address is ever handed out twice, even by several resolver processes at once: each resolver
allocates only from the stripe of the subnet that belongs to the input partition it owns
(address index % partitions == partition), and a partition has one owner at a time. The price is
that one partition's stripe can run dry while others have room; docs/decisions.md says more.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Any

from eventsvm.state.compact import shared_ports

Port = dict[str, Any]


class NoMoreAddresses(Exception):
    """The subnet's stripe for this partition has no free address left."""


@dataclass
class IpAllocations:
    """Ports by instance, and the addresses in use per subnet."""

    ports_by_instance: dict[str, list[Port]] = field(default_factory=dict)
    used: dict[str, set[str]] = field(default_factory=dict)
    # Per (subnet, first address, step) of a stripe: every address of it below the value is in
    # use, so a search starts there instead of at the subnet's start (each allocation read every
    # address in use before it, a fifth of the resolver's time at 150 creates/s). Derived from
    # `used`, so not part of what makes two allocations equal.
    lowest_free: dict[tuple[str, int, int], int] = field(default_factory=dict, compare=False, repr=False)

    def record(self, instance_id: str, ports: list[Port]) -> None:
        """Remember the ports an instance holds (idempotent for the same ports)."""
        self.release(instance_id)
        ports = self.ports_by_instance[instance_id] = shared_ports(ports)
        for port in ports:
            self.used.setdefault(port["subnet_id"], set()).add(port["ip_address"])

    def release(self, instance_id: str) -> list[Port]:
        """Free every address the instance holds; nothing happens for an unknown instance."""
        ports = self.ports_by_instance.pop(instance_id, [])
        for port in ports:
            self.free(port["subnet_id"], port["ip_address"])
        return ports

    def free(self, subnet_id: str, ip: str) -> None:
        """`ip` of the subnet is no longer in use (a search for a free address sees it again)."""
        self.used.get(subnet_id, set()).discard(ip)
        value = int(ipaddress.ip_address(ip))
        hints = self.lowest_free
        for key, lowest in hints.items():
            subnet, first, step = key
            if subnet == subnet_id and first <= value < lowest and (value - first) % step == 0:
                hints[key] = value

    def allocate(self, subnet: dict[str, Any], stripe: int, stripes: int) -> tuple[str, str]:
        """The lowest free (ip, mac) of `subnet` in this stripe; raises NoMoreAddresses."""
        start = int(ipaddress.ip_address(subnet["allocation_start"]))
        end = int(ipaddress.ip_address(subnet["allocation_end"]))
        used = self.used.get(subnet["id"], set())
        first = start + ((stripe - start) % stripes) if stripes > 1 else start
        step = max(stripes, 1)
        key = (subnet["id"], first, step)
        hints = self.lowest_free
        for value in range(max(first, hints.get(key, first)), end + 1, step):
            ip = str(ipaddress.ip_address(value))
            if ip not in used:
                hints[key] = value  # not past it: the caller may not record this one
                return ip, mac_for(subnet["network_id"], value)
        hints[key] = end + 1
        raise NoMoreAddresses(
            f"No more IP addresses available on network {subnet['network_id']} "
            f"(subnet {subnet['cidr']}, partition {stripe} of {stripes})"
        )


def mac_for(network_id: str, address: int) -> str:
    """Neutron's fa:16:3e prefix, then one byte of the network and the address's low 16 bits:
    unique within a network for subnets up to /16, and stable across replays."""
    net = zlib.crc32(network_id.encode()) & 0xFF
    return f"fa:16:3e:{net:02x}:{(address >> 8) & 0xFF:02x}:{address & 0xFF:02x}"
