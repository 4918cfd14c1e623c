"""Real guests under QEMU through libvirt: what `eventsvm up --hypervisor qemu` runs.

One libvirtd per cloud, started and configured by `scripts/libvirtd.sh` with its state in
`<data dir>/libvirt`. Not `qemu:///embed`: libvirt opens only one embedded root per process, and
the in-process driver would need this Python process to reap QEMU's orphans (without a reaper,
destroy() takes 1-2 s here instead of 0.2 s).
Each simulated host keeps its instances (qcow2 root disk, console log) in its own state directory.
Guests are TCG (`<domain type='qemu'>`): KVM does not work on these machines.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from eventsvm.virt.compute_host import ComputeHost, HostCapacity
from eventsvm.virt.hypervisor import Hypervisor
from eventsvm.virt.images import GuestImage, GuestImageMissing, ImageBackend

_REPO = Path(__file__).resolve().parents[2]
_SCRIPTS = _REPO / "scripts"
DEFAULT_GUEST_DIR = _REPO / "guest"
# What the guest's /init prints once it is up (scripts/guest-image.sh); {uuid} is the instance's.
BOOT_LINE = "eventsvm guest {uuid} is up"
# A Debian kernel boots in ~6 s under TCG, ~13 s with two at once on 2 busy cores.
DEFAULT_BOOT_TIMEOUT_S = 60.0
_SETUP_TIMEOUT_S = 600
# sun_path holds 108 bytes; libvirt's socket lives at <state dir>/run/libvirt-sock.
_MAX_SOCKET_PATH = 107


class QemuSetupError(RuntimeError):
    """The guest image or the libvirt daemon could not be made ready."""


def ensure_guest_image(guest_dir: Path = DEFAULT_GUEST_DIR) -> GuestImage:
    """The guest built in `guest_dir`, building it first (scripts/guest-image.sh) when missing or
    built from an older recipe (its guest would print another boot line)."""
    try:
        if _built_from_current_recipe(guest_dir):
            return GuestImage.load(guest_dir)
    except GuestImageMissing:
        pass
    _script("guest-image.sh", str(guest_dir))
    return GuestImage.load(guest_dir)


def _built_from_current_recipe(guest_dir: Path) -> bool:
    # the script stamps its build with the first 16 hex digits of its own SHA-256
    stamp = guest_dir / ".built"
    recipe = hashlib.sha256((_SCRIPTS / "guest-image.sh").read_bytes()).hexdigest()[:16]
    return stamp.is_file() and stamp.read_text().strip() == recipe


def ensure_libvirtd(state_dir: Path) -> str:
    """Start the project's libvirtd for `state_dir` unless it runs already; returns its URI."""
    socket_path = state_dir.resolve() / "run" / "libvirt-sock"
    if len(str(socket_path)) > _MAX_SOCKET_PATH:
        raise QemuSetupError(f"libvirt's socket path {socket_path} is too long for a unix socket; "
                             "use a shorter --data-dir")
    return _script("libvirtd.sh", "start", str(state_dir)).strip().splitlines()[-1]


def stop_libvirtd(state_dir: Path) -> None:
    """Stop the project's libvirtd for `state_dir` and the guests it still runs."""
    _script("libvirtd.sh", "stop", str(state_dir))


def qemu_compute_host(name: str, slot: int, capacity: HostCapacity, uri: str, state_dir: Path,
                      guest: GuestImage, *, domain_type: str | None = None, broken: str | None = None,
                      boot_line: str | None = BOOT_LINE,
                      boot_timeout_s: float = DEFAULT_BOOT_TIMEOUT_S) -> ComputeHost:
    """A compute host whose guests boot for real: a qcow2 root disk per instance under
    `state_dir/instances`, the guest's kernel and ramdisk, a config drive, and each NIC on its
    network's Linux bridge, which holds the subnet's gateway address (the host reaches fixed IPs)."""
    images = ImageBackend(state_dir / "instances", guest.store())
    return ComputeHost(name=name, slot=slot, capacity=capacity, hypervisor=Hypervisor(uri),
                       state_dir=state_dir, broken=broken, images=images, domain_type=domain_type,
                       boot_line=boot_line, boot_timeout_s=boot_timeout_s, vif_type="bridge",
                       config_drive=True)


def _script(name: str, *args: str) -> str:
    command = f"scripts/{name} {' '.join(args)}"
    try:
        done = subprocess.run(["bash", str(_SCRIPTS / name), *args], capture_output=True, text=True,
                              timeout=_SETUP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise QemuSetupError(f"{command} did not finish in {_SETUP_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise QemuSetupError(f"{command} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout
