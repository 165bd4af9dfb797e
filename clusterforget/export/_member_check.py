"""The child process of ``export.isolate``: parse member files with the learners' own parsers, score probe rows.

Run as a file (``python .../_member_check.py``), never imported by the package: it imports numpy and the learner
a member needs, nothing of clusterforget, so it starts fast. A request on stdin is one JSON line ``{"meta",
"schema", "size"}`` followed by ``size`` bytes; the answer on stdout is one JSON line ``{"ok": true}`` or
``{"ok": false, "error": ...}``. A file that makes a parser abort kills this process, which is the point.
"""

import json
import sys


def check(meta, schema, data):
    import numpy as np

    kinds = schema["kinds"]
    classes = meta.get("classes")
    # missing, zero, one; extremes in numeric columns (category codes stay small: unseen ones are NaN)
    probe = np.array([[np.nan if k == "categorical" and abs(v) > 1 else v for k in kinds]
                      for v in (np.nan, 0.0, 1.0, -1e300, 1e300)], dtype=np.float64)
    learner = meta["learner"]
    if learner == "lightgbm":
        import lightgbm as lgb

        out = lgb.Booster(model_str=data.decode()).predict(probe, num_threads=1)
    elif learner == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        types = ["c" if k == "categorical" else "q" for k in kinds]
        out = booster.predict(xgb.DMatrix(probe, feature_types=types, enable_categorical=True, nthread=1))
    elif learner == "constant":
        out = np.asarray(json.loads(data)["value"], dtype=np.float64)
        out = np.tile(out, (len(probe), 1))
    else:
        raise ValueError(f"unknown member kind {learner!r}")
    out = np.asarray(out, dtype=np.float64).reshape(len(probe), -1)
    expect = 1 if classes is None or (learner != "constant" and len(classes) == 2) else len(classes)
    if out.shape[1] != expect:
        raise ValueError(f"it gives {out.shape[1]} outputs per row, its meta says {expect}")
    if not np.all(np.isfinite(out)):
        raise ValueError("it scores probe rows to non-finite values")


def serve():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        data = stdin.read(int(req["size"]))
        try:
            check(req["meta"], req["schema"], data)
            reply = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - every failure is an answer; only a crash is not
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
