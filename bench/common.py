"""Shared helpers: environment record, timing, data sets, and the monolith baseline.

The monolith is the same learner with the same parameters on all rows. For timings it is plain
``lightgbm.train`` on a pre-encoded numpy matrix with exactly the parameters a clusterforget member gets
(the enforced determinism settings included), which is the cheapest honest retrain a user could run.
For accuracy it is ``HashGroups(1)`` (exactly one member: the same encoding, the same model); the suite
checks that the two agree.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clusterforget.members import lightgbm_params

REPO = Path(__file__).resolve().parent.parent
SEED = 0  # every random choice of the suite (splits, generated data, picked rows) derives from this



def log(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


# ---------------------------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return float("nan")


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:
        try:
            return __import__(mod).__version__
        except Exception:
            return "not installed"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "clusterforget"], cwd=REPO,
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + (" + uncommitted engine changes" if dirty.stdout.strip() else "")
    except Exception:
        return "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def environment() -> dict[str, Any]:
    """The machine, versions and seeds: everything printed with the results (no paths, no host name)."""
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _mem_gib(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("clusterforget", "lightgbm", "xgboost", "numpy", "pyarrow",
                                               "scikit-learn", "pandas", "matplotlib")},
        "git_commit": _git_commit(),
        "seed": SEED,
        "load_average_at_start": load_average(),
    }


# ---------------------------------------------------------------------------------------------- timing
def now() -> float:
    return time.perf_counter()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def summary(xs: list[float]) -> dict[str, Any]:
    """Median, min, max and the raw samples (seconds)."""
    xs = [float(x) for x in xs]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "samples": xs}


def ratio(base: dict, op: dict) -> float:
    """Speedup of ``op`` over ``base``: ratio of the medians."""
    return base["median"] / op["median"] if op["median"] > 0 else float("inf")


def paired(base: list[float], op: list[float]) -> float:
    """Median over repeats of base[i] / op[i], each pair measured back to back.

    The headline statistic: a burst of load from other jobs on the machine slows both members of a pair, so
    the per-pair ratio survives it where a ratio of medians taken minutes apart may not.
    """
    rs = [b / o for b, o in zip(base, op) if o > 0]
    return statistics.median(rs) if rs else float("nan")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------------------------- monolith
def monolith_params(task: str, n_classes: int, n_rows: int, params: dict | None, seed: int, threads: int
                    ) -> tuple[dict, int]:
    """The parameters a clusterforget LightGBM member trained on ``n_rows`` rows gets (the engine's own function).

    ``task``: the suite's "binary" / "multiclass" / "regression", or the engine's "classification".
    """
    return lightgbm_params("regression" if task == "regression" else "classification", n_classes, n_rows, params,
                           seed, threads)


def monolith_fit(X: np.ndarray, y: np.ndarray, task: str, n_classes: int, cats: list[int],
                 params: dict | None = None, seed: int = SEED, threads: int | None = None):
    import lightgbm as lgb

    threads = threads or os.cpu_count() or 1
    p, rounds = monolith_params(task, n_classes, len(y), params, seed, threads)
    ds = lgb.Dataset(X, label=y, categorical_feature=cats, params=p, free_raw_data=True)
    return lgb.train(p, ds, num_boost_round=rounds)


def monolith_predict(booster, X: np.ndarray, task: str, threads: int | None = None) -> np.ndarray:
    raw = booster.predict(X, num_threads=threads or os.cpu_count() or 1)
    if task == "regression":
        return raw.reshape(-1, 1)
    if raw.ndim == 1:
        return np.column_stack([1.0 - raw, raw])
    return raw


# ---------------------------------------------------------------------------------------------- data sets
@dataclass
class Dataset:
    name: str
    task: str  # "binary", "multiclass", "regression"
    source: str  # relative path of the file, or the generator call
    X: Any  # pandas DataFrame (real data) or numpy array (generated)
    y: np.ndarray
    ids: np.ndarray
    keys: list[str] = field(default_factory=list)  # natural group key columns
    X_test: Any = None
    y_test: np.ndarray | None = None

    @property
    def cf_task(self) -> str:
        return "regression" if self.task == "regression" else "classification"


REAL = {
    # name: (file, target, task, id column or None, key columns, dropped columns)
    "adult": ("adult.csv", "class", "binary", None, ["race", "workclass", "native-country"], []),
    "credit_default": ("credit_default.csv", "default_next_month", "binary", "ID", ["EDUCATION", "MARRIAGE", "SEX"], []),
    "diamonds_cut": ("diamonds.csv", "cut", "multiclass", None, ["color", "clarity"], []),
    "diamonds_price": ("diamonds.csv", "price", "regression", None, ["cut", "color", "clarity"], []),
    "california_housing": ("california_housing.csv", "median_house_value", "regression", None, ["ocean_proximity"], []),
}


def data_file(name: str) -> tuple[Path, str]:
    """The data file and how to name it in results (relative, never a machine path)."""
    for rel in (Path("data") / name, Path("..") / "shared" / "data" / name):
        p = REPO / rel
        if p.exists():
            return p, rel.as_posix()
    raise FileNotFoundError(f"data file {name} not found in data/ or ../shared/data/")


def load_real(name: str, seed: int = SEED) -> Dataset:
    """A real data set with an 80/20 split (stratified for classification), fixed seed."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    fname, target, task, id_col, keys, drop = REAL[name]
    path, rel = data_file(fname)
    df = pd.read_csv(path)
    y = df.pop(target).to_numpy()
    ids = df.pop(id_col).to_numpy() if id_col else np.arange(len(df), dtype=np.int64)
    for c in drop:
        df.pop(c)
    idx = np.arange(len(df))
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=None if task == "regression" else y)
    tr.sort()
    te.sort()
    Xtr = df.iloc[tr].reset_index(drop=True)
    Xte = df.iloc[te].reset_index(drop=True)
    return Dataset(name, task, f"{rel} (target {target}, 80/20 split seed {seed})", Xtr, y[tr], ids[tr], keys,
                   Xte, y[te])


