"""Linux bridges for real guests: one per neutron network, as neutron's linuxbridge agent makes them.

Each network a guest of this machine is on gets a bridge `brq<network id[:11]>` (the agent's
name); libvirt plugs each guest's tap device into it (`<interface type='bridge'>`). The subnet's
gateway address sits on the bridge, so this host, where the API and tempest run, reaches every fixed
IP of the network directly (tempest's `[validation] connect_method = fixed`), the way a router's
port on the network would. There is no DHCP server: guests read their address from the config drive.

Bridges are shared by every simulated host of this machine, so creating one (and plugging a guest
into it) and removing an idle one happen under one file lock. A bridge is marked by its alias as
this project's; only such bridges, and only when no guest is plugged in, are ever removed.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventsvm.virt.hypervisor import SpawnError
from eventsvm.virt.xml import bridge_name

log = logging.getLogger(__name__)

_ALIAS = "eventsvm network "
_LOCK_PATH = Path(tempfile.gettempdir()) / "eventsvm-bridges.lock"
_IP_TIMEOUT_S = 10


@contextmanager
def bridges_locked() -> Iterator[None]:
    """Hold the machine-wide bridge lock: no idle bridge is removed while a guest is being plugged."""
    with _LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_bridge(network_id: str, cidr: str | None, gateway_ip: str | None) -> str:
    """The network's bridge, up and holding the gateway address; created when missing. Call under
    bridges_locked(). SpawnError when the bridge cannot be made (not root, no bridge support)."""
    name = bridge_name(network_id)
    if not Path("/sys/class/net", name).exists():
        _ip("link", "add", name, "type", "bridge")
        _ip("link", "set", name, "alias", _ALIAS + network_id)
    _ip("link", "set", name, "up")
    if cidr and gateway_ip:
        _hold_gateway(name, ipaddress.ip_network(cidr, strict=False), ipaddress.ip_address(gateway_ip))
    return name


def remove_idle_bridges() -> list[str]:
    """Remove this project's bridges no guest is plugged into (guests gone, cloud stopped); their
    names. Call under bridges_locked()."""
    removed = []
    for link in _links():
        name = str(link.get("ifname", ""))
        if str(link.get("ifalias", "")).startswith(_ALIAS) and _is_idle(name):
            _ip("link", "del", name)
            removed.append(name)
    return removed


def _hold_gateway(name: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                  gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    for link in _links():
        device = str(link.get("ifname", ""))
        for address in link.get("addr_info", []):
            if ipaddress.ip_address(address["local"]) not in network:
                continue
            if device == name:
                return
            if str(link.get("ifalias", "")).startswith(_ALIAS) and _is_idle(device):
                # a bridge a stopped cloud left behind for a network of the same range
                _ip("link", "del", device)
                continue
            # the host has this range already (its own LAN, another cloud's network with guests):
            # routing it to the bridge would cut that off; guests boot, unreachable from the host
            log.warning("%s is on %s already; guests on bridge %s are not reachable from this host",
                        address["local"], device, name)
            return
    _ip("addr", "add", f"{gateway}/{network.prefixlen}", "dev", name)


def _is_idle(name: str) -> bool:
    ports = Path("/sys/class/net", name, "brif")
    return ports.is_dir() and not any(ports.iterdir())


def _links() -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = json.loads(_ip("-j", "-d", "addr", "show") or "[]")
    return links


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S,
                              check=True)
    except FileNotFoundError as exc:
        raise SpawnError("the ip command (iproute2) is not installed on this host", retryable=False) from exc
    except subprocess.CalledProcessError as exc:
        raise SpawnError(f"ip {' '.join(args)} failed: {exc.stderr.strip()}", retryable=False) from exc
    except subprocess.TimeoutExpired as exc:
        raise SpawnError(f"ip {' '.join(args)} timed out", retryable=True) from exc
    return done.stdout
