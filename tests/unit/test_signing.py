"""Signed events: each writer's key signs what it writes, and a codec with the key ring refuses
anything else (unsigned, unknown key, altered bytes, a writer that may not write the event)."""

from __future__ import annotations

import multiprocessing
import random
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from eventsvm.app.writers import (
    API_TOPICS,
    _service_topics,
    key_dir,
    may_write,
    spawner_writer,
    writer_codec,
    writer_ring,
)
from eventsvm.events import signing
from eventsvm.events.codec import Codec, CodecError, Forged
from eventsvm.events.model import TOPIC_OF, EventType, Topic, new_event
from eventsvm.events.signing import FRAME_SIZE, SigningError, is_signed, rotate, signer
from eventsvm.log.port import Record
from eventsvm.runtime.fold_letters import FORGED, REPLAYED, FoldLetters
from tests.factories import instance_chain

CODEC = Codec()


def role_assigned(user: str = "u-demo", project: str = "p-admin") -> object:
    return new_event(EventType.ROLE_ASSIGNED, f"{user}:{project}",
                     {"user_id": user, "project_id": project, "role": "admin"})


def test_a_writer_signs_and_a_reader_with_the_ring_reads_it(tmp_path: Path) -> None:
    api = writer_codec(tmp_path, "api", CODEC)
    event = role_assigned()
    data = api.encode(event)
    assert is_signed(data) and data[FRAME_SIZE:] == CODEC.encode(event), "the frame wraps the Avro bytes"
    reader = CODEC.keyed(None, writer_ring(tmp_path))
    assert reader.decode(data) == event
    assert CODEC.decode(data) == event, "a codec without a ring still reads a signed event"
    assert reader.peek(data) == (EventType.ROLE_ASSIGNED, 1)


def test_unsigned_unknown_and_altered_events_are_forged(tmp_path: Path) -> None:
    api = writer_codec(tmp_path, "api", CODEC)
    reader = CODEC.keyed(None, writer_ring(tmp_path))
    event = role_assigned()
    with pytest.raises(Forged, match="unsigned"):
        reader.decode(CODEC.encode(event))
    stranger = writer_codec(tmp_path / "elsewhere", "api", CODEC)  # the right name, not a known key
    with pytest.raises(Forged, match="not in the key ring"):
        reader.decode(stranger.encode(event))
    data = bytearray(api.encode(event))
    data[-3] ^= 1
    with pytest.raises(Forged, match="does not match"):
        reader.decode(bytes(data))
    assert issubclass(Forged, CodecError), "every reader skips or letters it as it does garbage"


def test_libsodium_signs_what_cryptography_signs_and_each_verifies_the_other(tmp_path: Path) -> None:
    # the keys stay cryptography's, the signing is libsodium's: the same Ed25519 (RFC 8032 is
    # deterministic), so a log written before the change verifies after it and back
    own = signer(key_dir(tmp_path), "api")
    private = Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex((key_dir(tmp_path) / "api.1.key").read_text().strip()))
    for size in (0, 1, 63, 600, 70_000):
        message = random.Random(size).randbytes(size)
        frame = own.frame(message)
        assert frame[2 + 8:FRAME_SIZE] == private.sign(message)
        own.public.verify(frame[2 + 8:FRAME_SIZE], message)  # cryptography accepts libsodium's
    reader = CODEC.keyed(None, writer_ring(tmp_path))
    encoded = CODEC.encode(role_assigned())
    by_cryptography = own.frame(encoded)[:2 + 8] + private.sign(encoded) + encoded
    assert reader.decode(by_cryptography) == CODEC.decode(encoded)  # libsodium accepts cryptography's


def test_a_process_does_not_verify_again_what_it_signed_but_does_anything_altered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    verified: list[bytes] = []
    real_open = signing.crypto_sign_open

    def counting_open(signed: bytes, public: bytes) -> bytes:
        verified.append(signed)
        return real_open(signed, public)

    monkeypatch.setattr(signing, "crypto_sign_open", counting_open)
    api = writer_codec(tmp_path, "api", CODEC)
    event = role_assigned()
    data = api.encode(event)
    assert api.decode(data) == event and verified == [], "its own frame read back is not verified"
    altered = bytearray(data)
    altered[-3] ^= 1
    with pytest.raises(Forged, match="does not match"):
        api.decode(bytes(altered))
    assert len(verified) == 1
    # another process (a ring of its own) verifies the frame it did not sign
    assert CODEC.keyed(None, writer_ring(tmp_path)).decode(data) == event and len(verified) == 2
    # a key the ring does not hold is vouched for by nobody, not even by the process that signed
    stranger = writer_codec(tmp_path / "elsewhere", "api", CODEC, ring=writer_ring(tmp_path))
    with pytest.raises(Forged, match="not in the key ring"):
        stranger.decode(stranger.encode(event))


