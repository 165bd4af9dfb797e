"""Every deletion check, tried against every way of faking a deletion, in every configuration.

checks (held, purge, exact fast, exact full, certificate, certify) x groupings (key on one column, key on two, key with
max_group_rows, KMeansGroups, HashGroups, "auto") x stores (unkeyed, keyed) x backends (local; Dask for a
sample) x plants. A plant is what someone who can write the store does to make a deletion not hold (or to
hide that it does not), fixing every sha256 and the manifest's checksum as they go:

rows_back        the forgotten rows put back into their group's rows file
member_back      the group's member replaced by the one trained with the forgotten rows (its row count fixed)
old_file         the pre-deletion rows file put back next to the current one (unreferenced)
tomb_drop        the request's tombstone file dropped
secret_replaced  the group's pre-deletion rows and member put back, and a new random secret.key written, so
                 the request's keyed hashes match nothing
ledger_rechain   member_back, and the request's ledger line edited to name another group, the chain re-hashed
auth_stripped    ledger_rechain with the lines' names_key left out, and (keyed stores) the manifest's auth section
                 and mac removed, so that the store looks saved without a key: with the store's key given, every reader must refuse it, never read it
                 as an unkeyed store
names_stripped   secret_replaced with every ledger line's names_key left out and the chain re-hashed: the line no
                 longer says which key its digests are under, so a replaced secret.key looks like a store written
                 before lines recorded it; a line without names_key must be refused on an unkeyed store
preprocessor_value  the touched member's preprocessor document (the model imputes means) made to hold a forgotten row's
                 value as its imputer statistic, the document's sha256 and the manifest's checksum recomputed: purge,
                 given the forgotten rows, decodes the document and names the file and field
non_deletion     honest operations that remove no row (add_rows, relabel, reweight), each under its own request
                 id; the checks are run on those requests, and each must fail them (nothing was deleted, so a
                 check that finds nothing to look for must not pass, nor may a certificate be issued)

Every honest run passes; every plant is caught (the check fails, or the store is refused with a typed error)
by each check that should see it (``CAUGHT``). Without a key, someone who can write the store can rewrite
anything the store holds: a fast exact check then trusts the ledger to name the touched members, and only a
full refit or a certificate (which pins the ledger line's hash under a key kept elsewhere) sees a re-chained
ledger. With a key, every plant that changes a referenced file is refused by every reader.

CI runs a sample (``VERIFY_MATRIX`` unset); ``VERIFY_MATRIX=full`` runs every configuration (the README's
"Proving that a deletion worked" gives the measured result).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

import clusterforget as cf
from clusterforget.data import HASH, ID
from clusterforget.store.commit import manifest_checksum
from clusterforget.store.fs import read_parquet, sha
from clusterforget.store.tombstones import group_digest
from clusterforget.verify import verify_store
from conftest import FAST, GROUPINGS, make_table

STORE_KEY = "5a" * 32
CERT_KEY = "c3" * 32
REQ = "REQ-1"

# certificate: the world's certificate, issued on the honest store, verified now; certify: one issued now
CHECKS = ("held", "purge", "exact-fast", "exact-full", "certificate", "certify")
PLANTS = ("honest", "rows_back", "member_back", "old_file", "tomb_drop", "secret_replaced", "ledger_rechain",
          "auth_stripped", "names_stripped", "preprocessor_value", "non_deletion")
NON_DELETIONS = ("REQ-ADD", "REQ-RELABEL", "REQ-REWEIGHT")

_EVERY = set(CHECKS)
# which checks must catch each plant, on a store without a key
CAUGHT_UNKEYED = {
    "honest": set(),
    "rows_back": _EVERY,
    "member_back": {"exact-fast", "exact-full", "certificate", "certify"},
    "old_file": {"purge", "certificate", "certify"},
    "tomb_drop": {"purge", "certificate", "certify"},
    "secret_replaced": _EVERY,  # the ledger records which key its digests are under
    "ledger_rechain": {"exact-full", "certificate"},  # no key: the re-chained ledger is self-consistent
    # no key to strip, but the lines' names_key is gone: the names check refuses the ledger's digests
    "auth_stripped": _EVERY,
    "names_stripped": _EVERY,
    # the rows are what a deletion leaves: held sees nothing; the document's sha256 is part of the exact checks' bytes
    "preprocessor_value": _EVERY - {"held"},
    "non_deletion": _EVERY,
}
# with a key: every plant that changes a file the manifest references breaks the manifest's HMAC
CAUGHT_KEYED = {**{p: _EVERY for p in PLANTS}, "honest": set(), "old_file": {"purge", "certificate", "certify"}}

FULL = os.environ.get("VERIFY_MATRIX") == "full"
CONFIGS = list(itertools.product(GROUPINGS, ("unkeyed", "keyed")))
# the sample: every grouping once, keyed and unkeyed alternating
SAMPLE = [(g, "keyed" if i % 2 else "unkeyed") for i, g in enumerate(GROUPINGS)]


def _build(grouping: str, backend: str):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    spec = dict(GROUPINGS[grouping])
    if callable(spec["grouping"]):
        spec["grouping"] = spec["grouping"]()
    # fitted state in every member's preprocessor document: means, never one row's value
    impute = ColumnTransformer([("mean", SimpleImputer(strategy="mean"), ["a", "b"])], remainder="drop")
    return cf.ForgetClassifier(learner="lightgbm", learner_params=FAST["lightgbm"], n_jobs=1, backend=backend,
                               preprocessor=impute, **spec)


def _doc(root):
    return json.loads((root / "manifest.json").read_text())


def _write_doc(root, doc):
    # an attacker without the key leaves the stale mac in place: they cannot compute a new one
    doc["checksum"] = manifest_checksum(doc)
    (root / "manifest.json").write_text(json.dumps(doc))


def _put(root, doc, rel, data):
    (root / rel).write_bytes(data)
    doc["files"][rel] = hashlib.sha256(data).hexdigest()


class World:
    """A store after an honest deletion (request REQ-1), what it held before, and its certificate."""

    def __init__(self, root, grouping, keyed, backend="local"):
        X, y, ids, _ = make_table("binary")
        self.root, self.keyed = root, keyed == "keyed"
        model = _build(grouping, backend).fit(X, y, ids=ids)
        model.save(root, key=STORE_KEY if self.keyed else False)
        before = _doc(root)
        self.old_groups = {g["name"]: g for g in before["groups"]}
        self.old_bytes = {rel: (root / rel).read_bytes() for rel in before["files"]}
        # two rows of the largest group, outside a clustering's hash sample: the request touches one member
        victim = max(model.ensemble_.groups.values(), key=lambda g: g.n_rows)
        order = np.argsort(victim.rows.column(HASH).to_numpy())
        self.victims = sorted(victim.rows.column(ID).take(pa.array(order[-2:])).to_pylist())
        self.X_forgotten = X.iloc[[ids.tolist().index(v) for v in self.victims]]
        report = model.forget_rows(self.victims, request_id=REQ)
        assert report.groups_retrained == [victim.name] and not report.clustering_changed, report
        self.touched = [victim.name]
        self.name = victim.name
        self.cert = cf.certificate(model, REQ, key=CERT_KEY if not self.keyed else STORE_KEY,
                                   checks=("held", "purge", "exact"))
        self.model = model

    # ------------------------------------------------------------------ plants
    def plant(self, root, plant):
        if plant == "non_deletion":
            return self._non_deletions(root)
        doc = _doc(root)
        entry = next(g for g in doc["groups"] if g["name"] == self.name)
        old = self.old_groups[self.name]
        if plant in ("rows_back", "secret_replaced", "names_stripped"):
            data = self.old_bytes[old["rows"]]
            assert set(self.victims) <= set(read_parquet(data).column(ID).to_pylist())
            _put(root, doc, entry["rows"], data)
            doc["n_rows"] += old["n_rows"] - entry["n_rows"]
            entry["n_rows"] = old["n_rows"]
        if plant in ("member_back", "secret_replaced", "names_stripped", "ledger_rechain", "auth_stripped"):
            _put(root, doc, entry["member"]["file"], self.old_bytes[old["member"]["file"]])
            entry["member"]["meta"] = {**old["member"]["meta"], "n_rows": entry["n_rows"]}
        if plant == "old_file":
            (root / old["rows"]).write_bytes(self.old_bytes[old["rows"]])
        if plant == "tomb_drop":
            rel = doc["tombstones"].pop()
            del doc["files"][rel]
            (root / rel).unlink()
        if plant in ("secret_replaced", "names_stripped"):
            _put(root, doc, "secret.key", os.urandom(32).hex().encode() + b"\n")
        if plant in ("ledger_rechain", "auth_stripped", "names_stripped"):
            self._rechain(root, doc, forget_names_key=plant != "ledger_rechain", same_group=plant == "names_stripped")
        if plant == "auth_stripped":
            doc.pop("auth", None), doc.pop("mac", None)
        if plant == "preprocessor_value":
            _resign_statistic(entry["member"]["meta"]["preprocessor"], float(self.X_forgotten["a"].iloc[0]))
        _write_doc(root, doc)

    def _non_deletions(self, root):
        model = cf.load(root, key=STORE_KEY if self.keyed else False)
        X, y, ids, _ = make_table("binary")
        kept = [i for i in ids.tolist() if i not in self.victims]
        model.add_rows(X.iloc[[0]], y[[0]], ids=[max(ids) + 7], request_id="REQ-ADD")
        model.relabel(ids=[kept[0]], label=1 - int(y[ids.tolist().index(kept[0])]), request_id="REQ-RELABEL")
        model.reweight([kept[1]], [3.0], request_id="REQ-REWEIGHT")
        return NON_DELETIONS

    def _rechain(self, root, doc, forget_names_key=False, same_group=False):
        """Edit the request's line to name another group (``same_group``: its own group, hashed under the store's
        secret.key as it is now), leave out every line's names_key if asked, and re-hash the chain."""
        raw = (root / "ledger.jsonl").read_bytes()[: doc["ledger"]["size"]].splitlines()
        lines = [json.loads(r) for r in raw]
        pos = next(i for i, e in enumerate(lines) if e.get("request_id") == REQ)
        others = [g["name"] for g in doc["groups"] if g["name"] not in self.touched]
        assert others, "the plant needs a group the request did not touch"
        hashed = any(n.startswith("hmac:") for n in lines[pos]["groups_retrained"])
        secret = bytes.fromhex((root / "secret.key").read_text().strip())
        named = self.name if same_group else others[0]
        lines[pos]["groups_retrained"] = [group_digest(secret, named) if hashed else named]
        prev, out = "", []
        for e in lines:
            if forget_names_key:  # as a line written before keys were recorded: nothing to compare the store's with
                e.pop("names_key", None)
            e["prev"] = prev
            b = json.dumps(e, sort_keys=True, separators=(",", ":")).encode()
            prev = sha(b)
            out.append(b)
        data = b"\n".join(out) + b"\n"
        (root / "ledger.jsonl").write_bytes(data)
        doc["ledger"] = {"size": len(data), "tail": prev, "lines": len(out)}

    # ------------------------------------------------------------------ checks
    def run(self, root, check, request=REQ) -> bool:
        """True when the check passes (the deletion looks held), False when it fails or refuses the store. A
        certificate of another request than the world's is asked of the store first (refused: False)."""
        key = STORE_KEY if self.keyed else False  # given, and binding: a store it does not authenticate is refused
        try:
            if check in ("certificate", "certify"):
                signing = STORE_KEY if self.keyed else CERT_KEY
                cert = self.cert if request == REQ and check == "certificate" else cf.certificate(
                    root, request, key=CERT_KEY, store_key=key)
                return cf.verify_certificate(cert, root, key=signing if cert is self.cert else CERT_KEY,
                                             store_key=key).ok
            name, mode = (check.split("-") + ["fast"])[:2]
            rows = {"X_forgotten": self.X_forgotten} if name == "purge" else {}
            if mode == "full":
                return cf.verify(root, request_id=request, checks=(name,), exact=mode, key=key).ok
            # the command line's reader: the result signed with one key, the store opened with its own
            return verify_store(root, request_id=request, checks=(name,), exact=mode, key=CERT_KEY, store_key=key,
                                **rows).ok
        except cf.ClusterForgetError:
            return False


