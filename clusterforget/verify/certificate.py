"""Deletion certificates: signed evidence, for one request, that its rows were deleted and stay deleted.

A certificate is JSON: the request id, when it was issued (UTC), the keyed hashes of the forgotten ids,
the groups the deletion touched, the store versions before and after, every ledger line of the request
with its position and hash (and the first line's hash, which names the store's history), the id of the key
the store names ids with and of the key that authenticates it (none for a store saved without a key), what
it proves, the results of the checks run when it was issued (it is only issued when they pass), and the
library and environment versions. It is signed with HMAC-SHA256 under a key kept *outside* the store
(``store.keys.resolve_key``: the ``key`` argument, ``$CLUSTERFORGET_KEY`` or ``$CLUSTERFORGET_KEY_FILE``), so
holding the store directory is not enough to forge one.

``verify_certificate`` checks the signature, that the ledger still holds those lines at their positions
in its hash chain, that the store is authenticated as certified and names ids with the certified key, that
no later line put an id back, and runs the held, purge and exact checks on the store as it is now.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from ..errors import AuthenticationError, CertificateError, ClusterForgetError
from ..estimators import pipeline_parts
from ..store import auth
from ..store.commit import read_manifest
from ..store.fs import dumps, now, sha
from ..store.keys import resolve_key
from ..version import __version__
from .api import readded, verify
from .result import Check, VerifyResult
from .source import Source, open_store, opening_key, request_line, request_lines, source_of

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


def _sign(body: dict, key: bytes) -> str:
    return hmac.new(key, dumps(body), hashlib.sha256).hexdigest()


def _proves(keyed: bool) -> str:
    if keyed:
        return ("the store is authenticated under a key kept outside it: its files, tombstones and ledger are what "
                "the key holder wrote, and none holds the request's ids or rows")
    return ("the store is NOT authenticated (saved without a key): the certificate proves the request's ledger line(s) "
            "and the store's naming key are as certified and that the store, as found, holds none of the ids; it "
            "proves nothing against whoever can write the store (save the store with key= for that)")


def certificate(model: Any, request_id: str, *, key: Any = None, checks: tuple[str, ...] = ("held", "purge", "exact"),
                store_key: Any = None) -> dict:
    """A signed certificate for the deletion that served ``request_id`` (``model``: a bound model, a store path, or a
    scikit-learn Pipeline ending in a bound model, whose earlier steps must hold nothing fitted on the rows).

    It covers every ledger line written with that ``request_id`` (a request may take several operations).
    ``checks`` run now (see ``cf.verify``; ``held`` and ``purge`` always do); a certificate is only issued
    when they pass (``held`` and ``purge`` must pass, not merely find nothing to look for), and their
    results are part of what is signed. ``store_key``: the key of an authenticated store given as a path (default
    ``key``); given, it is binding: a store it does not authenticate is refused.
    """
    secret = _key(key)
    if not isinstance(model, (Source, str, Path)) and hasattr(model, "steps"):
        model, held = pipeline_parts(model)  # as cf.verify judges a Pipeline: a step with fitted state fails it
        if held:
            raise CertificateError(
                "OUTSIDE THE GUARANTEE: Pipeline step(s) " + "; ".join(f"{name!r} ({cls}: {', '.join(state[:4])})"
                                                                      for name, cls, state in held)
                + f" hold state fitted on the rows, which forgetting through the model does not change, so no "
                f"certificate of request {request_id!r} is issued; refit the Pipeline, or move the step into the "
                "model as preprocessor=")
    if isinstance(model, (str, Path)):
        model = open_store(model, opening_key(model, store_key, secret))
    src = model if isinstance(model, Source) else source_of(model)
    if src.store is None:
        raise CertificateError("the model is not bound to a store, so there is no ledger to certify; model.save(path) "
                               "first, and forget with request_id=")
    own = request_lines(src, request_id)
    lines = src.lines()
    # held and purge always run, and must pass: "info" (nothing to look for) proves no deletion
    result = verify(src, request_id=request_id, checks=tuple(dict.fromkeys(("held", "purge", *checks))))
    unproven = [n for n in ("held", "purge") if result.checks[n].ok is not True]
    if not result.ok or unproven:
        raise CertificateError(f"the checks of request {request_id!r} do not pass ({', '.join(unproven) or 'see below'}), "
                               f"so no certificate is issued:\n{result}")
    entries = [e for _, e, _ in own]
    last_pos, last, raw = request_line(src, request_id)
    digests = sorted({h for e in entries for h in (e.get("forgotten") or {}).get("hmac_sha256", [])})
    keyed = src.store.key is not None
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "request_id": request_id,
        "issued": now(),
        "operation": last.get("operation"),
        "operations": [e.get("operation") for e in entries],
        "ids": {"count": len(digests), "hmac_sha256": digests},
        "groups_touched": sorted({n for e in entries for k in ("groups_retrained", "groups_dropped", "groups_added",
                                                               "groups_pending") for n in e.get(k, [])}),
        "version_before": entries[0].get("old_version"),
        "version_after": max(int(e.get("version", 0)) for e in entries),
        "ledger": {"position": last_pos, "line_sha256": sha(raw), "prev": last.get("prev"),
                   "commit": last.get("commit"), "time": last.get("time"), "genesis_sha256": sha(lines[0][1]),
                   "lines": [{"position": i, "line_sha256": sha(r), "version": e.get("version")} for i, e, r in own]},
        "names_key": src.store.names().key_id,
        "store_key_id": auth.key_id(src.store.key) if keyed else None,
        "proves": _proves(keyed),
        "checks": {n: {"status": c.status, "summary": c.summary} for n, c in result.checks.items()},
        "audit": last.get("audit"),
        "library_version": __version__,
        "environment": src.doc.get("environment"),
    }
    return {**body, "signature": {"alg": ALG, "key_id": auth.key_id(secret), "value": _sign(body, secret)}}


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


def verify_certificate(cert: Any, store_path: Any, *, key: Any = None, store_key: Any = None,
                       exact: str = "fast") -> VerifyResult:
    """Check a certificate against the store as it is now. Trusts nothing inside the store that someone who
    can write it could recompute: the signature is checked under ``key`` (kept outside the store); an
    authenticated store is opened with ``store_key`` (default ``key``) and refused without it, or when its
    authentication was stripped; the certified ledger lines must be at their positions with their hashes;
    the store must name ids with the certified key (a replaced ``secret.key`` fails); no later line may have
    put a certified id back (``add_rows(..., allow_forgotten=True)``: the check names that version); and the
    ``held``, ``purge`` and ``exact`` checks (``exact``: ``"fast"`` or ``"full"``) run on the request.

    Returns a ``VerifyResult`` (``ok`` False on any mismatch) with checks ``signature``, ``ledger``,
    ``store``, ``proves`` and the checks' own.
    """
    t0 = time.perf_counter()
    doc = _load_cert(cert)
    secret = _key(key)
    rid = doc.get("request_id")
    result = VerifyResult(ok=True, request_id=str(rid or ""))
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = doc.get("signature") or {}
    good = isinstance(sig, dict) and sig.get("alg") == ALG and hmac.compare_digest(str(sig.get("value", "")), _sign(body, secret))
    result.add(Check("signature", good, f"{ALG} signature " + ("valid" if good else
                     "INVALID: the certificate was altered or signed with another key"), {"key_id": sig.get("key_id")}))

    def done() -> VerifyResult:
        result.seconds = time.perf_counter() - t0
        return result

    if not good or not isinstance(rid, str) or not rid:
        return done()
    certified_keyed = doc.get("store_key_id") is not None
    try:
        keyed_now = read_manifest(Path(store_path)).get("auth") is not None
        if certified_keyed and not keyed_now:
            raise AuthenticationError(
                f"the certificate was issued on a store authenticated with key id {doc['store_key_id']!r}; the store "
                f"{str(store_path)!r} is no longer authenticated: its authentication was stripped")
        src: Source = open_store(store_path, opening_key(store_path, store_key, secret))
        if certified_keyed and auth.key_id(src.store.key) != doc["store_key_id"]:
            raise AuthenticationError(f"the store is authenticated with key id {auth.key_id(src.store.key)!r}, not the "
                                      f"certified {doc['store_key_id']!r}")
        lines = src.lines()
    except ClusterForgetError as exc:
        result.add(Check("store", False, f"the store cannot be read, is not authentic, or its ledger chain is broken: {exc}"))
        return done()
    led = doc.get("ledger") or {}
    head = {"position": led.get("position"), "line_sha256": led.get("line_sha256")}
    certified = list(led.get("lines") or [])
    if not any(isinstance(i, dict) and i.get("position") == head["position"]
               and i.get("line_sha256") == head["line_sha256"] for i in certified):
        certified.append(head)  # the main line must be one of the request's lines, at its position
    problems = []
    for item in certified:
        pos = item.get("position") if isinstance(item, dict) else None
        if not isinstance(pos, int) or not 0 <= pos < len(lines):
            problems.append(f"the ledger has no line at position {pos!r} ({len(lines)} lines)")
            continue
        entry, raw = lines[pos]
        if sha(raw) != item.get("line_sha256"):
            problems.append(f"line {pos} of the ledger does not have the certified hash: it was edited")
        elif entry.get("request_id") != rid:
            problems.append(f"line {pos} does not record request {rid!r}")
    if not lines or sha(lines[0][1]) != led.get("genesis_sha256"):
        problems.append("the ledger's first line differs: this is another store's history")
    result.add(Check("ledger", not problems, "; ".join(problems) or
                     f"{len(certified)} certified line(s) in the ledger's hash chain, with the certified hashes",
                     {"lines": len(lines)}))
    names = src.store.names()
    if doc.get("names_key") and doc["names_key"] != names.key_id:
        result.add(Check("names", False, f"the store names ids with key id {names.key_id!r}, the certificate's ids were "
                         f"hashed under {doc['names_key']!r}: the store's secret.key was replaced; nothing in it can be "
                         "matched with the certified ids any more"))
    version = int(src.doc["version"])
    later = isinstance(doc.get("version_after"), int) and version >= doc["version_after"]
    if not later:
        result.add(Check("version", False, f"store at version {version}, BEFORE the certified {doc.get('version_after')}: "
                         "an older copy of the store"))
    targets = {bytes.fromhex(h) for h in (doc.get("ids") or {}).get("hmac_sha256", [])}
    last = max([i.get("position", -1) for i in certified if isinstance(i, dict) and isinstance(i.get("position"), int)]
               + [-1])
    back = readded([e for e, _ in lines[last + 1:]], targets)
    if back:
        result.add(Check("readded", False, f"certified id(s) were put back into the model (add_rows with "
                         f"allow_forgotten=True) at {', '.join(back)}: the deletion no longer holds"))
    if not problems:
        checked = verify(src, request_id=rid, checks=("held", "purge", "exact"), exact=exact)
        for name, c in checked.checks.items():
            result.add(c)
    result.add(Check("proves", None, _proves(src.store.key is not None), {"keyed": src.store.key is not None}))
    return done()


def certificate_for(store_path: Any, request_id: str, key: Any = None, store_key: Any = None) -> dict:
    """For the command line: the signed certificate of ``request_id`` in the store at ``store_path``."""
    return certificate(store_path, request_id, key=key, store_key=store_key)


__all__ = ["certificate", "verify_certificate", "certificate_for"]
