"""Request bodies of ``POST /predict`` decoded under limits: a table of the model's columns, or a short 4xx.

A body comes from anyone who can reach the port, so it is hostile until decoded: its bytes (as the service reads
it), its rows, the size it decodes to and its JSON nesting are bounded (``Limits``), and every way it can be
malformed ends in ``BodyError`` (an HTTP status and a message of at most ``MESSAGE_CHARS`` characters), never in
an exception the service did not expect. Arrow IPC streams are checked message by message *before* a batch is decoded: the row count of each
record batch and the decompressed length of each of its buffers are read from the message's metadata and the
8-byte length prefix Arrow puts before every compressed buffer, so a few kilobytes of zstd that would expand to
gigabytes are refused (413) having decompressed nothing. Dictionary-encoded strings are counted as the strings
they expand to.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..data import CATEGORICAL, Schema
from ..errors import short

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Limits:
    """What one ``/predict`` request may hold; each is settable (``serve --max-body-bytes ...`` or
    ``$CLUSTERFORGET_SERVE_MAX_BODY_BYTES`` and so on)."""

    max_body_bytes: int = 16 << 20  # bytes on the wire (413 past it)
    max_rows: int = 100_000  # rows in one request (413)
    max_decoded_bytes: int = 256 << 20  # what an Arrow body decodes to, strings expanded (413)
    max_json_depth: int = 8  # nesting of JSON arrays and objects ({"rows": [{...}]} is 3) (400)

    @classmethod
    def from_env(cls, **given: Any) -> "Limits":
        """Limits from keyword arguments (None: not given), then ``$CLUSTERFORGET_SERVE_<NAME>``, then defaults."""
        values = {}
        for f in fields(cls):
            value = given.get(f.name)
            if value is None:
                env = os.environ.get(f"CLUSTERFORGET_SERVE_{f.name.upper()}")
                value = int(env) if env else None
            if value is not None:
                if int(value) < 1:
                    raise ValueError(f"the limit {f.name} must be at least 1, got {value!r}")
                values[f.name] = int(value)
        return cls(**values)


class BodyError(Exception):
    """A request body the service refuses: ``status`` (400, 413, 415, 422) and a short ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = short(message)


def names(values: list[Any], limit: int = 5) -> str:
    """A few names quoted (each cut short), and how many more: never the whole of a hostile list."""
    shown = [short(repr(v), 40) for v in values[:limit]]
    return "[" + ", ".join(shown) + (f", ... {len(values) - limit} more" if len(values) > limit else "") + "]"


