"""Every check an export's reader makes, tried against every way of editing an export, in every configuration.

groupings (key on one column, key on two, key with max_group_rows, KMeansGroups, HashGroups, "auto", as in
tests/test_verify_matrix.py) x learners (LightGBM, XGBoost) x exports (unkeyed, keyed) x plants. A plant is what
someone who can write the export's folder does, recomputing every sha256 and the manifest's checksum as they go:

version_text     ``model_version`` a string
weight_nan       a member's weight "nan"
class_index      a member's class_index out of range
file_outside     a member's file named outside the export
lib_in_bundle    a plain bundle's member naming a shared library (planted beside it)
member_edit      one number in a member file changed, same length: still a valid model, scoring differently
member_truncated half a member file (LightGBM segfaults on it in process)
member_symlink   a member file replaced by a symbolic link to a copy of itself outside the export

Every honest export loads and scores bitwise as the model; every plant is refused with a typed error before
anything is built: ``AuthenticationError`` under a key (no edit made without the key survives the manifest's
HMAC), ``ExportError`` without one, except ``member_edit``: without a key a valid model in place of another is
indistinguishable from the exporter's own, which is what the key is for (README, "Export for scoring services").
The symbolic link is refused with or without a key (its content is the exporter's; where it lives is not).

Exports do not depend on the backend (a Dask-trained model exports the same bytes: tests/test_dask.py), so the
backend is not a dimension here. CI runs a sample (every grouping once, learners alternating, keyed and unkeyed
each); ``EXPORT_MATRIX=full`` runs every configuration.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf
from clusterforget.store.fs import sha
from conftest import FAST, GROUPINGS, make_table, rewrite_export

KEY = bytes(range(32))
PLANTS = ("honest", "version_text", "weight_nan", "class_index", "file_outside", "lib_in_bundle", "member_edit",
          "member_truncated", "member_symlink")
# what an unkeyed export's reader must refuse, and with what; keyed: every edit is an AuthenticationError
UNKEYED = {"version_text": cf.ExportError, "weight_nan": cf.ExportError, "class_index": cf.ExportError,
           "file_outside": cf.ExportError, "lib_in_bundle": cf.ExportError, "member_edit": None,
           "member_truncated": cf.ExportError, "member_symlink": cf.ExportError}
KEYED = {**{p: cf.AuthenticationError for p in UNKEYED}, "member_symlink": cf.ExportError}

FULL = os.environ.get("EXPORT_MATRIX") == "full"
LEARNERS = ("lightgbm", "xgboost")
if FULL:
    CONFIGS = list(itertools.product(GROUPINGS, LEARNERS))
else:
    CONFIGS = [(g, LEARNERS[i % 2]) for i, g in enumerate(GROUPINGS)]


@pytest.fixture(scope="module")
def models():
    X, y, ids, test = make_table("binary", n=300)
    built = {}

    def get(grouping, learner):
        if (grouping, learner) not in built:
            spec = dict(GROUPINGS[grouping])
            if callable(spec["grouping"]):
                spec["grouping"] = spec["grouping"]()
            model = cf.ForgetClassifier(learner=learner, learner_params=FAST[learner], n_jobs=1, **spec)
            built[grouping, learner] = model.fit(X, y, ids=ids), test
        return built[grouping, learner]

    return get


def _replace_member(path: Path, data: bytes) -> None:
    doc = json.loads((path / "manifest.json").read_text())
    old = doc["members"][0]["file"]
    new = f"members/{sha(data)}.txt"

    def swap(d):
        for m in d["members"]:
            if m["file"] == old:
                m["file"] = new

    rewrite_export(path, swap, {new: data})


def _set_member(field, value):
    def change(doc):
        doc["members"][0][field] = value
    return change


def plant(path: Path, what: str, outside: Path) -> None:
    doc = json.loads((path / "manifest.json").read_text())
    member = doc["members"][0]["file"]
    text = (path / member).read_bytes()
    if what == "version_text":
        rewrite_export(path, lambda d: d.update(model_version="abc"))
    elif what == "weight_nan":
        rewrite_export(path, _set_member("weight", "nan"))
    elif what == "class_index":
        rewrite_export(path, _set_member("class_index", [0, 99]))
    elif what == "file_outside":
        rewrite_export(path, _set_member("file", "../../etc/passwd"))
    elif what == "lib_in_bundle":
        lib = b"\x7fELF not really a library"
        name = f"libs/{sha(lib)}.so"
        rewrite_export(path, _set_member("lib", name), {name: lib})
    elif what == "member_edit":  # the first digit of the first leaf value (LightGBM) or of the base score (XGBoost)
        at = re.search(rb"(leaf_value=|\"base_score\":\"\[?)-?([0-9])", text)
        i = at.start(2)
        _replace_member(path, text[:i] + (b"8" if text[i:i + 1] == b"9" else b"9") + text[i + 1:])
    elif what == "member_truncated":
        _replace_member(path, text[: len(text) // 2])
    elif what == "member_symlink":
        copy = outside / "member.txt"
        copy.write_bytes(text)
        (path / member).unlink()
        (path / member).symlink_to(copy)
    else:
        assert what == "honest", what


@pytest.mark.parametrize("grouping,learner", CONFIGS)
@pytest.mark.parametrize("keyed", ("unkeyed", "keyed"))
def test_every_edit_of_an_export_is_refused_by_the_reader_that_should_see_it(models, tmp_path, grouping, learner,
                                                                                 keyed):
    model, test = models(grouping, learner)
    key = KEY if keyed == "keyed" else None
    expected = model.predict_proba(test)
    outcomes = {}
    for what in PLANTS:
        path, outside = tmp_path / what, tmp_path / f"{what}-outside"
        outside.mkdir()
        model.export(path, key=key)
        plant(path, what, outside)
        want = None if what == "honest" else (KEYED if key else UNKEYED)[what]
        try:
            # a truncated member would take this process down: it is parsed in a child first, as the service does
            scorer = cf.Scorer(path, key=key, isolate=what == "member_truncated")
        except cf.ClusterForgetError as exc:
            outcomes[what] = type(exc)
            assert len(str(exc)) < 1000, what  # bounded: a hostile manifest does not make the message huge
            continue
        outcomes[what] = None
        scores = scorer.predict_proba(test)
        if what == "honest":
            assert scorer.authenticated == (key is not None)
            assert np.array_equal(scores, expected)
        elif what == "member_edit":  # loaded (no key): it is a valid model, and it is not the exporter's
            assert not np.array_equal(scores, expected)
    wanted = {p: (None if p == "honest" else (KEYED if key else UNKEYED)[p]) for p in PLANTS}
    assert outcomes == wanted