def _resign_statistic(document: dict, value: float) -> None:
    """The first imputer statistic of a preprocessor document set to ``value``, its sha256 recomputed."""
    fitted = document["object"]["state"]["transformers_"][0]["$tuple"][1]["state"]["statistics_"]
    stats = np.frombuffer(base64.b64decode(fitted["data"]), "<f8").copy()
    stats[0] = value
    fitted["data"] = base64.b64encode(stats.tobytes()).decode("ascii")
    body = {k: v for k, v in document.items() if k != "sha256"}
    document["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _run_config(tmp_path, grouping, keyed, backend="local", plants=PLANTS):
    world = World(tmp_path / "store", grouping, keyed, backend)
    expected = CAUGHT_KEYED if world.keyed else CAUGHT_UNKEYED
    wrong = []
    for plant in plants:
        root = tmp_path / plant
        shutil.copytree(world.root, root)
        (root / ".lock").unlink(missing_ok=True)
        requests = (world.plant(root, plant) if plant != "honest" else None) or (REQ,)
        for check, request in itertools.product(CHECKS, requests):
            passed = world.run(root, check, request)
            if passed == (check in expected[plant]):
                wrong.append(f"{plant} {request} / {check}: " + ("passed, must be caught" if passed else
                                                                 "failed on an honest store" if plant == "honest"
                                                                 else "caught, but not expected to be"))
        if plant == "preprocessor_value" and not world.keyed:  # the file and the field named
            purge = cf.verify(root, request_id=REQ, checks=("purge",), key=False, X_forgotten=world.X_forgotten)
            if "manifest.json" not in purge.checks["purge"].summary or "statistics_" not in purge.checks["purge"].summary:
                wrong.append(f"preprocessor_value: purge does not name the file and field: {purge.checks['purge']}")
        if plant == "names_stripped" and not world.keyed:  # refused for what it is, with what to do
            names = cf.verify(root, request_id=REQ, checks=("held",), key=False).checks.get("names")
            if names is None or "names_key" not in names.summary or "forgotten=" not in names.summary:
                wrong.append(f"names_stripped: the names check does not say why and what to do: {names}")
    return wrong


@pytest.mark.parametrize("grouping,keyed", CONFIGS if FULL else SAMPLE)
def test_every_plant_is_caught_and_every_honest_store_passes(tmp_path, grouping, keyed):
    wrong = _run_config(tmp_path, grouping, keyed)
    assert not wrong, "\n".join(wrong)


# the Dask column's CI sample: a store of each kind, and on them the plants whose checks read the ledger's
# names and the store's authentication (the rest run on the local backend for every grouping)
DASK_SAMPLE = {("key1", "unkeyed"): ("honest", "member_back", "auth_stripped", "names_stripped", "preprocessor_value",
                                     "non_deletion"),
               ("hash", "keyed"): ("honest", "auth_stripped", "non_deletion")}


def test_the_dask_backend_is_verified_the_same_way(tmp_path):
    distributed = pytest.importorskip("distributed")
    runs = {config: PLANTS for config in CONFIGS} if FULL else DASK_SAMPLE
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        wrong = []
        for (grouping, keyed), plants in runs.items():
            wrong += [f"{grouping} {keyed}: {w}" for w in
                      _run_config(tmp_path / f"{grouping}-{keyed}", grouping, keyed, "dask", plants)]
    assert not wrong, "\n".join(wrong)


def test_the_matrix_covers_every_check_grouping_store_and_plant():
    assert set(CAUGHT_UNKEYED) == set(CAUGHT_KEYED) == set(PLANTS)
    assert {g for g, _ in SAMPLE} == set(GROUPINGS) and {k for _, k in SAMPLE} == {"keyed", "unkeyed"}
    # the Dask sample sees both kinds of store and every plant added after the column was first sampled
    assert {k for _, k in DASK_SAMPLE} == {"keyed", "unkeyed"}
    assert {"auth_stripped", "names_stripped", "non_deletion"} <= set().union(*DASK_SAMPLE.values())
    # no plant goes unseen: a certificate catches every one of them, with or without a key
    assert all("certificate" in CAUGHT_UNKEYED[p] and "certificate" in CAUGHT_KEYED[p] for p in PLANTS[1:])
