"""Real guests under QEMU (TCG) through libvirt, driven the way a user drives the cloud.

`eventsvm up --hypervisor qemu` runs as a subprocess; servers are created, read and deleted through
the OpenStack API. Installs what it needs through the project's scripts (guest-image.sh,
libvirtd.sh). At most two guests boot at a time: the machines have 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventsvm.virt.compute_host import HostCapacity
from eventsvm.virt.hypervisor import DomainState, Hypervisor, SpawnError
from eventsvm.virt.images import GuestImage, ImageBackend
from eventsvm.virt.qemu import BOOT_LINE, ensure_guest_image, qemu_compute_host, stop_libvirtd
from tests.processes import stop, wait_until_serving

# Real guests boot under emulation where there is no KVM: a test may take minutes, not hours.
pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = ROOT / "guest"
PASSWORD = "demo-" + uuid.uuid4().hex[:12]
# the guest does not act on an ACPI shutdown (measured: a stop waits the whole timeout): a stop and a soft
# reboot wait this long before powering off, as nova's shutdown_timeout and wait_soft_reboot_seconds
SHUTDOWN_TIMEOUT_S = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _qemu_processes(instance_id: str) -> list[int]:
    """PIDs of QEMU processes running the instance's guest (libvirt passes `-uuid <id>`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and instance_id.encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    """The guest image, built by `scripts/guest-image.sh` when missing (also installs QEMU, libvirtd)."""
    return ensure_guest_image(GUEST_DIR)


@dataclass
class RunningCloud:
    """`eventsvm up --hypervisor qemu` in a subprocess, and a demo token for its API."""

    process: subprocess.Popen[str]
    data_dir: Path
    base: str
    token: str
    catalog: dict[str, str]

    def call(self, method: str, service: str, path: str, body: dict[str, Any] | None = None
             ) -> httpx.Response:
        """One API call with the demo token."""
        return httpx.request(method, self.catalog[service] + path, json=body, timeout=30,
                             headers={"X-Auth-Token": self.token})

    def instance_dir(self, server_id: str) -> Path:
        """The instance's directory on whichever simulated host runs it (the demo user is not
        shown the host, as in nova)."""
        found = list(self.data_dir.glob(f"hosts/*/instances/{server_id}"))
        assert len(found) == 1, f"{server_id} is on {len(found)} hosts"
        return found[0]


