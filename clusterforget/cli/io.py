"""Tables in and out of the command line: CSV, Parquet or Arrow IPC in; Parquet or CSV out, by extension."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from ..errors import InputError

READERS = {".csv": "csv", ".txt": "csv", ".gz": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".arrow": "ipc", ".feather": "ipc", ".ipc": "ipc", ".arrows": "ipc"}
WRITERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: str) -> pa.Table:
    """A data file as an Arrow table: CSV (``.csv``, ``.csv.gz``), Parquet or Arrow IPC (file or stream)."""
    p = Path(path)
    kind = READERS.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"cannot read {path!r}: its extension is not one of {sorted(READERS)!r} (CSV, Parquet, Arrow IPC)")
    if not p.is_file():
        raise InputError(f"data file {path!r} does not exist")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p, use_threads=False)  # no Arrow thread pool to abort at exit (apache/arrow#34314)
        if kind == "ipc":
            import pyarrow.ipc as ipc

            try:
                return ipc.open_file(p).read_all()
            except pa.ArrowInvalid:  # the stream format (``.arrows``) has no footer
                return ipc.open_stream(p).read_all()
        import pyarrow.csv as pcsv

        return pcsv.read_csv(p)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {path!r} as {kind}: {exc}") from exc


def write_table(table: pa.Table, path: str | None) -> None:
    """Write ``table`` to ``path`` (format by extension), or as CSV to standard output when ``path`` is None."""
    import pyarrow.csv as pcsv

    if path is None:
        out: BinaryIO = sys.stdout.buffer
        pcsv.write_csv(table, out)
        out.flush()
        return
    kind = WRITERS.get(Path(path).suffix.lower())
    if kind is None:
        raise InputError(f"cannot write {path!r}: name the output .csv or .parquet")
    if kind == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        pcsv.write_csv(table, path)


def features(table: pa.Table, names: Any) -> pa.Table:
    """Only the model's feature columns (a file may carry the target or an id column too)."""
    return table.drop_columns([c for c in table.column_names if c not in set(names)])
