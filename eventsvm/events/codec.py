"""The Avro codec: Event <-> Avro single-object encoding, with schema evolution.

A payload is the marker C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form, then the Avro binary body. The fingerprint names the exact schema
version that wrote the event, so a reader resolves any released version against the current one.

Fast path: events written with the current schema are read and written by readers and writers
compiled from the schema (eventsvm.events.avro_binary): C ones where the _avro extension was built,
else generated Python. Events of an older schema go through fastavro's schema resolution. Either
way logical types are not applied: ids stay strings and timestamps integer ms.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from eventsvm.events.avro_binary import NATIVE, Projection, UnsupportedSchema, compile_reader, compile_writer
from eventsvm.events.model import Event, EventType
from eventsvm.events.signing import FRAME_SIZE, SIGNED_MARKER, ForgedEvent, KeyRing, Signer, unsigned

MARKER = b"\xc3\x01"
HEADER_SIZE = 10
# The Event attributes an envelope schema carries, in field order (everything but `type`).
_ENVELOPE = tuple(f.name for f in fields(Event) if f.name != "type")
# Event's slots in constructor order: the C reader fills a new Event's slots itself, which is
# what the dataclass __init__ does, minus a Python frame per event. Not if __init__ ever does more.
_EVENT_SLOTS = None if hasattr(Event, "__post_init__") else tuple(vars(Event)[f.name] for f in fields(Event))


class CodecError(ValueError):
    """A payload that is not a whole, valid event (truncated, bad marker, unknown fingerprint,
    garbage, trailing bytes), or an event that does not fit its schema."""


class Forged(CodecError):
    """A payload a codec with a key ring will not trust (eventsvm.events.signing): every reader that
    skips or dead-letters an undecodable record does the same with it, and never folds it."""


def schemas_dir() -> Path:
    """Where the released schemas live: `eventsvm/schemas` when shipped inside the package, else
    the `schemas/` directory at the root of the source tree."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "schemas", package.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise CodecError(f"no schemas directory next to {package} (expected {package.parent / 'schemas'})")


def canonical_form(schema: Any) -> str:
    """The schema's Parsing Canonical Form (Avro spec); logicalType is not part of it."""
    return str(to_parsing_canonical_form(schema))


def schema_fingerprint(schema: Any) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint used in the single-object header."""
    # fastavro returns the little-endian bytes as hex (pinned by tests/unit/test_codec.py)
    return bytes.fromhex(_fastavro_fingerprint(canonical_form(schema), "CRC-64-AVRO"))


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(x) for x in schema]
    return schema


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released schema of one event type."""

    type: EventType
    version: int
    schema: dict[str, Any]  # as written in the .avsc file
    fingerprint: bytes