@pytest.fixture(scope="module")
def cloud(guest: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    """A two-host cloud on real QEMU, its API on a free port, stopped (guests and daemon too) after."""
    data_dir = tmp_path_factory.mktemp("qemu")
    port = _free_port()
    env = {**os.environ, "EVENTSVM_ADMIN_PASSWORD": "admin-" + PASSWORD, "EVENTSVM_DEMO_PASSWORD": PASSWORD}
    # short power timeouts: a guest that ignores ACPI costs seconds, not nova's minutes, per stop
    command = [str(Path(sys.executable).parent / "eventsvm"), "up", "--hypervisor", "qemu", "--hosts", "2",
               "--port", str(port), "--data-dir", str(data_dir),
               "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
               "--soft-reboot-timeout", str(SHUTDOWN_TIMEOUT_S)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_api(process, base)
        token, catalog = _demo_token(base)
        yield RunningCloud(process, data_dir, base, token, catalog)
    finally:
        stop(process, grace=60)
        stop_libvirtd(data_dir / "libvirt")


def _wait_for_api(process: subprocess.Popen[str], base: str) -> None:
    try:
        wait_until_serving(base, process, timeout=180)
    except AssertionError as exc:
        output = process.stdout.read() if process.stdout and process.poll() is not None else ""
        pytest.fail(f"eventsvm up --hypervisor qemu: {exc}\n{output}")


def _demo_token(base: str) -> tuple[str, dict[str, str]]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}
    answer = httpx.post(f"{base}/identity/v3/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    catalog = {service["type"]: next(e["url"] for e in service["endpoints"] if e["interface"] == "public")
               for service in answer.json()["token"]["catalog"]}
    return answer.headers["X-Subject-Token"], catalog


def _wait_for_status(cloud: RunningCloud, server_ids: list[str], wanted: str, timeout: float
                     ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    servers: dict[str, Any] = {}
    while time.monotonic() < deadline:
        servers = {sid: cloud.call("GET", "compute", f"/servers/{sid}").json().get("server", {})
                   for sid in server_ids}
        if any(s.get("status") == "ERROR" for s in servers.values()):
            pytest.fail(f"a server went to ERROR: {json.dumps(servers, indent=1)}")
        if all(s.get("status") == wanted for s in servers.values()):
            return servers
        time.sleep(0.5)
    pytest.fail(f"not all {wanted} within {timeout} s: { {k: v.get('status') for k, v in servers.items()} }")


def test_servers_boot_real_guests_show_their_console_and_leave_nothing_behind(cloud: RunningCloud,
                                                                             guest: GuestImage) -> None:
    image = next(i for i in cloud.call("GET", "image", "/v2/images?name=cirros").json()["images"])
    assert (image["kernel_id"], image["ramdisk_id"]) == (guest.kernel_id, guest.ramdisk_id)
    network = cloud.call("GET", "network", "/v2.0/networks?name=private").json()["networks"][0]

    created = []
    for name in ("qemu-1", "qemu-2"):
        answer = cloud.call("POST", "compute", "/servers", {"server": {
            "name": name, "imageRef": image["id"], "flavorRef": "1", "networks": [{"uuid": network["id"]}]}})
        assert answer.status_code == 202, answer.text
        created.append(answer.json()["server"]["id"])

    servers = _wait_for_status(cloud, created, "ACTIVE", timeout=150)
    # The scheduler spreads them (RAM weigher), so each simulated host boots one in its own state dir.
    hosts = {cloud.instance_dir(server_id).parent.parent.name for server_id in created}
    assert hosts == {"compute-1", "compute-2"}
    for server_id in servers:
        # ACTIVE means a real QEMU runs the guest, and the guest said so on its serial console.
        assert len(_qemu_processes(server_id)) == 1, f"no QEMU process for {server_id}"
        console_log = cloud.instance_dir(server_id) / "console.log"
        assert BOOT_LINE.format(uuid=server_id) in console_log.read_text(errors="replace")
        answer = cloud.call("POST", "compute", f"/servers/{server_id}/action",
                            {"os-getConsoleOutput": {"length": 5}})
        assert answer.status_code == 200, answer.text
        output = answer.json()["output"]
        assert BOOT_LINE.format(uuid=server_id) in output
        assert len(output.splitlines()) <= 5
    disks = [cloud.instance_dir(server_id) / "disk" for server_id in servers]
    assert all(disk.is_file() for disk in disks)

    for server_id in created:
        assert cloud.call("DELETE", "compute", f"/servers/{server_id}").status_code == 204
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
            cloud.call("GET", "compute", f"/servers/{sid}").status_code != 404 for sid in created):
        time.sleep(0.5)
    assert [cloud.call("GET", "compute", f"/servers/{sid}").status_code for sid in created] == [404, 404]
    assert [pid for sid in created for pid in _qemu_processes(sid)] == []
    assert [disk for disk in disks if disk.exists() or disk.parent.exists()] == []


def _boot_ids(cloud: RunningCloud, server_id: str) -> list[str]:
    """The boot ids the guest printed on its console (os-getConsoleOutput), oldest first; none
    while the server is not ACTIVE (nova's 409: a console only while the guest runs)."""
    answer = cloud.call("POST", "compute", f"/servers/{server_id}/action", {"os-getConsoleOutput": {}})
    if answer.status_code == 409:
        return []
    assert answer.status_code == 200, answer.text
    line = re.escape(BOOT_LINE.format(uuid=server_id)) + r" \(boot ([0-9a-f-]{36})"
    return re.findall(line, answer.json()["output"])


def _act_and_see_a_new_boot(cloud: RunningCloud, server_id: str, action: dict[str, Any], seen: set[str],
                            timeout: float = 90) -> str:
    """Ask for `action`, then wait for the guest to print a boot line of a boot not seen before
    and for the server to be ACTIVE again; the new boot's id."""
    answer = cloud.call("POST", "compute", f"/servers/{server_id}/action", action)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [boot for boot in _boot_ids(cloud, server_id) if boot not in seen]
        if fresh:
            _wait_for_status(cloud, [server_id], "ACTIVE", timeout=deadline - time.monotonic())
            seen.add(fresh[-1])
            return fresh[-1]
        time.sleep(0.5)
    pytest.fail(f"{action}: no new boot line within {timeout} s (boots seen: {sorted(seen)})")


def test_a_guest_stopped_started_and_rebooted_soft_and_hard_boots_again_each_time(
        cloud: RunningCloud) -> None:
    started = time.monotonic()
    image = next(i for i in cloud.call("GET", "image", "/v2/images?name=cirros").json()["images"])
    network = cloud.call("GET", "network", "/v2.0/networks?name=private").json()["networks"][0]
    body = {"name": "qemu-power", "imageRef": image["id"], "flavorRef": "1",
            "networks": [{"uuid": network["id"]}]}
    answer = cloud.call("POST", "compute", "/servers", {"server": body})
    assert answer.status_code == 202, answer.text
    server_id = answer.json()["server"]["id"]
    _wait_for_status(cloud, [server_id], "ACTIVE", timeout=150)
    seen = set(_boot_ids(cloud, server_id))
    assert len(seen) == 1, seen
    uri = f"qemu:///system?socket={cloud.data_dir / 'libvirt' / 'run' / 'libvirt-sock'}"

    answer = cloud.call("POST", "compute", f"/servers/{server_id}/action", {"os-stop": None})
    assert answer.status_code == 202, answer.text
    stopped = _wait_for_status(cloud, [server_id], "SHUTOFF", timeout=SHUTDOWN_TIMEOUT_S + 60)[server_id]
    assert (stopped["OS-EXT-STS:vm_state"], stopped["OS-EXT-STS:power_state"]) == ("stopped", 4)
    # the domain is shut off but still defined (nova keeps it for the start), no QEMU runs it
    with Hypervisor(uri) as hypervisor:
        assert hypervisor.state(server_id) is DomainState.SHUTDOWN
    assert _qemu_processes(server_id) == []

    boots = [_act_and_see_a_new_boot(cloud, server_id, {"os-start": None}, seen)]
    assert len(_qemu_processes(server_id)) == 1
    # SOFT: a clean reboot; a guest that ignores the ACPI request is rebooted HARD after
    # --soft-reboot-timeout, as nova does; either way the guest boots again
    boots.append(_act_and_see_a_new_boot(cloud, server_id, {"reboot": {"type": "SOFT"}}, seen,
                                         timeout=SHUTDOWN_TIMEOUT_S + 90))
    boots.append(_act_and_see_a_new_boot(cloud, server_id, {"reboot": {"type": "HARD"}}, seen))
    assert len(set(boots)) == 3 and len(seen) == 4
    server = cloud.call("GET", "compute", f"/servers/{server_id}").json()["server"]
    assert (server["OS-EXT-STS:vm_state"], server["OS-EXT-STS:power_state"], server["OS-EXT-STS:task_state"]
            ) == ("active", 1, None)
    assert len(_qemu_processes(server_id)) == 1
    actions = cloud.call("GET", "compute", f"/servers/{server_id}/os-instance-actions").json()
    actions = actions["instanceActions"]
    assert [a["action"] for a in sorted(actions, key=lambda a: a["start_time"])] == [
        "create", "stop", "start", "reboot", "reboot"]

    assert cloud.call("DELETE", "compute", f"/servers/{server_id}").status_code == 204
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and cloud.call("GET", "compute", f"/servers/{server_id}").is_success:
        time.sleep(0.5)
    assert cloud.call("GET", "compute", f"/servers/{server_id}").status_code == 404
    assert _qemu_processes(server_id) == []
    with Hypervisor(uri) as hypervisor:
        assert hypervisor.state(server_id) is None
    print(f"stop, start, soft and hard reboot on QEMU: {time.monotonic() - started:.1f} s")


def _resolved(image: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"name": "late", "flavor": {"name": "m1.tiny", "vcpus": 1, "ram_mb": 256, "disk_gb": 1}},
            "image": image, "ports": []}


