"""The C reader and writer (eventsvm/events/_avro.c) against fastavro and the pure-Python path.

Both paths are exercised: `Codec(native=True)` runs the extension, `Codec(native=False)` the
generated Python that serves machines where the extension did not build. fastavro is the reference
for bytes and values; hostile input (truncations, mutations, random bytes) must always end in
CodecError / AvroError, never a crash or a read past the buffer.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import io
import random
import tracemalloc
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from eventsvm.events import avro_binary
from eventsvm.events.avro_binary import NATIVE, UnsupportedSchema, compile_program
from eventsvm.events.codec import HEADER_SIZE, Codec, CodecError
from eventsvm.events.model import Event, EventType
from tests.factories import instance_chain, pipeline_events, random_datum, requested_event, sample_event

ENVELOPE = ("event_id", "aggregate_id", "sequence", "request_id", "causation_id", "user_id", "project_id",
            "occurred_at", "prev_hash", "body")
native_only = pytest.mark.skipif(not NATIVE, reason="the _avro C extension is not built on this machine")
PATHS = [pytest.param(True, id="c", marks=native_only), pytest.param(False, id="python")]


@pytest.fixture(scope="module", params=PATHS)
def codec(request: pytest.FixtureRequest) -> Codec:
    return Codec(native=request.param)


@pytest.fixture(scope="module")
def avro() -> Any:
    if not NATIVE:
        pytest.skip("the _avro C extension is not built on this machine")
    return importlib.import_module("eventsvm.events._avro")


def fastavro_bytes(schema: Any, value: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, value)
    return out.getvalue()


@native_only
def test_the_codec_uses_the_extension_when_it_is_built() -> None:
    _avro = importlib.import_module("eventsvm.events._avro")
    codec = Codec()
    event = requested_event()
    assert isinstance(codec._encoders[event.type], _avro.Writer)
    assert isinstance(codec._decoders[codec.encode(event)[:HEADER_SIZE]], _avro.Reader)
    assert tuple(_avro.OPCODES) == avro_binary.OPCODES


@pytest.mark.parametrize("event_type", list(EventType))
def test_random_events_of_every_type_match_fastavro_on_both_paths(
    codec: Codec, event_type: EventType
) -> None:
    rng = random.Random(f"c-{event_type}")
    parsed = codec.parsed_schema(codec.current(event_type))
    for _ in range(30):
        record = random_datum(parsed.parsed, parsed.names, rng)
        event = Event(event_type, *(record[name] for name in ENVELOPE))
        data = codec.encode(event)
        assert data[HEADER_SIZE:] == fastavro_bytes(parsed.parsed, record)
        assert codec.decode(data) == event


@native_only
def test_c_and_python_paths_write_the_same_bytes_and_read_the_same_events() -> None:
    c, python = Codec(native=True), Codec(native=False)
    for event in pipeline_events(40, random.Random(3)) + [sample_event(t) for t in EventType]:
        data = c.encode(event)
        assert data == python.encode(event)
        assert c.decode(data) == python.decode(data) == event


def test_every_truncation_of_every_boot_event_is_refused(codec: Codec) -> None:
    for event in instance_chain(random.Random(5)):
        data = codec.encode(event)
        for cut in range(HEADER_SIZE, len(data)):
            with pytest.raises(CodecError):
                codec.decode(data[:cut])


def test_mutated_and_random_payloads_end_in_codec_error_or_a_whole_event(codec: Codec) -> None:
    rng = random.Random(11)
    goods = [codec.encode(e) for e in instance_chain(random.Random(6))]
    for _ in range(4000):
        good = rng.choice(goods)
        body = bytearray(good[HEADER_SIZE:])
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        header = good[:HEADER_SIZE]
        for payload in (header + bytes(body), header + rng.randbytes(rng.randrange(300))):
            try:
                event = codec.decode(payload)
            except CodecError:
                continue
            assert codec.decode(codec.encode(event)) == event


def test_a_few_hundred_thousand_random_inputs_never_crash_the_c_reader(avro: Any) -> None:
    codec = Codec(native=True)
    rng = random.Random(12)
    programs = []
    for event_type in (EventType.INSTANCE_RESOURCES_RESOLVED, EventType.HOST_REGISTERED,
                       EventType.DEAD_LETTER_RECORDED, EventType.SUBNET_CREATED):
        parsed = codec.parsed_schema(codec.current(event_type))
        programs.append(avro.Program(compile_program(parsed.parsed, parsed.names)))
    # small alphabets make valid-looking varints, lengths and union indexes far more often
    alphabets = [bytes(range(256)), b"\x00\x01\x02\x04\x06\x80\xff", b"\x00\x02"]
    decoded = refused = 0
    for i in range(300_000):
        program = programs[i % len(programs)]
        alphabet = alphabets[i % len(alphabets)]
        data = bytes(rng.choices(alphabet, k=rng.randrange(64)))
        try:
            value, end = program.decode(data)
        except (avro.AvroError, UnicodeDecodeError):
            refused += 1
            continue
        assert 0 < end <= len(data)
        # repr: a float read from random bytes may be NaN, which is not equal to itself
        assert repr(program.decode(program.encode(value))[0]) == repr(value)
        decoded += 1
    assert decoded > 1000 and refused > 100_000


def test_non_ascii_long_strings_and_64_bit_extremes(codec: Codec) -> None:
    event = sample_event(EventType.INSTANCE_SPAWNED, random.Random(2))
    event.occurred_at = -(2**63)
    event.sequence = 2**63 - 1
    event.body = {**event.body, "domain_name": "東京-süd-🚀" * 20_000, "power_state": -(2**31),
                  "launched_at": 2**63 - 1, "attempt": 2**31 - 1}
    parsed = codec.parsed_schema(codec.current(event.type))
    data = codec.encode(event)
    assert data[HEADER_SIZE:] == fastavro_bytes(parsed.parsed, {n: getattr(event, n) for n in ENVELOPE})
    assert codec.decode(data) == event
    too_big = [Event(**{**{n: getattr(event, n) for n in ("type", *ENVELOPE)}, field: value})
               for field, value in (("sequence", 2**63), ("occurred_at", -(2**63) - 1))]
    too_big.append(Event(**{n: getattr(event, n) for n in ("type", *ENVELOPE)}))
    too_big[-1].body = {**event.body, "power_state": 2**31}
    for bad, field in zip(too_big, ("sequence", "occurred_at", "body.power_state"), strict=True):
        with pytest.raises(CodecError) as caught:
            codec.encode(bad)
        assert field in str(caught.value) or not codec.native  # only the C writer names the path


def test_empty_arrays_and_maps_round_trip(codec: Codec) -> None:
    event = requested_event(random.Random(4), networks=[], block_devices=[], metadata={}, tags=[])
    back = codec.decode(codec.encode(event))
    assert back == event
    assert (back.body["networks"], back.body["metadata"], back.body["tags"]) == ([], {}, [])


def test_an_encoding_error_names_the_field_path_but_not_the_value(codec: Codec) -> None:
    event = instance_chain(random.Random(8))[2]  # scheduled: body.spec.flavor.vcpus is an int
    event.body["spec"]["flavor"]["vcpus"] = "s3cret-value"
    with pytest.raises(CodecError) as caught:
        codec.encode(event)
    assert "s3cret-value" not in str(caught.value)
    if codec.native:
        assert "body.spec.flavor.vcpus" in str(caught.value)
    event.body["spec"]["flavor"]["vcpus"] = 2
    del event.body["host"]
    with pytest.raises(CodecError, match="host"):
        codec.encode(event)


# --- schemas the event types do not use yet: every Avro type, nesting, recursion --------------------

NODE_SCHEMA = {"type": "record", "name": "Node", "namespace": "test", "fields": [
    {"name": "value", "type": ["null", "long", "string", "boolean", "double"]},
    {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}},
    {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
    {"name": "ratio", "type": "float"},
    {"name": "blob", "type": "bytes"},
    {"name": "children", "type": {"type": "array", "items": "Node"}},
    {"name": "tags",
     "type": {"type": "map", "values": {"type": "array", "items": ["null", "Kind", "Digest"]}}},
    {"name": "next", "type": ["null", "Node"], "default": None},
]}


def node(value: Any = None, children: list[Any] | None = None, nxt: Any = None) -> dict[str, Any]:
    return {"value": value, "kind": "B", "digest": b"\x00\xff\x10\x80", "ratio": 0.5, "blob": b"\x00" * 70,
            "children": children or [], "tags": {"süd": [None, "C", b"wxyz"], "empty": []}, "next": nxt}


def test_every_avro_type_nested_unions_and_recursion_match_fastavro(avro: Any) -> None:
    names: dict[str, Any] = {}
    schema = parse_schema(NODE_SCHEMA, named_schemas=names)
    program = avro.Program(compile_program(schema, names))
    for value in (node(), node(-(2**63), [node("x" * 300), node(True)], node(1e300)),
                  node(2**63 - 1, [node(None, [node(-1.5)])], node("東京", nxt=node(False)))):
        data = program.encode(value)
        assert data == fastavro_bytes(schema, value)
        decoded, end = program.decode(data)
        assert end == len(data)
        assert decoded == schemaless_reader(io.BytesIO(data), schema, None)
        assert program.decode(b"junk" + data, 4) == (decoded, len(data) + 4)
    with pytest.raises(UnsupportedSchema):  # the generated Python refuses recursion; C does not need to
        avro_binary.compile_reader(schema, names, native=False)


def test_block_encoded_arrays_and_maps_are_read(avro: Any) -> None:
    """Writers may split items into blocks, negative counts carrying a byte size (Avro spec)."""
    names: dict[str, Any] = {}
    schema = parse_schema({"type": "record", "name": "R", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": {"type": "map", "values": "int"}}]}, named_schemas=names)
    program = avro.Program(compile_program(schema, names))
    xs = bytes([4, 2, 4]) + bytes([1, 2, 6]) + b"\x00"  # a block of 2 items, then of 1 with its size
    m = bytes([1, 8, 4]) + b"ab" + bytes([8, 0])  # a block of 1 entry with its size
    data = xs + m
    assert program.decode(data) == ({"xs": [1, 2, 3], "m": {"ab": 4}}, len(data))


@pytest.mark.parametrize("data, reason", [
    (bytes([0xff] * 10 + [0x01]), "varint"),                 # 11-byte varint
    (bytes([0xff] * 9 + [0x02]), "varint"),                  # 10th byte overflows 64 bits
    (bytes([0xfe, 0xff, 0xff, 0xff, 0x0f]), "block count"),  # 2**31 items in a few bytes
    (bytes([0x01, 0x01]), "negative block size"),            # count -1 with a negative byte size
    (bytes([0x02, 0x03]), "negative length"),                # a string of length -2
    (bytes([0x02, 0x10]), "truncated"),                      # a string of 8 bytes that are not there
])
def test_impossible_lengths_and_counts_are_refused_before_reading(
    avro: Any, data: bytes, reason: str
) -> None:
    names: dict[str, Any] = {}
    schema = parse_schema({"type": "array", "items": "string"}, named_schemas=names)
    program = avro.Program(compile_program(schema, names))
    with pytest.raises(avro.AvroError, match=reason):
        program.decode(data)


def test_garbage_nesting_is_bounded(avro: Any) -> None:
    names: dict[str, Any] = {}
    schema = parse_schema(NODE_SCHEMA, named_schemas=names)
    program = avro.Program(compile_program(schema, names))
    # a "next" node, then another, ... each only a few bytes: deep enough to overflow a C stack
    one = bytes([0, 2]) + b"\x00" * 8 + bytes([0, 0, 0]) + b"\x02"
    data = one * 100_000
    with pytest.raises(avro.AvroError, match="nested too deep"):
        program.decode(data)
    looped = node()
    looped["next"] = looped
    with pytest.raises(avro.AvroError, match="nested too deep"):
        program.encode(looped)


@pytest.mark.parametrize("nodes, reason", [
    ((), "at least one node"),
    (((99,),), "unknown opcode"),
    (((10, 5, 1),), "does not exist"),
    (((10, 0, 0),), "out of range"),
    (((13, (1, 2)), (2,), (3,)), "cannot tell apart"),
    (((13, (1,)), (13, (2,)), (0,)), "union directly inside a union"),
    (((12, ("a",), (1, 1), ((), ())), (0,)), "one length"),
    (((14, 1), (2,)), "root cannot be skipped"),
    (((13, (1, 2)), (14, 2), (0,)), "only a record field can be skipped"),
    (((10, 1, 1), (14, 2), (2,)), "only a record field can be skipped"),
])
def test_malformed_programs_are_refused(avro: Any, nodes: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        avro.Program(nodes)


def test_readers_take_any_bytes_like_object(avro: Any) -> None:
    codec = Codec(native=True)
    event = requested_event(random.Random(9))
    data = codec.encode(event)
    reader: Any = codec._decoders[data[:HEADER_SIZE]]
    assert reader(bytearray(data)) == reader(memoryview(data)) == event


def test_decoding_and_refusing_leak_no_memory(avro: Any) -> None:
    codec = Codec(native=True)
    events = pipeline_events(8, random.Random(10))
    payloads = [codec.encode(e) for e in events]
    bad = dataclasses.replace(events[2], body={**events[2].body, "claim": {"vcpus": "x"}})
    refused = 0

    def churn() -> None:
        nonlocal refused
        for data in payloads:
            codec.decode(data)
            for cut in (11, len(data) // 2, len(data) - 1):
                try:
                    codec.decode(data[:cut])
                except CodecError:
                    refused += 1
        for event in events:
            codec.encode(event)
        try:
            codec.encode(bad)
        except CodecError:
            refused += 1

    for _ in range(3):
        churn()
    gc.collect()
    tracemalloc.start()
    try:
        churn()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            churn()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # one leaked string per decode would be ~60 kB here
    assert grown < 16_000, f"{grown} bytes kept after 100 rounds"
    assert refused == 104 * (3 * len(payloads) + 1)


@pytest.mark.parametrize("native", PATHS)
def test_a_bool_takes_the_boolean_branch_of_a_union_as_in_fastavro(native: bool) -> None:
    names: dict[str, Any] = {}
    schema = parse_schema({"type": "record", "name": "Flags", "fields": [
        {"name": "flag", "type": ["null", "long", "boolean"]},
        {"name": "count", "type": ["null", "int"]}]}, named_schemas=names)
    write = avro_binary.compile_writer(schema, names, native=native)
    read = avro_binary.compile_reader(schema, names, native=native)
    for flag in (True, False, 1, 0, -(2**63), None):
        record = {"flag": flag, "count": 7}
        assert write(record) == fastavro_bytes(schema, record)
        back = read(write(record))
        assert back == record and type(back["flag"]) is type(flag)
