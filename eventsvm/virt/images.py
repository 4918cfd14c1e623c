"""Images on a compute host: the guest `make guest-image` builds, and each instance's root disk.

Nova boots AMI-style images from three Glance images: a kernel (`aki`), a ramdisk (`ari`) and a
machine image whose `kernel_id` / `ramdisk_id` properties name the other two. Its Qcow2 image
backend gives every instance a copy-on-write overlay of the image as its root disk, in the
instance's own directory, removed with the instance. Both are reproduced here with qemu-img.

A snapshot's image file, and an uploaded image's (glance's file store, eventsvm.api.image_store),
goes with its Glance image, while servers booted from it keep running (nova backs their overlays
onto the compute host's cached copy, not onto Glance's): here the overlay of a server booted from
either backs onto a hard link to the file in the instance's directory, so the data lasts exactly as
long as the image or the last server on it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsvm.virt.hypervisor import HypervisorError, SpawnError
from eventsvm.virt.xml import InvalidGuestSpec

# Image ids are derived from the file's content, so every cloud that seeds the same guest gives it
# the same ids and a rebuilt, different kernel is a different image.
_IMAGE_ID_NAMESPACE = uuid.UUID("5b0c3f0e-7d7a-4b8e-9a55-0e2f5c1d9e71")
# Nova's default kernel command line for AMI images, reduced to the serial console the guest uses.
DEFAULT_CMDLINE = "console=ttyS0"
_QEMU_IMG_TIMEOUT_S = 60
# the directory name of every host's snapshot files, and of the uploaded images' files under the
# API's data directory: what is in either goes when its image is deleted
_SNAPSHOTS = "snapshots"
GLANCE_STORE = "images"
_DELETED_WITH_THEIR_IMAGE = frozenset({_SNAPSHOTS, GLANCE_STORE})


class GuestImageMissing(FileNotFoundError):
    """The guest has not been built (run `make guest-image`)."""


@dataclass(frozen=True)
class GuestImage:
    """The guest `scripts/guest-image.sh` builds: kernel, ramdisk and root disk, with Glance ids."""

    kernel: Path
    ramdisk: Path
    disk: Path
    kernel_id: str
    ramdisk_id: str
    cmdline: str = DEFAULT_CMDLINE

    @classmethod
    def load(cls, directory: Path) -> GuestImage:
        """The guest built in `directory`; GuestImageMissing when a part of it is not there."""
        parts = [directory / name for name in ("vmlinuz", "initrd.img", "disk.qcow2")]
        absent = [p.name for p in parts if not p.is_file() or p.stat().st_size == 0]
        if absent:
            raise GuestImageMissing(f"no guest image in {directory} (missing {', '.join(absent)}); "
                                    "run `make guest-image`")
        kernel, ramdisk, disk = (p.resolve() for p in parts)
        return cls(kernel=kernel, ramdisk=ramdisk, disk=disk, kernel_id=image_id_of(kernel),
                   ramdisk_id=image_id_of(ramdisk))

    @property
    def location(self) -> str:
        """The machine image's Glance location (a file:// URL of its root disk)."""
        return self.disk.as_uri()

    def properties(self) -> dict[str, str]:
        """The machine image's Glance properties, as nova reads them for an AMI-style boot."""
        return {"kernel_id": self.kernel_id, "ramdisk_id": self.ramdisk_id, "os_command_line": self.cmdline}

    def store(self) -> dict[str, Path]:
        """Image id -> file, for the images a compute host looks up by id (kernel and ramdisk)."""
        return {self.kernel_id: self.kernel, self.ramdisk_id: self.ramdisk}


def image_id_of(path: Path) -> str:
    """The Glance id of an image file: a UUID derived from its SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as image:
        for chunk in iter(lambda: image.read(1 << 20), b""):
            digest.update(chunk)
    return str(uuid.uuid5(_IMAGE_ID_NAMESPACE, digest.hexdigest()))


class SnapshotError(HypervisorError):
    """A snapshot could not be taken (no disk, qemu-img failed): the image is dropped."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class BootSource:
    """What one instance boots: its root disk, and for AMI-style images a kernel and ramdisk."""

    disk_path: Path
    console_log_path: Path
    disk_cache: str = "none"
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None


