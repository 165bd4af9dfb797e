"""Every deletion check, tried against every way of faking a deletion, in every configuration.

checks (held, purge, exact fast, exact full, certificate, certify) x groupings (key on one column, key on two, key with
max_group_rows, KMeansGroups, HashGroups, "auto") x learners (LightGBM, XGBoost) x stores (unkeyed, keyed) x backends
(local; Dask for a sample) x plants. Every model has a preprocessor (a median imputer of a column without missing
values, so an imputer fitted on other rows changes no output: only the member's fitted state shows it), key
groupings on two columns and with max_group_rows leave ``combine="auto"`` to the held-out slices, and after fit the
model's class_weight, preprocessor and early stopping are set to other values (``set_params``: they take effect at
the next fit only, so the members, their retrains and a fresh fit follow what they were trained with, which the
manifest records as ``fitted_with``). A plant is what someone who can write the store does to make a deletion not
hold (or to hide that it does not), fixing every sha256 and the manifest's checksum as they go:

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
preprocessor_value  the touched member's preprocessor document made to hold a forgotten row's value as its imputer
                 statistic, the document's sha256 and the manifest's checksum recomputed: purge, given the forgotten
                 rows, decodes the document and names the file and field
non_deletion     honest operations that remove no row (add_rows, relabel, reweight), each under its own request
                 id; the checks are run on those requests, and each must fail them (nothing was deleted, so a
                 check that finds nothing to look for must not pass, nor may a certificate be issued)
stale_preprocessor  the retrained member's preprocessor document replaced by its pre-deletion one (the forgotten
                 rows' median; its own sha256 is right): the model file and every output are a fresh fit's
fitted_with_edited  the manifest's fitted_with set to the parameters' values: the store claims its members were
                 trained with settings they were not, so every later retrain differs from them
fitted_with_dropped fitted_with removed, as in a store written before it: the model's parameters then stand for
                 the members' settings, as wrong as above
fitted_with_malformed  fitted_with without its early-stopping settings: refused on load
environment_edited  the manifest's version of the learner's library changed: the exact checks cannot reproduce
                 members trained under other versions, and must fail naming the difference
readded          honest: a forgotten row added back (add_rows(..., allow_forgotten=True)) under another request
stale_clustering a centroid of the stored clustering moved (a clustering not re-derived from the rows held):
                 KMeansGroups only
csv_copy         the forgotten rows, with their ids, written as a CSV file into the store (unreferenced)

Plants in the model held in memory (the store as written; a certificate issued before is verified on the store,
which holds nothing wrong, so only the checks that read the model see them):

stale_combine    combine="auto"'s choice flipped (the state keeps it between changes; a store re-derives it on load,
                 so it has no stored form): key groupings with combine="auto" only
pipe_step, pipe_nested, pipe_union, pipe_memory
                 the model inside a scikit-learn Pipeline whose earlier step holds state fitted on the rows (a
                 scaler; the same in a nested Pipeline, in a FeatureUnion), or that caches its steps (memory=):
                 verify's pipeline check fails every check, cf.forget_rows refuses it, a certificate is not issued.
                 pipe_honest, a Pipeline of a stateless step, passes everything and forgets

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
STORE_PLANTS = ("honest", "rows_back", "member_back", "old_file", "tomb_drop", "secret_replaced", "ledger_rechain",
                "auth_stripped", "names_stripped", "preprocessor_value", "non_deletion", "stale_preprocessor", "fitted_with_edited",
                "fitted_with_dropped", "fitted_with_malformed", "environment_edited", "readded", "stale_clustering", "csv_copy")
MEMORY_PLANTS = ("stale_combine", "pipe_honest", "pipe_step", "pipe_nested", "pipe_union", "pipe_memory")
PLANTS = STORE_PLANTS + MEMORY_PLANTS
NON_DELETIONS = ("REQ-ADD", "REQ-RELABEL", "REQ-REWEIGHT")
LEARNERS = ("lightgbm", "xgboost")

_EVERY = set(CHECKS)
_EXACT = {"exact-fast", "exact-full", "certificate", "certify"}  # what re-derives or retrains the fitted state
# the checks that read the model in memory: a certificate issued before is verified on the (honest) store
_MEMORY = {"exact-fast", "exact-full", "certify"}
_PIPELINE = _EVERY - {"certificate"}
# which checks must catch each plant, on a store without a key
CAUGHT_UNKEYED = {
    "honest": set(),
    "rows_back": _EVERY,
    "member_back": _EXACT,
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
    "stale_preprocessor": _EXACT,
    "fitted_with_edited": _EXACT,
    "fitted_with_dropped": _EXACT,
    "fitted_with_malformed": _EVERY,  # refused on load
    "environment_edited": _EXACT,  # a retrain here proves nothing about members trained under other versions
    # the deletion undone: the model is a fresh fit of what it holds, but the id is held and back in the rows
    "readded": {"held", "purge", "certificate", "certify"},
    "stale_clustering": _EXACT,
    "csv_copy": {"purge", "certificate", "certify"},
    "stale_combine": _MEMORY,
    "pipe_honest": set(),
    **{p: _PIPELINE for p in ("pipe_step", "pipe_nested", "pipe_union", "pipe_memory")},
}
# with a key: every plant that changes a file the manifest references breaks the manifest's HMAC; the plants in
# memory change no file, and readded is the key holder's own change
CAUGHT_KEYED = {**{p: _EVERY for p in STORE_PLANTS}, "honest": set(),
                **{p: {"purge", "certificate", "certify"} for p in ("old_file", "csv_copy")},
                **{p: CAUGHT_UNKEYED[p] for p in (*MEMORY_PLANTS, "readded")}}

FULL = os.environ.get("VERIFY_MATRIX") == "full"
CONFIGS = list(itertools.product(GROUPINGS, LEARNERS, ("unkeyed", "keyed")))
# the sample: every grouping once, the learners and keyed / unkeyed alternating (every pair of them seen)
SAMPLE = [(g, LEARNERS[i % 2], ("unkeyed", "keyed")[i // 2 % 2]) for i, g in enumerate(GROUPINGS)]
# combine="auto" on these (the others keep conftest's route / average): its choice is fitted state. One grouping
# of few groups: a load re-derives the choice from every member's outputs on every held-out slice
AUTO_COMBINE = ("key1",)
# CI's sample: the honest store and the non-deletions in every sampled configuration; each other plant in one half of
# them, each half holding both learners and both kinds of store (stale_combine where combine="auto" is)
HALVES = ({0, 3, 5}, {1, 2, 4})
assert all({SAMPLE[i][1] for i in h} == set(LEARNERS) and {SAMPLE[i][2] for i in h} == {"unkeyed", "keyed"}
           for h in HALVES)


def _plants_of(config) -> tuple[str, ...]:
    if FULL:
        return PLANTS
    i = SAMPLE.index(config)
    everywhere = ("honest", "non_deletion", "stale_combine", "stale_clustering")  # the last two: where they apply
    others = [p for p in PLANTS if p not in everywhere]
    return tuple(p for p in PLANTS if p in everywhere or i in HALVES[others.index(p) % 2])


def preprocessor(strategy: str = "median"):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    # column a has no missing value: the imputer's statistics change no output, only the member's fitted state
    return ColumnTransformer([("impute", SimpleImputer(strategy=strategy), ["a"]), ("keep", "passthrough", ["b"])])


# set after fit: the members keep what they were trained with until the next fit
AFTER_FIT = dict(class_weight="balanced", validation_fraction=0.3, early_stopping=False)


def _build(grouping: str, learner: str, backend: str):
    spec = dict(GROUPINGS[grouping])
    if callable(spec["grouping"]):
        spec["grouping"] = spec["grouping"]()
    if grouping in AUTO_COMBINE:
        spec["combine"] = "auto"
    return cf.ForgetClassifier(learner=learner, learner_params=FAST[learner], n_jobs=1, backend=backend,
                               preprocessor=preprocessor(), early_stopping="auto", **spec)


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

    def __init__(self, root, grouping, keyed, backend="local", learner="lightgbm"):
        X, y, ids, _ = make_table("binary")
        self.root, self.keyed, self.X = root, keyed == "keyed", X
        model = _build(grouping, learner, backend).fit(X, y, ids=ids)
        model.set_params(**AFTER_FIT, preprocessor=preprocessor("mean"))
        model.save(root, key=STORE_KEY if self.keyed else False)
        before = _doc(root)
        self.old_groups = {g["name"]: g for g in before["groups"]}
        self.old_bytes = {rel: (root / rel).read_bytes() for rel in before["files"]}
        # two rows of the largest group, outside a clustering's hash sample: the request touches one member; both
        # on one side of the group's median of `a`, so that its imputer's median moves
        victim = max(model.ensemble_.groups.values(), key=lambda g: g.n_rows)
        order = np.argsort(victim.rows.column(HASH).to_numpy())[::-1]
        a = victim.rows.column("a").to_numpy()
        side = np.sign(a[order] - np.median(a))
        pick = order[side == (side[0] or 1)][:2]
        self.victims = sorted(victim.rows.column(ID).take(pa.array(pick)).to_pylist())
        self.X_forgotten = X.iloc[[ids.tolist().index(v) for v in self.victims]]
        report = model.forget_rows(self.victims, request_id=REQ)
        assert report.groups_retrained == [victim.name] and not report.clustering_changed, report
        self.touched = [victim.name]
        self.kept = next(i for i in ids.tolist() if i not in self.victims)
        self.name = victim.name
        self.auto_combine = model.ensemble_.combine_choice is not None
        self.clustered = model.ensemble_.state is not None
        self.cert = cf.certificate(model, REQ, key=CERT_KEY if not self.keyed else STORE_KEY,
                                   checks=("held", "purge", "exact"))
        self.model = model

    def applies(self, plant: str) -> bool:
        return {"stale_combine": self.auto_combine, "stale_clustering": self.clustered}.get(plant, True)

    # ------------------------------------------------------------------ plants
    def plant(self, root, plant):
        """Make the plant in the copy at ``root``; returns (what the checks read: ``root``, or a model or Pipeline
        loaded from it for a plant in memory; the requests to check)."""
        if plant == "non_deletion":
            return root, self._non_deletions(root)
        if plant == "readded":
            model = cf.load(root, key=STORE_KEY if self.keyed else False)
            X, y, ids, _ = make_table("binary")
            at = [ids.tolist().index(self.victims[0])]
            model.add_rows(X.iloc[at], y[at], ids=[self.victims[0]], allow_forgotten=True, request_id="REQ-READD")
            return root, (REQ,)
        if plant in MEMORY_PLANTS:
            return self._in_memory(root, plant), (REQ,)
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
        if plant == "csv_copy":
            X, y, ids, _ = make_table("binary")
            at = [ids.tolist().index(v) for v in self.victims]
            X.iloc[at].assign(id=self.victims, label=y[at]).to_csv(root / "export.csv", index=False)
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
        if plant == "stale_preprocessor":
            stale = old["member"]["meta"]["preprocessor"]
            assert stale["sha256"] != entry["member"]["meta"]["preprocessor"]["sha256"], "the median did not move"
            entry["member"]["meta"]["preprocessor"] = stale
        fitted_with = doc["ensemble"]["fitted_with"]
        if plant == "fitted_with_edited":  # as the parameters say
            params = doc["params"]
            fitted_with.update(class_weight=params["class_weight"], preprocessor=params["preprocessor"])
            fitted_with["stopping"].update(early_stopping=params["early_stopping"],
                                           validation_fraction=params["validation_fraction"])
        if plant == "fitted_with_dropped":
            del doc["ensemble"]["fitted_with"]
        if plant == "fitted_with_malformed":
            del fitted_with["stopping"]
        if plant == "stale_clustering":
            doc["ensemble"]["state"]["centroids"][0][0] += 0.25
        if plant == "environment_edited":
            doc["environment"][doc["ensemble"]["learner"]] = "0.0.1"
        _write_doc(root, doc)
        return root, (REQ,)

    def _in_memory(self, root, plant):
        from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        model = cf.load(root, key=STORE_KEY if self.keyed else False)
        if plant == "stale_combine":
            choice, r, a = model.ensemble_.combine_choice
            model.ensemble_ = model.ensemble_.evolve(combine_choice=("average" if choice == "route" else "route", r, a))
            return model
        scaler = StandardScaler().fit(self.X[["a"]])  # fitted on every row, the forgotten ones too
        step = {"pipe_honest": FunctionTransformer(), "pipe_memory": FunctionTransformer(), "pipe_step": scaler,
                "pipe_nested": make_pipeline(FunctionTransformer(), scaler),
                "pipe_union": FeatureUnion([("keep", "passthrough"), ("z", scaler)])}[plant]
        return Pipeline([("step", step), ("model", model)],
                        memory=str(root / "cache") if plant == "pipe_memory" else None)

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
    def run(self, target, check, request=REQ, root=None) -> bool:
        """True when the check passes (the deletion looks held), False when it fails or refuses the store. A
        certificate of another request than the world's is asked of the store first (refused: False).
        ``target``: the store's path, or a model or Pipeline in memory (``root``: its store's path, on which the
        world's certificate is verified)."""
        key = STORE_KEY if self.keyed else False  # given, and binding: a store it does not authenticate is refused
        root = target if root is None else root
        try:
            if check in ("certificate", "certify"):
                signing = STORE_KEY if self.keyed else CERT_KEY
                if request == REQ and check == "certificate":
                    cert = self.cert
                elif target is root:
                    cert = cf.certificate(root, request, key=CERT_KEY, store_key=key)
                else:
                    cert = cf.certificate(target, request, key=CERT_KEY)
                return cf.verify_certificate(cert, root, key=signing if cert is self.cert else CERT_KEY,
                                             store_key=key).ok
            name, mode = (check.split("-") + ["fast"])[:2]
            rows = {"X_forgotten": self.X_forgotten} if name == "purge" else {}
            if target is not root:
                return cf.verify(target, request_id=request, checks=(name,), exact=mode, **rows).ok
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


