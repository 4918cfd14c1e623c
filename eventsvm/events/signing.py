"""Who wrote an event: every writing service signs what it appends with its own Ed25519 key.

A signed payload is a frame around the Avro single-object encoding:

    E5 01 | key id (8 bytes) | Ed25519 signature (64 bytes) | the event's Avro bytes (C3 01 ...)

The signature covers exactly the Avro bytes after it; the key id is the first 8 bytes of the
SHA-256 of the signing key's raw public key. The frame is what is stored, so the chain hash
(`event_hash`) covers the signature too. Events written before signing existed (a bare C3 01
payload) still decode; a reader given a key ring refuses them, as it refuses a key it does not know,
a signature that does not verify, and a writer that may not write that event (see `WritePolicy`).

The private keys live in a directory outside the log (`<data dir>/signing-keys`, 0700, files
0600): one `<writer>.<n>.key` per writer, the highest n signing. A rotation adds n+1 and removes
the older private keys; every `<writer>.<n>.pub` stays, so events signed before a rotation still
verify. The public keys are the key ring every reader loads (docs/decisions.md, "Signed events").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from eventsvm.events.model import Event

SIGNED_MARKER = b"\xe5\x01"
KEY_ID_SIZE = 8
SIGNATURE_SIZE = 64
FRAME_SIZE = len(SIGNED_MARKER) + KEY_ID_SIZE + SIGNATURE_SIZE
KEY_DIR_MODE = 0o700
KEY_FILE_MODE = 0o600
_WRITER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_KEY_FILE = re.compile(r"^(?P<writer>[a-z0-9][a-z0-9._-]{0,99})\.(?P<index>[0-9]+)\.(?P<kind>key|pub)$")
# verified frames remembered per process, in two generations of this many each (the older one
# dropped when the newer fills): the folds of one process that read an event read it within moments
# of each other, so the newest ~32k-64k frames are enough, and the cache stays a few MB (it was
# 200,000 frames cleared when full: ~18 MB, and a run had to pass it to see memory level off)
_VERIFIED_GENERATION = 32_768


class SigningError(Exception):
    """A key directory that cannot be used (a bad writer name, a file that is not a key)."""


def key_id(public: Ed25519PublicKey) -> bytes:
    """The 8 bytes naming a public key in a signed frame."""
    return hashlib.sha256(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).digest()[:KEY_ID_SIZE]


def is_signed(data: bytes) -> bool:
    """True when `data` is a signed frame (whether or not its signature is any good)."""
    return data[:2] == SIGNED_MARKER


def unsigned(data: bytes) -> bytes:
    """The Avro bytes of a payload, signed or not, without checking anything."""
    return data[FRAME_SIZE:] if data[:2] == SIGNED_MARKER else data


class Signer:
    """One writer's current private key: frames the bytes the codec encodes.

    The keys are cryptography's objects (the key files, the key ids); signing and verifying are
    libsodium's (PyNaCl), which makes the same Ed25519 signatures (RFC 8032 is deterministic, and
    tests hold the two byte-identical) in half the time here: 28 against 53 µs to sign, 64 against
    126 to verify, paid by every process on every event it writes or reads (docs/decisions.md)."""

    def __init__(self, writer: str, private: Ed25519PrivateKey) -> None:
        self.writer = writer
        self.public = private.public_key()
        self._prefix = SIGNED_MARKER + key_id(self.public)
        # libsodium's secret key: the 32-byte seed cryptography holds, followed by the public key
        self._secret = crypto_sign_seed_keypair(private.private_bytes_raw())[1]

    def frame(self, encoded: bytes) -> bytes:
        """`encoded` (an Avro single-object payload) with this writer's signature in front."""
        # crypto_sign answers signature + message: the signature is its first 64 bytes
        return self._prefix + crypto_sign(encoded, self._secret)[:SIGNATURE_SIZE] + encoded


# May `writer` write `event`? None when it may, else why not.
WritePolicy = Callable[[str, Event], "str | None"]


def anyone(_writer: str, _event: Event) -> str | None:
    """The policy that lets every known key write every event."""
    return None


class ForgedEvent(ValueError):
    """A payload whose writer cannot be trusted: unsigned, signed by an unknown key, a signature that
    does not verify, or a writer that may not write this event. Raised again as a CodecError
    (eventsvm.events.codec.Forged) by the codec, so every fold that skips or dead-letters an
    undecodable record does the same with this one."""


@dataclass(frozen=True)
class TrustedKey:
    """One public key of the ring and the writer it belongs to."""

    writer: str
    index: int
    public: Ed25519PublicKey
    raw: bytes = field(init=False, repr=False, compare=False)  # the 32 bytes libsodium verifies with

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", self.public.public_bytes_raw())


