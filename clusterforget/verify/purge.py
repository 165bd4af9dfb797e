"""The purge check: no file under the store holds a forgotten id or row, and no file is unreferenced.

Every regular file under the store directory is read, whatever its name or place: the manifest's files,
an earlier version's leftovers, temporary files, exports written inside it. The check never trusts the
manifest's view of what is there.

* Parquet files (any file starting with the Parquet magic, since a copy can carry any name): the id column
  is hashed with the store's key and compared with the forgotten ids' keyed hashes (the tombstones, or one
  request's hashes from the ledger), so stale rows are found even when the caller does not pass the ids;
  rows equal to a forgotten row's features are found when the caller passes those rows.
* CSV files: the same, after parsing them.
* Every other file: its bytes are searched for each forgotten id written as text (string ids, and integer
  ids in free text) and as a little-endian int64 (binary dumps). Integer ids are not searched as text in
  the store's own structured files (member models, manifest, ledger): their numbers are thresholds, counts
  and versions, and would match small ids by chance.
* Preprocessor documents, wherever they are (the manifest's members, a bundle's manifest, any JSON or JSON-lines
  file holding one): every fitted attribute is decoded (hex floats, base64 arrays, text arrays;
  ``preprocess.held_values``) and compared with the values only the forgotten rows had (their feature values that
  no row the model holds has), when the caller passes those rows. A document it cannot decode fails the check:
  it cannot say what that document holds.
"""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .. import preprocess
from ..data import HASH, ID, LABEL, WEIGHT
from ..errors import ChecksumError
from ..store.tombstones import Names
from ..store.commit import unreferenced
from ..store.fs import CLEAN, LEDGER, LOCK, MANIFEST, MEMBERS_DIR, SECRET, TOMB_DIR, read_parquet, store_files
from .result import Check

_PARQUET_MAGIC = b"PAR1"
_STRUCTURED = (MEMBERS_DIR + "/", TOMB_DIR + "/", MANIFEST, LEDGER, SECRET, LOCK, CLEAN)


def _row_keys(rows: pa.Table, columns: list[str]) -> set[tuple]:
    return set(_row_keys_list(rows, columns))