def _run_config(tmp_path, grouping, learner, keyed, backend="local", plants=PLANTS):
    pytest.importorskip(learner)
    world = World(tmp_path / "store", grouping, keyed, backend, learner)
    expected = CAUGHT_KEYED if world.keyed else CAUGHT_UNKEYED
    wrong = []
    for plant in filter(world.applies, plants):
        root = tmp_path / plant
        shutil.copytree(world.root, root)
        (root / ".lock").unlink(missing_ok=True)
        target, requests = world.plant(root, plant) if plant != "honest" else (root, (REQ,))
        for check, request in itertools.product(CHECKS, requests):
            passed = world.run(target, check, request, root=root)
            if passed == (check in expected[plant]):
                wrong.append(f"{plant} {request} / {check}: " + ("passed, must be caught" if passed else
                                                                 "failed on an honest store" if not expected[plant]
                                                                 else "caught, but not expected to be"))
        if plant == "preprocessor_value" and not world.keyed:  # the file and the field named
            purge = cf.verify(root, request_id=REQ, checks=("purge",), key=False, X_forgotten=world.X_forgotten)
            if "manifest.json" not in purge.checks["purge"].summary or "statistics_" not in purge.checks["purge"].summary:
                wrong.append(f"preprocessor_value: purge does not name the file and field: {purge.checks['purge']}")
        if plant == "names_stripped" and not world.keyed:  # refused for what it is, with what to do
            names = cf.verify(root, request_id=REQ, checks=("held",), key=False).checks.get("names")
            if names is None or "names_key" not in names.summary or "forgotten=" not in names.summary:
                wrong.append(f"names_stripped: the names check does not say why and what to do: {names}")
        if plant.startswith("pipe_"):  # forgetting through the Pipeline: refused before anything changes
            try:
                cf.forget_rows(target, [world.kept], dry_run=True)
                if plant != "pipe_honest":
                    wrong.append(f"{plant} / forget_rows: not refused")
            except cf.PipelineStateError:
                if plant == "pipe_honest":
                    wrong.append(f"{plant} / forget_rows: refused a Pipeline of a stateless step")
    return wrong


