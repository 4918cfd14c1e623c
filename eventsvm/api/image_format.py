"""What an uploaded image's data is, decided before it can become bootable.

Glance inspects an upload as it streams in (oslo.utils' format_inspector, the library glance and
nova themselves use) and refuses data that is not the disk_format the image declares, or that fails
the format's safety checks: above all a qcow2 naming a backing file or an external data file, which
QEMU would open on the compute host (a qcow2 whose backing file is /etc/shadow hands that file to
the guest). The spawner boots the stored file as its disk_format says (eventsvm.virt.images), so
this check is what stands between an upload and QEMU.

Stricter than glance in two places, both because the spawner trusts the declared format: a raw
image may hold a partition table or an ISO filesystem (both are raw disks) but not another image
container (glance lets a "raw" qcow2 through), and the data is inspected whatever its
container_format (glance inspects only `bare` ones).
"""

from __future__ import annotations

import io

from oslo_utils.imageutils import format_inspector

# what a disk_format of raw may turn out to hold: disks QEMU reads byte for byte anyway
_RAW_DISKS = frozenset({"raw", "gpt", "iso"})


class ImageDataRefused(ValueError):
    """The data is not what the image declares, or is not safe to boot; the message says which,
    in glance's words."""


class FormatInspection:
    """The inspection of one upload, fed its data chunk by chunk (nothing of it is kept but the
    few header regions the inspectors capture)."""

    def __init__(self) -> None:
        # the wrapper reads from a file-like source: each chunk is handed over through this one
        self._window = io.BytesIO()
        self._wrapper = format_inspector.InspectWrapper(self._window)

    def feed(self, chunk: bytes) -> None:
        """Inspect the next chunk of the data."""
        self._window.seek(0)
        self._window.truncate()
        self._window.write(chunk)
        self._window.seek(0)
        self._wrapper.read(len(chunk))

    def verdict(self, disk_format: str) -> int | None:
        """Once all the data was fed: its virtual size (None where the format has none to read),
        or ImageDataRefused."""
        self._wrapper.close()
        try:
            return self._judged(disk_format)
        except format_inspector.SafetyCheckFailed as exc:
            raise ImageDataRefused(f"Image failed safety checks: {', '.join(sorted(exc.failures))}") from None
        except format_inspector.ImageFormatError as exc:
            raise ImageDataRefused(f"Image format inspection failed: {exc}") from None

    def _judged(self, disk_format: str) -> int | None:
        found = self._wrapper.formats or []
        names = sorted(str(inspector) for inspector in found)
        if names == ["gpt", "iso"]:
            # a bootable ISO legitimately carries a GPT in front of its filesystem (glance's rule)
            found = [i for i in found if str(i) == "iso"]
        elif len(found) != 1:
            raise ImageDataRefused(f"Multiple formats detected: {','.join(names)}")
        [inspector] = found
        detected = str(inspector)
        if detected == disk_format:
            virtual_size: int | None = inspector.virtual_size
        elif disk_format == "raw" and detected in _RAW_DISKS:
            virtual_size = inspector.actual_size
        elif detected == "raw" and disk_format not in format_inspector.ALL_FORMATS:
            # ami, aki, ari, ploop: no inspector knows them, so data no inspector recognises passes
            virtual_size = None
        else:
            raise ImageDataRefused(f"Image disk_format {disk_format} does not match stream data {detected}")
        inspector.safety_check()
        return virtual_size
