"""Codec throughput on the boot flow's events (requested ... spawned with realistic bodies)."""

from __future__ import annotations

import io
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastavro import schemaless_reader, schemaless_writer

from bench.suite import Context, benchmark, rate
from eventsvm.app.writers import may_write, writer_codec, writer_ring
from eventsvm.events.codec import HEADER_SIZE, Codec, default_codec
from eventsvm.events.model import Event
from tests.factories import pipeline_events

_ENVELOPE = ("event_id", "aggregate_id", "sequence", "request_id", "causation_id", "user_id", "project_id",
             "occurred_at", "prev_hash", "body")


def _events(ctx: Context) -> list[Event]:
    return pipeline_events(ctx.size(2000), random.Random(1))


def _encode_rates(ctx: Context, codec: Codec) -> list[float]:
    events = _events(ctx)
    encode = codec.encode

    def run() -> None:
        for event in events:
            encode(event)

    return [rate(len(events), run) for _ in range(ctx.repetitions)]


def _decode_rates(ctx: Context, codec: Codec) -> list[float]:
    payloads = [codec.encode(e) for e in _events(ctx)]
    decode = codec.decode

    def run() -> None:
        # results are dropped as a consumer drops an event once folded; keeping 10k events alive
        # would bill this benchmark for the garbage collector walking them
        for payload in payloads:
            decode(payload)

    return [rate(len(payloads), run) for _ in range(ctx.repetitions)]


@benchmark("codec.encode")
def encode(ctx: Context) -> list[float]:
    """Codec.encode of boot-flow events (current schema; the C writer where _avro is built)."""
    return _encode_rates(ctx, default_codec())


@benchmark("codec.decode")
def decode(ctx: Context) -> list[float]:
    """Codec.decode of boot-flow events into Event objects (the C reader where _avro is built)."""
    return _decode_rates(ctx, default_codec())


@benchmark("codec.encode.python")
def encode_python(ctx: Context) -> list[float]:
    """The same with the generated pure-Python writer (Codec(native=False), the no-compiler path)."""
    return _encode_rates(ctx, Codec(native=False))


@benchmark("codec.decode.python")
def decode_python(ctx: Context) -> list[float]:
    """The same with the generated pure-Python reader (Codec(native=False), the no-compiler path)."""
    return _decode_rates(ctx, Codec(native=False))


@benchmark("codec.decode.fastavro")
def decode_fastavro(ctx: Context) -> list[float]:
    """Reference: fastavro.schemaless_reader of the same payloads, dict output, no Event built."""
    codec = default_codec()
    events = _events(ctx)
    schemas = {e.type: codec.parsed_schema(codec.current(e.type)).parsed for e in events}
    jobs = [(schemas[e.type], codec.encode(e)) for e in events]

    def run() -> None:
        for schema, data in jobs:
            stream = io.BytesIO(data)
            stream.seek(HEADER_SIZE)
            schemaless_reader(stream, schema, None)

    return [rate(len(jobs), run) for _ in range(ctx.repetitions)]


@benchmark("codec.encode.fastavro")
def encode_fastavro(ctx: Context) -> list[float]:
    """Reference: fastavro.schemaless_writer of the same events as dicts."""
    codec = default_codec()
    events = _events(ctx)
    jobs = [(codec.parsed_schema(codec.current(e.type)).parsed, {n: getattr(e, n) for n in _ENVELOPE})
            for e in events]

    def run() -> None:
        for schema, record in jobs:
            schemaless_writer(io.BytesIO(), schema, record)

    return [rate(len(jobs), run) for _ in range(ctx.repetitions)]


def _signed_codecs(directory: Path) -> tuple[Codec, Callable[[], Codec]]:
    """The API's signing codec, and a maker of readers with a fresh key ring (nothing verified yet)."""
    base = default_codec()
    writer = writer_codec(directory, "api", base)
    return writer, lambda: base.keyed(None, writer_ring(directory))


@benchmark("codec.encode.signed")
def encode_signed(ctx: Context) -> list[float]:
    """Codec.encode plus the writer's Ed25519 signature (what every append now costs)."""
    with tempfile.TemporaryDirectory() as directory:
        writer, _ = _signed_codecs(Path(directory))
        return _encode_rates(ctx, writer)


@benchmark("codec.decode.verified")
def decode_verified(ctx: Context) -> list[float]:
    """Codec.decode with the key ring, each signature verified (the first fold of a process to read it)."""
    with tempfile.TemporaryDirectory() as directory:
        writer, reader_of = _signed_codecs(Path(directory))
        payloads = [writer.encode(e) for e in _events(ctx) if may_write("api", e) is None]

        def run() -> None:
            decode = reader_of().decode
            for payload in payloads:
                decode(payload)

        return [rate(len(payloads), run) for _ in range(ctx.repetitions)]


@benchmark("codec.decode.verified.again")
def decode_verified_again(ctx: Context) -> list[float]:
    """The same read again by another fold of the process: the ring remembers what it verified."""
    with tempfile.TemporaryDirectory() as directory:
        writer, reader_of = _signed_codecs(Path(directory))
        payloads = [writer.encode(e) for e in _events(ctx) if may_write("api", e) is None]
        reader = reader_of()
        for payload in payloads:
            reader.decode(payload)
        decode = reader.decode

        def run() -> None:
            for payload in payloads:
                decode(payload)

        return [rate(len(payloads), run) for _ in range(ctx.repetitions)]
