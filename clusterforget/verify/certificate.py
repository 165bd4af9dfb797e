"""Deletion certificates: signed evidence, for one request, that its rows were deleted and stay deleted.

A certificate is JSON: the request id, when it was issued (UTC), the keyed hashes of the forgotten ids,
the groups the deletion touched, the store versions before and after, the ledger line's position and hash
(and the first line's hash, which names the store's history), the results of the checks run when it was
issued, and the library version. It is signed with HMAC-SHA256 under a key kept *outside* the store
(``store.keys.resolve_key``: the ``key`` argument, ``$CLUSTERFORGET_KEY`` or ``$CLUSTERFORGET_KEY_FILE``), so
holding the store directory is not enough to forge one.

``verify_certificate`` checks the signature, that the ledger still holds that line at that position in
its hash chain, and that the store, at that version or a later one, holds none of the ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from ..errors import CertificateError, ClusterForgetError
from ..store.fs import dumps, now, sha
from ..store.keys import resolve_key
from .api import verify
from .purge import check_purge
from .result import Check, VerifyResult
from .source import Source, ledger_lines, open_store, request_line, source_of

FORMAT = "clusterforget-deletion-certificate"
FORMAT_VERSION = 1
ALG = "HMAC-SHA256"


def _key(key: Any) -> bytes:
    k = resolve_key(key)
    if k is None:
        raise CertificateError(
            "no signing key: pass key= (bytes, hex, or a key file's path) or set $CLUSTERFORGET_KEY / "
            "$CLUSTERFORGET_KEY_FILE; keep the key outside the store so that holding the store cannot forge a certificate"
        )
    return k


def key_id(key: bytes) -> str:
    """A short public name of a key (which key signed), from which the key cannot be recovered."""
    return hashlib.sha256(b"clusterforget key id\x00" + key).hexdigest()[:16]


def _sign(body: dict, key: bytes) -> str:
    return hmac.new(key, dumps(body), hashlib.sha256).hexdigest()


def certificate(model: Any, request_id: str, *, key: Any = None, checks: tuple[str, ...] = ("purge", "exact")) -> dict:
    """A signed certificate for the deletion that served ``request_id`` (``model``: a bound model or a store path).

    ``checks`` run now (see ``cf.verify``) and their results are part of what is signed.
    """
    secret = _key(key)
    src = source_of(model)
    if src.store is None:
        raise CertificateError("the model is not bound to a store, so there is no ledger to certify; model.save(path) "
                               "first, and forget with request_id=")
    position, entry, raw = request_line(src.store, request_id)
    lines = ledger_lines(src.store)
    result = verify(src, request_id=request_id, checks=checks) if checks else None
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "request_id": request_id,
        "issued": now(),
        "operation": entry.get("operation"),
        "ids": {"count": int(entry.get("forgotten", {}).get("count", 0)),
                "hmac_sha256": list(entry.get("forgotten", {}).get("hmac_sha256", []))},
        "groups_touched": sorted(set(entry.get("groups_retrained", [])) | set(entry.get("groups_dropped", []))
                                 | set(entry.get("groups_added", []))),
        "version_before": entry.get("old_version"),
        "version_after": entry.get("version"),
        "ledger": {"position": position, "line_sha256": sha(raw), "prev": entry.get("prev"),
                   "commit": entry.get("commit"), "time": entry.get("time"), "genesis_sha256": sha(lines[0][1])},
        "checks": {} if result is None else {n: {"status": c.status, "summary": c.summary} for n, c in result.checks.items()},
        "audit": entry.get("audit"),
        "library_version": _library_version(),
    }
    return {**body, "signature": {"alg": ALG, "key_id": key_id(secret), "value": _sign(body, secret)}}


def _library_version() -> str:
    from .. import __version__

    return __version__


def _load_cert(cert: Any) -> dict:
    if isinstance(cert, dict):
        return cert
    try:
        text = Path(cert).read_text() if isinstance(cert, Path) or (isinstance(cert, str) and not cert.lstrip().startswith("{")) else cert
        doc = json.loads(text)
    except (OSError, ValueError, TypeError) as exc:
        raise CertificateError(f"{str(cert)[:80]!r} is not a certificate (a dict, JSON text or a JSON file): {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CertificateError(f"not a clusterforget deletion certificate (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    return doc


def verify_certificate(cert: Any, store_path: Any, *, key: Any = None) -> VerifyResult:
    """Check a certificate: its signature, its ledger line (position, hash, chain), and the store's contents.

    Returns a ``VerifyResult`` (``ok`` False on any mismatch) with checks ``signature``, ``ledger``, ``store``.
    """
    t0 = time.perf_counter()
    doc = _load_cert(cert)
    secret = _key(key)
    result = VerifyResult(ok=True, request_id=str(doc.get("request_id", "")))
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = doc.get("signature") or {}
    good = isinstance(sig, dict) and sig.get("alg") == ALG and hmac.compare_digest(str(sig.get("value", "")), _sign(body, secret))
    result.add(Check("signature", good, f"{ALG} signature " + ("valid" if good else
                     "INVALID: the certificate was altered or signed with another key"), {"key_id": sig.get("key_id")}))
    try:
        src: Source = open_store(store_path)
        lines = ledger_lines(src.store)
    except ClusterForgetError as exc:
        result.add(Check("ledger", False, f"the store cannot be read or its ledger chain is broken: {exc}"))
        result.seconds = time.perf_counter() - t0
        return result
    led = doc.get("ledger") or {}
    pos = led.get("position")
    problems = []
    if not isinstance(pos, int) or not 0 <= pos < len(lines):
        problems.append(f"the ledger has no line at position {pos!r} ({len(lines)} lines)")
    else:
        entry, raw = lines[pos]
        if sha(raw) != led.get("line_sha256"):
            problems.append(f"line {pos} of the ledger does not have the certified hash")
        if entry.get("request_id") != doc.get("request_id") or entry.get("version") != doc.get("version_after"):
            problems.append(f"line {pos} does not record request {doc.get('request_id')!r} at version {doc.get('version_after')!r}")
        if sha(lines[0][1]) != led.get("genesis_sha256"):
            problems.append("the ledger's first line differs: this is another store's history")
    result.add(Check("ledger", not problems, "; ".join(problems) or
                     f"line {pos} is in the ledger's hash chain, with the certified hash", {"lines": len(lines)}))
    version = int(src.doc["version"])
    targets = {bytes.fromhex(h) for h in (doc.get("ids") or {}).get("hmac_sha256", [])}
    purge = check_purge(src.store.path, src.doc, secret=src.store.secret(), targets=targets)
    later = isinstance(doc.get("version_after"), int) and version >= doc["version_after"]
    ok = later and purge.ok
    result.add(Check("store", ok, f"store at version {version} "
                     + ("(at or after the certified version)" if later else f"(BEFORE the certified {doc.get('version_after')})")
                     + f"; {purge.summary}", {"version": version, "purge": purge.details}))
    result.seconds = time.perf_counter() - t0
    return result


def certificate_for(store_path: Any, request_id: str, key: Any = None) -> dict:
    """For the command line: the signed certificate of ``request_id`` in the store at ``store_path``."""
    return certificate(store_path, request_id, key=key)


__all__ = ["certificate", "verify_certificate", "certificate_for", "key_id"]