def _matching_rows(table: pa.Table, forgotten_rows: pa.Table | None) -> int:
    """How many rows of ``table`` equal a forgotten row on every feature column they share."""
    if forgotten_rows is None or forgotten_rows.num_rows == 0:
        return 0
    columns = [c for c in forgotten_rows.column_names if c in table.column_names and c not in (ID, LABEL, WEIGHT)]
    if not columns:
        return 0
    # narrow down with one column's values first (cheap), then compare whole rows
    first = table.column(columns[0])
    try:
        cand = table.filter(pc.is_in(first, value_set=forgotten_rows.column(columns[0]).cast(first.type)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        cand = table
    if cand.num_rows == 0:
        return 0
    wanted = _row_keys(forgotten_rows, columns)
    return sum(1 for r in _row_keys_list(cand, columns) if r in wanted)


def _missing_as_none(v: Any) -> Any:
    # a missing value is NaN in one copy and null in another (a CSV export): both mean "missing"
    return None if isinstance(v, float) and v != v else v


def _row_keys_list(rows: pa.Table, columns: list[str]) -> list[tuple]:
    return [tuple(_missing_as_none(r[c]) for c in columns) for r in rows.select(columns).to_pylist()]


def _table_of(rel: str, data: bytes) -> pa.Table | None:
    if data[:4] == _PARQUET_MAGIC:
        try:
            return read_parquet(data)
        except (pa.ArrowException, OSError):
            return None
    if rel.lower().endswith((".csv", ".tsv")):
        import pyarrow.csv as pcsv

        try:
            opts = pcsv.ParseOptions(delimiter="\t" if rel.lower().endswith(".tsv") else ",")
            # an empty field is a missing value, as the exporter wrote it
            return pcsv.read_csv(io.BytesIO(data), parse_options=opts,
                                 convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        except (pa.ArrowException, OSError):
            return None
    return None


def _ids_in_table(table: pa.Table, names: Names | None, targets: set[bytes], ids: list | None,
                  id_column: str) -> list:
    """Forgotten ids found in the id column of ``table`` (as Python values)."""
    if id_column not in table.column_names:
        return []
    col = table.column(id_column)
    found = []
    if ids:
        try:
            found = pc.filter(col, pc.is_in(col, value_set=pa.array(ids).cast(col.type))).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            found = [v for v in col.to_pylist() if v in set(ids)]
    if targets and names is not None:
        # keyed hashes: finds forgotten rows even when the caller does not know (or pass) their ids
        found += [v for v in col.to_pylist() if v is not None and names.id(v) in targets]
    return sorted(set(found), key=str)


# ------------------------------------------------------------------------- values inside preprocessor documents
_DOC_MARK = preprocess.FORMAT.encode()
_MAX_SHOWN = 5


class _Values:
    """The feature values only the forgotten rows had: numbers (float64, and float32 for arrays of that width) and
    text. A value another row the model holds also has is no trace of the forgotten rows, and is left out, so an
    honest encoder's categories and a shared median never match."""

    def __init__(self, forgotten: pa.Table, kept: pa.Table | None):
        numbers, texts = self._of(forgotten)
        kept_numbers, kept_texts = self._of(kept) if kept is not None else (np.array([]), set())
        self.f64 = np.setdiff1d(numbers, kept_numbers)
        self.f32 = np.setdiff1d(numbers.astype(np.float32), kept_numbers.astype(np.float32))
        self.texts = texts - kept_texts

    @staticmethod
    def _of(rows: pa.Table) -> tuple[np.ndarray, set[str]]:
        numbers, texts = [], set()
        for name in rows.column_names:
            if name in (ID, HASH, LABEL, WEIGHT):
                continue
            col = rows.column(name)
            t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                v = pc.drop_null(col).to_numpy(zero_copy_only=False).astype(np.float64)
                numbers.append(v[~np.isnan(v)])
            elif pa.types.is_string(t) or pa.types.is_large_string(t):
                texts |= {x for x in pc.drop_null(col.cast(t) if t != col.type else col).to_pylist()}
        return (np.unique(np.concatenate(numbers)) if numbers else np.array([])), texts

    def __bool__(self) -> bool:
        return bool(len(self.f64) or self.texts)

    def found(self, values: np.ndarray) -> list[Any]:
        if values.dtype.kind in "fiu":
            wanted = self.f32 if values.dtype == np.float32 else self.f64
            return values[np.isin(values.astype(wanted.dtype), wanted)].tolist()
        out = []
        for x in values.tolist():
            if isinstance(x, str) and x in self.texts:
                out.append(x)
            elif isinstance(x, (int, float)) and not isinstance(x, bool) and np.isin(float(x), self.f64):
                out.append(x)
        return out


def _json_values(data: bytes) -> list[Any]:
    """The JSON values a file holds: the whole file, or one per line (a ledger, JSON lines); [] for neither."""
    try:
        return [json.loads(data)]
    except (ValueError, RecursionError):  # nested past the parser's depth: not a document it can read
        out = []
        for line in data.splitlines():
            if line.lstrip()[:1] in (b"{", b"["):
                try:
                    out.append(json.loads(line))
                except (ValueError, RecursionError):
                    continue
        return out


def _documents(data: bytes) -> list[tuple[str, Any]]:
    """(where, document) of every preprocessor document in a JSON file, found by its format name at any depth."""
    if _DOC_MARK not in data:
        return []
    out, stack = [], [("", v) for v in _json_values(data)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, dict):
            if v.get("format") == preprocess.FORMAT:
                out.append((where, v))
                continue
            stack += [(f"{where}.{k}" if where else str(k), x) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(f"{where}[{i}]", x) for i, x in enumerate(v)]
    return sorted(out, key=lambda d: d[0])


def _values_in_documents(data: bytes, values: _Values | None) -> tuple[list[str], list[str], int]:
    """(fields holding a value only the forgotten rows had, documents that cannot be decoded, documents read)."""
    found, unreadable = [], []
    docs = _documents(data)
    if not docs and _DOC_MARK in data:
        return [], ["names a preprocessor document's format but is not JSON the check can read"], 0
    for where, doc in docs:
        try:
            for field, held in preprocess.held_values(doc):
                hit = values.found(held) if values else []
                if hit:
                    found.append(f"{where}: {field} holds {hit[0]!r}" + (f" (+{len(hit) - 1})" if len(hit) > 1 else ""))
        except ChecksumError as exc:
            unreadable.append(f"{where}: {str(exc)[:200]}")
    return found, unreadable, len(docs)


def _needles(ids: Iterable[Any], structured: bool) -> list[tuple[Any, re.Pattern]]:
    out = []
    for v in ids:
        if isinstance(v, str):
            text = re.escape(v.encode("utf-8"))
            out.append((v, re.compile(rb"(?<![\w-])" + text + rb"(?![\w-])")))
        elif not structured:
            iv = int(v)
            out.append((v, re.compile(rb"(?<![\w.\-])" + str(iv).encode() + rb"(?![\w.])")))
            out.append((v, re.compile(re.escape(np.int64(iv).tobytes()))))
    return out


def check_purge(root: Path, doc: dict, *, names: Names | None, targets: set[bytes], ids: list | None = None,
                forgotten_rows: pa.Table | None = None, tombstoned: set[bytes] | None = None,
                readded: list[str] = (), kept_rows: Callable[[], pa.Table] | None = None) -> Check:
    """Scan every file under the store ``root`` (manifest ``doc``) for forgotten ids and rows.

    ``names``: how the store names ids (``Store.names()``). ``targets``: keyed hashes of the ids to look for
    (a request's, or every tombstone); each must also be in ``tombstoned`` (recorded as forgotten), and so
    must ``ids``, the ids themselves when the caller knows them. ``forgotten_rows``: the forgotten rows'
    features, to find copies without their ids, and their values inside preprocessor documents (those no row of
    ``kept_rows()``, the rows the model holds, has: read only when a document is found). ``readded``: the versions that put one of them back
    (``add_rows(..., allow_forgotten=True)``), named when the check fails.
    """
    t0 = time.perf_counter()
    files = store_files(root)
    extra = unreferenced(root, doc, files)
    given = forgotten_rows is not None and forgotten_rows.num_rows > 0
    values: _Values | None = None
    hits: dict[str, dict[str, Any]] = {}
    documents = 0
    for rel in tqdm(files, desc="purge scan", unit="file", disable=len(files) < 500):
        p = root / rel
        if p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        table = _table_of(rel, data)
        found: dict[str, Any] = {}
        if table is not None:
            id_column = ID if ID in table.column_names else ("id" if "id" in table.column_names else ID)
            held = _ids_in_table(table, names, targets, ids, id_column)
            if held:
                found["ids"] = held
            n = _matching_rows(table, forgotten_rows)
            if n:
                found["feature_rows"] = n
        elif ids:
            structured = rel.startswith(_STRUCTURED)
            held = sorted({v for v, pat in _needles(ids, structured) if pat.search(data)}, key=str)
            if held:
                found["ids"] = held
        if table is None:
            if given and values is None and _DOC_MARK in data:  # the rows held are read once, and only if needed
                values = _Values(forgotten_rows, kept_rows() if kept_rows is not None else None)
            fields, unreadable, n = _values_in_documents(data, values)
            documents += n
            if fields:
                found["preprocessor_values"] = fields
            if unreadable:
                found["preprocessor_unreadable"] = unreadable
        if found:
            hits[rel] = found
    not_recorded: list = []
    if tombstoned is not None and names is not None:
        not_recorded = [v for v in ids or () if names.id(v) not in tombstoned]
        not_recorded += [d.hex()[:16] for d in sorted(targets - tombstoned - names.ids(ids or ()))]
    ok = not hits and not extra and not not_recorded
    parts = [f"{len(files)} file(s) scanned"]
    if hits:
        parts.append(f"forgotten data in {len(hits)} file(s): {sorted(hits)[:5]!r}")
    in_docs = [f"{rel} {f}" for rel, v in sorted(hits.items()) for f in v.get("preprocessor_values", [])]
    if in_docs:
        parts.append(f"a value only the forgotten rows had in {len(in_docs)} preprocessor field(s): "
                     + "; ".join(in_docs[:_MAX_SHOWN]) + " (a stale or planted fitted state: refit or restore the store)")
    bad_docs = [f"{rel} {f}" for rel, v in sorted(hits.items()) for f in v.get("preprocessor_unreadable", [])]
    if bad_docs:
        parts.append(f"{len(bad_docs)} preprocessor document(s) cannot be decoded, so what they hold is unknown: "
                     + "; ".join(bad_docs[:_MAX_SHOWN]))
    if documents and values is not None:
        parts.append(f"{documents} preprocessor document(s) decoded and searched for "
                     f"{len(values.f64) + len(values.texts)} value(s) only the forgotten rows had")
    if documents and not given:
        parts.append(f"{documents} preprocessor document(s) not searched for the forgotten rows' values (pass "
                     "X_forgotten, the forgotten rows, for that)")
    if extra:
        parts.append(f"{len(extra)} file(s) the manifest does not reference: {extra[:5]!r} (look at "
                     "them, then `clusterforget remove-unreferenced STORE` removes them and records it in the ledger)")
    if not_recorded:
        parts.append(f"{len(not_recorded)} id(s) not recorded as forgotten in the tombstones (a tombstone was dropped)")
    if hits and readded:
        parts.append(f"put back by add_rows(allow_forgotten=True) at {', '.join(readded)}")
    if ok:
        parts.append("no forgotten id or row found, no unreferenced file")
    return Check(
        "purge", ok, "; ".join(parts),
        {
            "files_scanned": len(files),
            "keyed_hashes_looked_for": len(targets),
            "ids_looked_for": len(ids or ()),
            "found": {k: {"ids": len(v.get("ids", [])), "feature_rows": v.get("feature_rows", 0),
                          "preprocessor_values": v.get("preprocessor_values", []),
                          "preprocessor_unreadable": v.get("preprocessor_unreadable", [])} for k, v in hits.items()},
            "preprocessor_documents": documents,
            "values_looked_for": 0 if values is None else len(values.f64) + len(values.texts),
            "unreferenced": extra,
            "not_tombstoned": len(not_recorded),
            "readded_at": list(readded),
        },
        time.perf_counter() - t0,
    )


__all__ = ["check_purge", "store_files"]
