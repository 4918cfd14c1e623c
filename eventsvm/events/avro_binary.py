"""Avro binary readers and writers compiled from a schema into straight-line Python.

fastavro's Cython reader pays a Python method call on a file object per field (~0.4 µs each), so a
30-field event costs 12 µs. Generating one function per schema that indexes the bytes directly is
several times faster and still pure Python. Where the optional C extension (_avro.c) was built,
the same schemas compile instead to a node program its interpreter walks, several times faster
again; NATIVE says which is in use. fastavro stays the reference: it parses the schemas, resolves old
writer schemas, and tests check all three agree byte for byte.

Logical types are ignored on purpose: timestamps stay integer milliseconds and ids stay strings.
"""

from __future__ import annotations

import importlib
import struct
import sys
from collections.abc import Callable, Mapping
from typing import Any

Schema = Any  # a schema as fastavro.parse_schema returns it: str, list or dict


class AvroDataError(ValueError):
    """The bytes are not a valid encoding of the schema (or a value does not fit the schema)."""


class UnsupportedSchema(Exception):
    """The compiler does not handle this schema (recursive or ambiguous union); use fastavro."""


# The node opcodes of a program, in the order _avro.c numbers them.
OPCODES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string",
           "fixed", "enum", "array", "map", "record", "union", "skip")


def _load_native() -> Any:
    try:
        native = importlib.import_module("eventsvm.events._avro")
    except ImportError:  # not built here (no compiler): the pure-Python path serves
        return None
    # a stale build from another revision would misread programs
    return native if tuple(native.OPCODES) == OPCODES else None


_native = _load_native()
NATIVE: bool = _native is not None

_VARINT_1 = tuple(bytes([i]) for i in range(128))
_BOOL = (False, True)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _read_long(buf: bytes, p: int) -> tuple[int, int]:
    """A zigzag varint at `p` and the position after it."""
    shift = 0
    acc = 0
    while True:
        b = buf[p]
        p += 1
        acc |= (b & 0x7F) << shift
        if not b & 0x80:
            return (acc >> 1) ^ -(acc & 1), p
        shift += 7
        if shift > 63:
            raise AvroDataError("varint longer than 10 bytes")


def _read_int(buf: bytes, p: int) -> tuple[int, int]:
    n, p = _read_long(buf, p)
    if not -(1 << 31) <= n < (1 << 31):
        raise AvroDataError("int out of 32-bit range")
    return n, p


def _read_size(buf: bytes, p: int) -> tuple[int, int]:
    n, p = _read_long(buf, p)
    if n < 0:
        raise AvroDataError("negative length")
    return n, p


