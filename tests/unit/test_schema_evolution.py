"""Schema evolution is a promise: every released schema version stays readable by today's readers.

Each test walks schemas/ itself, so a new version or a new event type is covered without editing
this file.
"""

from __future__ import annotations

import io
import random
import re
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer

from eventsvm.events.codec import MARKER, Codec, default_codec
from eventsvm.events.model import EventType, new_event
from eventsvm.scheduler.claims import Claim, claim_in
from tests.factories import instance_chain, random_datum

CODEC = default_codec()
RELEASED = [(t, v) for t in EventType for v in CODEC.versions(t)]
SECRET_NAME = re.compile(r"password|passwd|token|secret|private_key|credential", re.IGNORECASE)
# Fields that name a secret on purpose: they hold its hash or its audit id, never the secret.
ALLOWED_SECRET_NAMES = {"password_hash", "token_audit_id", "token_chain_audit_id", "audit_id"}


def _resolve(schema: Any, names: dict[str, Any]) -> Any:
    while isinstance(schema, str) and schema in names:
        schema = names[schema]
    if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
        return _resolve(schema["type"], names)
    if isinstance(schema, dict) and schema["type"] in names:
        return _resolve(schema["type"], names)
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    return schema if isinstance(schema, str) else str(schema["type"])


def _branch_for(value: Any, branches: list[Any], names: dict[str, Any]) -> Any:
    """The union branch a value was written with (our unions are null plus one type)."""
    for branch in branches:
        if (value is None) == (_kind(_resolve(branch, names)) == "null"):
            return branch
    raise AssertionError(f"no branch for {value!r}")


def expected_after_resolution(
    value: Any, writer: Any, w_names: dict[str, Any], reader: Any, r_names: dict[str, Any]
) -> Any:
    """What a reader must see for `value` written with `writer`: fields kept, removed fields
    dropped, added fields at their defaults."""
    writer, reader = _resolve(writer, w_names), _resolve(reader, r_names)
    if isinstance(writer, list):
        writer = _resolve(_branch_for(value, writer, w_names), w_names)
    if isinstance(reader, list):
        if value is None:
            return None
        reader = _resolve(next(b for b in reader if _kind(_resolve(b, r_names)) == _kind(writer)), r_names)
    kind = _kind(reader)
    if kind == "record":
        written = {f["name"]: f for f in writer["fields"]}
        return {
            f["name"]: expected_after_resolution(value[f["name"]], written[f["name"]]["type"], w_names,
                                                 f["type"], r_names)
            if f["name"] in written else f["default"]
            for f in reader["fields"]
        }
    if kind == "array":
        items = writer["items"], reader["items"]
        return [expected_after_resolution(v, items[0], w_names, items[1], r_names) for v in value]
    if kind == "map":
        return {k: expected_after_resolution(v, writer["values"], w_names, reader["values"], r_names)
                for k, v in value.items()}
    return value


def _encode_with(codec: Codec, event_type: EventType, version: int, record: dict[str, Any]) -> bytes:
    released = codec.schema(event_type, version)
    stream = io.BytesIO()
    stream.write(MARKER + released.fingerprint)
    schemaless_writer(stream, codec.parsed_schema(released).parsed, record)
    return stream.getvalue()


@pytest.mark.parametrize(("event_type", "version"), RELEASED, ids=[f"{t}-v{v}" for t, v in RELEASED])
def test_current_reader_reads_every_released_version(event_type: EventType, version: int) -> None:
    writer = CODEC.parsed_schema(CODEC.schema(event_type, version))
    reader = CODEC.parsed_schema(CODEC.current(event_type))
    rng = random.Random(f"{event_type}-{version}")
    for _ in range(25):
        record = random_datum(writer.parsed, writer.names, rng)
        event = CODEC.decode(_encode_with(CODEC, event_type, version, record))
        expected = expected_after_resolution(record, writer.parsed, writer.names, reader.parsed, reader.names)
        assert event.type == event_type
        assert {name: getattr(event, name) for name in expected} == expected


def test_requested_v1_events_gain_the_v2_defaults() -> None:
    v1 = CODEC.parsed_schema(CODEC.schema(EventType.INSTANCE_REQUESTED, 1))
    record = random_datum(v1.parsed, v1.names, random.Random(3))
    event = CODEC.decode(_encode_with(CODEC, EventType.INSTANCE_REQUESTED, 1, record))
    assert event.body["description"] is None and event.body["tags"] == []
    assert event.body["access_ipv4"] is None and event.body["access_ipv6"] is None
    assert event.body["token_chain_audit_id"] is None
    assert event.body["name"] == record["body"]["name"]