class KeyRing:
    """The public keys readers trust, by key id, and what each writer may write."""

    def __init__(self, keys: list[TrustedKey], policy: WritePolicy = anyone,
                 source: Path | None = None) -> None:
        self._keys = {key_id(k.public): k for k in keys}
        self.policy = policy
        self._source = source
        self._loaded = _stamp(source) if source is not None else None
        self._verified: dict[bytes, str] = {}
        self._verified_before: dict[bytes, str] = {}  # the previous generation
        self._lock = threading.Lock()

    def _key(self, kid: bytes) -> TrustedKey | None:
        key = self._keys.get(kid)
        if key is None and self._source is not None:
            # a writer started after this reader (a new host's spawner, a rotation) may have made
            # its key since: read the directory again, but only when it changed
            stamp = _stamp(self._source)
            if stamp != self._loaded:
                self._loaded = stamp
                self._keys = {key_id(k.public): k for k in _public_keys(self._source)}
                key = self._keys.get(kid)
        return key

    def __len__(self) -> int:
        return len(self._keys)

    def writers(self) -> set[str]:
        """Every writer with a trusted key."""
        return {k.writer for k in self._keys.values()}

    def writer_of(self, data: bytes) -> str:
        """The writer whose key signed `data` (the Avro bytes after the frame); ForgedEvent when
        it is not signed, or not by a trusted key, or the signature does not verify."""
        # a frame already verified by another fold of this process (the whole frame is the key:
        # a known signature in front of other bytes is a different frame)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        writer = self._verified.get(digest) or self._verified_before.get(digest)
        if writer is not None:
            return writer
        key = self._named_key(data)
        try:
            # after the key id comes libsodium's signed message as it is: signature, then bytes
            crypto_sign_open(data[2 + KEY_ID_SIZE:], key.raw)
        except BadSignatureError:
            raise ForgedEvent(f"the signature of {key.writer}'s key {key.index} does not match the "
                              "event's bytes") from None
        self._remember(digest, key.writer)
        return key.writer

    def signed_here(self, frame: bytes) -> None:
        """`frame` was just signed in this process: the fold of this process that reads it back
        (a service folds what it wrote) finds it verified. Only the very bytes signed here are
        vouched for (a frame altered in the log has another digest and is verified), and only
        when the ring trusts the signing key, as every other reader would."""
        key = self._keys.get(frame[2:2 + KEY_ID_SIZE]) if frame[:2] == SIGNED_MARKER else None
        if key is not None:
            self._remember(hashlib.blake2b(frame, digest_size=16).digest(), key.writer)

    def _remember(self, digest: bytes, writer: str) -> None:
        with self._lock:
            if len(self._verified) >= _VERIFIED_GENERATION:
                self._verified_before, self._verified = self._verified, {}
            self._verified[digest] = writer

    def named_writer(self, data: bytes) -> str:
        """The writer whose trusted key the frame of `data` names, its signature NOT verified: only
        for a record a verified seal vouches for (eventsvm.projections.seal), whose bytes are the
        ones a reader verified before. ForgedEvent when unsigned or the key is not in the ring."""
        # once an event of a sealed replay: a known key is one lookup, the rest as _named_key
        framed = data[:2] == SIGNED_MARKER and len(data) >= FRAME_SIZE
        key = self._keys.get(data[2:2 + KEY_ID_SIZE]) if framed else None
        return (self._named_key(data) if key is None else key).writer

    def _named_key(self, data: bytes) -> TrustedKey:
        if data[:2] != SIGNED_MARKER:
            raise ForgedEvent("unsigned: no writer's signature")
        if len(data) < FRAME_SIZE:
            raise ForgedEvent(f"signed frame of {len(data)} bytes is shorter than {FRAME_SIZE}")
        kid = data[2:2 + KEY_ID_SIZE]
        key = self._key(kid)
        if key is None:
            raise ForgedEvent(f"signed by key {kid.hex()}, which is not in the key ring")
        return key

    def check(self, writer: str, event: Event) -> None:
        """ForgedEvent when `writer` may not write `event`."""
        refusal = self.policy(writer, event)
        if refusal is not None:
            raise ForgedEvent(f"written by {writer}, which {refusal}")


# -- the key directory ------------------------------------------------------------------------
def _check_writer(writer: str) -> None:
    if not _WRITER.match(writer):
        raise SigningError(f"{writer!r} is not a writer name (lower-case letters, digits, . _ -)")


