"""The ledger: one hash-chained JSON line per committed version, recording what the operation did.

Each line holds the sha256 of the previous line (``prev``); the manifest records the committed length, the
number of lines and the hash of the last one, so a line that was altered, dropped or appended outside a
commit is detected. The ledger never holds raw ids or feature values: forgotten ids appear as keyed hashes,
and a group whose key left the model is named by a keyed hash too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ChecksumError
from ..report import Report
from . import tombstones
from .fs import LEDGER, crash_point, dumps, now, sha


def entry(report: Report, *, old_version: int | None, version: int, commit: str, prev: str,
          forgotten: list[bytes], live_names: set[str], live_keys: set[str], n_rows: int, names: tombstones.Names,
          keys_are_data: bool = True, readded: list[bytes] = (), reweighted: list[bytes] = ()) -> dict:
    """The ledger line of one commit.

    ``keys_are_data``: group keys are values of the rows (key columns), so every group is named by a keyed
    hash: a key live now may be forgotten later, and the ledger is append-only. Shard and cluster numbers
    are not data and stay readable (a dropped one is hashed all the same).
    """

    def safe_name(name: str) -> str:
        base = name.split(" [shard ")[0]
        if not keys_are_data and (name in live_names or base in live_keys):
            return name
        return names.group(name)

    line: dict[str, Any] = {
        "commit": commit,
        "prev": prev,
        "operation": report.operation,
        "time": now(),
        "old_version": old_version,
        "version": version,
        "seconds": round(float(report.seconds), 6),
        "rows_removed": int(report.rows_removed),
        "rows_added": int(report.rows_added),
        "rows_relabeled": int(report.rows_relabeled),
        "groups_retrained": [safe_name(n) for n in report.groups_retrained],
        "groups_dropped": [safe_name(n) for n in report.groups_dropped],
        "groups_added": [safe_name(n) for n in report.groups_added],
        "groups_pending": [safe_name(n) for n in report.groups_pending],
        "clustering_refit": bool(report.clustering_refit),
        "clustering_changed": bool(report.clustering_changed),
        "rows_moved": int(report.rows_moved),
        "is_deletion": bool(report.is_deletion),
        "n_rows": n_rows,
        "names_key": names.key_id,  # which key the digests below are under: a replaced secret.key shows here
    }
    if getattr(report, "regrouped", False):  # grouping="auto" crossed a threshold: every group was rebuilt
        line["regrouped"] = True
    if report.request_id:
        line["request_id"] = report.request_id
    if getattr(report, "rule", ""):
        line["rule"] = report.rule
        line["rows_matched"] = int(getattr(report, "rows_matched", 0))
    if report.note and not report.rows_removed and not report.groups_dropped:
        line["note"] = report.note
        if keys_are_data and report.operation == "set_group_weight":
            # the report's note names the key, which would outlive a later forget_group of that group
            line["note"] = ("a group's weight was set; this is NOT a deletion: its rows and member are kept "
                            "(group keys are data, so the ledger does not name the group)")
    if getattr(report, "audit", None):
        line["audit"] = report.audit
    if report.rows_reweighted:
        line["rows_reweighted"] = int(report.rows_reweighted)
    if reweighted:  # which rows, never their raw ids
        line["reweighted"] = {"count": len(reweighted), "hmac_sha256": [d.hex() for d in reweighted]}
    if forgotten:
        line["forgotten"] = {"count": len(forgotten), "hmac_sha256": [d.hex() for d in forgotten]}
    if readded:  # forgotten ids put back (allow_forgotten=True): their requests' certificates fail from here on
        line["readded"] = {"count": len(readded), "hmac_sha256": [d.hex() for d in readded]}
    return line


def append(path: Path, line: dict) -> bytes:
    """Append a line and fsync; returns its bytes (the manifest records their hash)."""
    data = dumps(line)
    crash_point("ledger-open")
    with open(path / LEDGER, "ab") as f:
        f.write(data[: len(data) // 2])
        crash_point("ledger-half")  # a torn line
        f.write(data[len(data) // 2 :] + b"\n")
        f.flush()
        crash_point("ledger-unsynced")
        os.fsync(f.fileno())
    return data


def truncate(path: Path, size: int) -> None:
    """Cut an uncommitted tail (left by a crashed commit) back to the committed ``size``."""
    p = path / LEDGER
    actual = p.stat().st_size if p.exists() else 0
    if actual > size:
        crash_point("ledger-truncate")
        with open(p, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
    elif actual < size:
        raise ChecksumError(
            f"{LEDGER} in {str(path)!r} is shorter than the committed length in the manifest; the ledger was "
            "truncated outside clusterforget"
        )


def check_tail(path: Path, doc: dict) -> None:
    """The committed part of the ledger ends with the line whose hash the manifest records."""
    size, tail = int(doc["ledger"]["size"]), doc["ledger"]["tail"]
    lp = path / LEDGER
    if lp.is_symlink() or not lp.exists() or lp.stat().st_size < size:
        raise ChecksumError(f"{LEDGER} in {str(path)!r} is missing committed entries")
    with open(lp, "rb") as f:
        f.seek(max(0, size - 1))
        if size and f.read(1) != b"\n":
            raise ChecksumError(f"{LEDGER} in {str(path)!r} does not end its committed part with a full line")
        # find the start of the last committed line
        start = size - 1
        chunk = 4096
        while start > 0:
            lo = max(0, start - chunk)
            f.seek(lo)
            buf = f.read(start - lo)
            nl = buf.rfind(b"\n")
            if nl >= 0:
                start = lo + nl + 1
                break
            start = lo
        f.seek(start)
        last = f.read(size - 1 - start)
    if sha(last) != tail:
        raise ChecksumError(f"the last committed entry of {LEDGER} in {str(path)!r} does not match the manifest")


def read(path: Path, doc: dict, *, verify: bool = True) -> list[dict]:
    """The committed entries, oldest first; with ``verify`` the hash chain is checked against ``doc``."""
    size = int(doc["ledger"]["size"])
    try:
        with open(path / LEDGER, "rb") as f:
            data = f.read(size)
    except FileNotFoundError:
        raise ChecksumError(f"{LEDGER} is missing from the store {str(path)!r}") from None
    if len(data) < size:
        raise ChecksumError(f"{LEDGER} in {str(path)!r} is missing committed entries")
    lines = data.splitlines()
    out, prev = [], ""
    for i, line in enumerate(lines):
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ChecksumError(f"{LEDGER} line {i + 1} in {str(path)!r} is not JSON: {exc}") from exc
        if verify and item.get("prev") != prev:
            raise ChecksumError(f"{LEDGER} line {i + 1} in {str(path)!r} breaks the hash chain; the ledger was altered")
        prev = sha(line)
        out.append(item)
    if verify and (prev != doc["ledger"]["tail"] or len(lines) != int(doc["ledger"]["lines"])):
        raise ChecksumError(f"{LEDGER} in {str(path)!r} does not match the manifest; the ledger was altered")
    return out


__all__ = ["entry", "append", "truncate", "check_tail", "read"]
