"""Which bridges a cloud may remove: its own (named by its libvirtd's socket in their alias), and
those of a cloud that is gone; never a bridge of a running cloud or one this project did not make."""

from __future__ import annotations

import socket
from pathlib import Path

from eventsvm.virt.bridges import _is_stale
from eventsvm.virt.hypervisor import Hypervisor, socket_of
from eventsvm.virt.xml import GuestPort, bridge_name


def test_a_bridge_is_named_as_neutron_linuxbridge_names_it_and_fits_an_interface_name() -> None:
    network = "9e8d7c6b-5a49-4837-a261-50f4e3d2c1b0"
    assert bridge_name(network) == "brq9e8d7c6b-5a"
    assert len(bridge_name(network)) <= 15
    assert GuestPort(port_id="p", mac="fa:16:3e:00:00:01", network_id=network).bridge_name == "brq9e8d7c6b-5a"


def test_only_a_bridge_whose_libvirtd_is_gone_is_stale(tmp_path: Path) -> None:
    listening = tmp_path / "libvirt-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(listening))
        daemon.listen(1)
        assert not _is_stale(f"eventsvm network n-1 of {listening}")
    assert _is_stale(f"eventsvm network n-1 of {tmp_path / 'gone'}")
    # a daemon killed without removing its socket: the file is there, nothing accepts on it
    killed = tmp_path / "killed-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as daemon:
        daemon.bind(str(killed))
    assert killed.exists()
    assert _is_stale(f"eventsvm network n-1 of {killed}")
    # a system libvirtd's bridge (no socket named), and bridges this project did not make
    assert not _is_stale("eventsvm network n-1 of ")
    assert not _is_stale("")
    assert not _is_stale(f"docker bridge of {tmp_path / 'gone'}")


def test_the_socket_of_the_projects_libvirtd_is_read_from_its_uri() -> None:
    with Hypervisor("test:///default") as hypervisor:
        assert hypervisor.socket_path == ""
    assert socket_of("qemu:///system?socket=/tmp/x/run/libvirt-sock") == "/tmp/x/run/libvirt-sock"
    assert socket_of("qemu:///system") == ""
