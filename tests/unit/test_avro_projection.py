"""The projection decoder (Codec.projected, the C reader's skip nodes): a replay builds only the
body fields the instance fold reads, yet accepts and refuses exactly the payloads a full decode does."""

from __future__ import annotations

import importlib
import random
from typing import Any

import pytest

from eventsvm.events.avro_binary import NATIVE, compile_program
from eventsvm.events.codec import HEADER_SIZE, Codec, CodecError
from eventsvm.events.model import Event, EventType
from eventsvm.state.instances import FOLDED_BODY_FIELDS, INSTANCE_EVENT_TYPES, initial_projection
from eventsvm.state.instances import fold_instance_event as fold
from tests.factories import instance_chain, pipeline_events, sample_event

native_only = pytest.mark.skipif(not NATIVE, reason="the _avro C extension is not built on this machine")


def kept(value: Any, projection: Any) -> Any:
    """`value` cut down to `projection`, as the projected reader should return it."""
    if projection is None:
        return value
    return {name: kept(value[name], sub) for name, sub in projection.items()}


def every_instance_event() -> list[Event]:
    rng = random.Random(3)
    return [*pipeline_events(20, rng), *(sample_event(kind, rng) for kind in sorted(INSTANCE_EVENT_TYPES))]


def test_every_instance_event_type_has_a_projection_of_fields_its_schema_has() -> None:
    codec = Codec()
    assert FOLDED_BODY_FIELDS.keys() == INSTANCE_EVENT_TYPES
    codec.projected(FOLDED_BODY_FIELDS)  # raises on a field the current schema does not have


@native_only
def test_a_projected_event_has_the_kept_body_fields_and_the_whole_envelope() -> None:
    codec = Codec()
    decode = codec.projected(FOLDED_BODY_FIELDS)
    for event in every_instance_event():
        data = codec.encode(event)
        whole, part = codec.decode(data), decode(data)
        assert part.body == kept(whole.body, FOLDED_BODY_FIELDS[event.type])
        assert [getattr(part, f) for f in Event.__slots__ if f != "body"] == \
            [getattr(whole, f) for f in Event.__slots__ if f != "body"]
    # of what a scheduled event repeats of the request only whether it is an unshelve is built
    scheduled = next(e for e in every_instance_event() if e.type == EventType.INSTANCE_SCHEDULED)
    assert decode(codec.encode(scheduled)).body["spec"] == {"unshelve": False}


@pytest.mark.parametrize("native", [pytest.param(True, marks=native_only), False], ids=["c", "python"])
def test_the_fold_of_projected_events_equals_the_fold_of_whole_ones(native: bool) -> None:
    codec = Codec(native=native)
    decode = codec.projected(FOLDED_BODY_FIELDS)
    full, part = initial_projection(), initial_projection()
    for event in every_instance_event():
        data = codec.encode(event)
        fold(full, codec.decode(data))
        fold(part, decode(data))
    assert part == full


@native_only
def test_other_event_types_decode_whole() -> None:
    codec = Codec()
    decode = codec.projected(FOLDED_BODY_FIELDS)
    host = sample_event(EventType.HOST_REGISTERED, random.Random(1))
    assert decode(codec.encode(host)) == host


@native_only
def test_projected_and_whole_decoding_accept_and_refuse_the_same_payloads() -> None:
    codec = Codec()
    decode = codec.projected(FOLDED_BODY_FIELDS)
    rng = random.Random(21)
    goods = [codec.encode(e) for e in [*instance_chain(random.Random(6)), *every_instance_event()]]
    outcomes = {True: 0, False: 0}
    for _ in range(6000):
        body = bytearray(rng.choice(goods))
        for _ in range(rng.randrange(1, 4)):
            body[rng.randrange(HEADER_SIZE, len(body))] = rng.randrange(256)
        payload = bytes(body[: rng.choice((len(body), rng.randrange(HEADER_SIZE, len(body))))])
        verdicts = []
        for reader in (codec.decode, decode):
            try:
                reader(payload)
                verdicts.append(True)
            except CodecError:
                verdicts.append(False)
        assert verdicts[0] == verdicts[1], payload.hex()
        outcomes[verdicts[0]] += 1
    assert outcomes[True] > 500 and outcomes[False] > 500


