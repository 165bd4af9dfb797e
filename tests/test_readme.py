"""The README's Python examples run as written, each in a fresh interpreter, in an empty folder beside data/.

The first block (the API tour) is a sketch with placeholders (X, ids, X_new): every call in it is covered by the
unit tests. Each other block must run unchanged; where the README prints a result, the printed text is checked.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
SKETCHES = {0}  # blocks with placeholders, not meant to run


def _needs(module: str) -> None:
    pytest.importorskip(module)


def _run(block: str, tmp_path: Path) -> str:
    (tmp_path / "data").symlink_to(ROOT / "data")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"README block failed:\n{block}\n--- stderr:\n{r.stderr[-3000:]}"
    return r.stdout


def test_the_readme_has_the_blocks_this_file_knows():
    assert len(BLOCKS) == 14
    assert "model.fit(X, y, ids=ids)" in BLOCKS[0]


@pytest.mark.parametrize("index", [i for i in range(len(BLOCKS)) if i not in SKETCHES])
@pytest.mark.slow
def test_readme_block_runs(index, tmp_path):
    block = BLOCKS[index]
    for module, used in (("onnxruntime", "export.onnx"), ("dask.distributed", "dask.distributed"),
                         ("mlflow.server", "clusterforget.mlflow"), ("prometheus_client", "clusterforget.mlflow"),
                         ("shap", "shap.")):
        if used in block:
            _needs(module)
    out = _run(block, tmp_path)
    if "print(report.regrouped, len(model.groups_))" in block:  # the comment in the README states the output
        assert out.splitlines()[-1] == "True 1"
    if "cf.plan(" in block:
        assert "recommended" in out
    if "cf.suspects(" in block:  # precision of the top recommended_k planted-error suspects, then all relabeled
        lines = out.splitlines()
        assert float(lines[-2]) >= 0.8 and lines[-1] == "True"
    if "model.explain(" in block:  # the README shows these reasons
        assert out.splitlines()[1].split() == ["0", "1", "PAY_0", "2.0", "1.453", "0.446"]
    if "cfm.publish(" in block:
        assert "after publish returned" in out and "deleted the artifacts of version(s) [1]" in out
    if "cf.forget_rows(pipe" in block:  # the fresh fit is equal; the Pipeline is refused, then fails verify
        lines = out.splitlines()
        assert lines[0] == "True" and lines[1].startswith("step 'targetencoder' (TargetEncoder) holds state fitted")
        assert lines[-1] == "False"
    if "cf.verify(" in block and "cf.forget_rows(pipe" not in block:
        assert "purge" in out and "exact" in out