@pytest.mark.parametrize("grouping,learner,keyed", CONFIGS if FULL else SAMPLE,
                         ids=["-".join(c) for c in (CONFIGS if FULL else SAMPLE)])
def test_every_plant_is_caught_and_every_honest_store_passes(tmp_path, grouping, learner, keyed):
    wrong = _run_config(tmp_path, grouping, learner, keyed, plants=_plants_of((grouping, learner, keyed)))
    assert not wrong, "\n".join(wrong)


# the Dask column's CI sample: a store of each kind and each learner, and on them the plants whose checks read the
# ledger's names and the store's authentication, and the fitted state the workers train (the rest run on the local
# backend for every grouping)
DASK_SAMPLE = {("key1", "xgboost", "unkeyed"): ("honest", "member_back", "auth_stripped", "names_stripped",
                                                "preprocessor_value", "non_deletion", "stale_preprocessor",
                                                "fitted_with_dropped", "stale_combine"),
               ("hash", "lightgbm", "keyed"): ("honest", "auth_stripped", "non_deletion", "fitted_with_edited")}


# the full profile: one test per configuration (each with its own cluster), so that -n 2 runs two at once
DASK_RUNS = [{config: PLANTS} for config in CONFIGS] if FULL else [DASK_SAMPLE]


@pytest.mark.parametrize("runs", DASK_RUNS, ids=["-".join(next(iter(r))) if FULL else "sample" for r in DASK_RUNS])
def test_the_dask_backend_is_verified_the_same_way(tmp_path, runs):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        wrong = []
        for (grouping, learner, keyed), plants in runs.items():
            wrong += [f"{grouping} {learner} {keyed}: {w}" for w in
                      _run_config(tmp_path / f"{grouping}-{learner}-{keyed}", grouping, learner, keyed, "dask", plants)]
    assert not wrong, "\n".join(wrong)