def test_a_guest_that_never_reports_its_boot_fails_the_spawn_and_is_removed(
        cloud: RunningCloud, guest: GuestImage, tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={cloud.data_dir / 'libvirt' / 'run' / 'libvirt-sock'}"
    host = qemu_compute_host("slow-host", 9, HostCapacity(vcpus=2, ram_mb=4096, disk_gb=10), uri, tmp_path,
                             guest, boot_line="a line this guest never prints", boot_timeout_s=3)
    image = {"id": str(uuid.uuid4()), "disk_format": "qcow2", "location": guest.location,
             "properties": guest.properties()}
    instance_id = str(uuid.uuid4())
    try:
        with pytest.raises(SpawnError) as raised:
            host.spawn(instance_id, _resolved(image), "user", "project",
                       int(datetime.now(UTC).timestamp() * 1000))
        assert raised.value.retryable
        assert "within 3 s" in str(raised.value)
        # It did run: the spawner's clean-up is what must leave nothing behind.
        assert host.hypervisor.state(instance_id) is not None
    finally:
        host.destroy(instance_id)
        host.hypervisor.close()
    with Hypervisor(uri) as hypervisor:
        assert hypervisor.state(instance_id) is None
    assert _qemu_processes(instance_id) == []
    assert not (tmp_path / "instances" / instance_id).exists()


def test_each_root_disk_is_a_qcow2_overlay_of_the_image_sized_by_the_flavor(guest: GuestImage,
                                                                           tmp_path: Path) -> None:
    backend = ImageBackend(tmp_path / "instances", guest.store())
    instance_id = str(uuid.uuid4())
    image = {"id": "cirros", "disk_format": "qcow2", "location": guest.location,
             "properties": guest.properties()}
    disk = backend.create_disk(instance_id, image, root_gb=1)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(guest.disk)
    assert info["virtual-size"] == 2**30
    boot = backend.boot_source(instance_id, image)
    assert (boot.disk_path, boot.kernel, boot.ramdisk) == (disk, str(guest.kernel), str(guest.ramdisk))
    assert backend.remove(instance_id)
    assert not disk.parent.exists()


def _ssh(private_key: Path, address: str, command: str, timeout: float) -> str:
    """`command`'s output over SSH as root with the key pair's private key, retried until the guest's
    SSH server answers (it starts just before the boot line) or `timeout` passes."""
    ssh = shutil.which("ssh")
    if ssh is None:
        pytest.skip("no ssh client on this machine (Debian's openssh-client)")
    argv = [ssh, "-i", str(private_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            f"root@{address}", command]
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() >= deadline:
            pytest.fail(f"ssh root@{address} {command!r}: {done.returncode} {done.stderr.strip()}")
        time.sleep(1)


def test_a_guest_is_reached_over_ssh_with_its_key_pair_and_knows_its_name_and_vcpus(
        cloud: RunningCloud, tmp_path: Path) -> None:
    """What tempest's run_validation checks (test_host_name_is_same_as_server_name and
    test_verify_created_server_vcpus): the host reaches the fixed IP on the network's bridge, the
    key pair's key logs in as root, the hostname is the server's name as nova sanitizes it and the
    guest has the flavor's vCPUs; the private key is in no event."""
    answer = cloud.call("POST", "compute", "/os-keypairs", {"keypair": {"name": "guest-ssh-key"}})
    assert answer.status_code in (200, 201), answer.text
    private_key = tmp_path / "id_rsa"
    private_key.write_text(answer.json()["keypair"]["private_key"])
    private_key.chmod(0o600)
    image = next(i for i in cloud.call("GET", "image", "/v2/images?name=cirros").json()["images"])
    network = cloud.call("GET", "network", "/v2.0/networks?name=private").json()["networks"][0]
    flavor = cloud.call("GET", "compute", "/flavors/3").json()["flavor"]  # m1.medium: 2 vCPUs
    answer = cloud.call("POST", "compute", "/servers", {"server": {
        "name": "Guest_SSH.Test", "imageRef": image["id"], "flavorRef": flavor["id"],
        "key_name": "guest-ssh-key", "networks": [{"uuid": network["id"]}]}})
    assert answer.status_code == 202, answer.text
    server_id = answer.json()["server"]["id"]
    try:
        server = _wait_for_status(cloud, [server_id], "ACTIVE", timeout=150)[server_id]
        address = server["addresses"]["private"][0]["addr"]
        output = _ssh(private_key, address, "hostname; grep -c ^processor /proc/cpuinfo", timeout=60)
        assert output.split() == ["guest-ssh-test", str(flavor["vcpus"])]
        # only the public half ever reached the host: on its config drive, not in any event
        secret = "".join(private_key.read_text().splitlines()[1:-1])[:64]
        assert secret and not any(secret.encode() in path.read_bytes()
                                  for path in cloud.data_dir.rglob("*") if path.is_file())
    finally:
        assert cloud.call("DELETE", "compute", f"/servers/{server_id}").status_code == 204
