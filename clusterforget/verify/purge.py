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
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from ..data import ID, LABEL, WEIGHT
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
                readded: list[str] = ()) -> Check:
    """Scan every file under the store ``root`` (manifest ``doc``) for forgotten ids and rows.

    ``names``: how the store names ids (``Store.names()``). ``targets``: keyed hashes of the ids to look for
    (a request's, or every tombstone); each must also be in ``tombstoned`` (recorded as forgotten), and so
    must ``ids``, the ids themselves when the caller knows them. ``forgotten_rows``: the forgotten rows'
    features, to find copies without their ids. ``readded``: the versions that put one of them back
    (``add_rows(..., allow_forgotten=True)``), named when the check fails.
    """
    t0 = time.perf_counter()
    files = store_files(root)
    extra = unreferenced(root, doc, files)
    hits: dict[str, dict[str, Any]] = {}
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
            "found": {k: {"ids": len(v.get("ids", [])), "feature_rows": v.get("feature_rows", 0)} for k, v in hits.items()},
            "unreferenced": extra,
            "not_tombstoned": len(not_recorded),
            "readded_at": list(readded),
        },
        time.perf_counter() - t0,
    )


__all__ = ["check_purge", "store_files"]
