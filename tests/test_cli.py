"""The command line, driven as a user drives it, on bundled titanic data.

Every command runs at least once through the console script in a subprocess (``run``); the other cases call the
same entry point in this process (``cli``), which is the same code without ~2 s of interpreter start-up. Each
test checks what was printed, the exit code and the store afterwards; stdin is never a terminal here, so changing
commands must refuse unless ``--yes`` is given.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import clusterforget as cf
from clusterforget.cli import main
from clusterforget.verify import fresh_fit
from conftest import DATA, ROOT

TITANIC = DATA / "titanic.csv"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_WAIT_POLICY": "PASSIVE", "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clusterforget", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, stdin=subprocess.DEVNULL, timeout=300)


@pytest.fixture()
def cli(capsys):
    """``cli(*args)``: the command line in this process, as a CompletedProcess."""

    def call(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return call


def ok(*args: str, runner=run) -> str:
    result = runner(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fingerprint(store: Path) -> dict[str, str]:
    """Every file of the store (lock file included) and its sha256: byte-for-byte state."""
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fitted") / "titanic"
    result = run("fit", TITANIC, "--target", "survived", "--group-by", "pclass", "--params", '{"num_iterations": 20}',
                 "--store", path, "--json")
    assert result.returncode == 0 and result.stderr == ""  # no progress bar without a terminal
    out = json.loads(result.stdout)
    assert out == {"estimator": "ForgetClassifier", "task": "classification", "rows": 891, "groups": 3,
                   "store": str(path), "version": 1}
    return path


@pytest.fixture()
def store(fitted, tmp_path) -> Path:
    shutil.copytree(fitted, tmp_path / "titanic")
    return tmp_path / "titanic"


def test_info_and_predict_formats(store, tmp_path, cli):
    info = json.loads(ok("info", store, "--json", runner=cli))
    assert info["rows"] == 891 and [g["key"] for g in info["groups"]] == [1, 2, 3] and info["pending"] == []
    table = ok("info", store)
    assert "891 rows in 3 groups" in table and re.search(r"^3\s+491\s+0\.5511\s+lightgbm\s+ready", table, re.M)

    expected = cf.load(store).predict_proba(pcsv.read_csv(TITANIC).drop_columns(["survived"]))
    stdout = ok("predict", store, TITANIC)
    rows = list(csv.reader(io.StringIO(stdout)))
    assert rows[0] == ["prediction", "proba_0", "proba_1"] and len(rows) == 892
    assert np.array_equal(np.array([[float(r[1]), float(r[2])] for r in rows[1:]]), expected)
    feather.write_feather(pcsv.read_csv(TITANIC), tmp_path / "in.arrow")  # Arrow IPC in, Parquet out
    ok("predict", store, tmp_path / "in.arrow", "-o", tmp_path / "out.parquet", runner=cli)
    out = pq.read_table(tmp_path / "out.parquet")
    assert np.array_equal(np.column_stack([out["proba_0"], out["proba_1"]]), expected)
    first = json.loads(ok("predict", store, TITANIC, "--json", runner=cli).splitlines()[0])
    assert first == {"prediction": 0, "proba_0": expected[0, 0], "proba_1": expected[0, 1]}
    assert "name the output .csv or .parquet" in one_line_error(cli("predict", store, TITANIC, "-o", tmp_path / "p.txt"), 1)


def test_dry_runs_leave_the_store_byte_for_byte(store, cli):
    before = fingerprint(store)
    plan = json.loads(ok("forget", store, "--ids", "17", "42", "--request-id", "REQ-1", "--dry-run", "--json"))
    assert plan["dry_run"] and plan["rows_removed"] == 2 and plan["request_id"] == "REQ-1"
    assert plan["groups_retrained"] == ["2", "3"] and plan["estimated_seconds"] > 0
    text = ok("forget-group", store, "2", "--dry-run", runner=cli)
    assert re.search(r"rows to forget\s+184", text) and re.search(r"groups to drop\s+1: 2", text)
    assert "dry run: nothing was changed" in text
    text = ok("relabel", store, "fare == 0", "--label", "1", "--dry-run", runner=cli)
    assert re.search(r"training rows matching\s+15", text) and re.search(r"rows to relabel\s+14", text)
    ok("retrain", store, "--dry-run", runner=cli)
    assert fingerprint(store) == before


def test_refuses_without_a_terminal_and_without_yes(store, cli):
    before = fingerprint(store)
    for runner, args in ((run, ["forget", store, "--ids", "17"]), (cli, ["forget-group", store, "2"]),
                         (cli, ["relabel", store, "fare == 0", "--label", "1"])):
        result = runner(*args)
        assert "no terminal" in one_line_error(result, 1) and "--yes" in result.stderr
        assert "groups to retrain" in result.stdout  # the plan was shown before refusing
    assert fingerprint(store) == before


def test_forget_with_request_id_then_verify_and_ledger(store, cli):
    report = json.loads(ok("forget", store, "--ids", "17", "42", "--request-id", "REQ-1042", "--yes", "--json"))
    assert report["rows_removed"] == 2 and report["version"] == 2 and report["request_id"] == "REQ-1042"
    model = cf.load(store)
    X = pcsv.read_csv(TITANIC).drop_columns(["survived"])
    assert model.n_rows_ == 889 and np.array_equal(model.predict_proba(X), fresh_fit(model).predict_proba(X))
    assert "none held" in ok("verify", store, "--ids", "17", "42", "--probe", TITANIC)
    assert json.loads(ok("verify", store, "17", "--json", runner=cli))["ids_still_held"] == []

    lines = [json.loads(line) for line in ok("ledger", store, "--json").splitlines()]
    assert [e["operation"] for e in lines] == ["save", "forget_rows"] and lines[1]["request_id"] == "REQ-1042"
    table = ok("ledger", store, "--request-id", "REQ-1042", runner=cli)
    assert re.search(r"forget_rows\s+REQ-1042\s+-2\s+2 retrained\s+[\d.]+\s+2$", table, re.M)
    assert "save" not in table


def test_deferred_retrain_and_relabel(store, cli):
    report = json.loads(ok("forget", store, "--ids", "5", "--deferred", "--yes", "--json", runner=cli))
    assert report["groups_pending"] == ["3"] and report["groups_retrained"] == []
    assert json.loads(ok("info", store, "--json", runner=cli))["pending"] == ["3"]
    assert "1 group(s) retrained" in ok("retrain", store, "--yes", "--request-id", "REQ-7")
    assert json.loads(ok("info", store, "--json", runner=cli))["pending"] == []
    assert "nothing to do" in ok("retrain", store, runner=cli)  # no confirmation needed, no ledger line
    report = json.loads(ok("relabel", store, "fare == 0", "--label", "1", "--yes", "--json"))
    assert report["rows_relabeled"] == 14 and report["groups_retrained"] == ["1", "2", "3"]
    report = json.loads(ok("relabel", store, "sex == 'female'", "--label", "1", "--mode", "override", "--yes", "--json", runner=cli))
    assert report["operation"] == "relabel_override"
    assert json.loads(ok("info", store, "--json", runner=cli))["overrides"][0]["rule"] == "sex == 'female'"
    assert "184 row(s) removed" in ok("forget-group", store, "2", "--yes")
    model = cf.load(store)
    assert [g["key"] for g in model.groups_] == [1, 3] and model.version_ == 6
    assert [e["operation"] for e in cf.read_ledger(store)].count("retrain_pending") == 1


def test_errors_exit_codes_and_debug(store, cli):
    before = fingerprint(store)
    assert "[99999]" in one_line_error(run("forget", store, "--ids", "99999", "--yes"), 1)
    assert "'first'" in one_line_error(cli("forget-group", store, "first", "--yes"), 1)
    assert "whole numbers" in one_line_error(cli("forget", store, "--ids", "x1", "--yes"), 1)
    assert "does not exist" in one_line_error(cli("predict", store, "missing.csv"), 1)
    assert cli("fit", TITANIC, "--store", store / "x").returncode == 2  # no --target: click's usage error
    assert cli("forget", store).returncode == 2  # no ids
    assert fingerprint(store) == before
    member = next(p for p in (store / "members").iterdir())
    member.write_bytes(member.read_bytes() + b" ")
    assert "does not match its sha256" in one_line_error(run("info", store), 3)
    debug = cli("--debug", "info", store)
    assert debug.returncode == 3 and "Traceback" in debug.stderr


def test_readme_walkthrough_runs_verbatim(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Handling a deletion request", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
                if line.strip() and not line.startswith("#")]
    assert [c.split()[1] for c in commands] == ["fit", "forget", "forget", "verify", "verify", "export", "ledger"]
    (tmp_path / "data").symlink_to(DATA)
    outputs = []
    for command in commands:
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                                stdin=subprocess.DEVNULL, timeout=300)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
    assert "dry run: nothing was changed" in outputs[1] and "2 row(s) removed" in outputs[2]
    assert "identical to a fresh fit" in outputs[3] and "REQ-1042" in outputs[6]
    # a request is audited by held, purge and exact unless --checks says otherwise
    assert [re.search(rf"^{c}\s+pass\s", outputs[4], re.M) is not None for c in ("held", "purge", "exact")] == [True] * 3, \
        outputs[4]
    assert (tmp_path / "exports" / "titanic" / "manifest.json").is_file()
    # the walkthrough's model is not trained on the answer: no feature is the target under another name
    pd = pytest.importorskip("pandas")
    data = pd.read_csv(TITANIC)
    names = cf.load(tmp_path / "stores" / "titanic").ensemble_.schema.names
    for name in names:
        pairs = data[[name, "survived"]].astype(str).drop_duplicates()
        assert not (pairs[name].is_unique and pairs["survived"].is_unique), f"feature {name!r} is the target"
    assert "alive" not in names and len(names) == len(data.columns) - 2


def test_demo_on_a_slice_of_adult(tmp_path):
    pytest.importorskip("pandas")
    lines = (DATA / "adult.csv").read_text().splitlines()
    (tmp_path / "adult.csv").write_text("\n".join(lines[:4001]) + "\n")
    out = ok("demo", "--data", tmp_path / "adult.csv")
    assert "forget_group:" in out and "identical to a fresh fit on the remaining" in out and out.rstrip().endswith("True")


def test_python_dry_run_plans_what_the_change_does():
    table = pcsv.read_csv(TITANIC)
    X, y = table.drop_columns(["survived"]), table["survived"].to_numpy()
    model = cf.ForgetClassifier(grouping="pclass", learner_params={"num_iterations": 10}, n_jobs=1).fit(X, y)
    before = model.predict_proba(X)
    for plan_call, real_call in [
        (lambda: model.forget_rows([3, 4, 900 - 10], dry_run=True), lambda: model.forget_rows([3, 4, 890])),
        (lambda: model.forget_group(2, dry_run=True), lambda: model.forget_group(2)),
        (lambda: model.relabel("fare == 0", 1, dry_run=True), lambda: model.relabel("fare == 0", 1)),
    ]:
        version = model.version_
        plan = plan_call()
        assert model.version_ == version and np.array_equal(model.predict_proba(X), before)
        assert plan.note.startswith("dry run: nothing was changed")
        done = real_call()
        assert (plan.rows_removed, plan.rows_relabeled, plan.groups_retrained, plan.groups_dropped) == (
            done.rows_removed, done.rows_relabeled, done.groups_retrained, done.groups_dropped)
        before = model.predict_proba(X)
    assert model.retrain_pending(dry_run=True).groups_retrained == []


def test_confirmation_at_a_terminal(store, cli, monkeypatch):
    """At a terminal the plan is followed by a question: "n" changes nothing, "y" goes ahead."""
    import clusterforget.cli.changes as changes

    monkeypatch.setattr(changes, "interactive", lambda: True)
    before = fingerprint(store)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    refused = cli("forget", store, "--ids", "17")
    assert refused.returncode == 1 and "was not confirmed; nothing was changed" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fingerprint(store) == before
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    result = cli("forget", store, "--ids", "17", "--request-id", "REQ-9")
    assert result.returncode == 0 and "go ahead?" in result.stderr and "1 row(s) removed" in result.stdout
    assert cf.read_ledger(store)[-1]["request_id"] == "REQ-9"


def test_a_held_lock_is_a_store_error(store, cli):
    from filelock import FileLock

    before = fingerprint(store)
    with FileLock(str(store / ".lock")):
        line = one_line_error(cli("--lock-timeout", "0", "forget", store, "--ids", "17", "--yes"), 3)
    assert "another writer holds the lock" in line and fingerprint(store) == before


def test_fit_seconds_are_recorded_and_estimate_a_retrain(tmp_path):
    table = pcsv.read_csv(TITANIC)
    X, y = table.drop_columns(["survived"]), table["survived"].to_numpy()
    model = cf.ForgetClassifier(grouping="pclass", learner_params={"num_iterations": 10}, n_jobs=1).fit(X, y)
    seconds = {g.name: g.member.fit_seconds for g in model.ensemble_.groups.values()}
    assert all(s > 0 for s in seconds.values())
    assert model.ensemble_.estimate_seconds(["1"]) == seconds["1"]  # one member: its recorded time
    # n_jobs=1: members train one after the other
    assert model.ensemble_.estimate_seconds(["1", "3"]) == pytest.approx(seconds["1"] + seconds["3"])
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert {g.name: g.member.fit_seconds for g in loaded.ensemble_.groups.values()} == pytest.approx(seconds, abs=1e-6)
    for g in loaded.ensemble_.groups.values():  # a store written before fit times were kept
        g.member.fit_seconds = None
    assert loaded.ensemble_.estimate_seconds(["1"]) is None


def test_export_command_writes_a_bundle_that_scores_like_the_store(tmp_path):
    import numpy as np
    import pandas as pd

    import clusterforget as cf
    from clusterforget.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=300), "k": rng.choice(["x", "y"], 300)})
    df["label"] = (df["a"] > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    store, out = tmp_path / "s", tmp_path / "bundle"
    assert main(["fit", str(tmp_path / "d.csv"), "--target", "label", "--group-by", "k", "--store", str(store)]) == 0
    assert main(["export", str(store), "--format", "bundle", "-o", str(out), "--json"]) == 0
    model = cf.load(store)
    X = df.drop(columns="label")
    assert np.array_equal(cf.Scorer(out).predict_proba(X), model.predict_proba(X))
    assert main(["export", str(store), "--format", "nope", "-o", str(out)]) == 2


def test_verify_request_and_certificate_commands(tmp_path):
    import json as _json

    import numpy as np
    import pandas as pd

    from clusterforget.cli import main

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=300), "k": rng.choice(["x", "y", "z"], 300)})
    df["label"] = (df["a"] > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    store = tmp_path / "s"
    key = tmp_path / "key.hex"
    key.write_text("ab" * 32)
    assert main(["fit", str(tmp_path / "d.csv"), "--target", "label", "--group-by", "k", "--store", str(store)]) == 0
    assert main(["forget", str(store), "--ids", "3", "4", "--request-id", "REQ-9", "--yes"]) == 0
    assert main(["verify", str(store), "--request-id", "REQ-9", "--checks", "purge,exact", "--json"]) == 0
    cert = tmp_path / "cert.json"
    assert main(["certificate", str(store), "--request-id", "REQ-9", "--key", str(key), "-o", str(cert)]) == 0
    assert main(["verify-certificate", str(cert), str(store), "--key", str(key)]) == 0
    doc = _json.loads(cert.read_text())
    doc["request_id"] = "REQ-10"  # tampered
    cert.write_text(_json.dumps(doc))
    assert main(["verify-certificate", str(cert), str(store), "--key", str(key)]) == 1
    assert main(["verify", str(store), "--request-id", "REQ-9", "--checks", "nope"]) == 1


def test_plan_command_recommends_within_the_budget(tmp_path):
    import json as _json

    out = subprocess.run([sys.executable, "-m", "clusterforget", "plan", str(TITANIC), "--target", "survived",
                          "--group-by", "pclass", "--max-accuracy-loss", "0.05", "--time-budget", "60", "--json"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = _json.loads(out.stdout)
    best = [c for c in doc["candidates"] if c["name"] == doc["best"]]
    assert len(best) == 1 and best[0]["status"] == "ok" and best[0]["loss"] <= 0.05 and doc["reason"]


def test_fit_with_a_weight_column_is_the_api_fit_with_those_weights(tmp_path, cli):
    """--weight-column: the column's values are the rows' sample weights (not a feature); bad weights are refused
    with the row, and the column cannot double as the target."""
    import pandas as pd

    df = pd.read_csv(TITANIC).iloc[:300]
    df["w"] = np.where(df["survived"] == 1, 2.5, 1.0)
    data = tmp_path / "weighted.csv"
    df.to_csv(data, index=False)
    ok("fit", data, "--target", "survived", "--group-by", "pclass", "--weight-column", "w", "--drop", "alive",
       "--params", '{"num_iterations": 10}', "--store", tmp_path / "s", "--quiet", runner=cli)
    model = cf.load(tmp_path / "s")
    assert "w" not in model.feature_names_in_
    X = pd.read_csv(data).drop(columns=["survived", "w", "alive"])
    api = cf.ForgetClassifier(grouping=["pclass"], learner_params={"num_iterations": 10}).fit(
        X, df["survived"].to_numpy(), sample_weight=df["w"].to_numpy())
    assert np.array_equal(model.predict_proba(X), api.predict_proba(X))
    assert [g["weight"] for g in model.groups_] == [g["weight"] for g in api.groups_]
    df.loc[7, "w"] = -1.0
    df.to_csv(data, index=False)
    bad = cli("fit", data, "--target", "survived", "--hash", "2", "--weight-column", "w", "--store", tmp_path / "t")
    assert "-1.0 at position 7" in one_line_error(bad, 1)
    same = cli("fit", data, "--target", "survived", "--hash", "2", "--weight-column", "survived", "--store",
               tmp_path / "u")
    assert "is also the target" in one_line_error(same, 1)


@pytest.mark.parametrize("target, scoring, estimator", [("survived", "neg_log_loss", cf.ForgetClassifier),
                                                         ("fare", "neg_mean_absolute_error", cf.ForgetRegressor)])
def test_fit_with_early_stopping_options_is_the_api_fit_bitwise(tmp_path, cli, target, scoring, estimator):
    """--early-stopping, --validation-fraction, --n-iter-no-change and --scoring are the estimator's parameters:
    the stored model is bitwise the library's fit (members, their chosen rounds, predictions); a score of the
    other task is a usage error quoting it and the accepted names."""
    from clusterforget.cli.io import read_table

    args = ["--group-by", "pclass", "--drop", "alive", "--params", '{"num_iterations": 60}', "--quiet"]
    ok("fit", TITANIC, "--target", target, *args, "--early-stopping", "on", "--validation-fraction", "0.25",
       "--n-iter-no-change", "3", "--scoring", scoring, "--store", tmp_path / "s", runner=cli)
    stored = cf.load(tmp_path / "s")
    rows = read_table(str(TITANIC))  # as the command reads it (pandas reads an empty text cell as NaN, Arrow as "")
    y = rows.column(target).to_numpy()
    X = rows.drop_columns([target, "alive"])
    api = estimator(grouping=["pclass"], learner_params={"num_iterations": 60}, early_stopping=True,
                    validation_fraction=0.25, n_iter_no_change=3, scoring=scoring).fit(X, y)
    assert {k: stored.get_params()[k] for k in ("early_stopping", "validation_fraction", "n_iter_no_change",
                                                "scoring")} == {"early_stopping": True, "validation_fraction": 0.25,
                                                                "n_iter_no_change": 3, "scoring": scoring}
    members = lambda m: [(g.name, g.member.model_bytes(), g.member.meta()) for g in m.ensemble_.groups.values()]
    assert members(stored) == members(api)
    rounds = [g["rounds"] for g in stored.groups_]
    assert rounds == [g["rounds"] for g in api.groups_] and min(rounds) < 60  # it did stop early
    predict = getattr(api, "predict_proba", api.predict)
    assert np.array_equal(getattr(stored, predict.__name__)(X), predict(X))
    other = "roc_auc" if estimator is cf.ForgetRegressor else "r2"
    bad = cli("fit", TITANIC, "--target", target, *args, "--scoring", other, "--store", tmp_path / "t")
    assert bad.returncode == 2 and f"'{other}' is not a score" in bad.stderr and "neg_" in bad.stderr
    assert not (tmp_path / "t").exists()


def test_verify_reads_the_forgotten_rows_for_purge(tmp_path, cli):
    """--forgotten-rows: purge searches the preprocessor documents for values only those rows had; a document made
    to hold one (re-signed) fails it naming the file and field, the honest store passes."""
    import base64

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    from clusterforget.store.commit import manifest_checksum
    from conftest import make_table

    X, y, ids, _ = make_table("binary")
    pre = ColumnTransformer([("mean", SimpleImputer(strategy="mean"), ["a", "b"])])
    model = cf.ForgetClassifier(grouping="region", combine="route", preprocessor=pre, n_jobs=1,
                                learner_params={"num_iterations": 5}).fit(X, y, ids=ids)
    store = tmp_path / "s"
    model.save(store)
    model.forget_rows(ids[[5, 6]], request_id="REQ-R")
    X.iloc[[5, 6]].to_csv(tmp_path / "gone.csv", index=False)
    args = ("verify", store, "--request-id", "REQ-R", "--checks", "purge", "--forgotten-rows", tmp_path / "gone.csv",
            "--json")  # JSON: a table may wrap the summary
    assert "decoded and searched" in ok(*args, runner=cli)
    assert cli("verify", store, "--forgotten-rows", tmp_path / "gone.csv").returncode == 1  # the probe check reads none
    doc = json.loads((store / "manifest.json").read_text())
    pre_doc = doc["groups"][0]["member"]["meta"]["preprocessor"]
    stats = pre_doc["object"]["state"]["transformers_"][0]["$tuple"][1]["state"]["statistics_"]
    stats["data"] = base64.b64encode(np.array([X.loc[5, "a"], 0.0]).astype("<f8").tobytes()).decode()
    body = {k: v for k, v in pre_doc.items() if k != "sha256"}
    pre_doc["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    doc["checksum"] = manifest_checksum(doc)
    (store / "manifest.json").write_text(json.dumps(doc))
    result = cli(*args)
    assert result.returncode == 1 and "manifest.json groups[0].member.meta.preprocessor" in result.stdout
    assert "statistics_ holds" in result.stdout