class ImageBackend:
    """Nova's Qcow2 image backend on one host: `<instances_dir>/<uuid>/disk` overlays its image.

    `store` maps the ids of kernel and ramdisk images to files on this host (nova fetches them
    from Glance into its image cache; here the guest build directory is that cache).
    """

    def __init__(self, instances_dir: Path, store: dict[str, Path]) -> None:
        self.instances_dir = instances_dir
        self.store = dict(store)
        instances_dir.mkdir(parents=True, exist_ok=True)
        # Nova's cache='none' needs O_DIRECT, which tmpfs (a common place for test data) lacks.
        self.disk_cache = "none" if _supports_direct_io(instances_dir) else "writeback"

    def instance_dir(self, instance_id: str) -> Path:
        """The directory holding everything of one instance on this host (disk, console log)."""
        return self.instances_dir / str(uuid.UUID(instance_id))

    def boot_source(self, instance_id: str, image: dict[str, Any]) -> BootSource:
        """Where the instance's disk and console log live and which kernel it boots (no I/O).

        InvalidGuestSpec for an image no host could boot; SpawnError (retryable) when this host
        lacks a file the image names.
        """
        properties = image.get("properties") or {}
        kernel = self._stored(image, properties.get("kernel_id"), "kernel")
        ramdisk = self._stored(image, properties.get("ramdisk_id"), "ramdisk")
        if ramdisk is not None and kernel is None:
            raise InvalidGuestSpec(f"image {image.get('id')} has a ramdisk_id but no kernel_id")
        directory = self.instance_dir(instance_id)
        return BootSource(disk_path=directory / "disk", console_log_path=directory / "console.log",
                          disk_cache=self.disk_cache,
                          kernel=str(kernel) if kernel else None, ramdisk=str(ramdisk) if ramdisk else None,
                          cmdline=(properties.get("os_command_line") or DEFAULT_CMDLINE) if kernel else None)

    def create_disk(self, instance_id: str, image: dict[str, Any], root_gb: int) -> Path:
        """The instance's qcow2 root disk over its image; an existing one is kept (a redelivered
        spawn must not wipe the disk of a running guest)."""
        disk = self.instance_dir(instance_id) / "disk"
        if disk.exists():
            return disk
        base = _image_file(image)
        if not base.is_file():
            raise SpawnError(f"image {image.get('id')} is not on this host ({base})", retryable=True)
        disk.parent.mkdir(parents=True, exist_ok=True)
        if base.parent.name in _DELETED_WITH_THEIR_IMAGE:
            # a snapshot (of any host here) or an upload: deleted with its image, so the server
            # keeps its own name for it
            base = self._host_copy(base, disk.parent / "image")
        # an ISO is a raw disk to QEMU; the upload's inspection made sure the data is what its
        # disk_format says (eventsvm.api.image_format)
        backing_format = "raw" if image.get("disk_format") in ("raw", "iso") else "qcow2"
        command = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", backing_format,
                   str(disk.with_suffix(".part"))]
        if root_gb > 0:
            command.append(f"{root_gb}G")
        _qemu_img(command, "creating the root disk", lambda message: SpawnError(message, retryable=True))
        # Renamed into place only when whole, so "the disk exists" always means a usable disk.
        disk.with_suffix(".part").rename(disk)
        return disk

    def snapshot(self, instance_id: str, image_id: str) -> Path:
        """Convert the instance's overlay (with its backing chain) into a standalone qcow2 image
        file, as nova's libvirt snapshot does before its upload; the file's path. A file already
        there (a redelivered snapshot) is kept."""
        target = self._snapshot_file(image_id)
        if target.exists():
            return target
        disk = self.instance_dir(instance_id) / "disk"
        if not disk.is_file():
            raise SnapshotError(f"instance {instance_id} has no root disk on this host")
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        part = target.with_suffix(".part")
        command = ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", str(disk), str(part)]
        try:
            _qemu_img(command, "converting the root disk", SnapshotError)
        except SnapshotError:
            part.unlink(missing_ok=True)
            raise
        part.rename(target)
        return target

    def _host_copy(self, image_file: Path, copy: Path) -> Path:
        """The instance's own name for a snapshot's or an upload's file (nova's image cache): a hard
        link, or a copy where the two directories are on different file systems."""
        if copy.exists():
            return copy
        part = copy.with_suffix(".part")
        part.unlink(missing_ok=True)
        try:
            os.link(image_file, part)
        except FileNotFoundError as exc:
            gone = f"image file {image_file} is gone (its image was deleted)"
            raise SpawnError(gone, retryable=False) from exc
        except OSError:
            shutil.copyfile(image_file, part)
        part.rename(copy)
        return copy

    def drop_snapshot(self, image_id: str) -> bool:
        """Remove the file of a deleted snapshot image; False when there was none. Servers booted
        from it keep their own link to it (`_host_copy`)."""
        try:
            target = self._snapshot_file(image_id)
        except ValueError:
            return False  # not an id this host ever named a snapshot by
        target.with_suffix(".part").unlink(missing_ok=True)
        if not target.exists():
            return False
        target.unlink(missing_ok=True)
        return True

    @property
    def snapshots_dir(self) -> Path:
        """Where this host keeps the image files of its snapshots (nova uploads them to Glance;
        here Glance's location points at them, and every host of this machine reads them)."""
        return self.instances_dir.parent / _SNAPSHOTS

    def _snapshot_file(self, image_id: str) -> Path:
        return self.snapshots_dir / f"{uuid.UUID(image_id)}.qcow2"

    def remove(self, instance_id: str) -> bool:
        """Remove the instance's directory (disk, console log); False when there was none."""
        directory = self.instance_dir(instance_id)
        if not directory.exists():
            return False
        shutil.rmtree(directory)
        return True

    def _stored(self, image: dict[str, Any], image_id: str | None, role: str) -> Path | None:
        if not image_id:
            return None
        path = self.store.get(image_id)
        if path is None or not path.is_file():
            raise SpawnError(f"{role} image {image_id} of image {image.get('id')} is not on this host",
                             retryable=True)
        return path


def _qemu_img(command: list[str], what: str, failure: Callable[[str], HypervisorError]) -> None:
    """Run qemu-img; `failure` builds the error raised, saying what failed."""
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=_QEMU_IMG_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise failure("qemu-img is not installed on this host") from exc
    except subprocess.CalledProcessError as exc:
        raise failure(f"{what} failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise failure(f"{what} timed out") from exc


def _supports_direct_io(directory: Path) -> bool:
    probe = directory / ".direct-io-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0), 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True


def _image_file(image: dict[str, Any]) -> Path:
    location = image.get("location")
    if not location:
        raise InvalidGuestSpec(f"image {image.get('id')} has no data to boot from")
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise InvalidGuestSpec(f"image {image.get('id')} is at {parsed.scheme}://; only file:// boots here")
    return Path(urllib.parse.unquote(parsed.path))
