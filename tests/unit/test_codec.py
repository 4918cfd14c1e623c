"""The Avro codec: round trips, the single-object header, rejection of bad payloads, fingerprints."""

from __future__ import annotations

import io
import json
import random

import pytest
from fastavro import schemaless_reader, schemaless_writer

from eventsvm.events.codec import HEADER_SIZE, MARKER, Codec, CodecError, decode, default_codec, encode
from eventsvm.events.model import Event, EventType
from tests.factories import instance_chain, random_datum, requested_event, sample_event

ENVELOPE = ("event_id", "aggregate_id", "sequence", "request_id", "causation_id", "user_id", "project_id",
            "occurred_at", "prev_hash", "body")


def as_record(event: Event) -> dict:
    return {name: getattr(event, name) for name in ENVELOPE}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_type_round_trips(event_type: EventType) -> None:
    event = sample_event(event_type)
    data = encode(event)
    assert data[:2] == MARKER
    assert decode(data) == event


@pytest.mark.parametrize("event_type", list(EventType))
def test_bytes_match_fastavro_and_fastavro_reads_them(codec: Codec, event_type: EventType) -> None:
    """The compiled writer and reader agree with fastavro, the reference implementation."""
    rng = random.Random(f"diff-{event_type}")
    parsed = codec.parsed_schema(codec.current(event_type))
    for _ in range(40):
        record = random_datum(parsed.parsed, parsed.names, rng)
        reference = io.BytesIO()
        schemaless_writer(reference, parsed.parsed, record)
        event = Event(event_type, *(record[name] for name in ENVELOPE))
        data = codec.encode(event)
        assert data[HEADER_SIZE:] == reference.getvalue()
        assert codec.decode(data) == event
        assert schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), parsed.parsed, None) == record


def test_decoding_keeps_ids_as_strings_and_times_as_integer_ms() -> None:
    spawned = decode(encode(instance_chain()[-1]))
    assert type(spawned.event_id) is str and type(spawned.aggregate_id) is str
    assert type(spawned.occurred_at) is int and type(spawned.body["launched_at"]) is int
    assert type(spawned.body["flavor"]) is dict and type(spawned.body["addresses"]) is list


def test_every_prefix_of_a_payload_is_rejected() -> None:
    data = encode(instance_chain()[3])  # resources_resolved, the largest boot event
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:cut])


def test_trailing_bytes_are_rejected() -> None:
    data = encode(requested_event())
    for extra in (b"\x00", b"\x02ab", data):
        with pytest.raises(CodecError):
            decode(data + extra)


def test_bad_marker_and_unknown_fingerprint_are_rejected() -> None:
    data = encode(requested_event())
    with pytest.raises(CodecError, match="marker"):
        decode(b"\xc3\x02" + data[2:])
    with pytest.raises(CodecError, match="fingerprint"):
        decode(data[:2] + bytes(8) + data[10:])
    with pytest.raises(CodecError, match="shorter"):
        decode(b"")


