"""A change is a value: ``plan(state, change)`` says what it does without training or touching the state (the dry
run is the plan's report), ``execute(plan, executor)`` trains and returns the new state; one partition rule
(``assign_rows``) places every row where the plan put it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import clusterforget as cf
from clusterforget.data import ID
from clusterforget.ensemble import Change, assign_rows, execute, plan
from conftest import FAST, make_table


def _model(**kw):
    X, y, ids, test = make_table("binary", n=300)
    params = dict(grouping=cf.KMeansGroups(3, ["a", "b"], sample_size=80), learner_params=FAST["lightgbm"], n_jobs=1,
                  max_group_rows=60)
    params.update(kw)
    return cf.ForgetClassifier(**params).fit(X, y, ids=ids), X, y, ids, test


def test_plan_trains_nothing_and_execute_gives_the_change():
    model, X, y, ids, test = _model()
    state = model.ensemble_
    trained = []

    class Counting(type(state.executor)):
        def train(self, learner, schema, task, jobs):
            trained.append([j.name for j in jobs])
            return super().train(learner, schema, task, jobs)

    gone = pa.array(ids[:25].tolist(), type=state.id_type)
    p = plan(state, Change("forget_rows", remove=gone))
    assert trained == [] and p.before is state and p.removed == 25
    assert all(p.groups[gid].member is None for gid in p.to_train) and p.to_train
    dry = p.dry_run()
    assert dry.state is state and dry.report.rows_removed == 25
    executor = Counting(1, False)
    outcome = execute(p, executor)
    assert trained == [dry.report.groups_retrained] == [outcome.report.groups_retrained]
    assert outcome.state.version == state.version + 1 and state.version == model.ensemble_.version
    assert sorted(outcome.forgotten.to_pylist()) == sorted(ids[:25].tolist())
    model.forget_rows(ids[:25])  # the estimator's path: the same plan, executed with the state's executor
    assert np.array_equal(model.predict_proba(test), cf.ForgetClassifier(**model.get_params()).fit(
        X[~np.isin(ids, ids[:25])], y[~np.isin(ids, ids[:25])], ids=ids[~np.isin(ids, ids[:25])]).predict_proba(test))
    again = execute(p, executor)  # a plan is a value: executing it again gives the same state
    assert [g.member.model_bytes() for g in again.state.groups.values()] == [
        g.member.model_bytes() for g in outcome.state.groups.values()]


def test_every_row_is_where_the_plan_put_it():
    model, X, y, ids, test = _model()
    state = model.ensemble_
    n_shards = {g.key: g.n_shards for g in state.groups.values()}
    for gid, g in state.groups.items():
        codes, keys, shard = assign_rows(state.grouping, state.state, state.full_rows(g), n_shards)
        assert {(keys[c], s) for c, s in zip(codes.tolist(), shard.tolist())} == {gid}, g.name
    assert sum(g.n_rows for g in state.groups.values()) == len(set(
        v for g in state.groups.values() for v in g.rows.column(ID).to_pylist()))