def _long_bytes(n: int) -> bytes:
    """The zigzag varint of a 64-bit long."""
    if not -(1 << 63) <= n < (1 << 63):
        raise AvroDataError(f"{n} does not fit a long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _int_bytes(n: int) -> bytes:
    if not -(1 << 31) <= n < (1 << 31):
        raise AvroDataError(f"{n} does not fit an int")
    return _long_bytes(n)


def _bad(message: str) -> None:
    raise AvroDataError(message)


class _Source:
    """Lines of generated code plus the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self._n = 0

    def var(self, prefix: str = "v") -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def const(self, value: Any) -> str:
        name = self.var("_c")
        self.consts[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def _kind(schema: Schema, names: dict[str, Schema]) -> tuple[str, Schema]:
    """The Avro type name of `schema` and its definition, following named references."""
    if isinstance(schema, list):
        return "union", schema
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema, schema
        if schema not in names:
            raise UnsupportedSchema(f"unknown named type {schema}")
        return _kind(names[schema], names)
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return kind, schema
    if isinstance(kind, (dict, list)) or kind not in {"record", "error", "enum", "fixed", "array", "map"}:
        return _kind(kind, names)
    return ("record" if kind == "error" else kind), schema


def _min_size(schema: Schema, names: dict[str, Schema], seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a value of `schema` takes; bounds block counts read from untrusted bytes."""
    kind, s = _kind(schema, names)
    if kind in ("null",):
        return 0
    if kind == "record":
        if s["name"] in seen:
            return 0
        return sum(_min_size(f["type"], names, seen | {s["name"]}) for f in s["fields"])
    if kind == "fixed":
        return int(s["size"])
    if kind == "float":
        return 4
    if kind == "double":
        return 8
    return 1


# Which fields of a record a reader keeps: field name -> None (the whole value) or the projection
# of that field's own record. Every other field is stepped over, checked but never built.
Projection = Mapping[str, "Projection | None"]


def compile_program(schema: Schema, names: dict[str, Schema],
                    projection: Projection | None = None) -> tuple[tuple[Any, ...], ...]:
    """`schema` as the node tuple _avro.Program runs (format in _avro.c): node 0 is the root,
    children are node indices, and each named type is one node however often it is referenced.
    With `projection` the root record (and the records it names) keep only the fields it lists;
    such a program only reads."""
    nodes: list[tuple[Any, ...]] = []
    seen: dict[tuple[str, str], int] = {}

    def node(schema: Schema, projection: Projection | None = None) -> int:
        kind, s = _kind(schema, names)
        if projection is not None and kind in ("record", "union"):
            return projected(kind, s, projection)
        key = ("named", s["name"]) if kind in ("record", "enum", "fixed") else ("kind", kind)
        if key in seen:
            return seen[key]
        at = len(nodes)
        nodes.append(())
        if kind in _PRIMITIVES or key[0] == "named":  # arrays, maps, unions are not shared
            seen[key] = at
        op = OPCODES.index(kind)
        if kind == "record":
            nodes[at] = record(s["fields"], [node(f["type"]) for f in s["fields"]])
        elif kind in ("array", "map"):
            item = s["items"] if kind == "array" else s["values"]
            least = max(_min_size(item, names) + (kind == "map"), 1)
            nodes[at] = (op, node(item), least)
        elif kind == "union":
            nodes[at] = (op, tuple(node(branch) for branch in s))
        elif kind == "enum":
            nodes[at] = (op, tuple(s["symbols"]))
        elif kind == "fixed":
            nodes[at] = (op, int(s["size"]))
        else:
            nodes[at] = (op,)
        return at

    def projected(kind: str, s: Any, projection: Projection) -> int:
        """A node of its own (never shared: another reference to the type may keep other fields)."""
        at = len(nodes)
        nodes.append(())
        if kind == "union":  # e.g. ["null", Spec]: the record branches take the projection
            nodes[at] = (OPCODES.index("union"), tuple(node(b, projection) for b in s))
            return at
        fields = s["fields"]
        unknown = set(projection) - {f["name"] for f in fields}
        if unknown:
            raise ValueError(f"{s['name']} has no field {', '.join(sorted(unknown))} to keep")
        nodes[at] = record(fields, [node(f["type"], projection[f["name"]]) if f["name"] in projection
                                    else skipped(f["type"]) for f in fields])
        return at

    def skipped(schema: Schema) -> int:
        nodes.append((OPCODES.index("skip"), node(schema)))
        return len(nodes) - 1

    def record(fields: list[dict[str, Any]], kids: list[int]) -> tuple[Any, ...]:
        return (
            OPCODES.index("record"),
            tuple(sys.intern(f["name"]) for f in fields),  # interned: dict lookups hit by identity
            tuple(kids),
            tuple((f["default"],) if "default" in f else () for f in fields),
        )

    node(schema, projection)
    return tuple(nodes)


def _program(schema: Schema, names: dict[str, Schema], projection: Projection | None = None) -> Any:
    if _native is None:
        raise UnsupportedSchema("the _avro C extension is not built on this machine")
    nodes = compile_program(schema, names, projection)  # a projection naming no field raises here
    try:
        return _native.Program(nodes)
    except ValueError as exc:  # e.g. a union whose branches a Python value cannot tell apart
        raise UnsupportedSchema(str(exc)) from exc


class _ReaderGen:
    def __init__(self, names: dict[str, Schema]) -> None:
        self.names = names
        self.src = _Source()
        self.stack: list[str] = []

    def long(self, d: int, target: str, reader: str = "_read_long") -> None:
        e = self.src.emit
        e(d, "b = buf[p]")
        e(d, "if b < 128:")
        e(d + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        e(d + 1, "p += 1")
        e(d, "else:")
        e(d + 1, f"{target}, p = {reader}(buf, p)")

    def take(self, d: int, target: str, expr: str, width: int | str) -> None:
        """Emit `target = expr`, then the step past the `width` bytes it read."""
        self.src.emit(d, f"{target} = {expr}")
        self.src.emit(d, f"p += {width}")

    def size(self, d: int, target: str) -> None:
        e = self.src.emit
        e(d, "b = buf[p]")
        e(d, "if not b & 129:")  # one byte, non-negative
        e(d + 1, f"{target} = b >> 1")
        e(d + 1, "p += 1")
        e(d, "else:")
        e(d + 1, f"{target}, p = _read_size(buf, p)")

    def value(self, schema: Schema, d: int, target: str) -> None:
        e = self.src.emit
        kind, s = _kind(schema, self.names)
        if kind == "null":
            e(d, f"{target} = None")
        elif kind == "boolean":
            self.take(d, target, "_BOOL[buf[p]]", 1)
        elif kind in ("int", "long"):
            self.long(d, target, "_read_int" if kind == "int" else "_read_long")
        elif kind in ("float", "double"):
            width, fmt = (4, "<f") if kind == "float" else (8, "<d")
            self.take(d, target, f"{self.src.const(struct.Struct(fmt).unpack_from)}(buf, p)[0]", width)
        elif kind == "string":
            n = self.src.var("n")
            self.size(d, n)
            # text is buf decoded as latin-1 (one char per byte): slicing it is 2.5x cheaper than
            # decoding each field, and only non-ASCII strings need a real UTF-8 decode.
            e(d, f"{target} = text[p:p + {n}]")
            e(d, f"if not {target}.isascii():")
            e(d + 1, f"{target} = buf[p:p + {n}].decode()")
            e(d, f"p += {n}")
        elif kind in ("bytes", "fixed"):
            if kind == "bytes":
                n = self.src.var("n")
                self.size(d, n)
            else:
                n = str(int(s["size"]))
            self.take(d, target, f"buf[p:p + {n}]", n)
        elif kind == "enum":
            i = self.src.var("i")
            self.long(d, i)
            e(d, f"if {i} < 0:")
            e(d + 1, "_bad('negative enum index')")
            e(d, f"{target} = {self.src.const(tuple(s['symbols']))}[{i}]")
        elif kind in ("array", "map"):
            self.container(kind, s, d, target)
        elif kind == "record":
            self.record(s, d, target)
        else:
            self.union(s, d, target)

    def container(self, kind: str, s: Schema, d: int, target: str) -> None:
        e = self.src.emit
        item_schema = s["items"] if kind == "array" else s["values"]
        least = max(_min_size(item_schema, self.names) + (1 if kind == "map" else 0), 1)
        count, skip, item = self.src.var("count"), self.src.var("skip"), self.src.var("item")
        e(d, f"{target} = {'[]' if kind == 'array' else '{}'}")
        e(d, "while True:")
        self.long(d + 1, count)
        e(d + 1, f"if not {count}:")
        e(d + 2, "break")
        e(d + 1, f"if {count} < 0:")
        e(d + 2, f"{count} = -{count}")
        self.long(d + 2, skip)
        # a count the remaining bytes cannot hold is garbage; without this a huge count of
        # zero-byte items would spin
        e(d + 1, f"if {count} * {least} > len(buf) - p:")
        e(d + 2, "_bad('block count exceeds the payload')")
        e(d + 1, f"for _ in range({count}):")
        if kind == "array":
            self.value(item_schema, d + 2, item)
            e(d + 2, f"{target}.append({item})")
        else:
            key = self.src.var("k")
            self.value("string", d + 2, key)
            self.value(item_schema, d + 2, item)
            e(d + 2, f"{target}[{key}] = {item}")

    def record_fields(self, s: Schema, d: int) -> list[tuple[str, str]]:
        if s["name"] in self.stack:
            raise UnsupportedSchema(f"recursive record {s['name']}")
        self.stack.append(s["name"])
        out = []
        for f in s["fields"]:
            v = self.src.var()
            self.value(f["type"], d, v)
            out.append((f["name"], v))
        self.stack.pop()
        return out

    def record(self, s: Schema, d: int, target: str) -> None:
        fields = self.record_fields(s, d)
        self.src.emit(d, f"{target} = {{{', '.join(f'{n!r}: {v}' for n, v in fields)}}}")

    def union(self, branches: list[Schema], d: int, target: str) -> None:
        e = self.src.emit
        if len(branches) > 63:
            raise UnsupportedSchema("union of more than 63 branches")
        e(d, "b = buf[p]")
        e(d, "p += 1")
        for index, branch in enumerate(branches):
            e(d, f"{'if' if index == 0 else 'elif'} b == {index * 2}:")
            self.value(branch, d + 1, target)
        e(d, "else:")
        e(d + 1, "_bad('bad union index')")


def compile_reader(
    schema: Schema,
    names: dict[str, Schema],
    construct: Callable[..., Any] | None = None,
    prefix: tuple[Any, ...] = (),
    start: int = 0,
    native: bool = NATIVE,
    projection: Projection | None = None,
    slots: tuple[Any, ...] | None = None,
) -> Callable[[bytes], Any]:
    """A function reading one value of record `schema` from `buf[start:]`, which it must fill.

    With `construct`, the top-level fields are passed positionally as `construct(*prefix, *fields)`
    instead of building a dict. Raises AvroDataError (or IndexError, UnicodeDecodeError on
    truncated or garbled bytes, which callers treat alike; _avro.AvroError from the C reader).
    `projection` (the C reader only) leaves out the fields it does not list, still checking their
    bytes; a top-level field left out is passed as None. The Python reader reads every field.
    `slots` (the C reader only): construct's slot descriptors in argument order, for a class whose
    constructor only assigns them; the reader then fills a new object's slots itself.
    """
    gen = _ReaderGen(names)
    kind, s = _kind(schema, names)
    if kind != "record":
        raise UnsupportedSchema("top level must be a record")
    if native:
        reader: Callable[[bytes], Any] = _native.Reader(_program(schema, names, projection), start, construct,
                                                        prefix, slots)
        return reader
    fields = gen.record_fields(s, 1)
    src = gen.src
    src.emit(1, "if p != len(buf):")
    src.emit(2, "_bad('trailing bytes' if p < len(buf) else 'truncated payload')")
    if construct is None:
        src.emit(1, f"return {{{', '.join(f'{n!r}: {v}' for n, v in fields)}}}")
    else:
        args = [src.const(x) for x in prefix] + [v for _, v in fields]
        src.emit(1, f"return {src.const(construct)}({', '.join(args)})")
    header = ["def read(buf):", f"    p = {int(start)}", "    text = buf.decode('latin-1')"]
    return _build("read", header + src.lines, src.consts, s["name"])


class _WriterGen:
    def __init__(self, names: dict[str, Schema]) -> None:
        self.names = names
        self.src = _Source()
        self.stack: list[str] = []

    def value(self, schema: Schema, d: int, v: str) -> None:
        e = self.src.emit
        kind, s = _kind(schema, self.names)
        if kind == "null":
            e(d, f"if {v} is not None:")
            e(d + 1, "_bad('expected null')")
        elif kind == "boolean":
            e(d, f"w(b'\\x01' if {v} else b'\\x00')")
        elif kind in ("int", "long"):
            slow = "_int_bytes" if kind == "int" else "_long_bytes"
            e(d, f"w(_VARINT_1[{v} << 1] if 0 <= {v} < 64 else {slow}({v}))")
        elif kind in ("float", "double"):
            e(d, f"w({self.src.const(struct.Struct('<f' if kind == 'float' else '<d').pack)}({v}))")
        elif kind in ("string", "bytes"):
            raw = self.src.var("s")
            e(d, f"{raw} = {v}.encode()" if kind == "string" else f"{raw} = bytes({v})")
            e(d, f"w(_VARINT_1[len({raw}) << 1] if len({raw}) < 64 else _long_bytes(len({raw})))")
            e(d, f"w({raw})")
        elif kind == "fixed":
            e(d, f"if len({v}) != {int(s['size'])}:")
            e(d + 1, "_bad('fixed of the wrong size')")
            e(d, f"w(bytes({v}))")
        elif kind == "enum":
            index = {sym: _long_bytes(i) for i, sym in enumerate(s["symbols"])}
            e(d, f"w({self.src.const(index)}[{v}])")
        elif kind in ("array", "map"):
            item = self.src.var("item")
            e(d, f"if {v}:")
            e(d + 1, f"w(_long_bytes(len({v})))")
            if kind == "array":
                e(d + 1, f"for {item} in {v}:")
                self.value(s["items"], d + 2, item)
            else:
                key = self.src.var("k")
                e(d + 1, f"for {key}, {item} in {v}.items():")
                self.value("string", d + 2, key)
                self.value(s["values"], d + 2, item)
            e(d, "w(b'\\x00')")
        elif kind == "record":
            self.record(s, d, v, attributes=False)
        else:
            self.union(s, d, v)

    def record(self, s: Schema, d: int, v: str, attributes: bool) -> None:
        if s["name"] in self.stack:
            raise UnsupportedSchema(f"recursive record {s['name']}")
        self.stack.append(s["name"])
        for f in s["fields"]:
            fv = self.src.var()
            if attributes:
                self.src.emit(d, f"{fv} = {v}.{f['name']}")
            elif "default" in f:
                # like fastavro: a missing field takes its default
                self.src.emit(d, f"{fv} = {v}.get({f['name']!r}, {self.src.const(f['default'])})")
            else:
                self.src.emit(d, f"{fv} = {v}[{f['name']!r}]")
            self.value(f["type"], d, fv)
        self.stack.pop()

    def union(self, branches: list[Schema], d: int, v: str) -> None:
        e = self.src.emit
        checks: list[str] = []
        kinds = [_kind(branch, self.names)[0] for branch in branches]
        for index, (branch, kind) in enumerate(zip(branches, kinds, strict=True)):
            test = _UNION_TESTS.get(kind)
            if test is None or test in checks:
                raise UnsupportedSchema(f"union branches cannot be told apart: {branches}")
            checks.append(test)
            condition = test.format(v)
            if kind in ("int", "long") and "boolean" in kinds:  # like fastavro: a bool takes that branch
                condition += f" and not isinstance({v}, bool)"
            e(d, f"{'if' if index == 0 else 'elif'} {condition}:")
            e(d + 1, f"w({_long_bytes(index)!r})")
            if kind != "null":
                self.value(branch, d + 1, v)
        e(d, "else:")
        e(d + 1, "_bad('value matches no branch of the union')")


# How a writer tells union branches apart by the Python type of the value; kinds that share a test
# (a record and a map, two records) make a union the compiler leaves to fastavro.
_UNION_TESTS = {
    "null": "{} is None",
    "boolean": "isinstance({}, bool)",
    "int": "isinstance({}, int)",
    "long": "isinstance({}, int)",
    "float": "isinstance({}, float)",
    "double": "isinstance({}, float)",
    "string": "isinstance({}, str)",
    "enum": "isinstance({}, str)",
    "bytes": "isinstance({}, (bytes, bytearray))",
    "fixed": "isinstance({}, (bytes, bytearray))",
    "array": "isinstance({}, (list, tuple))",
    "map": "isinstance({}, dict)",
    "record": "isinstance({}, dict)",
}


def compile_writer(
    schema: Schema,
    names: dict[str, Schema],
    attributes: bool = False,
    header: bytes = b"",
    native: bool = NATIVE,
) -> Callable[[Any], bytes]:
    """A function encoding one value of record `schema` after `header`; with `attributes` the
    top-level fields are read as attributes of an object (an Event) rather than keys of a dict."""
    gen = _WriterGen(names)
    kind, s = _kind(schema, names)
    if kind != "record":
        raise UnsupportedSchema("top level must be a record")
    if native:
        writer: Callable[[Any], bytes] = _native.Writer(_program(schema, names), header, attributes)
        return writer
    gen.record(s, 1, "obj", attributes)
    lines = ["def write(obj):", f"    out = [{header!r}]", "    w = out.append", *gen.src.lines]
    lines.append("    return b''.join(out)")
    return _build("write", lines, gen.src.consts, s["name"])


def _build(name: str, lines: list[str], consts: dict[str, Any], label: str) -> Callable[..., Any]:
    scope: dict[str, Any] = {
        "_BOOL": _BOOL,
        "_VARINT_1": _VARINT_1,
        "_read_long": _read_long,
        "_read_int": _read_int,
        "_read_size": _read_size,
        "_long_bytes": _long_bytes,
        "_int_bytes": _int_bytes,
        "_bad": _bad,
        **consts,
    }
    exec(compile("\n".join(lines), f"<avro {name} {label}>", "exec"), scope)
    fn: Callable[..., Any] = scope[name]
    return fn