def test_garbage_never_escapes_as_another_error_or_half_an_event() -> None:
    rng = random.Random(7)
    good = encode(instance_chain()[2])
    header = good[:HEADER_SIZE]
    for _ in range(3000):
        body = bytearray(good[HEADER_SIZE:])
        for _ in range(rng.randrange(1, 6)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        for payload in (header + bytes(body), header + rng.randbytes(rng.randrange(400)), rng.randbytes(50)):
            try:
                event = decode(payload)
            except CodecError:
                continue
            # a mutation can still be a valid encoding; then it must be a whole, valid event
            assert decode(encode(event)) == event


def test_an_event_that_does_not_fit_its_schema_is_refused_without_echoing_values() -> None:
    event = requested_event()
    event.body = {**event.body, "name": 42}
    with pytest.raises(CodecError, match="instance.requested"):
        encode(event)
    del event.body["name"]
    with pytest.raises(CodecError, match="name"):
        encode(event)
    event = requested_event(metadata={"note": 7})  # type: ignore[dict-item]
    with pytest.raises(CodecError):
        encode(event)


def test_missing_fields_with_defaults_take_them() -> None:
    event = requested_event()
    for name in ("description", "tags", "metadata", "key_name"):
        del event.body[name]
    back = decode(encode(event)).body
    assert (back["description"], back["tags"], back["metadata"], back["key_name"]) == (None, [], {}, None)


def test_old_writer_is_read_by_the_current_reader(codec: Codec) -> None:
    old = codec.schema(EventType.INSTANCE_REQUESTED, 1)
    parsed = codec.parsed_schema(old)
    event = requested_event()
    record = as_record(event)
    later = ("description", "tags", "access_ipv4", "access_ipv6", "token_chain_audit_id",
             "reservation_id", "reservation_size")  # v2 to v5
    record["body"] = {k: v for k, v in event.body.items() if k not in later}
    stream = io.BytesIO()
    stream.write(MARKER + old.fingerprint)
    schemaless_writer(stream, parsed.parsed, record)
    back = codec.decode(stream.getvalue())
    assert codec.peek(stream.getvalue()) == (EventType.INSTANCE_REQUESTED, 1)
    assert back.body == {**record["body"], "description": None, "tags": [], "access_ipv4": None,
                         "access_ipv6": None, "token_chain_audit_id": None, "reservation_id": None,
                         "reservation_size": 1}
    assert back.event_id == event.event_id and back.occurred_at == event.occurred_at
    with pytest.raises(CodecError):
        codec.decode(stream.getvalue()[:-1])
    with pytest.raises(CodecError):
        codec.decode(stream.getvalue() + b"\x00")


def test_versions_and_peek(codec: Codec) -> None:
    assert codec.versions(EventType.INSTANCE_REQUESTED) == [1, 2, 3, 4, 5]
    assert codec.versions(EventType.INSTANCE_SPAWNED) == [1, 2]
    assert codec.versions(EventType.INSTANCE_SCHEDULED) == [1, 2]
    data = encode(requested_event())
    assert codec.peek(data) == (EventType.INSTANCE_REQUESTED, 5)
    assert data[2:HEADER_SIZE] == codec.fingerprint(EventType.INSTANCE_REQUESTED, 5)


# --- fingerprints, from the Avro specification, independent of fastavro ---------------------------

CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


def crc64_avro(data: bytes) -> int:
    """The spec's Rabin fingerprint (Schema Fingerprints, CRC-64-AVRO)."""
    table = _crc64_table()
    fp = CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def parsing_canonical_form(schema: object, namespace: str = "", seen: set[str] | None = None) -> str:
    """The spec's transforms: PRIMITIVES, FULLNAMES, STRIP, ORDER, STRINGS, WHITESPACE."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        return "[" + ",".join(parsing_canonical_form(s, namespace, seen) for s in schema) + "]"
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return json.dumps(schema)
        return json.dumps(schema if "." in schema or not namespace else f"{namespace}.{schema}")
    assert isinstance(schema, dict)
    kind = schema["type"]
    if kind in PRIMITIVES or isinstance(kind, (dict, list)):
        return parsing_canonical_form(kind, namespace, seen)  # drops logicalType and the rest
    if kind in ("record", "enum", "fixed", "error"):
        name = schema["name"]
        if "." not in name:
            ns = schema.get("namespace", namespace)
            name = f"{ns}.{name}" if ns else name
        if name in seen:
            return json.dumps(name)
        seen.add(name)
        inner_ns = name.rsplit(".", 1)[0] if "." in name else ""
        parts = [f'"name":{json.dumps(name)}', f'"type":{json.dumps(kind)}']

        def canon(inner: object) -> str:
            return parsing_canonical_form(inner, inner_ns, seen)

        if kind in ("record", "error"):
            fields = ",".join(
                f'{{"name":{json.dumps(f["name"])},"type":{canon(f["type"])}}}'
                for f in schema["fields"]
            )
            parts.append(f'"fields":[{fields}]')
        elif kind == "enum":
            parts.append(f'"symbols":{json.dumps(schema["symbols"], separators=(",", ":"))}')
        else:
            parts.append(f'"size":{int(schema["size"])}')
        return "{" + ",".join(parts) + "}"
    key = "items" if kind == "array" else "values"
    return f'{{"type":{json.dumps(kind)},"{key}":{parsing_canonical_form(schema[key], namespace, seen)}}}'


def test_crc64_avro_matches_the_spec_examples() -> None:
    assert crc64_avro(b"") == CRC64_EMPTY
    # fastavro's documented fingerprint of the canonical "int" schema, as the spec defines it
    assert crc64_avro(b'"int"').to_bytes(8, "little").hex() == "8f5c393f1ad57572"


def test_every_fingerprint_is_the_spec_fingerprint_of_the_canonical_form(codec: Codec) -> None:
    for event_type in EventType:
        for version in codec.versions(event_type):
            schema = codec.schema(event_type, version).schema
            expected = crc64_avro(parsing_canonical_form(schema).encode()).to_bytes(8, "little")
            assert codec.fingerprint(event_type, version) == expected, (event_type, version)


def test_logical_types_are_not_part_of_the_fingerprint(codec: Codec) -> None:
    """The interop trap: some libraries keep {"type": "long"} for a logical type and so compute a
    different fingerprint; the spec (and this codec) reduce it to "long"."""
    schema = codec.schema(EventType.INSTANCE_SPAWNED, 1).schema
    canonical = parsing_canonical_form(schema)
    assert "logicalType" not in canonical
    assert '{"name":"occurred_at","type":"long"}' in canonical
    assert '{"name":"launched_at","type":"long"}' in canonical
    # pinned: changing this schema file without adding a new version changes this value
    assert codec.fingerprint(EventType.INSTANCE_SPAWNED, 1).hex() == crc64_avro(canonical.encode()).to_bytes(
        8, "little").hex()
    kept = canonical.replace('"type":"long"}', '"type":{"type":"long"}}')
    assert crc64_avro(kept.encode()).to_bytes(8, "little") != codec.fingerprint(EventType.INSTANCE_SPAWNED, 1)


def test_released_fingerprints_never_change(codec: Codec) -> None:
    """A released schema is immutable: its fingerprint heads events already in the log forever."""
    pinned = {
        (EventType.INSTANCE_REQUESTED, 1): PINNED_REQUESTED_V1,
        (EventType.INSTANCE_REQUESTED, 2): PINNED_REQUESTED_V2,
        (EventType.INSTANCE_SPAWNED, 1): PINNED_SPAWNED_V1,
        (EventType.INSTANCE_SPAWNED, 2): PINNED_SPAWNED_V2,
        (EventType.INSTANCE_RESOURCES_RESOLVED, 1): PINNED_RESOLVED_V1,
        (EventType.INSTANCE_RESOURCES_RESOLVED, 2): PINNED_RESOLVED_V2,
        (EventType.INSTANCE_ACTION_REQUESTED, 1): PINNED_ACTION_REQUESTED_V1,
        (EventType.INSTANCE_ACTION_COMPLETED, 1): PINNED_ACTION_COMPLETED_V1,
        (EventType.INSTANCE_ACTION_FAILED, 1): PINNED_ACTION_FAILED_V1,
    }
    for (event_type, version), hex_fp in pinned.items():
        assert codec.fingerprint(event_type, version).hex() == hex_fp


PINNED_REQUESTED_V1 = "1341235265c0962f"
PINNED_REQUESTED_V2 = "427ef5c2ef9207a2"
PINNED_SPAWNED_V1 = "2504cd9bed83faab"
PINNED_SPAWNED_V2 = "a5d447797e7a8dc3"
PINNED_RESOLVED_V1 = "b9f0137ce5ed7691"
PINNED_RESOLVED_V2 = "31a272741231351f"
PINNED_ACTION_REQUESTED_V1 = "c873c9d43a3608f2"
PINNED_ACTION_COMPLETED_V1 = "e189c8fb74229a99"
PINNED_ACTION_FAILED_V1 = "397fbe49b7fb4b7d"