def _indexes(key_dir: Path, writer: str, kind: str) -> list[int]:
    try:
        names = os.listdir(key_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _KEY_FILE.match(name)
        if match and match["writer"] == writer and match["kind"] == kind:
            found.append(int(match["index"]))
    return sorted(found)


def _ensure_dir(key_dir: Path) -> None:
    if not key_dir.is_dir():
        key_dir.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
    # mkdir's mode is filtered by the umask; the private keys must not be readable by anyone else
    key_dir.chmod(KEY_DIR_MODE)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@contextlib.contextmanager
def _key_dir_locked(key_dir: Path) -> Iterator[None]:
    """Hold the key directory's lock: two processes starting at once (two API processes on one
    data dir) must not both make a writer's first key, or the one whose public key is replaced
    signs what no reader can verify (its events dead-lettered as forged)."""
    fd = os.open(key_dir, os.O_RDONLY)  # the directory itself: no lock file among the keys
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _new_key(key_dir: Path, writer: str, index: int) -> None:
    private = Ed25519PrivateKey.generate()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    # the public key first: a signer never signs with a key no reader can know
    _write(key_dir / f"{writer}.{index}.pub", raw_public.hex().encode(), KEY_FILE_MODE)
    _write(key_dir / f"{writer}.{index}.key", private.private_bytes_raw().hex().encode(), KEY_FILE_MODE)


def signer(key_dir: Path | str, writer: str) -> Signer:
    """`writer`'s signer, from its newest key; the first key is made when it has none."""
    return signers(key_dir, [writer])[writer]


def signers(key_dir: Path | str, writers: Iterable[str]) -> dict[str, Signer]:
    """Each of `writers`' signers, as `signer` gives them, reading the key directory once (a pool
    of ten thousand hosts' spawners would otherwise list it once a host)."""
    wanted = list(dict.fromkeys(writers))
    for writer in wanted:
        _check_writer(writer)
    directory = Path(key_dir)
    _ensure_dir(directory)
    with _key_dir_locked(directory):
        held = _all_indexes(directory)
        for writer in wanted:
            if not held.get((writer, "key")):
                _new_key(directory, writer, max(held.get((writer, "pub"), []), default=0) + 1)
        held = _all_indexes(directory)
        paths = {writer: directory / f"{writer}.{max(held[(writer, 'key')])}.key" for writer in wanted}
        texts = {writer: path.read_text().strip() for writer, path in paths.items()}
    found = {}
    for writer, text in texts.items():
        try:
            found[writer] = Signer(writer, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text)))
        except ValueError:
            # name the file, never its content: it is a secret even when malformed
            raise SigningError(f"{paths[writer]} is not an Ed25519 private key") from None
    return found


def _all_indexes(key_dir: Path) -> dict[tuple[str, str], list[int]]:
    """Every key file's index, by (writer, kind)."""
    found: dict[tuple[str, str], list[int]] = {}
    try:
        names = os.listdir(key_dir)
    except FileNotFoundError:
        return found
    for name in names:
        match = _KEY_FILE.match(name)
        if match:
            found.setdefault((match["writer"], match["kind"]), []).append(int(match["index"]))
    return found


def rotate(key_dir: Path | str, writer: str) -> int:
    """Give `writer` a new signing key and drop its older private keys; their public keys stay in
    the ring, so what they signed still verifies. Returns the new key's index. A process signs
    with the key it loaded at start, so restart the writer to sign with the new one."""
    _check_writer(writer)
    directory = Path(key_dir)
    _ensure_dir(directory)
    with _key_dir_locked(directory):
        index = max(_indexes(directory, writer, "pub") + _indexes(directory, writer, "key"), default=0) + 1
        _new_key(directory, writer, index)
        for old in _indexes(directory, writer, "key"):
            if old < index:
                (directory / f"{writer}.{old}.key").unlink(missing_ok=True)
    return index


def key_ring(key_dir: Path | str, policy: WritePolicy = anyone) -> KeyRing:
    """Every public key in `key_dir`, each trusted for its writer (read again when an unknown key
    id comes, so a writer that starts later is trusted too)."""
    directory = Path(key_dir)
    return KeyRing(_public_keys(directory), policy, directory)


def _stamp(directory: Path) -> int | None:
    try:
        return os.stat(directory).st_mtime_ns
    except FileNotFoundError:
        return None


def _public_keys(directory: Path) -> list[TrustedKey]:
    keys: list[TrustedKey] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for name in names:
        match = _KEY_FILE.match(name)
        if not match or match["kind"] != "pub":
            continue
        try:
            public = Ed25519PublicKey.from_public_bytes(bytes.fromhex((directory / name).read_text().strip()))
        except ValueError:
            raise SigningError(f"{directory / name} is not an Ed25519 public key") from None
        keys.append(TrustedKey(match["writer"], int(match["index"]), public))
    return keys
