"""The command line, end to end on titanic: fit into a store, forget, inspect, verify, predict."""

from __future__ import annotations

import json

import pytest

from clusterforget.cli import main
from conftest import DATA


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "titanic"
    assert main(["fit", str(DATA / "titanic.csv"), "--target", "survived", "--group-by", "pclass",
                 "--params", '{"num_iterations": 20}', "--quiet", "--store", str(path)]) == 0
    return path


def test_fit_forget_info_verify(store, capsys):
    capsys.readouterr()
    assert main(["forget", str(store), "--ids", "1", "2", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_removed"] == 3 and report["operation"] == "forget_rows"
    assert main(["forget-group", str(store), "2"]) == 0
    assert "1 dropped" in capsys.readouterr().out
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 891 - 3 - 184 and [g["key"] for g in info["groups"]] == [1, 3]
    assert main(["verify", str(store), "--ids", "1", "2", "3", "--probe", str(DATA / "titanic.csv")]) == 0
    assert "identical to a fresh fit" in capsys.readouterr().out


def test_predict_writes_probabilities(store, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["predict", str(store), str(DATA / "titanic.csv"), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].replace('"', "") == "prediction,proba_0,proba_1" and len(lines) == 892


def test_errors_are_reported_not_raised(store, capsys):
    assert main(["forget", str(store), "--ids", "99999"]) == 2
    err = capsys.readouterr().err
    assert "99999" in err and "nothing was changed" in err
    assert main(["forget-group", str(store), "first"]) == 2
    assert "'first'" in capsys.readouterr().err
