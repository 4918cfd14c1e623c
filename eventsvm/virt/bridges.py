"""Linux bridges for real guests: one per neutron network, as neutron's linuxbridge agent makes them.

Each network a guest of this machine is on gets a bridge `brq<network id[:11]>` (the agent's
name); libvirt plugs each guest's tap device into it (`<interface type='bridge'>`). The subnet's
gateway address sits on the bridge, so this host, where the API and tempest run, reaches every fixed
IP of the network directly (tempest's `[validation] connect_method = fixed`), the way a router's
port on the network would. There is no DHCP server: guests read their address from the config drive.

A bridge lives as long as the cloud's libvirtd: a stopped guest's tap leaves it, and its start
plugs into it again. Its alias names the network and the libvirtd socket it serves;
`scripts/libvirtd.sh stop` removes the bridges of its socket once the guests are gone, and a bridge
whose socket is gone (a cloud that ended without that) is removed when another one needs its
range. Bridges are machine-wide, so creating one and plugging a guest into it, and removing a stale
one, happen under one file lock.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import socket
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
_PROBE_TIMEOUT_S = 2


@contextmanager
def bridges_locked() -> Iterator[None]:
    """Hold the machine-wide bridge lock: no idle bridge is removed while a guest is being plugged."""
    with _LOCK_PATH.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_bridge(network_id: str, cidr: str | None, gateway_ip: str | None, owner: str) -> str:
    """The network's bridge, up and holding the gateway address; created when missing. `owner` is
    the socket of the libvirtd whose guests plug in ('' for a system daemon: never stale). Call
    under bridges_locked(). SpawnError when the bridge cannot be made (not root, no bridge support)."""
    name = bridge_name(network_id)
    if not Path("/sys/class/net", name).exists():
        _ip("link", "add", name, "type", "bridge")
        _ip("link", "set", name, "alias", f"{_ALIAS}{network_id} of {owner}")
    _ip("link", "set", name, "up")
    if cidr and gateway_ip:
        _hold_gateway(name, ipaddress.ip_network(cidr, strict=False), ipaddress.ip_address(gateway_ip))
    return name


def _hold_gateway(name: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                  gateway: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    for link in _links():
        device = str(link.get("ifname", ""))
        for address in link.get("addr_info", []):
            if ipaddress.ip_address(address["local"]) not in network:
                continue
            if device == name:
                return
            if _is_stale(str(link.get("ifalias", ""))):
                # a bridge a cloud that is gone left behind, for a network of the same range
                _ip("link", "del", device)
                continue
            # the host has this range already (its own LAN, another cloud's network with guests):
            # routing it to the bridge would cut that off; guests boot, unreachable from the host
            log.warning("%s is on %s already; guests on bridge %s are not reachable from this host",
                        address["local"], device, name)
            return
    _ip("addr", "add", f"{gateway}/{network.prefixlen}", "dev", name)


def _is_stale(alias: str) -> bool:
    """A bridge of this project whose libvirtd is gone: its socket removed, or left behind by a
    daemon that was killed (the file stays, nothing listens on it)."""
    if not alias.startswith(_ALIAS) or " of " not in alias:
        return False
    owner = alias.split(" of ", 1)[1]
    if not owner:
        return False
    if not Path(owner).exists():
        return True
    # A SIGKILLed libvirtd (a test's cleanup, a CI run cut short) leaves its socket file; the range
    # its bridge holds would leave every later cloud's guests unreachable from this host.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT_S)
        try:
            probe.connect(owner)
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:  # no permission, a daemon too busy to accept: not ours to judge gone
            return False
    return False


def _links() -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = json.loads(_ip("-j", "-d", "addr", "show") or "[]")
    return links


def _ip(*args: str) -> str:
    # changing links needs root, as scripts/libvirtd.sh does: through sudo when not root already
    sudo = ["sudo", "-n"] if os.geteuid() != 0 and args[0] != "-j" else []
    try:
        done = subprocess.run([*sudo, "ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S,
                              check=True)
    except FileNotFoundError as exc:
        raise SpawnError("the ip command (iproute2) is not installed on this host", retryable=False) from exc
    except subprocess.CalledProcessError as exc:
        raise SpawnError(f"ip {' '.join(args)} failed: {exc.stderr.strip()}", retryable=False) from exc
    except subprocess.TimeoutExpired as exc:
        raise SpawnError(f"ip {' '.join(args)} timed out", retryable=True) from exc
    return done.stdout
