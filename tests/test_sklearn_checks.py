"""scikit-learn's estimator contract: ``parametrize_with_checks`` over ForgetClassifier and ForgetRegressor.

The checks train on tiny data (a few to a few hundred rows), so most instances use settings that let a tree
split a group of ~20 rows. The estimators with default settings run too, and pass: ``grouping="auto"`` gives
data of this size one member.
"""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

import clusterforget as cf

# few rounds, leaves of a single row; one thread keeps the run short and the results reproducible
TINY = {"num_iterations": 30, "min_data_in_leaf": 1, "min_data_in_bin": 1}
TINY_XGB = {"num_iterations": 30}


def _estimators():
    return [
        cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=TINY, n_jobs=1),
        cf.ForgetRegressor(grouping=cf.HashGroups(2), learner_params=TINY, n_jobs=1),
        cf.ForgetClassifier(grouping=cf.KMeansGroups(2), combine="route", learner_params=TINY, n_jobs=1),
        cf.ForgetRegressor(grouping=cf.KMeansGroups(2), combine="route", learner_params=TINY, n_jobs=1),
        cf.ForgetClassifier(learner="xgboost", grouping=cf.HashGroups(2), learner_params=TINY_XGB, n_jobs=1),
        cf.ForgetRegressor(learner="xgboost", grouping=cf.KMeansGroups(2), combine="route",
                           learner_params=TINY_XGB, n_jobs=1),
        # defaults: grouping="auto" (one member at these sizes), LightGBM's own leaf limits, early_stopping="auto"
        cf.ForgetClassifier(n_jobs=1),
        cf.ForgetRegressor(n_jobs=1),
        # every member stopping early on its held-out fifth
        cf.ForgetClassifier(grouping=cf.HashGroups(2), learner_params=TINY, early_stopping=True,
                            validation_fraction=0.2, n_jobs=1),
        cf.ForgetRegressor(early_stopping=True, n_iter_no_change=3, n_jobs=1),
    ]


def _expected_failures(estimator) -> dict[str, str]:
    reason = ("a weight of 2 is not a repeated row here: each row has its own id, which places it in a group, in the "
              "canonical order and in or out of the held-out slice, and histogram bins are built from the distinct "
              "rows (as LightGBM's own estimators)")
    failures = {f"check_sample_weight_equivalence_on_{kind}_data": reason for kind in ("dense", "sparse")
                } if estimator.grouping != "auto" or estimator.early_stopping is True else {}  # defaults: one member
    if isinstance(estimator, cf.ForgetClassifier) and isinstance(estimator.grouping, cf.HashGroups):
        return {**failures, "check_decision_proba_consistency": (
            "decision_function is the weighted average of the members' log-odds, the scale on which TreeSHAP "
            "contributions add up exactly (clusterforget.explain); predict_proba averages their probabilities, "
            "and with several members the two can rank rows differently")}
    return failures


@parametrize_with_checks(_estimators(), expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_grouping_parameter_is_not_mutated_by_fit():
    """fit works on a private copy of the grouping spec: the parameter stays as given, and two models that
    share one spec object do not share what it resolved on their data."""
    import numpy as np
    import pandas as pd

    spec = cf.KMeansGroups(2)
    rng = np.random.default_rng(0)
    a = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    b = pd.DataFrame({"c": rng.normal(size=60), "d": rng.normal(size=60), "e": rng.normal(size=60)})
    y = (a["a"] > 0).astype(int)
    m1 = cf.ForgetClassifier(grouping=spec, learner_params=TINY, n_jobs=1).fit(a, y)
    before = m1.predict_proba(a)
    m2 = cf.ForgetClassifier(grouping=spec, learner_params=TINY, n_jobs=1).fit(b, y)
    assert vars(spec) == vars(cf.KMeansGroups(2))
    assert m1.get_params()["grouping"] is spec and m2.get_params()["grouping"] is spec
    # m1 still forgets with its own features (a, b), not m2's (c, d, e)
    m1.forget_rows([0, 1, 2])
    fresh = cf.ForgetClassifier(grouping=cf.KMeansGroups(2), learner_params=TINY, n_jobs=1).fit(
        a.iloc[3:], y.iloc[3:], ids=np.arange(3, 60)
    )
    np.testing.assert_array_equal(m1.predict_proba(a), fresh.predict_proba(a))
    assert before.shape == m1.predict_proba(a).shape