class ParsedSchema:
    """A schema parsed by fastavro without its logical types, plus its named types."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.names: dict[str, Any] = {}
        self.parsed = parse_schema(_without_logical_types(schema), named_schemas=self.names)


Decoder = Callable[[bytes], Event]


class Codec:
    """Every released schema, by fingerprint; encodes with and decodes to each type's current one.
    `native=False` keeps the current schemas on the pure-Python reader and writer even where the
    C extension is built (tests prove both paths)."""

    def __init__(self, directory: Path | None = None, native: bool = NATIVE) -> None:
        root = directory or schemas_dir()
        self.native = native
        self._versions: dict[EventType, dict[int, SchemaVersion]] = {}
        self._by_header: dict[bytes, SchemaVersion] = {}
        for path in sorted(root.glob("*/v*.avsc")):
            try:
                event_type = EventType(path.parent.name)
                version = int(path.stem[1:])
            except ValueError as exc:
                raise CodecError(f"{path}: not schemas/<event type>/v<N>.avsc") from exc
            schema = json.loads(path.read_text())
            envelope = tuple(f["name"] for f in schema["fields"])
            if envelope != _ENVELOPE:
                raise CodecError(f"{path}: top-level fields {envelope} differ from the Event envelope")
            sv = SchemaVersion(event_type, version, schema, schema_fingerprint(schema))
            if MARKER + sv.fingerprint in self._by_header:
                raise CodecError(f"{path}: same fingerprint as another schema version")
            self._versions.setdefault(event_type, {})[version] = sv
            self._by_header[MARKER + sv.fingerprint] = sv
        missing = set(EventType) - set(self._versions)
        if missing:
            raise CodecError(f"no schema for event types {sorted(missing)} under {root}")
        self._parsed: dict[tuple[EventType, int], ParsedSchema] = {}
        self._encoders: dict[EventType, Callable[[Event], bytes]] = {}
        self._decoders: dict[bytes, Decoder] = {}
        # who signs what this codec encodes, and whose signatures what it decodes must carry
        self.signer: Signer | None = None
        # or, for a process writing as several writers (a pool of compute hosts), each event's
        self.signer_of: Callable[[Event], Signer] | None = None
        self.ring: KeyRing | None = None
        for header, sv in self._by_header.items():
            self._decoders[header] = self._decoder(sv)
        for event_type in self._versions:
            self._encoders[event_type] = self._encoder(self.current(event_type))

    def keyed(self, signer: Signer | None, ring: KeyRing | None) -> Codec:
        """This codec (sharing its compiled readers and writers) signing with `signer` and
        trusting only events signed by a key of `ring` that may write them."""
        twin = copy.copy(self)
        twin.signer, twin.signer_of, twin.ring = signer, None, ring
        return twin

    def keyed_per_event(self, signer_of: Callable[[Event], Signer], ring: KeyRing | None) -> Codec:
        """This codec signing each event with the signer `signer_of` picks for it (one process
        writing as several writers), trusting what `ring` vouches for."""
        twin = copy.copy(self)
        twin.signer, twin.signer_of, twin.ring = None, signer_of, ring
        return twin

    def versions(self, event_type: EventType) -> list[int]:
        """The released schema versions of `event_type`, oldest first."""
        return sorted(self._versions[event_type])

    def schema(self, event_type: EventType, version: int | None = None) -> SchemaVersion:
        """One released schema of `event_type`; the current (highest) version by default."""
        if version is None:
            return self.current(event_type)
        try:
            return self._versions[event_type][version]
        except KeyError:
            raise CodecError(f"{event_type} has no schema version {version}") from None

    def current(self, event_type: EventType) -> SchemaVersion:
        """The schema every new event of `event_type` is written with, and all are read into."""
        versions = self._versions[event_type]
        return versions[max(versions)]

    def fingerprint(self, event_type: EventType, version: int) -> bytes:
        """The 8-byte fingerprint that heads events written with this schema version."""
        return self.schema(event_type, version).fingerprint

    def encode(self, event: Event) -> bytes:
        """The single-object encoding of `event` with the current schema of its type."""
        try:
            encoded = self._encoders[event.type](event)
        except CodecError:
            raise
        except Exception as exc:  # the event does not fit the schema; name the field, not values
            raise CodecError(f"cannot encode {event.type} event: {type(exc).__name__}: {exc}") from exc
        if self.signer_of is not None:
            framed = self.signer_of(event).frame(encoded)
        elif self.signer is not None:
            framed = self.signer.frame(encoded)
        else:
            return encoded
        if self.ring is not None:
            self.ring.signed_here(framed)  # what this process reads back of it is not verified again
        return framed

    def decode(self, data: bytes) -> Event:
        """The event in `data`, read into the current schema of its type; CodecError if `data` is
        not exactly one valid event, Forged if the codec has a key ring that does not vouch for it."""
        return self._trusted(data, self._decoders.get)

    def decode_sealed(self, data: bytes) -> Event:
        """`decode` for bytes a verified seal vouches for (eventsvm.projections.seal): every check
        but the Ed25519 verify itself (the key the frame names, the write policy)."""
        return self._trusted(data, self._decoders.get, True)

    def _trusted(self, data: bytes, get: Callable[[bytes], Decoder | None], sealed: bool = False) -> Event:
        # The one place every read checks who wrote the event: the signature before the decode
        # (nothing of a forged payload is parsed past its frame), the writer's right after it.
        # `sealed`: a verified seal vouches for these very bytes, so the key the frame names is
        # looked up but its signature not verified again; the write policy is checked all the same.
        ring = self.ring
        writer = None
        signed = data[:2] == SIGNED_MARKER
        if ring is not None and signed:
            try:
                writer = ring.named_writer(data) if sealed else ring.writer_of(data)
            except ForgedEvent as exc:
                raise Forged(str(exc)) from None
        if signed:
            data = data[FRAME_SIZE:]  # unsigned(data), its marker already known
        decoder = get(data[:HEADER_SIZE])
        if decoder is None:
            raise self._header_error(data)  # garbage is undecodable, whoever could have written it
        if ring is not None and not signed:
            raise Forged(f"unsigned {self.peek(data)[0]} event: no writer's signature")
        try:
            event = decoder(data)
        except Exception as exc:
            raise self._decode_error(data, exc) from exc
        if ring is not None and writer is not None:
            try:
                ring.check(writer, event)
            except ForgedEvent as exc:
                raise Forged(str(exc)) from None
        return event

    def _decode_error(self, data: bytes, exc: Exception) -> CodecError:
        if isinstance(exc, IndexError):
            return CodecError(f"truncated {self.peek(data)[0]} event")
        return CodecError(f"undecodable {self.peek(data)[0]} event: {type(exc).__name__}: {exc}")

    def projected(self, bodies: Mapping[EventType, Projection], unread: Iterable[str] = (),
                  sealed: bool = False) -> Callable[[bytes], Event]:
        """A decode for a reader that needs only some fields: events of a type in `bodies`
        (current schema, C reader) come with just the body fields its projection keeps, and None
        for the envelope fields named in `unread`; the others decode whole. Every event is still
        checked exactly as `decode` checks it, so both accept and refuse the same payloads; with
        `sealed`, for records a verified seal vouches for, all but the Ed25519 verify itself."""
        unknown = set(unread) - set(_ENVELOPE)
        if unknown:
            raise ValueError(f"the envelope has no field {', '.join(sorted(unknown))}")
        decoders = dict(self._decoders)
        # The Python reader reads every field: still a right answer, just slower.
        for event_type, body in bodies.items() if self.native else ():
            sv = self.current(event_type)
            writer = self.parsed_schema(sv)
            keep: dict[str, Projection | None] = {name: None for name in _ENVELOPE if name not in unread}
            keep["body"] = body
            try:
                decoders[MARKER + sv.fingerprint] = compile_reader(
                    writer.parsed, writer.names, construct=Event, prefix=(sv.type,), start=HEADER_SIZE,
                    native=True, projection=keep, slots=_EVENT_SLOTS)
            except UnsupportedSchema:
                pass  # decoded whole, as `decode` does
        get = decoders.get
        trusted = self._trusted

        def decode(data: bytes) -> Event:
            return trusted(data, get, sealed)

        return decode

    def peek(self, data: bytes) -> tuple[EventType, int]:
        """The event type and schema version of a payload, without decoding it (nor checking
        its signature)."""
        data = unsigned(data)
        sv = self._by_header.get(data[:HEADER_SIZE])
        if sv is None:
            raise self._header_error(data)
        return sv.type, sv.version

    def _header_error(self, data: bytes) -> CodecError:
        if len(data) < HEADER_SIZE:
            return CodecError(f"payload of {len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MARKER:
            return CodecError(f"not an Avro single-object payload (marker {data[:2].hex()})")
        return CodecError(f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}")

    def parsed_schema(self, sv: SchemaVersion) -> ParsedSchema:
        """`sv` as fastavro parsed it (logical types removed), for fastavro or datum generators."""
        key = (sv.type, sv.version)
        if key not in self._parsed:
            self._parsed[key] = ParsedSchema(sv.schema)
        return self._parsed[key]

    def _decoder(self, sv: SchemaVersion) -> Decoder:
        writer = self.parsed_schema(sv)
        current = self.current(sv.type)
        if sv is current:
            try:
                return compile_reader(
                    writer.parsed, writer.names, construct=Event, prefix=(sv.type,), start=HEADER_SIZE,
                    native=self.native, slots=_EVENT_SLOTS,
                )
            except UnsupportedSchema:
                return self._resolving_decoder(sv.type, writer, None)
        return self._resolving_decoder(sv.type, writer, self.parsed_schema(current))

    @staticmethod
    def _resolving_decoder(
        event_type: EventType, writer: ParsedSchema, reader: ParsedSchema | None
    ) -> Decoder:
        def decode(data: bytes) -> Event:
            stream = io.BytesIO(data)
            stream.seek(HEADER_SIZE)
            record: Any = schemaless_reader(stream, writer.parsed, reader.parsed if reader else None)
            if stream.tell() != len(data):
                raise CodecError("trailing bytes after the event")
            return Event(event_type, *(record[name] for name in _ENVELOPE))

        return decode

    def _encoder(self, sv: SchemaVersion) -> Callable[[Event], bytes]:
        header = MARKER + sv.fingerprint
        parsed = self.parsed_schema(sv)
        try:
            return compile_writer(
                parsed.parsed, parsed.names, attributes=True, header=header, native=self.native
            )
        except UnsupportedSchema:

            def write(event: Event) -> bytes:
                stream = io.BytesIO()
                stream.write(header)
                schemaless_writer(stream, parsed.parsed, {n: getattr(event, n) for n in _ENVELOPE})
                return stream.getvalue()

            return write


@cache
def default_codec() -> Codec:
    """The process-wide codec over the repository's schemas (built on first use)."""
    return Codec()


def encode(event: Event) -> bytes:
    """`default_codec().encode(event)`."""
    return default_codec().encode(event)


def decode(data: bytes) -> Event:
    """`default_codec().decode(data)`."""
    return default_codec().decode(data)