def test_only_the_writer_allowed_may_write_an_event(tmp_path: Path) -> None:
    reader = CODEC.keyed(None, writer_ring(tmp_path))
    with pytest.raises(Forged, match="scheduler, which may not write identity.role_assigned"):
        reader.decode(writer_codec(tmp_path, "scheduler", CODEC).encode(role_assigned()))
    requested, authenticated, scheduled, resolved, spawned = instance_chain(random.Random(3))
    host = spawned.body["host"]
    assert may_write("api", requested) is None and may_write("authenticator", authenticated) is None
    assert may_write("scheduler", scheduled) is None and may_write("resolver", resolved) is None
    assert may_write(spawner_writer(host), spawned) is None
    assert may_write("api", spawned) is not None, "the API never reports a guest running"
    assert "not of" in (may_write(spawner_writer("compute-99"), spawned) or ""), "another host's spawner"
    own = writer_codec(tmp_path, spawner_writer(host), CODEC).encode(spawned)
    other = writer_codec(tmp_path, spawner_writer("compute-99"), CODEC).encode(spawned)
    reader = CODEC.keyed(None, writer_ring(tmp_path))  # a ring loaded before the spawners' keys
    assert reader.decode(own) == spawned, "a writer that made its key after the ring was loaded"
    with pytest.raises(Forged, match="spawner of compute-99"):
        reader.decode(other)


def test_a_rotation_keeps_what_older_keys_signed_verifiable(tmp_path: Path) -> None:
    before = writer_codec(tmp_path, "api", CODEC).encode(role_assigned())
    assert rotate(key_dir(tmp_path), "api") == 2
    after = writer_codec(tmp_path, "api", CODEC).encode(role_assigned("u-2"))
    assert before[2:10] != after[2:10], "a new key signs after the rotation"
    reader = CODEC.keyed(None, writer_ring(tmp_path))
    assert reader.decode(before).aggregate_id == "u-demo:p-admin"
    assert reader.decode(after).aggregate_id == "u-2:p-admin"
    keys = key_dir(tmp_path)
    assert sorted(p.name for p in keys.iterdir()) == ["api.1.pub", "api.2.key", "api.2.pub"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in keys.iterdir()} == {0o600}, "the public keys too"


def test_a_bad_writer_name_or_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningError):
        signer(tmp_path, "../api")
    signer(tmp_path, "api")
    (tmp_path / "api.1.key").write_text("not a key")
    with pytest.raises(SigningError, match="api.1.key"):
        signer(tmp_path, "api")


def test_a_fold_letters_a_forged_identity_event_and_never_returns_it(tmp_path: Path) -> None:
    api = writer_codec(tmp_path, "api", CODEC)
    letters = FoldLetters("readmodel", api)
    record = Record("eventsvm.identity", 0, 7, b"k", CODEC.encode(role_assigned()), 0)
    assert letters.decoded(record) is None
    (pending,) = letters._pending
    letter = api.decode(pending.value)  # the letter itself is signed by the fold's writer
    assert letter.body["error_type"] == FORGED and "unsigned" in letter.body["reason"]


def test_a_signed_event_stored_again_elsewhere_is_a_replay_and_a_rebuild_is_not(tmp_path: Path) -> None:
    api = writer_codec(tmp_path, "api", CODEC)
    letters = FoldLetters("readmodel", api)
    data = api.encode(role_assigned())
    first = Record("eventsvm.identity", 0, 3, b"k", data, 0)
    assert letters.decoded(first) is not None
    assert letters.decoded(first) is not None, "the same place read again by a rebuild"
    assert letters.decoded(first._replace(offset=9)) is None
    (pending,) = letters._pending
    letter = api.decode(pending.value)
    assert letter.body["error_type"] == REPLAYED
    assert "already stored at eventsvm.identity:0:3" in letter.body["reason"]


def test_a_fold_keeps_no_id_per_record_of_a_topic_its_service_tolerates_replays_on(tmp_path: Path) -> None:
    billing = writer_codec(tmp_path, "billing", CODEC)
    letters = FoldLetters("billing", billing, ["eventsvm.billing.usage"])
    usage = new_event(EventType.USAGE_CLOSED, "vm-1", {"host": "h0", "ended_at": 5})
    record = Record("eventsvm.billing.usage", 0, 3, b"k", billing.encode(usage), 0)
    assert letters.decoded(record) is not None and letters.decoded(record._replace(offset=9)) is not None
    assert letters._placed == {} and letters._pending == []
    # the other state-only topics are guarded as before, in the same fold
    grant = writer_codec(tmp_path, "api", CODEC).encode(role_assigned())
    identity = Record("eventsvm.identity", 0, 3, b"k", grant, 0)
    assert letters.decoded(identity) is not None and letters.decoded(identity._replace(offset=9)) is None


