"""The library logs each change on clusterforget.* loggers (counts, never ids or values) and prints nothing itself."""

import logging

import clusterforget as cf
from conftest import FAST, make_table


def test_a_change_is_logged_without_ids_or_values(caplog):
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("clusterforget").handlers)
    X, y, ids, _ = make_table("binary", n=200, str_ids=True)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    with caplog.at_level(logging.INFO, logger="clusterforget"):
        report = model.forget_rows(ids[:3], request_id="ticket-7")
    lines = [r.getMessage() for r in caplog.records if r.name == "clusterforget.changes"]
    assert len(lines) == 1
    assert lines[0].startswith("forget_rows request=ticket-7 rows_removed=3 ")
    assert f"groups_retrained={len(report.groups_retrained)}" in lines[0] and f"version={model.version_}" in lines[0]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(str(i) in text for i in ids)
    assert not any(repr(float(v)) in text for v in X["a"])
