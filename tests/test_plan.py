"""The planner: candidates measured on a holdout, and a recommendation that honours the budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

import clusterforget as cf
from clusterforget.plan import Candidate, recommend
from conftest import DATA, FAST, make_table

HASH = [cf.HashGroups(1), cf.HashGroups(2), cf.HashGroups(4)]


@pytest.fixture(scope="module")
def table():
    X, y, ids, _ = make_table("binary", n=1200)
    return X, y, ids


def _plan(table, **kw):
    X, y, ids = table
    return cf.plan(X, y, ids=ids, candidates=HASH, learner_params=FAST["lightgbm"], progress=False, **kw)


def _c(name, loss, forget_s):
    c = Candidate(name, name, loss=loss, forget_s=forget_s, deferred_ms=1.0)
    c.status = "ok"
    return c


def test_rule_most_accurate_within_forget_seconds_else_fastest_within_loss():
    cands = [_c("one", 0.0, 1.0), _c("k4", 0.002, 0.4), _c("k16", 0.01, 0.1), _c("k64", 0.03, 0.05)]
    best, bound, why = recommend(cands, 0.5, None)
    assert best.name == "k4" and bound == "max_forget_seconds" and "one" in why  # what the budget excluded
    best, bound, why = recommend(cands, None, 0.005)
    assert best.name == "k4" and bound == "max_accuracy_loss" and "k16" in why
    best, bound, _ = recommend(cands, 0.5, 0.001)  # both: nothing meets both -> the fastest within the loss
    assert best.name == "one" and bound == "none met"
    best, bound, _ = recommend(cands, 0.01, None)  # too strict: the fastest, said so
    assert best.name == "k64" and bound == "none met"
    best, bound, _ = recommend(cands, None, -1.0)
    assert best.name == "one" and bound == "none met"
    skipped = Candidate("skipped", "x", status="skipped: time budget")
    assert recommend([skipped], 1.0, None)[0] is None


def test_recommendation_honours_the_measured_budgets(table):
    p = _plan(table, max_forget_seconds=1e9)
    done = [c for c in p.candidates if c.measured]
    assert [c.k for c in done] == [1, 2, 4]
    assert p.best.loss == min(c.loss for c in done)  # the forget budget excludes nothing: the most accurate
    assert done[0].loss == 0.0 and p.baseline == done[0].metric

    limit = sorted(c.loss for c in done)[1]  # at least two candidates within the accuracy budget
    p = _plan(table, max_accuracy_loss=limit)
    within = [c for c in p.candidates if c.measured and c.loss <= limit]
    assert p.bound == "max_accuracy_loss" and p.best.loss <= limit
    assert p.best.forget_s == min(c.forget_s for c in within)

    p = _plan(table, max_forget_seconds=0.0)
    assert p.bound == "none met" and "no candidate forgets a row within 0 s" in p.reason


def test_plan_outputs_and_model(table, tmp_path):
    X, y, ids = table
    p = _plan(table, max_accuracy_loss=0.5)
    text = str(p)
    assert "recommended:" in text and "hash K=1" in text and "forget-1 s" in text
    json.dumps(p.to_dict())
    model = p.model()
    assert not hasattr(model, "ensemble_") and model.get_params()["grouping"] is p.best.grouping
    model.fit(X, y, ids=ids)
    pytest.importorskip("matplotlib")
    assert p.plot(tmp_path / "plan.png").stat().st_size > 0


def test_time_budget_skips_and_bad_budget_raises(table):
    p = _plan(table, max_accuracy_loss=0.01, time_budget=0.0)
    assert [c.status for c in p.candidates] == ["ok", "skipped: time budget 0 s", "skipped: time budget 0 s"]
    assert p.best.name == "hash K=1"
    with pytest.raises(cf.InputError, match="max_forget_seconds"):
        _plan(table, max_forget_seconds=-1)


def test_plan_file_default_candidates_on_titanic():
    p = cf.plan_file(DATA / "titanic.csv", "survived", max_forget_seconds=30.0, progress=False,
                     learner_params=FAST["lightgbm"])
    names = [c.name for c in p.candidates]
    assert names[0] == "hash K=1" and names[1].startswith("auto (hash K=1)")  # 712 rows: one member only
    assert p.best is not None and p.best.forget_s <= 30.0
    with pytest.raises(cf.InputError, match="target column"):
        cf.plan_file(DATA / "titanic.csv", "nope")


def test_a_candidate_that_cannot_work_is_reported_not_fatal(table):
    X, y, ids = table
    p = cf.plan(X, y, ids=ids, candidates=[cf.HashGroups(2), cf.KMeansGroups(2, features=["region"])],
                max_accuracy_loss=0.5, learner_params=FAST["lightgbm"], progress=False)
    failed = p.candidates[-1]
    assert failed.status.startswith("failed:") and "region" in failed.status and not failed.measured
    assert p.best is not None and p.best.measured