def _fields(schema: Any, names: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Every record field reachable from `schema`, by dotted path."""
    schema = _resolve(schema, names)
    out: dict[str, Any] = {}
    if isinstance(schema, list):
        for branch in schema:
            out.update(_fields(branch, names, path))
    elif _kind(schema) == "record":
        for f in schema["fields"]:
            out[f"{path}{f['name']}"] = f
            out.update(_fields(f["type"], names, f"{path}{f['name']}."))
    elif _kind(schema) == "array":
        out.update(_fields(schema["items"], names, f"{path}[]."))
    elif _kind(schema) == "map":
        out.update(_fields(schema["values"], names, f"{path}{{}}."))
    return out


def _shape(schema: Any, names: dict[str, Any]) -> Any:
    """The type of a field without its record contents (those are compared field by field)."""
    schema = _resolve(schema, names)
    if isinstance(schema, list):
        return [_shape(b, names) for b in schema]
    kind = _kind(schema)
    if kind in ("array", "map"):
        return [kind, _shape(schema["items" if kind == "array" else "values"], names)]
    if kind in ("enum", "fixed"):
        return [kind, schema.get("symbols"), schema.get("size")]
    return kind


@pytest.mark.parametrize("event_type", [t for t in EventType if len(CODEC.versions(t)) > 1])
def test_later_versions_only_add_fields_with_defaults(event_type: EventType) -> None:
    """Old events stay readable: a later version may add a field with a default or drop one, but
    never change a field's type or add one without a default.

    The fields of a record that is itself added (with a default) need none of their own: an old
    event lacks the whole record, so a reader takes the record's default and never looks inside."""
    versions = CODEC.versions(event_type)
    assert versions == list(range(1, len(versions) + 1)), "versions are numbered 1, 2, 3 ... without gaps"
    for older, newer in zip(versions, versions[1:], strict=False):
        old = CODEC.parsed_schema(CODEC.schema(event_type, older))
        new = CODEC.parsed_schema(CODEC.schema(event_type, newer))
        old_fields, new_fields = _fields(old.parsed, old.names), _fields(new.parsed, new.names)
        for path, field in new_fields.items():
            if path in old_fields:
                assert _shape(field["type"], new.names) == _shape(old_fields[path]["type"], old.names), path
            elif not _inside_added(path, new_fields, old_fields):
                assert "default" in field, f"v{newer} adds {path} without a default"


def _inside_added(path: str, new_fields: dict[str, Any], old_fields: dict[str, Any]) -> bool:
    """Whether a field enclosing `path` is new in this version."""
    parts = path.split(".")
    enclosing = (".".join(parts[:i]) for i in range(1, len(parts)))
    return any(p in new_fields and p not in old_fields for p in enclosing)


def test_adding_a_record_needs_no_defaults_inside_it_but_adding_a_plain_field_does() -> None:
    old = {"body.spec": {}, "body.spec.name": {}}
    new = {**old, "body.claim": {"default": None}, "body.claim.vcpus": {}, "body.spec.size": {}}
    assert _inside_added("body.claim.vcpus", new, old)
    assert not _inside_added("body.spec.size", new, old)
    assert not _inside_added("body.claim", new, old)


def test_every_event_type_has_a_released_schema() -> None:
    assert {t for t, _ in RELEASED} == set(EventType)


def test_no_schema_field_is_named_like_a_secret() -> None:
    """The log is permanent and widely readable: identities, hashes and audit ids only."""
    offending = []
    for event_type, version in RELEASED:
        parsed = CODEC.parsed_schema(CODEC.schema(event_type, version))
        for path in _fields(parsed.parsed, parsed.names):
            name = path.rsplit(".", 1)[-1]
            if SECRET_NAME.search(name) and name not in ALLOWED_SECRET_NAMES:
                offending.append(f"{event_type} v{version}: {path}")
    assert offending == []


def _boot_from_volume(record: dict[str, Any]) -> dict[str, Any]:
    spec = record["body"]["spec"]
    spec["flavor"].update(vcpus=2, ram_mb=4096, disk_gb=40, ephemeral_gb=0, swap_mb=0)
    spec["block_devices"] = [{"source_type": "volume", "destination_type": "volume", "uuid": "v-1",
                              "volume_size": None, "boot_index": 0, "delete_on_termination": False}]
    return record


def test_resolved_v1_events_carry_no_claim_and_readers_compute_it_from_the_spec() -> None:
    v1 = CODEC.parsed_schema(CODEC.schema(EventType.INSTANCE_RESOURCES_RESOLVED, 1))
    record = _boot_from_volume(random_datum(v1.parsed, v1.names, random.Random(5)))
    event = CODEC.decode(_encode_with(CODEC, EventType.INSTANCE_RESOURCES_RESOLVED, 1, record))
    assert event.body["claim"] is None
    assert claim_in(event.body) == Claim(vcpus=2, ram_mb=4096, disk_gb=0)


def test_spawned_v1_events_carry_no_claim() -> None:
    v1 = CODEC.parsed_schema(CODEC.schema(EventType.INSTANCE_SPAWNED, 1))
    record = random_datum(v1.parsed, v1.names, random.Random(6))
    event = CODEC.decode(_encode_with(CODEC, EventType.INSTANCE_SPAWNED, 1, record))
    assert event.body["claim"] is None and event.body["host"] == record["body"]["host"]


@pytest.mark.parametrize("event_type", [EventType.INSTANCE_RESOURCES_RESOLVED, EventType.INSTANCE_SPAWNED])
def test_a_v1_reader_reads_v2_events_and_steps_over_the_claim(event_type: EventType) -> None:
    """A service not yet upgraded (reader schema v1) still reads what an upgraded one writes."""
    [event] = [e for e in instance_chain(random.Random(7)) if e.type == event_type]
    assert event.body["claim"] is not None
    data = CODEC.encode(event)
    written = CODEC.peek(data)[1]
    assert written >= 2
    v1, current = (CODEC.parsed_schema(CODEC.schema(event_type, v)) for v in (1, written))
    stream = io.BytesIO(data[len(MARKER) + 8:])
    old = schemaless_reader(stream, current.parsed, v1.parsed)
    assert "claim" not in old["body"]
    expected = {k: v for k, v in event.body.items() if k != "claim"}
    if "spec" in expected:  # resources_resolved v3's spec also says whether it is an unshelve
        expected["spec"] = {k: v for k, v in expected["spec"].items() if k != "unshelve"}
    assert old["body"] == expected
    assert old["event_id"] == event.event_id


# scheduled v2, resources_resolved v3 and failed v3 add `unshelve` to the request spec they carry
_UNSHELVE_SPEC = [(EventType.INSTANCE_SCHEDULED, 1), (EventType.INSTANCE_RESOURCES_RESOLVED, 2),
                  (EventType.INSTANCE_FAILED, 2)]


@pytest.mark.parametrize(("event_type", "before"), _UNSHELVE_SPEC)
def test_events_written_before_the_unshelve_flag_read_as_a_boot(event_type: EventType, before: int) -> None:
    old = CODEC.parsed_schema(CODEC.schema(event_type, before))
    record = random_datum(old.parsed, old.names, random.Random(11))
    if record["body"].get("spec") is None:  # failed's spec may be null; an unshelve's never is
        [scheduled] = [e for e in instance_chain(random.Random(8)) if e.type == EventType.INSTANCE_SCHEDULED]
        record["body"]["spec"] = scheduled.body["spec"]
    event = CODEC.decode(_encode_with(CODEC, event_type, before, record))
    assert event.body["spec"]["unshelve"] is False


@pytest.mark.parametrize(("event_type", "before"), _UNSHELVE_SPEC)
def test_a_reader_without_the_flag_reads_an_unshelve_placement(event_type: EventType, before: int) -> None:
    """A service not yet upgraded still reads an unshelve's events, as the boot steps they are."""
    [sample] = [e for e in instance_chain(random.Random(9)) if e.type == EventType.INSTANCE_SCHEDULED]
    body = {**sample.body, "spec": {**sample.body["spec"], "unshelve": True}}
    if event_type == EventType.INSTANCE_FAILED:
        body = {"stage": "spawn", "reason": "libvirt said no", "code": 500, "retryable": True, "final": False,
                "host": "h1", "attempt": 1, "details": None, "alternates": ["h2"], "spec": body["spec"],
                "reservation_id": None}
    elif event_type == EventType.INSTANCE_RESOURCES_RESOLVED:
        [resolved] = [e for e in instance_chain(random.Random(9)) if e.type == event_type]
        body = {**resolved.body, "spec": body["spec"]}
    event = new_event(event_type, sample.aggregate_id, body)
    data = CODEC.encode(event)
    assert CODEC.decode(data).body["spec"]["unshelve"] is True
    old, current = (CODEC.parsed_schema(CODEC.schema(event_type, v)) for v in (before, CODEC.peek(data)[1]))
    read = schemaless_reader(io.BytesIO(data[len(MARKER) + 8:]), current.parsed, old.parsed)
    assert "unshelve" not in read["body"]["spec"]
    assert read["body"]["spec"]["image_id"] == body["spec"]["image_id"]