def make_scale(n_train: int, n_test: int, n_features: int = 20, seed: int = SEED) -> Dataset:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_train + n_test, n_features=n_features, n_informative=10,
                               n_redundant=4, random_state=seed)
    return Dataset(
        f"make_classification_{n_train}", "binary",
        f"sklearn make_classification(n_samples={n_train}+{n_test} test, n_features={n_features}, "
        f"n_informative=10, n_redundant=4, random_state={seed})",
        X[:n_train], y[:n_train], np.arange(n_train, dtype=np.int64), [], X[n_train:], y[n_train:])


def encode_frame(train, test=None) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Numbers as float64, strings as codes of their sorted distinct training values (missing/unseen: NaN).

    The same encoding a clusterforget member on all rows uses, so the monolith sees the same matrix.
    """
    import pandas as pd

    if not isinstance(train, pd.DataFrame):
        return np.asarray(train, dtype=np.float64), (None if test is None else np.asarray(test, np.float64)), []
    cols_tr, cols_te, cats = [], [], []
    for j, c in enumerate(train.columns):
        s = train[c]
        if s.dtype.kind in "biuf":
            cols_tr.append(s.to_numpy(dtype=np.float64, na_value=np.nan))
            if test is not None:
                cols_te.append(test[c].to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            vocab = sorted(v for v in s.dropna().unique().tolist())
            index = {v: float(i) for i, v in enumerate(vocab)}
            cats.append(j)
            cols_tr.append(np.array([index.get(v, np.nan) for v in s.tolist()], dtype=np.float64))
            if test is not None:
                cols_te.append(np.array([index.get(v, np.nan) for v in test[c].tolist()], dtype=np.float64))
    Xtr = np.column_stack(cols_tr)
    Xte = np.column_stack(cols_te) if test is not None else None
    return Xtr, Xte, cats


def label_codes(y: np.ndarray, task: str) -> tuple[np.ndarray, int]:
    if task == "regression":
        return y.astype(np.float64), 0
    classes, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.float64), len(classes)


# ---------------------------------------------------------------------------------------------- metrics
def metrics(task: str, y_true: np.ndarray, out: np.ndarray, classes: np.ndarray | None = None) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, mean_squared_error, roc_auc_score

    if task == "regression":
        return {"rmse": float(np.sqrt(mean_squared_error(y_true, out[:, 0])))}
    classes = np.unique(y_true) if classes is None else classes
    p = np.clip(out, 1e-15, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    res = {"log_loss": float(log_loss(y_true, p, labels=classes)),
           "accuracy": float(accuracy_score(y_true, classes[np.argmax(out, axis=1)]))}
    if task == "binary":
        res["auc"] = float(roc_auc_score((y_true == classes[1]).astype(int), out[:, 1]))
    return res


PRIMARY = {"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}


def loss_vs(task: str, base: dict[str, float], other: dict[str, float]) -> float:
    """Accuracy loss in the primary metric, positive = worse than the monolith.

    AUC: absolute drop; log-loss: absolute increase; RMSE: relative increase (fraction).
    """
    k = PRIMARY[task]
    if k == "auc":
        return base[k] - other[k]
    if k == "log_loss":
        return other[k] - base[k]
    return (other[k] - base[k]) / base[k]


def fmt_loss(task: str, v: float) -> str:
    if task == "binary":
        return f"{v:+.4f} AUC"
    if task == "multiclass":
        return f"{v:+.4f} log-loss"
    return f"{100 * v:+.2f}% RMSE"
