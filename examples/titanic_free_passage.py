"""The titanic free-passage story: a business rule changes, the model follows, then the rows are forgotten.

Run from anywhere:  python examples/titanic_free_passage.py

The model predicts whether a passenger counts as a surviving *paying* passenger (``survived``). Fifteen
passengers have ``fare == 0``: they travelled free (crew of the shipping line, guests of the builder). A new
business rule says: count them as not paying, so their label becomes 0. We

1. train one model per passenger class (``grouping="pclass"``);
2. apply the rule to the training labels (``relabel``): only the classes holding free passengers retrain,
   and the result equals a fresh fit on the relabeled data;
3. compare with an output override on a second model: nothing retrains, matching inputs just get 0;
4. forget the free-passage rows entirely (``forget_rows``), as if they had never been in the training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import clusterforget as cf

DATA = Path(__file__).resolve().parents[1] / "data" / "titanic.csv"
FEATURES = ["pclass", "sex", "age", "sibsp", "parch", "fare", "embarked"]
RULE = "fare == 0"
# n_jobs=1: the data is small, and one thread per member keeps the timing steady on a busy machine
PARAMS = dict(grouping="pclass", learner_params={"num_iterations": 50}, random_state=0, n_jobs=1)


def accuracy(model, X, y) -> float:
    return float(np.mean(model.predict(X) == y))


def main() -> None:
    df = pd.read_csv(DATA)
    ids = np.arange(len(df), dtype=np.int64)  # a passenger's row number is its id
    test = ids % 5 == 0
    X, y = df[FEATURES], df["survived"].to_numpy()
    X_train, y_train, ids_train = X[~test].reset_index(drop=True), y[~test], ids[~test]
    X_test, y_test = X[test].reset_index(drop=True), y[test]
    free_train = (X_train["fare"] == 0).to_numpy()
    free_test = (X_test["fare"] == 0).to_numpy()
    y_test_rule = np.where(free_test, 0, y_test)  # the test labels under the new rule

    print(f"titanic: {len(df)} passengers, {int((df['fare'] == 0).sum())} with fare == 0 "
          f"({int(free_train.sum())} in training, {int(free_test.sum())} in test)")

    # 1. train, one member per passenger class
    model = cf.ForgetClassifier(**PARAMS).fit(X_train, y_train, ids=ids_train)
    print("\n1. trained:", ", ".join(f"class {g['key']}: {g['rows']} rows" for g in model.groups_))
    print(f"   accuracy {accuracy(model, X_test, y_test):.3f} (old labels), "
          f"{accuracy(model, X_test, y_test_rule):.3f} (labels under the new rule)")
    counts = X_train["pclass"][free_train].value_counts().sort_index()
    print(f"   free passengers in training by class: {', '.join(f'class {k}: {v}' for k, v in counts.items())}")
    free_all = X[(X["fare"] == 0).to_numpy()]
    p_old = model.predict_proba(free_all)[:, 1]
    print(f"   mean P(survived) over the {len(free_all)} free passengers: {p_old.mean():.3f}")

    # 2. the rule changes the training labels; only classes holding free passengers retrain
    report = model.relabel(RULE, label=0)
    print(f"\n2. relabel {RULE!r} -> 0 (mode='retrain'):\n   {report}")
    print(f"   rows matched {report.rows_matched}, relabeled {report.rows_relabeled}, "
          f"retrained {report.groups_retrained}, version {report.version}")
    fresh = cf.ForgetClassifier(**PARAMS).fit(X_train, np.where(free_train, 0, y_train), ids=ids_train)
    same = np.array_equal(model.predict_proba(X_test), fresh.predict_proba(X_test))
    print(f"   equal, bit for bit, to a fresh fit on the relabeled data: {same}")
    print(f"   accuracy {accuracy(model, X_test, y_test_rule):.3f} (labels under the new rule); "
          f"free test passengers predicted {model.predict(X_test[free_test]).tolist()}")
    print(f"   mean P(survived) over the free passengers: {model.predict_proba(free_all)[:, 1].mean():.3f}")
    if not same:
        raise SystemExit("relabel is not exact")

    # 3. the same rule as an output override on a model trained with the old labels: nothing retrains
    other = cf.ForgetClassifier(**PARAMS).fit(X_train, y_train, ids=ids_train)
    before = other.predict(X_test)
    report = other.relabel(RULE, label=0, mode="override")
    print(f"\n3. relabel {RULE!r} -> 0 (mode='override'):\n   {report}")
    print(f"   rules in force: {other.rules}")
    after = other.predict(X_test)
    print(f"   accuracy {accuracy(other, X_test, y_test_rule):.3f} (labels under the new rule); "
          f"free test passengers predicted {after[free_test].tolist()}")
    print(f"   override changed {int((after != before).sum())} test prediction(s), all of them free passengers: "
          f"{bool(((after != before) <= free_test).all())}; retraining changed "
          f"{int(((model.predict(X_test) != before) & ~free_test).sum())} prediction(s) of paying passengers "
          "(their class members learned from the new labels)")
    print(f"   mean P(survived) over the free passengers: {other.predict_proba(free_all)[:, 1].mean():.3f} "
          "(exactly 0: the override answers for them)")
    removed = other.remove_rule(other.rules[0]["rule_id"])
    print(f"   {removed}")

    # 4. forget the free-passage rows entirely
    report = model.forget_rows(ids_train[free_train])
    print(f"\n4. forget_rows ({int(free_train.sum())} free-passage rows):\n   {report}")
    kept = ~free_train
    fresh = cf.ForgetClassifier(**PARAMS).fit(X_train[kept], y_train[kept], ids=ids_train[kept])
    same = np.array_equal(model.predict_proba(X_test), fresh.predict_proba(X_test))
    print(f"   {model.n_rows_} training rows left; equal to a fresh fit without them: {same}")
    print(f"   accuracy {accuracy(model, X_test, y_test):.3f} (old labels), "
          f"{accuracy(model, X_test, y_test_rule):.3f} (labels under the new rule)")
    if not same:
        raise SystemExit("forget_rows is not exact")


if __name__ == "__main__":
    main()
