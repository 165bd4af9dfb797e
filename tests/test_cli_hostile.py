"""The command line on data and arguments nobody checked: markup and control characters in request ids and group
keys, ids in other scripts, files with a byte-order mark, bad paths, columns to leave out, typos in parameters.

Each case failed before the fix it tests (issue 19, findings 9 to 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import clusterforget as cf
from test_cli import TITANIC, fingerprint, ok, one_line_error
from test_cli import cli  # noqa: F401 - the fixture

FEW = '{"num_iterations": 5}'
HIDDEN = "REQ-9 [#000000 on #000000]hidden[/]"
LINK = "[link=https://example.invalid]click[/link]"
ESC = "b\x1b[8m"  # a terminal sequence that hides what follows


@pytest.fixture()
def marked(tmp_path, cli) -> Path:  # noqa: F811
    """A store grouped by a column whose values are rich markup, and a request id that is markup too."""
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"team": np.where(np.arange(n) % 3 == 0, "[/bold]", np.where(np.arange(n) % 3 == 1, LINK, ESC)),
                       "x": rng.normal(size=n), "y": (rng.normal(size=n) > 0).astype(int)})
    df.to_csv(tmp_path / "marked.csv", index=False)
    store = tmp_path / "marked"
    ok("fit", tmp_path / "marked.csv", "--target", "y", "--group-by", "team", "--params", FEW, "--store", store,
       runner=cli)
    return store


def test_markup_in_request_ids_and_group_keys_prints_as_typed(marked, cli):  # noqa: F811
    info = ok("info", marked, runner=cli)
    assert "[/bold]" in info and LINK in info and "b\\x1b[8m" in info and "\x1b" not in info
    plan = ok("forget", marked, "--ids", "1", "--request-id", "[/bold]", "--dry-run", runner=cli)
    assert "request [/bold]" in plan and "dry run: nothing was changed" in plan
    assert "1 row(s) removed" in ok("forget", marked, "--ids", "1", "--request-id", HIDDEN, "--yes", runner=cli)
    model = cf.load(marked)
    model.forget_rows([2], request_id="[/bold]")  # committed through the Python API, then read by the CLI
    del model
    ledger = ok("ledger", marked, runner=cli)
    assert HIDDEN in ledger and "[/bold]" in ledger
    assert "[/bold]" in ok("ledger", marked, "--request-id", "[/bold]", runner=cli)
    out = ok("forget-group", marked, "[/bold]", "--yes", runner=cli)
    assert "row(s) removed" in out and "[/bold]" in out
    assert sorted(g["key"] for g in cf.load(marked).groups_) == sorted([ESC, LINK])


def test_integer_ids_are_ascii_digits_and_an_ids_file_may_have_a_bom(marked, tmp_path, cli):  # noqa: F811
    before = fingerprint(marked)
    for typed in ("²", "١٢", "12x", "1_000"):
        assert "whole numbers" in one_line_error(cli("forget", marked, "--ids", typed, "--yes"), 1)
        assert "whole numbers" in one_line_error(cli("verify", marked, "--ids", typed), 1)
        assert "whole numbers" in one_line_error(cli("verify", marked, "--ids", typed, "--checks", "purge"), 1)
    assert fingerprint(marked) == before  # '١٢' is not id 12
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeff12\r\n13\n".encode())
    report = json.loads(ok("forget", marked, "--ids-file", ids, "--yes", "--json", runner=cli))
    assert report["rows_removed"] == 2
    ids.write_bytes(b"\xff\xfe1\x00")
    assert "not UTF-8" in one_line_error(cli("forget", marked, "--ids-file", ids, "--yes"), 1)


def test_an_os_error_is_one_line_and_a_hint(marked, tmp_path, cli):  # noqa: F811
    line = one_line_error(cli("predict", marked, tmp_path / "marked.csv", "-o", tmp_path / "no/such/dir/out.csv"), 1)
    assert "no/such/dir" in line
    assert "check that the path exists" in cli("predict", marked, tmp_path / "marked.csv", "-o",
                                               tmp_path / "no/such/dir/out.csv").stderr


def test_fit_drops_or_selects_columns_and_predict_carries_ids(tmp_path, cli):  # noqa: F811
    store = tmp_path / "t"
    ok("fit", TITANIC, "--target", "survived", "--drop", "alive", "--drop", "who,adult_male", "--group-by", "pclass",
       "--params", FEW, "--store", store, runner=cli)
    names = cf.load(store).ensemble_.schema.names
    assert "alive" not in names and "who" not in names and "adult_male" not in names and "sex" in names
    ok("fit", TITANIC, "--target", "survived", "--features", "pclass", "--features", "sex,age", "--group-by",
       "pclass", "--params", FEW, "--store", tmp_path / "t2", runner=cli)
    assert list(cf.load(tmp_path / "t2").ensemble_.schema.names) == ["pclass", "sex", "age"]
    for bad in (["--features", "survived"], ["--drop", "nope"]):
        one_line_error(cli("fit", TITANIC, "--target", "survived", *bad, "--group-by", "pclass", "--store",
                           tmp_path / "t3"), 1)
    assert not (tmp_path / "t3").exists()

    data = pcsv.read_csv(TITANIC)
    data = data.append_column("ticket", data.column("fare").cast("string"))  # an id column the model never saw
    pq.write_table(data, tmp_path / "in.parquet")
    ok("predict", store, tmp_path / "in.parquet", "--id-column", "ticket", "-o", tmp_path / "out.parquet", runner=cli)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names[:2] == ["ticket", "prediction"] and out["ticket"].equals(data["ticket"])
    assert "'nope'" in one_line_error(cli("predict", store, tmp_path / "in.parquet", "--id-column", "nope"), 1)


@pytest.mark.parametrize("learner, typo, fine", [
    ("lightgbm", {"num_iterationz": 5}, {"n_estimators": 5, "eta": 0.3, "min_child_samples": 3, "verbose": -1}),
    ("xgboost", {"max_depthz": 2}, {"n_estimators": 5, "eta": 0.3, "lambda": 1.0, "max_depth": 2}),
])
def test_unknown_learner_params_are_refused_with_the_valid_names(learner, typo, fine):
    if learner == "xgboost":
        pytest.importorskip("xgboost")
    X = np.random.default_rng(0).normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    bad = next(iter(typo))
    for cls, target in ((cf.ForgetClassifier, y), (cf.ForgetRegressor, X[:, 1])):
        with pytest.raises(cf.ParameterError, match=re.escape(repr(bad))) as info:
            cls(grouping=cf.HashGroups(2), learner=learner, learner_params=typo, n_jobs=1).fit(X, target)
        assert "did you mean" in str(info.value) and "max_depth" in str(info.value)
        model = cls(grouping=cf.HashGroups(2), learner=learner, learner_params=fine, n_jobs=1).fit(X, target)
        assert model.n_rows_ == 60


def test_the_cli_refuses_a_typo_in_params(tmp_path, cli):  # noqa: F811
    line = one_line_error(cli("fit", TITANIC, "--target", "survived", "--group-by", "pclass", "--params",
                              '{"num_iterationz": 5}', "--store", tmp_path / "s"), 1)
    assert "'num_iterationz'" in line and "num_iterations" in line
