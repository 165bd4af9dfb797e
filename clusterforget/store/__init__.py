"""The model store: a directory that holds a fitted model, commits every change atomically, and keeps a ledger.

Layout
------
::

    store/
      manifest.json        the root: format and library version, parameters, fitted state, groups, the files
                           of the current version with their sha256, the committed ledger length; replaced
                           atomically (write temp + fsync, os.replace, fsync directory) on every commit
      rows/<tok>.parquet   one file per group: __cf_id__, __cf_hash__, the features, __cf_label__ (id order)
      members/<tok>.txt    one native model file per member: LightGBM text, XGBoost JSON (.json), or the
                           JSON of a constant member; the member's small metadata lives in the manifest
      tombstones/<tok>.bin sorted HMAC-SHA256 digests (32 bytes each) of every id ever forgotten
      secret.key           the store's random HMAC key (hex)
      ledger.jsonl         append-only JSON lines, one per committed operation, hash-chained
      .lock                the writer lock (``filelock``)

No file name contains a group key, and nothing in the store holds raw ids or feature values of forgotten
rows: data files are immutable and content changes produce new files, so after a commit the files of the
previous version that held forgotten rows are unreferenced and deleted.

With a key kept outside the store (``store.keys.resolve_key``) the manifest and every ledger line carry an
HMAC under it and tombstones are keyed with it (``auth``).

Modules: ``fs`` (durable writes, the lock, path safety) · ``ledger`` · ``tombstones`` · ``auth`` · ``commit`` (the
protocol; knows documents, not models) · ``codec`` (model <-> document; the only one that knows estimators).
"""

from .commit import FORMAT_VERSION, Store, read_ledger, read_manifest, verify


def __getattr__(name: str):
    # codec knows the estimators (scikit-learn): imported when asked for, so that an export's scorer, which
    # reads ``store.fs`` and ``store.commit``, loads neither
    if name in ("load", "save", "remove_unreferenced"):
        from . import codec

        return getattr(codec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Store", "save", "load", "remove_unreferenced", "read_ledger", "read_manifest", "verify", "FORMAT_VERSION"]
