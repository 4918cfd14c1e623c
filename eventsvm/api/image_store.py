"""Glance's file store: where the API keeps uploaded image data, `<data dir>/images/`.

An upload streams into `<image id>.<upload id>.part`, chunk by chunk (hashed and inspected as it
comes, never held whole), is fsynced and renamed to `<image id>.<upload id>`, and the image's
catalog.image_updated names that file. The upload id keeps two uploads of one image through two
API processes from writing one file: the log decides which fill the image takes
(eventsvm.state.catalog) and the loser removes its own. Deleting an image removes every file named
after it here, an upload cut short by a crash included.

The files are local to the machine: several API machines would need this directory shared, as
glance's file store needs its filesystem_store_datadir shared (docs/decisions.md).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from eventsvm.api.errors import Conflict, Gone, ServiceUnavailable, TooLarge
from eventsvm.api.image_format import FormatInspection
from eventsvm.config import IMAGE_SIZE_CAP
from eventsvm.virt.images import GLANCE_STORE

# glance's multihash algorithm (its hashing_algorithm default)
HASH_ALGO = "sha512"
# seconds a client waits before retrying an upload the store could not write
_RETRY_AFTER = "5"


@dataclass(frozen=True)
class StoredData:
    """An upload's data, stored: the file, and what glance records of it."""

    path: Path
    size: int
    checksum: str
    os_hash_value: str
    virtual_size: int | None

    @property
    def location(self) -> str:
        """The file:// URL the image's location holds (the spawner boots from it)."""
        return self.path.as_uri()


def gone_meanwhile(image_id: str) -> Gone:
    """Glance's answer when the image was deleted during its upload."""
    return Gone(f"Image {image_id} could not be found after upload. The image may have been deleted "
                "during the upload, cleaning up the chunks uploaded.")


def store_failure(exc: OSError) -> Exception:
    """The answer to a write the store's disk refused: glance's 413 when it is full, else a 503."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TooLarge(f"Image storage media is full: {exc.strerror}.")
    return ServiceUnavailable(f"The image store could not write the data: {exc.strerror}.",
                              headers={"Retry-After": _RETRY_AFTER})


class ImageStore:
    """The directory of uploaded image files, with glance's image_size_cap."""

    def __init__(self, directory: Path, size_cap: int = IMAGE_SIZE_CAP) -> None:
        self.directory = directory
        self.size_cap = size_cap
        # images this process is taking data for: a second upload of one is glance's 409 at once
        # (glance marks the image `saving`; here the log learns of an upload only when it is done)
        self._uploading: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def under(cls, data_dir: Path, size_cap: int = IMAGE_SIZE_CAP) -> ImageStore:
        """The store of a cloud's data directory."""
        return cls(data_dir / GLANCE_STORE, size_cap)

    def begin(self, image_id: str) -> Upload:
        """Start taking an image's data; Conflict while this process takes it already."""
        with self._lock:
            if image_id in self._uploading:
                raise Conflict("Image status transition from saving to saving is not allowed")
            self._uploading.add(image_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return Upload(self, image_id)
        except OSError as exc:
            self.ended(image_id)
            raise store_failure(exc) from exc
        except BaseException:
            self.ended(image_id)
            raise

    def ended(self, image_id: str) -> None:
        """The upload of `image_id` by this process is over, however it ended."""
        with self._lock:
            self._uploading.discard(image_id)

    def remove(self, image_id: str) -> None:
        """Remove every file of a deleted image (servers booted from one keep their own link)."""
        # an image id is a UUID (glance checks it at create), so it holds no pattern character
        for path in self.directory.glob(f"{uuid.UUID(image_id)}.*"):
            path.unlink(missing_ok=True)


class Upload:
    """One image's data on its way into the store: counted against the cap, hashed (md5 for
    glance's checksum, sha512 for its multihash) and inspected as it is written."""

    def __init__(self, store: ImageStore, image_id: str) -> None:
        self.store = store
        self.image_id = image_id
        self.path = store.directory / f"{uuid.UUID(image_id)}.{uuid.uuid4().hex}"
        self.part = self.path.with_name(self.path.name + ".part")
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._multihash = hashlib.new(HASH_ALGO)
        self._inspection = FormatInspection()
        # readable by the compute host's QEMU, which boots from a link to it; the data directory
        # around it is its owner's alone
        self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)

    def write(self, chunk: bytes) -> None:
        """Store the next chunk; TooLarge past the cap (the caller then discards the upload)."""
        self.size += len(chunk)
        if self.size > self.store.size_cap:
            raise TooLarge(f"The incoming image is too large: the limit is {self.store.size_cap} bytes.")
        self._md5.update(chunk)
        self._multihash.update(chunk)
        self._inspection.feed(chunk)
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise store_failure(exc) from exc

    def finish(self, disk_format: str) -> StoredData:
        """The data whole: inspected (ImageDataRefused when it may not be booted as `disk_format`),
        on disk (fsynced, then renamed into place) and described."""
        virtual_size = self._inspection.verdict(disk_format)
        try:
            os.fsync(self._fd)
            self._close()
            self.part.rename(self.path)
            _fsync_directory(self.path.parent)
        except FileNotFoundError:
            # ImageStore.remove took the part: the image was deleted while its data came in
            raise gone_meanwhile(self.image_id) from None
        except OSError as exc:
            raise store_failure(exc) from exc
        return StoredData(path=self.path, size=self.size, checksum=self._md5.hexdigest(),
                          os_hash_value=self._multihash.hexdigest(), virtual_size=virtual_size)

    def discard(self) -> None:
        """Remove what this upload wrote, stored or not."""
        self._close()
        self.part.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def end(self) -> None:
        """Let the image take another upload; what was stored stays."""
        self._close()
        self.store.ended(self.image_id)


def _fsync_directory(directory: Path) -> None:
    # the rename is durable only once the directory's entry is
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
