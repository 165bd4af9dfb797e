"""Shared fixtures: small synthetic tables with numeric, categorical and missing values, for every task."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import clusterforget as cf

# MLflow's usage telemetry runs a background thread that failed a test under load
# (KeyError '_MLFLOW_TELEMETRY_SESSION_ID'); tests and the servers they start send nothing
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
from clusterforget.store.commit import manifest_checksum
from clusterforget.store.fs import sha

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# few boosting rounds: exactness does not depend on model size, and the matrix is large
FAST = {
    "lightgbm": {"num_iterations": 15, "num_leaves": 7, "min_data_in_leaf": 5},
    "xgboost": {"n_estimators": 15, "max_depth": 3},
}


# The groupings every check is tried under (tests/test_verify_matrix.py, tests/test_export_matrix.py): a model's
# settings for each; a callable builds a fresh grouping object
GROUPINGS = {
    "key1": dict(grouping="region", combine="route"),
    "key2": dict(grouping=["region", "colour"], combine="average"),
    "key-max": dict(grouping="region", combine="average", max_group_rows=60),
    "kmeans": dict(grouping=lambda: cf.KMeansGroups(3, features=["a", "b"], sample_size=200), combine="route"),
    "hash": dict(grouping=lambda: cf.HashGroups(4), combine="average"),
    "auto": dict(grouping=lambda: cf.AutoGroups(min_shard_rows={"classification": 100, "regression": 100},
                                            min_minority_rows=20), combine="average"),
}


def make_table(task: str, n: int = 360, seed: int = 0, str_ids: bool = False):
    """Features with a key column (`region`, one tiny group), numbers with nulls, a categorical with nulls.

    Returns X (pandas), y, ids (unique, not in row order) and a test frame with an unseen region.
    """
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], size=n, p=[0.35, 0.3, 0.25, 0.10])
    region[:3] = "tiny"  # a group of three rows
    a = rng.normal(size=n)
    b = rng.uniform(-2, 2, size=n)
    b[rng.random(n) < 0.1] = np.nan
    colour = rng.choice(["red", "green", "blue", None], size=n, p=[0.4, 0.3, 0.2, 0.1])
    X = pd.DataFrame({"region": region, "a": a, "b": b, "colour": pd.Series(colour, dtype="object")})
    score = a + np.nan_to_num(b) * 0.5 + (colour == "red") * 0.8 + (region == "south") * 0.5
    if task == "binary":
        y = (score + rng.normal(scale=0.5, size=n) > 0.3).astype(int)
        # the west group has exactly two positives: forgetting them leaves the group single-class
        west = np.flatnonzero(region == "west")
        y[west] = 0
        y[west[:2]] = 1
    elif task == "multiclass":
        y = np.digitize(score, [-0.5, 0.5, 1.3])
        y = np.array(["low", "mid", "high", "top"])[y]
    else:
        y = 3.0 * score + rng.normal(scale=0.3, size=n)
    ids = rng.permutation(np.arange(1000, 1000 + 7 * n, 7))
    if str_ids:
        ids = np.array([f"user-{i:06d}" for i in ids], dtype=object)
    test = X.sample(n=120, random_state=seed + 1).reset_index(drop=True)
    test.loc[:9, "region"] = "atlantis"  # a key never seen in training
    test.loc[10:14, "a"] = np.nan
    return X, y, ids, test


def row_leaks(data: bytes, ids, values) -> list[str]:
    """What of the training rows ``data`` holds: row ids (as text), float feature ``values`` (raw float64 bytes,
    as text or as a hex float, and raw bytes inside any base64 run, which is how a preprocessor document holds its
    arrays). Exports keep no training range (``members.neutral_feature_infos``), so no value is exempt."""
    data = data + b"\0" + b"\0".join(_base64_decoded(data))
    needles = {f"id {i!r}": str(i).encode() for i in ids}
    for v in np.asarray(values, dtype=np.float64):
        if np.isnan(v):
            continue
        needles[f"value {v!r}"] = struct.pack("<d", v)
        needles[f"text {v!r}"] = repr(float(v)).encode()
        needles[f"hex {v!r}"] = float(v).hex().encode()
    return [what for what, needle in needles.items() if needle in data]


def _base64_decoded(data: bytes) -> list[bytes]:
    import base64
    import re

    out = []
    for run in re.findall(rb"[A-Za-z0-9+/]{8,}={0,2}", data):
        try:
            out.append(base64.b64decode(run[: len(run) // 4 * 4] if not run.endswith(b"=") else run))
        except ValueError:
            continue
    return out


@pytest.fixture(scope="session")
def adult():
    df = pd.read_csv(DATA / "adult.csv")
    y = (df.pop("class").str.strip() == ">50K").astype(int).to_numpy()
    return df, y


def rewrite_export(path: Path, change, files: dict[str, bytes] | None = None) -> None:
    """Edit an export as someone with write access would: files replaced, every sha256 and the checksum recomputed."""
    doc = json.loads((path / "manifest.json").read_text())
    for name, data in (files or {}).items():
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_bytes(data)
        doc["files"][name] = sha(data)
    change(doc)
    doc["checksum"] = manifest_checksum(doc)
    (path / "manifest.json").write_text(json.dumps(doc))
