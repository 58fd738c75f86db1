#!/usr/bin/python3
"""avro_py.py: an independent Avro implementation for helmq's interoperability tests.

Encoding and decoding go through python3-avro (Debian's python3-avro 1.11.1); the
Parsing Canonical Form and the CRC-64-AVRO fingerprint are computed here from the
Avro specification, because python3-avro 1.11.1 has no fingerprint function and
its canonical_form is wrong for primitive types carrying attributes (it gives
{"type":"string"} instead of "string" for {"type":"string","logicalType":"uuid"}).
python3-avro's canonical form of the schema, with such attributes removed, is
used as a cross-check: a mismatch is reported on stderr.

Usage (run with /usr/bin/python3):
  avro_py.py encode SCHEMA.avsc
      stdin: one datum as natural JSON; stdout: Avro single-object encoding
      (C3 01, 8-byte little-endian fingerprint of SCHEMA, Avro binary datum).
  avro_py.py decode SCHEMA.avsc [SCHEMA2.avsc ...]
      stdin: single-object bytes. The writer schema is the given schema whose
      fingerprint matches the header; the datum is decoded with Avro schema
      resolution into the FIRST schema (the reader schema), then printed as
      natural JSON (sorted keys, compact, one line).
  avro_py.py fingerprint SCHEMA.avsc|-
      line 1: Parsing Canonical Form; line 2: fingerprint as unsigned decimal;
      line 3: the fingerprint's 8 little-endian bytes as 16 lowercase hex digits.

Natural JSON: records are JSON objects, arrays/maps JSON arrays/objects, unions
with null are the plain value or null (no {"string": ...} wrapper), longs/ints
numbers, booleans booleans, enums strings, bytes/fixed strings of code points
0-255. A record field whose type is a union containing records is FLATTENED:
the chosen branch record's fields are merged into the enclosing object and the
field itself holds the branch record's name in lowercase (e.g. "operation":
"install"). When encoding, a missing field takes its schema default if it has
one; an unknown key is an error.

Exit status: 0 ok; 1 usage or schema error; 2 bad input (JSON not matching
the schema, bytes not single-object encoding, undecodable or unresolvable datum);
3 no given schema has the fingerprint found in the header.
"""
import io
import json
import sys

import avro.errors
import avro.io
import avro.schema

PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
NAMED = ("record", "error", "enum", "fixed")
CRC64_EMPTY = 0xC15D213AA4D7A795
INT_RANGE = (-(1 << 31), (1 << 31) - 1)
LONG_RANGE = (-(1 << 63), (1 << 63) - 1)


class Fail(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


# ---------------------------------------------------------------- fingerprint

def _crc64_table():
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO, table-driven, exactly as the Avro specification's reference code."""
    fp = CRC64_EMPTY
    for b in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ b) & 0xFF]
    return fp