def test_the_rotation_command_adds_a_key_and_refuses_a_bad_name(tmp_path: Path) -> None:
    from eventsvm.app.cli import main

    assert main(["keys", "rotate-signing", "scheduler", "--data-dir", str(tmp_path)]) == 0
    assert main(["keys", "rotate-signing", "scheduler", "--data-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in key_dir(tmp_path).iterdir()) == [
        "scheduler.1.pub", "scheduler.2.key", "scheduler.2.pub"]
    assert main(["keys", "rotate-signing", "../x", "--data-dir", str(tmp_path)]) != 0


def test_a_move_step_may_come_from_either_end_of_the_move_only() -> None:
    step = new_event(EventType.INSTANCE_MOVE_STEP, "i-1", {"action": "resize", "step": "prepared",
                     "host": "compute-2", "source_host": "compute-1", "dest_host": "compute-2"})
    assert may_write(spawner_writer("compute-1"), step) is None, "the source hands over to the destination"
    assert may_write(spawner_writer("compute-2"), step) is None
    assert may_write(spawner_writer("compute-3"), step) is not None
    assert may_write("scheduler", step) is None, "the scheduler picks the destination"


_WRITERS = ("api", "seed", "authenticator", "scheduler", "resolver", "billing", "nobody",
            spawner_writer("compute-1"), spawner_writer("compute-2"))
_HOST_NAMES = st.sampled_from(["compute-1", "Compute-1", "COMPUTE-2", "compute-2", "compute-3", ""])


def _policy_as_written(writer: str, event: Any) -> bool:
    """The write policy in its plain words: the writer's topics (a dead letter is anyone's), and
    a spawner only for an event naming no host or its own among the ones it names."""
    topic = TOPIC_OF[event.type]
    if topic == Topic.DEAD_LETTER:
        return True
    kind = "spawner" if writer.startswith("spawner-") else writer
    outputs = {"api": API_TOPICS, "seed": API_TOPICS}.get(kind) or _service_topics().get(kind, frozenset())
    if topic not in outputs:
        return False
    if kind != "spawner":
        return True
    body = event.body
    named = {body[f].lower() for f in ("host", "source_host", "dest_host") if isinstance(body.get(f), str)}
    if event.type in (EventType.HOST_REGISTERED, EventType.HOST_UPDATED):
        named.add(str(body.get("name") or event.aggregate_id).lower())
    return not named or writer.removeprefix("spawner-") in named


@settings(max_examples=300, deadline=None)
@given(writer=st.sampled_from(_WRITERS), kind=st.sampled_from(list(EventType)),
       hosts=st.dictionaries(st.sampled_from(["host", "source_host", "dest_host", "name"]),
                             _HOST_NAMES | st.none() | st.integers(0, 3), max_size=4))
def test_the_write_policy_is_its_rule_for_any_writer_event_and_hosts(writer: str, kind: EventType,
                                                                      hosts: dict[str, Any]) -> None:
    event = new_event(kind, "i-1", dict(hosts))
    assert (may_write(writer, event) is None) == _policy_as_written(writer, event), may_write(writer, event)


def _sign_one(directory: str, start: object, out: object) -> None:
    """A process starting as a writer: its signer (made with its first key if there is none), and
    what it signs, put on `out`."""
    start.wait()  # type: ignore[attr-defined]
    codec = writer_codec(Path(directory), "api", CODEC)
    out.put(codec.encode(role_assigned()))  # type: ignore[attr-defined]


def test_two_processes_starting_as_one_writer_at_once_share_one_key(tmp_path: Path) -> None:
    # two API processes on one data dir start together: both find no key; one makes it, and what
    # the other signs must verify too (before, the second key replaced the first's public half)
    context = multiprocessing.get_context("spawn")
    for attempt in range(4):
        directory = tmp_path / f"keys-{attempt}"
        start, out = context.Barrier(3), context.Queue()
        processes = [context.Process(target=_sign_one, args=(str(directory), start, out)) for _ in range(3)]
        for process in processes:
            process.start()
        signed = [out.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        reader = CODEC.keyed(None, writer_ring(directory))
        assert [reader.decode(data).type for data in signed] == [EventType.ROLE_ASSIGNED] * 3
        assert sorted(p.name for p in key_dir(directory).iterdir()) == ["api.1.key", "api.1.pub"]


def test_the_verified_frames_a_process_remembers_are_the_newest_and_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "_VERIFIED_GENERATION", 4)
    frames = [writer_codec(tmp_path, "api", CODEC).encode(role_assigned(f"u{i}")) for i in range(20)]
    ring = writer_ring(tmp_path)
    verified: list[bytes] = []
    real_open = signing.crypto_sign_open
    monkeypatch.setattr(signing, "crypto_sign_open", lambda s, k: verified.append(s) or real_open(s, k))
    for frame in frames:
        ring.writer_of(frame)
    assert len(verified) == 20
    assert len(ring._verified) + len(ring._verified_before) <= 8
    for frame in frames[-4:]:  # read again by another fold of the process, moments later: not verified
        ring.writer_of(frame)
    assert len(verified) == 20
    ring.writer_of(frames[0])  # long since forgotten: verified again
    assert len(verified) == 21
