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


def fingerprint(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def written_under(version, monkeypatch, path, X, y, ids, **kw):
    """A store whose preprocessor documents name scikit-learn ``version`` (fitted and saved as that version
    writes them: the documents' sha256 and the manifest checksum hold)."""
    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "_sklearn_version", lambda: version)
        model = cf.ForgetClassifier(**{**settings(), **kw}).fit(X, y, ids)
        model.forget_rows(ids[:10])
        model.save(path)
    return path


def test_a_store_fitted_under_another_version_is_refused_then_refit(monkeypatch, tmp_path, capsys):
    """cf.load refuses, quoting both versions and both ways out, and changes nothing; `retrain --refit` refits
    every member from the stored rows and the model is then bitwise a fresh fit under this version."""
    from clusterforget.cli import main

    X, y, ids, test = make_table("binary", n=240)
    store = written_under("1.8.0", monkeypatch, tmp_path / "store", X, y, ids, combine="auto")
    here = preprocess.installed_version()
    before = fingerprint(store)
    with pytest.raises(cf.VersionError) as refused:
        cf.load(store)
    message = str(refused.value)
    for part in ("scikit-learn 1.8.0", f"scikit-learn {here}", "install scikit-learn==1.8.0",
                 f"`clusterforget retrain {store} --refit`", f"cf.load({str(store)!r}, refit=True).retrain_pending()"):
        assert part in message, (part, message)
    capsys.readouterr()
    assert main(["info", str(store)]) == 3  # a store problem: one line and a hint naming the way out
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: the store's preprocessors were fitted with scikit-learn 1.8.0") and "--refit" in err[1]
    assert fingerprint(store) == before

    assert main(["retrain", str(store), "--refit", "--yes", "--json"]) == 0
    loaded = cf.load(store)
    keep = ~np.isin(ids, ids[:10])
    fresh = cf.ForgetClassifier(**{**settings(), "combine": "auto"}).fit(X[keep], y[keep], ids[keep])
    assert members(loaded) == members(fresh)
    assert {m["preprocessor"]["sklearn"] for _, m, _ in members(loaded) if "preprocessor" in m} == {here}
    assert loaded.ensemble_.combine_choice == fresh.ensemble_.combine_choice
    assert np.array_equal(loaded.predict_proba(test), fresh.predict_proba(test))
    assert cf.read_ledger(store)[-1]["operation"] == "retrain_pending"


@pytest.mark.filterwarnings("ignore:`TargetEncoder.shuffle`:FutureWarning")
def test_refit_under_a_version_without_target_encoder_shuffle(monkeypatch, tmp_path):
    """A store written while TargetEncoder had ``shuffle`` / ``random_state``, refit where they are gone: left at
    their default they are dropped and the refit is a fresh fit there; a value set by the user is refused by name."""
    X, y, ids, test = make_table("binary", n=240)
    default = written_under("1.9.0", monkeypatch, tmp_path / "default", X, y, ids)
    spec = settings()["preprocessor"].set_params(te__shuffle=False)
    chosen = written_under("1.9.0", monkeypatch, tmp_path / "chosen", X, y, ids, preprocessor=spec)
    without_shuffle(monkeypatch)
    model = cf.load(default, refit=True)
    keep = ~np.isin(ids, ids[:10])
    fresh = cf.ForgetClassifier(**settings()).fit(X[keep], y[keep], ids[keep])
    preprocessed = {name for name, meta, _ in members(fresh) if "preprocessor" in meta}  # not a one-class group
    assert preprocessed and {g["name"] for g in model.groups_ if g["pending"]} == preprocessed
    model.retrain_pending()
    assert members(cf.load(default)) == members(fresh)
    with pytest.raises(cf.StoreError, match=r"preprocessor\['transformers'\].*\(TargetEncoder\) was given "
                                            r"shuffle=False, which scikit-learn .* does not take"):
        cf.load(chosen, refit=True)
