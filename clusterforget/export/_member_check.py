"""The child process of ``export.isolate``: parse member files with the learners' own parsers (and ONNX graphs
with onnxruntime's), score probe rows.

Run as a file (``python .../_member_check.py``), never imported by the package. It imports the member kinds
(``clusterforget.members``: numpy, pyarrow, and each learner's library only when a member of it comes), and
parses and scores each file with its kind's ``from_bytes`` / ``predict_encoded``, the code ``cf.Scorer`` runs.
A request on stdin is one JSON line ``{"meta", "schema", "size"}`` (and ``"module"``, a plugin learner's
module, which the parent chose from its own registry; a graph: ``{"graph": true, "size"}``) followed by ``size``
bytes; the answer on stdout is one JSON line ``{"ok": true}`` or ``{"ok": false, "error": ...}``. A file that makes a parser abort
kills this process, which is the point.
"""

import json
import sys
from pathlib import Path

# run as a file, its own folder is first on sys.path: import the package this file belongs to (a source checkout
# or an installed copy alike), not whichever one the interpreter would find
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def check(meta, schema, data, module=None):
    import importlib

    import numpy as np

    from clusterforget.data import Schema
    from clusterforget.members import KINDS, learner_kind

    if module is not None and meta.get("learner") not in KINDS:  # a plugin's kind: its module registers it
        if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
            raise ValueError(f"learner module {str(module)[:80]!r} is not a module path")
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - the answer says why the kind is unknown here
            raise ValueError(f"its learner's module {module!r} cannot be imported in a new interpreter "
                             f"({type(exc).__name__}: {exc}); install it, or put it on PYTHONPATH") from exc

    schema = Schema.from_dict(schema)
    pre = meta.get("preprocessor")
    if isinstance(pre, dict):  # the native file scores the preprocessor's outputs (its document is checked by the
        n = pre.get("n_outputs")  # parent, as JSON): probe that many numeric columns
        if type(n) is not int or not 0 < n <= 1_000_000:
            raise ValueError(f"its preprocessor gives {str(n)[:20]} outputs")
        meta = {k: v for k, v in meta.items() if k != "preprocessor"}
        schema = Schema(tuple(f"t{j}" for j in range(n)), ("numeric",) * n, False)
    classes = meta.get("classes")
    # missing, zero, one; extremes in numeric columns (category codes stay small: unseen ones are NaN)
    probe = np.array([[np.nan if k == "categorical" and abs(v) > 1 else v for k in schema.kinds]
                      for v in (np.nan, 0.0, 1.0, -1e300, 1e300)], dtype=np.float64)
    member = learner_kind(meta["learner"]).member.from_bytes(meta, data)
    out = np.asarray(member.predict_encoded(probe, schema, 1), dtype=np.float64).reshape(len(probe), -1)
    expect = 1 if classes is None else len(classes)
    if out.shape[1] != expect:
        raise ValueError(f"it gives {out.shape[1]} outputs per row, its meta says {expect}")
    if not np.all(np.isfinite(out)):
        raise ValueError("it scores probe rows to non-finite values")


def check_graph(data):
    """Parse an exported ONNX graph with onnxruntime and score probe rows of its own schema (its metadata)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    schema = json.loads(sess.get_modelmeta().custom_metadata_map["schema"])
    feeds = {}
    for name, kind in zip(schema["names"], schema["kinds"]):
        if kind == "categorical":
            feeds[name] = np.array(["", "a", "", "a", ""], dtype=object).reshape(-1, 1)
        else:
            feeds[name] = np.array([np.nan, 0.0, 1.0, -1e300, 1e300]).reshape(-1, 1)
    sess.run(None, feeds)


def serve():
    import os

    # the answers get their own copy of stdout; fd 1 itself goes to stderr: a native parser's messages
    # ("[LightGBM] [Fatal] ...", printed before it raises) must never pass for an answer, nor leave the real
    # answer in the pipe for the next request to read as its own
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    sys.stdout.flush()
    os.dup2(2, 1)
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        data = stdin.read(int(req["size"]))
        try:
            if req.get("graph"):
                check_graph(data)
            else:
                check(req["meta"], req["schema"], data, req.get("module"))
            reply = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - every failure is an answer; only a crash is not
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