def _dumps(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _fullname(name, namespace):
    if "." in name or not namespace:
        return name
    return namespace + "." + name


def canonical_form(schema_json) -> str:
    """Parsing Canonical Form (Avro spec): PRIMITIVES, FULLNAMES, STRIP, ORDER,
    STRINGS, INTEGERS, WHITESPACE. A named type seen before is written as its
    full name, like Java's SchemaNormalization."""
    named = set()

    def ref(name, ns):
        if name in PRIMITIVES:
            return _dumps(name)
        if "." not in name and ns and (ns + "." + name) in named:
            return _dumps(ns + "." + name)
        if name in named:
            return _dumps(name)
        return _dumps(_fullname(name, ns))

    def pcf(s, ns):
        if isinstance(s, str):
            return ref(s, ns)
        if isinstance(s, list):
            return "[" + ",".join(pcf(b, ns) for b in s) + "]"
        if not isinstance(s, dict) or "type" not in s:
            raise Fail(1, f"not an Avro schema: {_dumps(s)}")
        t = s["type"]
        if not isinstance(t, str):
            return pcf(t, ns)
        if t in PRIMITIVES:
            return _dumps(t)
        if t in NAMED:
            name = s["name"]
            if "." in name:
                fn = name
            else:
                fn = _fullname(name, s["namespace"] if "namespace" in s else ns)
            if fn in named:
                return _dumps(fn)
            named.add(fn)
            inner_ns = fn.rpartition(".")[0]
            out = '{"name":' + _dumps(fn) + ',"type":' + _dumps("record" if t == "error" else t)
            if t in ("record", "error"):
                out += ',"fields":[' + ",".join(
                    '{"name":' + _dumps(f["name"]) + ',"type":' + pcf(f["type"], inner_ns) + "}"
                    for f in s["fields"]) + "]"
            elif t == "enum":
                out += ',"symbols":' + _dumps(list(s["symbols"]))
            else:
                out += ',"size":' + str(int(s["size"]))
            return out + "}"
        if t == "array":
            return '{"type":"array","items":' + pcf(s["items"], ns) + "}"
        if t == "map":
            return '{"type":"map","values":' + pcf(s["values"], ns) + "}"
        return ref(t, ns)  # {"type": "SomeNamedType"}

    return pcf(schema_json, "")


def fingerprint(schema_json) -> int:
    return crc64_avro(canonical_form(schema_json).encode("utf-8"))


def fingerprint_le_hex(fp: int) -> str:
    return fp.to_bytes(8, "little").hex()


# ------------------------------------------------------------ schema loading

def _plain(s):
    """The schema without attributes that do not change the encoding: logical
    types are dropped (so python3-avro returns plain ints/strings, never
    datetime objects), primitive objects become their bare names."""
    if isinstance(s, list):
        return [_plain(b) for b in s]
    if not isinstance(s, dict):
        return s
    t = s.get("type")
    if isinstance(t, str) and t in PRIMITIVES:
        return t
    out = {k: v for k, v in s.items() if k != "logicalType"}
    if isinstance(t, (dict, list)):
        out["type"] = _plain(t)
    if "fields" in s:
        out["fields"] = [dict(f, type=_plain(f["type"])) for f in s["fields"]]
    if "items" in s:
        out["items"] = _plain(s["items"])
    if "values" in s:
        out["values"] = _plain(s["values"])
    return out


class Schema:
    def __init__(self, path):
        self.path = path
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
            self.json = json.loads(text)
        except (OSError, ValueError) as e:
            raise Fail(1, f"{path}: cannot read schema: {e}")
        self.canonical = canonical_form(self.json)
        self.fingerprint = crc64_avro(self.canonical.encode("utf-8"))
        self.parsed = None
        self.parse_error = None
        try:
            self.parsed = avro.schema.parse(json.dumps(_plain(self.json)))
        except Exception as e:  # python3-avro refuses it
            self.parse_error = e

    def avro(self):
        if self.parsed is None:
            raise Fail(1, f"{self.path}: python3-avro cannot parse the schema: {self.parse_error}")
        return self.parsed

    def cross_check(self):
        if self.parsed is None:
            sys.stderr.write(f"avro_py: warning: {self.path}: python3-avro cannot parse it "
                             f"({self.parse_error}); canonical form not cross-checked\n")
            return
        theirs = self.parsed.canonical_form
        if theirs != self.canonical:
            sys.stderr.write(f"avro_py: warning: {self.path}: python3-avro's canonical form differs:\n"
                             f"  ours:   {self.canonical}\n  theirs: {theirs}\n")


# ------------------------------------------------------- natural JSON <-> datum

class Branch:
    """A union value with its branch index made explicit."""
    __slots__ = ("index", "value")

    def __init__(self, index, value):
        self.index = index
        self.value = value


def _is_record(s):
    return isinstance(s, avro.schema.RecordSchema)


def _flattened(field):
    t = field.type
    return isinstance(t, avro.schema.UnionSchema) and any(_is_record(b) for b in t.schemas)


def _tname(s):
    return s.type if not hasattr(s, "fullname") else s.fullname


def _default_datum(schema, value, path):
    """A field default (Avro JSON, first union branch) as a datum for the writer."""
    if isinstance(schema, avro.schema.UnionSchema):
        return Branch(0, _default_datum(schema.schemas[0], value, path))
    if _is_record(schema):
        if not isinstance(value, dict):
            raise Fail(1, f"{path}: bad record default")
        return {f.name: _default_datum(f.type, value[f.name] if f.name in value else f.default, path + "." + f.name)
                for f in schema.fields}
    if isinstance(schema, avro.schema.ArraySchema):
        return [_default_datum(schema.items, v, path) for v in value]
    if isinstance(schema, avro.schema.MapSchema):
        return {k: _default_datum(schema.values, v, path) for k, v in value.items()}
    return from_natural(schema, value, path)


def _record_fields_from_natural(rec, obj, path):
    """Returns (datum dict, keys of obj consumed)."""
    datum, used = {}, set()
    for f in rec.fields:
        fpath = f"{path}.{f.name}" if path else f.name
        if f.name in used:
            raise Fail(1, f"{fpath}: field name collides with a flattened field")
        used.add(f.name)
        if f.name not in obj:
            if not f.has_default:
                raise Fail(2, f"{fpath}: missing (no default)")
            datum[f.name] = _default_datum(f.type, f.default, fpath)
            continue
        value = obj[f.name]
        if _flattened(f) and isinstance(value, str):
            idx = next((i for i, b in enumerate(f.type.schemas)
                        if _is_record(b) and b.name.lower() == value), None)
            if idx is not None:
                sub, sub_used = _record_fields_from_natural(f.type.schemas[idx], obj, path)
                clash = sub_used & used
                if clash:
                    raise Fail(1, f"{fpath}: cannot flatten {value}: field(s) {sorted(clash)} clash")
                used |= sub_used
                datum[f.name] = Branch(idx, sub)
                continue
            if not any(b.type in ("string", "enum") for b in f.type.schemas):
                names = [b.name.lower() for b in f.type.schemas if _is_record(b)]
                raise Fail(2, f"{fpath}: {value!r} is not one of {names}")
        datum[f.name] = from_natural(f.type, value, fpath)
    return datum, used


def from_natural(schema, value, path="$"):
    """Natural JSON value -> datum for the Branch-aware writer."""
    t = schema.type
    bad = Fail(2, f"{path}: {_dumps(value)[:80]} is not a valid {_tname(schema)}")
    if isinstance(schema, avro.schema.UnionSchema):
        if value is None:
            for i, b in enumerate(schema.schemas):
                if b.type == "null":
                    return Branch(i, None)
            raise bad
        errors = []
        for i, b in enumerate(schema.schemas):
            if b.type == "null":
                continue
            try:
                return Branch(i, from_natural(b, value, path))
            except Fail as e:
                errors.append(str(e))
        raise Fail(2, f"{path}: no union branch accepts {_dumps(value)[:80]}: " + "; ".join(errors))
    if t == "null":
        if value is None:
            return None
        raise bad
    if t == "boolean":
        if isinstance(value, bool):
            return value
        raise bad
    if t in ("int", "long"):
        lo, hi = INT_RANGE if t == "int" else LONG_RANGE
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
        raise bad
    if t in ("float", "double"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if t == "string":
        if isinstance(value, str):
            return value
        raise bad
    if t in ("bytes", "fixed"):
        if not isinstance(value, str):
            raise bad
        try:
            b = value.encode("latin-1")
        except UnicodeEncodeError:
            raise bad
        if t == "fixed" and len(b) != schema.size:
            raise bad
        return b
    if t == "enum":
        if isinstance(value, str) and value in schema.symbols:
            return value
        raise bad
    if t == "array":
        if not isinstance(value, list):
            raise bad
        return [from_natural(schema.items, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if t == "map":
        if not isinstance(value, dict):
            raise bad
        return {k: from_natural(schema.values, v, f"{path}.{k}") for k, v in value.items()}
    if _is_record(schema):
        if not isinstance(value, dict):
            raise bad
        datum, used = _record_fields_from_natural(schema, value, "" if path == "$" else path)
        unknown = sorted(set(value) - used)
        if unknown:
            raise Fail(2, f"{path}: unknown field(s) {unknown} for {schema.fullname}")
        return datum
    raise Fail(1, f"{path}: unsupported schema type {t}")


def to_natural(schema, datum):
    """Datum from the Branch-aware reader (reader schema) -> natural JSON value."""
    if isinstance(schema, avro.schema.UnionSchema):
        if not isinstance(datum, Branch):  # a default value: first branch
            datum = Branch(0, datum)
        return to_natural(schema.schemas[datum.index], datum.value)
    t = schema.type
    if t in ("bytes", "fixed"):
        return datum.decode("latin-1")
    if t in ("float", "double"):
        return float(datum)
    if t == "array":
        return [to_natural(schema.items, v) for v in datum]
    if t == "map":
        return {k: to_natural(schema.values, v) for k, v in datum.items()}
    if _is_record(schema):
        out = {}
        for f in schema.fields:
            v = datum[f.name]
            if _flattened(f):
                b = v if isinstance(v, Branch) else Branch(0, v)
                bs = f.type.schemas[b.index]
                if _is_record(bs):
                    out[f.name] = bs.name.lower()
                    for k, sub in to_natural(bs, b.value).items():
                        if k in out:
                            raise Fail(1, f"cannot flatten {bs.fullname}: field {k} clashes")
                        out[k] = sub
                    continue
            out[f.name] = to_natural(f.type, v)
        return out
    return datum


class _Writer(avro.io.DatumWriter):
    # python3-avro 1.11.1 picks the LAST union branch the datum validates against
    # (so an Install record would be written as Upgrade); use the explicit index.
    def write_union(self, writers_schema, datum, encoder):
        encoder.write_long(datum.index)
        return self.write_data(writers_schema.schemas[datum.index], datum.value, encoder)


class _Reader(avro.io.DatumReader):
    # Same resolution as python3-avro, but union values come back as Branch so
    # the chosen record branch is known.
    def read_data(self, writers_schema, readers_schema, decoder):
        if isinstance(readers_schema, avro.schema.UnionSchema):
            w = writers_schema
            if isinstance(w, avro.schema.UnionSchema):
                idx = decoder.read_long()
                if not 0 <= idx < len(w.schemas):
                    raise avro.errors.SchemaResolutionException(
                        f"union branch index {idx} out of range", writers_schema, readers_schema)
                w = w.schemas[idx]
            for i, r in enumerate(readers_schema.schemas):
                if r.match(w):
                    return Branch(i, self.read_data(w, r, decoder))
            raise avro.errors.SchemaResolutionException("no reader union branch matches", w, readers_schema)
        if isinstance(writers_schema, avro.schema.UnionSchema):
            idx = decoder.read_long()
            if not 0 <= idx < len(writers_schema.schemas):
                raise avro.errors.SchemaResolutionException(
                    f"union branch index {idx} out of range", writers_schema, readers_schema)
            return self.read_data(writers_schema.schemas[idx], readers_schema, decoder)
        return super().read_data(writers_schema, readers_schema, decoder)


MAGIC = b"\xc3\x01"


def encode(schema: Schema, natural) -> bytes:
    s = schema.avro()
    datum = from_natural(s, natural)
    buf = io.BytesIO()
    _Writer(s).write_data(s, datum, avro.io.BinaryEncoder(buf))
    return MAGIC + schema.fingerprint.to_bytes(8, "little") + buf.getvalue()


def decode(schemas, data: bytes):
    if len(data) < 10 or data[:2] != MAGIC:
        raise Fail(2, f"not Avro single-object encoding (header {data[:2].hex() or 'empty'}, {len(data)} bytes)")
    fp = int.from_bytes(data[2:10], "little")
    writer = next((s for s in schemas if s.fingerprint == fp), None)
    if writer is None:
        raise Fail(3, f"unknown schema fingerprint {fp} ({data[2:10].hex()}); known: "
                      + ", ".join(f"{s.path}={s.fingerprint}" for s in schemas))
    reader = schemas[0]
    buf = io.BytesIO(data[10:])
    try:
        datum = _Reader(writer.avro(), reader.avro()).read(avro.io.BinaryDecoder(buf))
    except Fail:
        raise
    except Exception as e:
        raise Fail(2, f"cannot decode with writer {writer.path} / reader {reader.path}: {type(e).__name__}: {e}")
    rest = len(data) - 10 - buf.tell()
    if rest:
        raise Fail(2, f"{rest} trailing byte(s) after the datum")
    return to_natural(reader.avro(), datum)


def _natural_dumps(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def main(argv):
    usage = "usage: avro_py.py encode SCHEMA | decode SCHEMA [SCHEMA...] | fingerprint SCHEMA|-\n"
    if len(argv) < 2 or argv[0] not in ("encode", "decode", "fingerprint") \
            or (argv[0] != "decode" and len(argv) != 2):
        sys.stderr.write(usage)
        return 1
    cmd = argv[0]
    if cmd != "fingerprint" and "-" in argv[1:]:
        sys.stderr.write("avro_py: '-' (schema on stdin) only works with fingerprint\n")
        return 1
    try:
        schemas = [Schema(p) for p in argv[1:]]
        if cmd == "fingerprint":
            s = schemas[0]
            s.cross_check()
            sys.stdout.write(f"{s.canonical}\n{s.fingerprint}\n{fingerprint_le_hex(s.fingerprint)}\n")
        elif cmd == "encode":
            try:
                natural = json.loads(sys.stdin.buffer.read().decode("utf-8"))
            except ValueError as e:
                raise Fail(2, f"stdin is not JSON: {e}")
            sys.stdout.buffer.write(encode(schemas[0], natural))
        else:
            sys.stdout.write(_natural_dumps(decode(schemas, sys.stdin.buffer.read())) + "\n")
        sys.stdout.flush()
        return 0
    except Fail as e:
        sys.stderr.write(f"avro_py {cmd}: {e}\n")
        return e.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