def test_the_matrix_covers_every_check_grouping_store_and_plant():
    assert set(CAUGHT_UNKEYED) == set(CAUGHT_KEYED) == set(PLANTS)
    assert {g for g, _, _ in SAMPLE} == set(GROUPINGS)
    assert {(lr, k) for _, lr, k in SAMPLE} == set(itertools.product(LEARNERS, ("unkeyed", "keyed")))
    # combine="auto"'s plant runs for both learners in the CI sample (one on Dask), the Pipeline plants on both
    # learners and stores
    assert {lr for g, lr, _ in [*SAMPLE, *DASK_SAMPLE] if g in AUTO_COMBINE} == set(LEARNERS)
    # every plant in CI: in three groupings, with both learners and on both kinds of store
    for plant in PLANTS:
        if plant in ("stale_combine", "stale_clustering"):
            continue
        sampled = [c for c in SAMPLE if plant in _plants_of(c)]
        assert len({g for g, _, _ in sampled}) >= 3, plant
        assert {c[1] for c in sampled} == set(LEARNERS) and {c[2] for c in sampled} == {"unkeyed", "keyed"}, plant
    # the Dask sample sees both kinds of store, both learners, and every plant added after the column was first
    # sampled
    assert {k for _, _, k in DASK_SAMPLE} == {"keyed", "unkeyed"} and {lr for _, lr, _ in DASK_SAMPLE} == set(LEARNERS)
    assert {"auth_stripped", "names_stripped", "non_deletion", "stale_preprocessor", "fitted_with_edited",
            "fitted_with_dropped", "stale_combine"} <= set().union(*DASK_SAMPLE.values())
    assert all(g in AUTO_COMBINE for (g, _, _), plants in DASK_SAMPLE.items() if "stale_combine" in plants)
    # no plant goes unseen: with or without a key, a certificate catches every plant in the store, and one asked
    # of the model catches every plant in memory
    assert all("certificate" in CAUGHT_UNKEYED[p] and "certificate" in CAUGHT_KEYED[p]
               for p in STORE_PLANTS[1:])
    assert all("certify" in CAUGHT_UNKEYED[p] and CAUGHT_UNKEYED[p] == CAUGHT_KEYED[p]
               for p in MEMORY_PLANTS if p != "pipe_honest")
