"""The preprocessor document's load checks in every configuration: the eight planted alterations of
tests/test_preprocess.py, made in a saved store and in a bundle export (every sha256 and checksum fixed, the
document's own sha256 too where the plant says so), x groupings (conftest.GROUPINGS) x learners (LightGBM, XGBoost)
x stores and exports without and with a key.

Without a key the document's own checks must refuse each plant with its reason (``ChecksumError`` from a store,
``ExportError`` from a bundle, the plant's message in both); with a key the manifest's HMAC refuses it first
(``AuthenticationError``). The honest copy loads and scores bitwise as the model.

CI runs a sample (every grouping once, the learners and keyed / unkeyed alternating); ``PREPROCESSOR_MATRIX=full``
runs all 24 configurations (README, "Preprocessing inside the boundary").
"""

from __future__ import annotations

import itertools
import re
import json
import os
import shutil

import numpy as np
import pytest

import clusterforget as cf
from conftest import FAST, GROUPINGS, make_table, rewrite_export
from test_preprocess import PLANTS, _resign, encoder

pytest.importorskip("pandas")

KEY = "7e" * 32
LEARNERS = ("lightgbm", "xgboost")
FULL = os.environ.get("PREPROCESSOR_MATRIX") == "full"
CONFIGS = list(itertools.product(GROUPINGS, LEARNERS, ("unkeyed", "keyed")))
SAMPLE = [(g, LEARNERS[i % 2], ("unkeyed", "keyed")[i // 2 % 2]) for i, g in enumerate(GROUPINGS)]


def _plant(doc: dict, name: str) -> None:
    edit, resign, _ = PLANTS[name]
    edit(doc)
    if resign:
        _resign(doc)


def _store_plant(root, name: str) -> None:
    """The plant in the first preprocessed member's document in the store's manifest, the checksum fixed (the
    stale mac left: whoever edits a keyed store has no key)."""
    from clusterforget.store.commit import manifest_checksum

    doc = json.loads((root / "manifest.json").read_text())
    meta = next(g["member"]["meta"] for g in doc["groups"] if "preprocessor" in (g.get("member") or {}).get("meta", {}))
    _plant(meta["preprocessor"], name)
    doc["checksum"] = manifest_checksum(doc)
    (root / "manifest.json").write_text(json.dumps(doc))


def _bundle_plant(doc: dict, name: str) -> None:
    _plant(next(m["meta"]["preprocessor"] for m in doc["members"] if "preprocessor" in m["meta"]), name)


@pytest.mark.parametrize("grouping,learner,keyed", CONFIGS if FULL else SAMPLE,
                         ids=["-".join(c) for c in (CONFIGS if FULL else SAMPLE)])
def test_every_altered_document_is_refused_in_stores_and_bundles(tmp_path, grouping, learner, keyed):
    pytest.importorskip(learner)
    X, y, ids, test = make_table("binary", n=240)
    spec = dict(GROUPINGS[grouping])
    if callable(spec["grouping"]):
        spec["grouping"] = spec["grouping"]()
    model = cf.ForgetClassifier(learner=learner, learner_params=FAST[learner], n_jobs=1, preprocessor=encoder(),
                                **spec).fit(X, y, ids=ids)
    key = KEY if keyed == "keyed" else False
    model.save(tmp_path / "store", key=key)
    model.export(tmp_path / "bundle", key=key or None)
    (tmp_path / "store" / ".lock").unlink(missing_ok=True)
    expected = model.predict_proba(test)
    assert np.array_equal(cf.load(tmp_path / "store", key=key).predict_proba(test), expected)
    assert np.array_equal(cf.Scorer(tmp_path / "bundle", key=key or None).predict_proba(test), expected)
    wrong = []
    for name, (_, _, message) in PLANTS.items():
        store, bundle = tmp_path / f"store-{name}", tmp_path / f"bundle-{name}"
        shutil.copytree(tmp_path / "store", store)
        shutil.copytree(tmp_path / "bundle", bundle)
        _store_plant(store, name)
        rewrite_export(bundle, lambda d, n=name: _bundle_plant(d, n))
        # a store fitted under another scikit-learn version says so as a VersionError (what to install, or refit)
        readers = {"store": (lambda: cf.load(store, key=key), cf.VersionError if name == "other version" else
                             cf.ChecksumError),
                   "bundle": (lambda: cf.Scorer(bundle, key=key or None), cf.ExportError)}
        for reader, (read, error) in readers.items():
            try:
                read()
            except cf.ClusterForgetError as exc:
                want = cf.AuthenticationError if key else error
                if not isinstance(exc, want) or (not key and not re.search(message, str(exc))):
                    wrong.append(f"{name} / {reader}: {type(exc).__name__}: {str(exc)[:200]}")
            else:
                wrong.append(f"{name} / {reader}: loaded, must be refused")
    assert not wrong, "\n".join(wrong)


def test_the_sample_covers_every_grouping_learner_and_store():
    assert {g for g, _, _ in SAMPLE} == set(GROUPINGS)
    assert {lr for _, lr, _ in SAMPLE} == set(LEARNERS) and {k for _, _, k in SAMPLE} == {"keyed", "unkeyed"}
    assert {(lr, k) for _, lr, k in SAMPLE} == set(itertools.product(LEARNERS, ("unkeyed", "keyed")))
