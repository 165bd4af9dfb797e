"""verify(): detects held ids and a model that is not what a fresh fit gives."""

from __future__ import annotations

import numpy as np

import clusterforget as cf
from conftest import FAST, make_table


def test_verify_passes_after_forgetting_and_fails_on_tampering():
    X, y, ids, test = make_table("binary")
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    model.forget_rows(ids[:4])
    ok = cf.verify(model, forgotten=ids[:4], X_probe=test)
    assert ok.ok and ok.fresh_fit_equal and ok.ids_still_held == [] and ok.rows_probed == len(test)
    assert "identical to a fresh fit" in str(ok)

    held = cf.verify(model, forgotten=ids[4:6])
    assert not held.ok and sorted(held.ids_still_held) == sorted(ids[4:6].tolist())

    # a member that no longer matches its rows (as an approximate "unlearning" trick would leave it)
    ens = model.ensemble_
    gid = next(iter(ens.groups))
    other = next(g for g in ens.groups.values() if g.gid != gid and g.member.learner == "lightgbm")
    model.ensemble_ = ens.evolve(groups={**ens.groups, gid: ens.groups[gid].with_member(other.member)})
    bad = cf.verify(model, X_probe=test)
    assert not bad.ok and bad.fresh_fit_equal is False and bad.max_abs_diff > 0