def is_arrow(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == ARROW_STREAM


def decode(body: bytes, content_type: str, schema: Schema, limits: Limits,
           plain: bool = False) -> tuple[pa.Table | list[Any], dict[str, Any]]:
    """The body as a table of the model's columns in the model's order, and the request's options (a JSON body's
    ``"explain"``); ``BodyError`` otherwise. With ``plain``, a JSON body of one plainly valid row and no
    ``"explain"`` comes back as that row's canonical values instead (``plain_row``: what the table's ``data.one_row`` would give)."""
    try:
        if is_arrow(content_type):
            return from_arrow(body, schema, limits), {}
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in ("", "application/json") and not media.endswith("+json"):
            raise BodyError(415, f"content type {short(content_type, 60)!r} is not application/json or {ARROW_STREAM}")
        doc_options: dict[str, Any] = {}
        rows = json_rows(body, limits, doc_options)
        values = plain_row(rows, schema) if plain and "explain" not in doc_options else None
        return (rows_table(rows, schema, limits) if values is None else values), doc_options
    except BodyError:
        raise
    except MemoryError:
        raise BodyError(413, "the body does not fit in memory") from None
    except Exception as exc:  # noqa: BLE001 - whatever a hostile body makes a decoder raise is a bad body
        raise BodyError(400, f"the body cannot be decoded: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------------- JSON


_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")  # mixed bracket kinds are json.loads' error, not a depth


def nests_deeper(body: bytes, limit: int) -> bool:
    """Whether a JSON text nests arrays and objects deeper than ``limit``, brackets inside strings not counted.

    Byte-level passes in C, building no object: escapes out (a backslash pair, then an escaped quote, paired left to
    right as a JSON reader pairs them), everything but quotes and brackets out, strings out; then innermost bracket
    pairs are removed ``limit`` times: what remains nests deeper (or does not match, which is no JSON either).
    """
    s = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(_ONE_KIND, _NOT_STRUCTURE)
    s = _STRING.sub(b"", s.replace(b'""', b""))
    for _ in range(limit):
        if not s:
            return False
        inner = s.replace(b"[]", b"")
        if len(inner) == len(s):
            break
        s = inner
    return bool(s)


def from_json(body: bytes, schema: Schema, limits: Limits, options: dict[str, Any] | None = None) -> pa.Table:
    return rows_table(json_rows(body, limits, options), schema, limits)


def json_rows(body: bytes, limits: Limits, options: dict[str, Any] | None = None) -> Any:
    """The ``"rows"`` of a ``{"rows": [...], "explain": k}`` body (checked by ``rows_table``), its depth bounded
    before it is parsed; ``"explain"`` goes to ``options``."""
    if nests_deeper(body, limits.max_json_depth):
        raise BodyError(400, f"the JSON body nests deeper than {limits.max_json_depth} levels; send "
                        '{"rows": [{"column": value, ...}, ...]}')
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BodyError(400, f"the body is not JSON: {exc}") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or set(doc) - {"rows", "explain"}:
        raise BodyError(422, 'the body must be {"rows": [{"column": value, ...}, ...]}'
                        + (f"; unexpected keys {names(sorted(set(doc) - {'rows', 'explain'}))}" if isinstance(doc, dict)
                           else ""))
    if options is not None and "explain" in doc:
        options["explain"] = doc["explain"]
    return rows


_EXACT = float(1 << 53)  # integers past it are not exactly float64: Arrow refuses them (rows_table's 422)


def plain_row(rows: Any, schema: Schema) -> list[Any] | None:
    """The canonical values (``data.one_row``) of ``rows`` when it is one row holding exactly the model's columns,
    each plainly valid: a finite or NaN float, an integer float64 holds exactly, or null for a numeric column; an
    ASCII string or null for a categorical one. These are the values ``rows_table`` then ``one_row`` give,
    without building Arrow arrays (most of a one-row request). None for anything else: ``rows_table`` then
    converts it or refuses it with its own message."""
    if type(rows) is not list or len(rows) != 1 or type(rows[0]) is not dict or len(rows[0]) != len(schema.names):
        return None
    row = rows[0]
    out: list[Any] = []
    for name, kind in zip(schema.names, schema.kinds):
        if name not in row:
            return None
        v = row[name]
        t = type(v)
        if v is None:
            out.append(None if kind == CATEGORICAL else math.nan)
        elif kind == CATEGORICAL:
            if t is not str or not v.isascii():  # other text: Arrow's UTF-8 check decides
                return None
            out.append(v)
        elif t is float:
            if v - v != 0.0 and v == v:  # infinities: the general path decides
                return None
            out.append(v + 0.0)  # -0.0 as 0.0, as one_row gives it
        elif t is int and -_EXACT <= v <= _EXACT:
            out.append(float(v) + 0.0)
        else:
            return None
    return out


def rows_table(rows: Any, schema: Schema, limits: Limits) -> pa.Table:
    """Rows (``[{"column": value}, ...]``, from any protocol) as a table of the model's columns, or ``BodyError``."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise BodyError(422, 'the body must be {"rows": [{"column": value, ...}, ...]} with at least one row')
    if len(rows) > limits.max_rows:
        raise BodyError(413, f"the body has {len(rows)} rows, over the limit of {limits.max_rows}; send fewer per request")
    known = set(schema.names)
    extra = sorted({k for r in rows for k in r if k not in known})
    if extra:
        raise BodyError(422, f"unknown column(s) {names(extra)}; the model's columns are {names(list(schema.names), 20)}")
    cols = []
    for name, kind in zip(schema.names, schema.kinds):
        values = [r.get(name) for r in rows]
        if not any(name in r for r in rows):
            raise BodyError(422, f"column {short(repr(name), 60)} is missing from every row; send it (null for a "
                            "missing value)")
        if kind == CATEGORICAL:
            bad = next((v for v in values if v is not None and not isinstance(v, str)), None)
            want, typ = "strings", pa.string()
        else:
            # JSON true/false are not numbers: a client sending them meant something else (send 1 / 0)
            bad = next((v for v in values if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))),
                       None)
            want, typ = "numbers", pa.float64()
        if bad is not None:
            raise BodyError(422, f"column {short(repr(name), 60)} must hold {want} or null, got {short(repr(bad), 60)}")
        try:
            cols.append(pa.array(values, typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise BodyError(422, f"column {short(repr(name), 60)} must hold {want} or null ({exc})") from None
    return pa.table(cols, names=list(schema.names))


# --------------------------------------------------------------------------------------------------- Arrow


def _table_field(buf: bytes, table: int, index: int) -> int | None:
    """Absolute position of field ``index`` of the flatbuffer table at ``table``, or None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * index >= vsize:
        return None
    off = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return None if off == 0 else table + off


def _vector(buf: bytes, pos: int) -> tuple[int, int]:
    """Start and length of the flatbuffer vector whose offset is at ``pos``."""
    start = pos + struct.unpack_from("<I", buf, pos)[0]
    return start + 4, struct.unpack_from("<I", buf, start)[0]


def batch_size(metadata: Any, body: Any) -> tuple[int, int]:
    """Rows and decoded bytes of a record batch (or dictionary batch) message, from its metadata and the length
    prefixes of its compressed buffers, decompressing nothing (Arrow's ``Message.fbs`` / ``Schema.fbs``).
    ``metadata`` and ``body``: anything with the buffer protocol (``pa.Buffer``: read in place, never copied)."""
    buf = memoryview(metadata).cast("B")
    root = struct.unpack_from("<I", buf, 0)[0]
    header = _table_field(buf, root, 2)  # Message.header
    if header is None:
        raise ValueError("a message without a header")
    header += struct.unpack_from("<I", buf, header)[0]
    kind = buf[_table_field(buf, root, 1)] if _table_field(buf, root, 1) is not None else 0
    if kind == 2:  # DictionaryBatch: id, data (a RecordBatch), isDelta
        data = _table_field(buf, header, 1)
        if data is None:
            raise ValueError("a dictionary batch without data")
        header = data + struct.unpack_from("<I", buf, data)[0]
    length_at = _table_field(buf, header, 0)
    rows = struct.unpack_from("<q", buf, length_at)[0] if length_at is not None else 0
    buffers_at = _table_field(buf, header, 2)
    compressed = _table_field(buf, header, 3) is not None
    decoded = 0
    if buffers_at is not None:
        start, n = _vector(buf, buffers_at)
        for i in range(n):
            offset, length = struct.unpack_from("<qq", buf, start + 16 * i)
            if offset < 0 or length < 0 or offset + length > len(body):
                raise ValueError("a buffer outside the message body")
            if compressed and length >= 8:
                size = struct.unpack_from("<q", body, offset)[0]
                if size < -1:  # -1: stored uncompressed; below, it would cancel another buffer's size in the sum
                    raise ValueError(f"a compressed buffer announces a negative length ({size})")
                decoded += length - 8 if size == -1 else size
            else:
                decoded += length
    if rows < 0 or decoded < 0:
        raise ValueError("a negative length")
    return rows, decoded


def from_arrow(body: bytes, schema: Schema, limits: Limits) -> pa.Table:
    data = pa.py_buffer(body)  # one view of the request's bytes for both passes: no copy
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(data))
    rows = decoded = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        if message is None:
            break
        if message.type in ("record batch", "dictionary batch"):
            r, d = batch_size(message.metadata, message.body if message.body is not None else b"")
            rows += r if message.type == "record batch" else 0
            decoded += d
            if rows > limits.max_rows:
                raise BodyError(413, f"the Arrow stream holds over {limits.max_rows} rows (the limit); send fewer per "
                                "request")
            if decoded > limits.max_decoded_bytes:
                raise BodyError(413, f"the Arrow stream decodes to over {limits.max_decoded_bytes} bytes (the limit)")
    table = pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    table.validate(full=True)  # offsets and lengths checked before any kernel reads the buffers
    if table.num_rows == 0:
        raise BodyError(422, "the Arrow stream holds no rows; send at least one")
    known = set(schema.names)
    extra = [c for c in table.column_names if c not in known]
    if extra:
        raise BodyError(422, f"unknown column(s) {names(extra)}; the model's columns are {names(list(schema.names), 20)}")
    if len(set(table.column_names)) != table.num_columns:
        raise BodyError(422, "the Arrow stream names a column twice")
    cols = []
    expanded = 0
    for name, kind in zip(schema.names, schema.kinds):
        if name not in table.column_names:
            raise BodyError(422, f"column {short(repr(name), 60)} is missing; send it (nulls for missing values)")
        col = table.column(name)
        typ = col.type
        if kind == CATEGORICAL:
            if pa.types.is_dictionary(typ) and (pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type)):
                for chunk in col.chunks:  # what the strings take once expanded, before expanding them
                    lengths = pc.binary_length(chunk.dictionary)
                    expanded += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + 8 * len(chunk)
                if decoded + expanded > limits.max_decoded_bytes:
                    raise BodyError(413, f"the Arrow stream's strings expand to over {limits.max_decoded_bytes} bytes "
                                    "(the limit)")
            elif not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)):
                raise BodyError(422, f"column {short(repr(name), 60)} must be strings, got Arrow type {short(typ, 60)}")
            cols.append(col.cast(pa.string()))
        else:
            if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)
                    or pa.types.is_decimal(typ) or pa.types.is_null(typ)):
                raise BodyError(422, f"column {short(repr(name), 60)} must be numbers, got Arrow type {short(typ, 60)}")
            cols.append(col.cast(pa.float64()))
    return pa.table(cols, names=list(schema.names)).combine_chunks()


__all__ = ["Limits", "BodyError", "decode", "from_json", "json_rows", "plain_row", "from_arrow", "nests_deeper", "rows_table", "ARROW_STREAM"]