@native_only
def test_a_skipped_string_that_is_not_utf8_is_refused_as_decoding_it_would_be() -> None:
    codec = Codec()
    decode = codec.projected(FOLDED_BODY_FIELDS)
    event = next(e for e in every_instance_event() if e.type == EventType.INSTANCE_SCHEDULED)
    alternate = event.body["alternates"][0].encode()
    for bad in (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"):
        # the same length, so only the UTF-8 check can tell
        mangled = bad + alternate[len(bad):]
        data = codec.encode(event).replace(alternate, mangled)
        with pytest.raises(CodecError):
            codec.decode(data)
        with pytest.raises(CodecError):
            decode(data)
    fine = "ü€𝄞".encode()
    data = codec.encode(event).replace(alternate, fine + alternate[len(fine):])
    assert decode(data).body["host"] == event.body["host"]


def test_a_projection_naming_a_field_the_schema_lacks_is_refused() -> None:
    codec = Codec()
    parsed = codec.parsed_schema(codec.current(EventType.INSTANCE_SCHEDULED))
    with pytest.raises(ValueError, match="no field hots"):
        compile_program(parsed.parsed, parsed.names, {"body": {"hots": None}})


@native_only
def test_a_program_that_skips_fields_only_reads() -> None:
    avro = importlib.import_module("eventsvm.events._avro")
    codec = Codec()
    parsed = codec.parsed_schema(codec.current(EventType.INSTANCE_SCHEDULED))
    program = avro.Program(compile_program(parsed.parsed, parsed.names, {"event_id": None}))
    with pytest.raises(ValueError, match="only read"):
        program.encode({"event_id": "x"})
    with pytest.raises(ValueError, match="only read"):
        avro.Writer(program)
    # a skip node is only ever a record field
    with pytest.raises(ValueError, match="only a record field"):
        avro.Program(((10, 1, 1), (14, 2), (2,)))


@native_only
def test_a_reader_filling_slots_builds_what_the_constructor_builds() -> None:
    avro = importlib.import_module("eventsvm.events._avro")
    codec = Codec()
    sv = codec.current(EventType.INSTANCE_SCHEDULED)
    parsed = codec.parsed_schema(sv)
    program = avro.Program(compile_program(parsed.parsed, parsed.names))
    slots = tuple(Event.__dict__[name] for name in Event.__slots__)
    plain = avro.Reader(program, HEADER_SIZE, Event, (sv.type,))
    filled = avro.Reader(program, HEADER_SIZE, Event, (sv.type,), slots)
    for event in every_instance_event():
        if event.type == sv.type:
            data = codec.encode(event)
            assert type(filled(data)) is Event
            assert filled(data) == plain(data) == event
            with pytest.raises(avro.AvroError):
                filled(data[:-1])


@native_only
@pytest.mark.parametrize("slots, reason", [
    (lambda: (Event.__dict__["event_id"],), "one member descriptor per argument"),
    (lambda: (Event.topic,) * len(Event.__slots__), "not a member descriptor of"),
    # another class's slots of the same names: writing them would corrupt an Event
    (lambda: tuple(vars(type("Other", (), {"__slots__": Event.__slots__}))[n] for n in Event.__slots__),
     "not a member descriptor of"),
])
def test_slots_that_are_not_the_classes_own_writable_slots_are_refused(slots: Any, reason: str) -> None:
    avro = importlib.import_module("eventsvm.events._avro")
    codec = Codec()
    sv = codec.current(EventType.INSTANCE_SCHEDULED)
    parsed = codec.parsed_schema(sv)
    program = avro.Program(compile_program(parsed.parsed, parsed.names))
    with pytest.raises(ValueError, match=reason):
        avro.Reader(program, HEADER_SIZE, Event, (sv.type,), slots())
    with pytest.raises(ValueError, match="construct to be a class"):
        avro.Reader(program, HEADER_SIZE, None, (), slots())
