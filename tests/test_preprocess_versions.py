"""preprocessor= across scikit-learn versions: TargetEncoder without ``shuffle`` / ``random_state`` (they go away in
scikit-learn 1.11), and a store fitted under another version (refused with both versions and what to do; refit).
"""

from __future__ import annotations

import numpy as np
import pytest

import clusterforget as cf
from clusterforget import preprocess
from conftest import FAST, make_table

pytest.importorskip("pandas")
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.preprocessing import StandardScaler, TargetEncoder  # noqa: E402


def encoder():
    return ColumnTransformer([("te", TargetEncoder(), ["colour", "region"]), ("scale", StandardScaler(), ["a"])])


def settings():
    return dict(grouping="region", combine="route", preprocessor=encoder(), learner_params=FAST["lightgbm"], n_jobs=1)


def members(model):
    return [(g.name, g.member.meta(), g.member.model_bytes()) for g in model.ensemble_.groups.values()]


def without_shuffle(monkeypatch):
    """TargetEncoder as scikit-learn 1.11 defines it: no ``shuffle`` or ``random_state`` parameter or attribute.
    This version's ``fit_transform`` still reads the two attributes, so they exist during that call only."""
    fit_transform = TargetEncoder.fit_transform

    def __init__(self, categories="auto", target_type="auto", smooth="auto", cv=5):
        self.categories, self.target_type, self.smooth, self.cv = categories, target_type, smooth, cv

    def fit_transform_1_11(self, X, y, **params):
        self.shuffle = self.random_state = "deprecated"
        try:
            return fit_transform(self, X, y, **params)
        finally:
            del self.shuffle, self.random_state

    monkeypatch.setattr(TargetEncoder, "__init__", __init__)
    monkeypatch.setattr(TargetEncoder, "fit_transform", fit_transform_1_11)


def test_target_encoder_without_shuffle_and_random_state(monkeypatch, tmp_path):
    """The folds are still fixed to the model's seed when the two parameters do not exist: the members are
    bitwise those of this version's fit, a forget is a fresh fit, and the store loads back."""
    X, y, ids, test = make_table("binary", n=240)
    today = cf.ForgetClassifier(**settings()).fit(X, y, ids)
    without_shuffle(monkeypatch)
    assert not {"shuffle", "random_state"} & set(TargetEncoder().get_params())
    model = cf.ForgetClassifier(**settings()).fit(X, y, ids)
    assert [m[2] for m in members(model)] == [m[2] for m in members(today)]  # the same folds, the same trees
    assert np.array_equal(model.predict_proba(test), today.predict_proba(test))
    stored = [preprocess.from_document(meta["preprocessor"]) for _, meta, _ in members(model) if "preprocessor" in meta]
    assert stored and not any(hasattr(ct.named_transformers_["te"], "shuffle") for ct in stored)
    model.save(tmp_path / "store")
    model.forget_rows(ids[::7])
    keep = ~np.isin(ids, ids[::7])
    fresh = cf.ForgetClassifier(**settings()).fit(X[keep], y[keep], ids[keep])
    loaded = cf.load(tmp_path / "store")
    assert members(model) == members(fresh) == members(loaded)
    assert np.array_equal(loaded.predict_proba(test), fresh.predict_proba(test))
