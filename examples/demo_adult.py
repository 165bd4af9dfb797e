"""Demo: train on the adult census data grouped by country, forget a whole country and 100 people.

Run from anywhere: ``python examples/demo_adult.py`` (or ``clusterforget demo``). Prints each operation's report, the accuracy
before and after, and checks the result against a fresh fit on the remaining rows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

import clusterforget as cf

DATA = Path(__file__).resolve().parents[1] / "data" / "adult.csv"


def scores(model, X, y) -> str:
    proba = model.predict_proba(X)[:, 1]
    return f"AUC {roc_auc_score(y, proba):.4f}, accuracy {accuracy_score(y, model.predict(X)):.4f}"


def large_data(n: int) -> None:
    """Where retrain-now pays: on data large enough that one model's retrain takes seconds, forgetting a row
    retrains only the member that held it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 20))
    y = (X[:, :5].sum(axis=1) + 0.5 * rng.normal(size=n) > 0).astype(int)
    t = time.perf_counter()
    cf.ForgetClassifier(grouping=cf.HashGroups(1), random_state=0).fit(X, y)
    one = time.perf_counter() - t
    model = cf.ForgetClassifier(grouping=cf.HashGroups(16), random_state=0).fit(X, y)
    report = model.forget_rows([12345 % n])
    print(f"{n:,} rows x 20 features, 16 hash shards: forgetting 1 row retrained {len(report.groups_retrained)} of "
          f"16 members in {report.seconds:.2f}s; one model retrains on all rows in {one:.2f}s "
          f"({one / report.seconds:.1f}x faster)")


def main(data: Path = DATA) -> None:
    df = pd.read_csv(data)
    y = (df.pop("class").str.strip() == ">50K").astype(int).to_numpy()
    ids = np.arange(len(df))  # row number as the stable row id
    X_train, X_test, y_train, y_test, id_train, _ = train_test_split(df, y, ids, test_size=0.2, random_state=0)
    print(f"adult: {len(X_train)} training rows, {len(X_test)} test rows, grouped by 'native-country'")
    # one country holds 90% of the rows: cap groups at 2,000 rows (larger ones split into hash shards)
    settings = dict(grouping="native-country", max_group_rows=2000, random_state=0)

    t = time.perf_counter()
    model = cf.ForgetClassifier(**settings).fit(X_train, y_train, ids=id_train)
    print(f"fit: {len(model.groups_)} members in {time.perf_counter() - t:.2f}s; test {scores(model, X_test, y_test)}")

    t = time.perf_counter()
    single = cf.ForgetClassifier(grouping=cf.HashGroups(1), random_state=0).fit(X_train, y_train, ids=id_train)
    retrain_seconds = time.perf_counter() - t
    print(f"one model on all rows (for comparison): test {scores(single, X_test, y_test)}; fit {retrain_seconds:.2f}s")

    # a partner's data must go: every row from one country
    report = model.forget_group("Mexico")
    print(report)
    print(f"  after forgetting the group: test {scores(model, X_test, y_test)}")

    # one deletion request, then 100 more, batched
    rng = np.random.default_rng(0)
    requests = rng.choice(id_train[(X_train["native-country"] != "Mexico").to_numpy()], 102, replace=False)
    report = model.forget_rows(requests[:1])
    print(report)
    print(f"  one row forgotten in {report.seconds:.3f}s; retraining one model on all rows took {retrain_seconds:.3f}s")
    report = model.forget_rows(requests[1:101])
    print(report)
    print(f"  after forgetting 100 rows: test {scores(model, X_test, y_test)}")
    print(f"  retrained {len(report.groups_retrained)} of {len(model.groups_)} members in {report.seconds:.2f}s "
          f"(one model would retrain on all rows: {retrain_seconds:.2f}s)")

    large_data(min(200_000, 8 * len(df)))

    # where it pays: a deletion that takes effect at once, and a scoring service that follows in milliseconds
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="bundle")
        served = cf.Scorer(tmp)  # what `clusterforget serve` holds
        report = model.forget_rows(requests[101:], retrain="deferred")
        t = time.perf_counter()
        model.export(tmp, format="bundle")
        served = cf.Scorer(tmp, previous=served)  # the service's swap: unchanged members are reused
        swap = time.perf_counter() - t
        print(f"deferred forget: the row has no influence after {report.seconds * 1e3:.1f} ms (its member left the "
              f"ensemble); export + swap into the served scorer {swap * 1e3:.0f} ms, serving "
              f"version {served.version}")
        assert np.array_equal(served.predict_proba(X_test), model.predict_proba(X_test))
    report = model.retrain_pending()
    print(f"  retrain_pending: the member is back, trained without the row, in {report.seconds:.2f}s")

    # the contract: bit for bit what a fresh fit on the remaining rows gives
    keep = ~np.isin(id_train, requests) & (X_train["native-country"] != "Mexico").to_numpy()
    fresh = cf.ForgetClassifier(**settings).fit(
        X_train[keep], y_train[keep], ids=id_train[keep]
    )
    same = np.array_equal(model.predict_proba(X_test), fresh.predict_proba(X_test))
    print(f"identical to a fresh fit on the remaining {keep.sum()} rows: {same}")
    if not same:
        raise SystemExit("exactness check failed")


if __name__ == "__main__":
    main()
