"""``format="compiled"``: a bundle whose tree members are also compiled to native shared libraries.

Each member whose learner registers a treelite converter (``LearnerKind.treelite``: LightGBM, XGBoost)
is converted with treelite and compiled with tl2cgen (gcc) into
``libs/<sha256 of the member file>.so``; the manifest lists it (and its sha256) next to the native file.
``cf.Scorer`` loads the bundle as usual and scores the members through the compiled libraries, inside
``scoring.score`` (so routing, weights, class mapping and overrides are the model's own). Measured: bitwise
for LightGBM members; XGBoost members within ~5e-7 (treelite sums float32 leaves in its own order).

The libraries are compiled with tl2cgen's ``quantize`` (features compared as their positions among the
thresholds: the same comparisons). Measured on adult's one model of 100 rounds, 10k rows, one thread: 3.1x
LightGBM's ``Booster.predict`` without it, 3.3-3.7x with it, bitwise both. lleaves (LLVM) was measured next to
it: 6.3-6.5x, but its margins differ from LightGBM's on 8,449 of the 10,000 rows (up to 8e-15; probabilities
2.5e-16), so not bitwise; and lleaves 1.3.0, the newest, needs llvmlite < 0.45 while numba (shap, the
``explain`` extra) needs llvmlite 0.50, and it compiles for the exporting machine's CPU features. Bitwise wins.

A library is named by the member it compiles, so a re-export after a forget compiles only the retrained
members. A library is native code, and loading it runs it: the Scorer loads libraries only from an
authenticated compiled export (``key=``) or with ``trust_code=True``, and only a copy of the bytes it verified
against the manifest's sha256, never the file on disk after the check.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._compat import optional
from ..errors import ExportError
from ..members import KINDS, Member
from ..store.fs import sha
from .bundle import LIBS, MANIFEST, MEMBER_LOADERS, write_bundle


def _compile(member: Member, workdir: Path) -> bytes:
    optional("treelite", "format='compiled'")  # says what to install; the learner's converter imports it
    tl2cgen = optional("tl2cgen", "format='compiled'")
    model = KINDS[member.learner].treelite(member)
    lib = workdir / "member.so"
    # quantize: each feature value becomes its position among the member's thresholds once per row, and the
    # trees compare small integers (the same comparisons, so the same leaves: bitwise)
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(lib), params={"parallel_comp": 1, "quantize": 1}, nthread=1)
    return lib.read_bytes()


def _compilable(member: Member) -> bool:
    """Whether the member's learner has a treelite converter (the others, constants among them, stay native)."""
    kind = KINDS.get(member.learner)
    # a member behind a preprocessor stays native: its rows are transformed first, which a library cannot do
    return kind is not None and kind.treelite is not None and getattr(member, "preprocessor", None) is None


def _add_libraries(model: Any, out: Path, doc: dict[str, Any], files: dict[str, bytes]) -> None:
    """Compile every tree member not compiled by the previous export into ``libs/``."""
    previous: dict[str, str] = {}
    try:
        previous = json.loads((out / MANIFEST).read_bytes()).get("files", {})
    except (OSError, ValueError):
        pass
    from ..estimators import ensemble_of  # here: scoring a bundle never loads the estimators
    members = {m.name: m.member for m in ensemble_of(model).scoring_spec().members}
    tqdm = optional("tqdm").tqdm
    todo = [e for e in doc["members"] if _compilable(members[e["name"]])]
    with tempfile.TemporaryDirectory(prefix="cf-compile-") as tmp:
        for entry in tqdm(todo, desc="compiling members", unit="member", disable=len(todo) < 4):
            name = f"{LIBS}/{entry['file'].split('/')[-1].rsplit('.', 1)[0]}.so"
            entry["lib"] = name
            old = out / name
            if name in previous and old.is_file() and not old.is_symlink():
                data = old.read_bytes()
                if sha(data) == previous[name]:  # compiled by the last export, unchanged since
                    files[name] = data
                    continue
            try:
                files[name] = _compile(members[entry["name"]], Path(tmp))
            except (RuntimeError, OSError) as exc:
                raise ExportError(f"member {entry['name']!r} could not be compiled ({exc}); is gcc installed? "
                                  "Export format='bundle' or 'onnx' instead") from exc


def write_compiled(model: Any, path: Any, key: Any = None) -> dict[str, Any]:
    """Export ``model`` as a bundle directory with compiled members (see the module docstring)."""
    return write_bundle(model, path, fmt="compiled", add_files=lambda out, doc, files: _add_libraries(
        model, out, doc, files), key=key)


class CompiledMember(Member):
    """A member scored by its compiled library; outputs shaped as the native member's."""

    learner = "compiled"

    def __init__(self, native: Member, lib_bytes: bytes):
        super().__init__(native.classes, native.vocab, native.n_rows)
        tl2cgen = optional("tl2cgen", "scoring a compiled export")
        self.native = native
        # load exactly the verified bytes: a private copy, not the file a writer could replace meanwhile
        fd, path = tempfile.mkstemp(suffix=".so", prefix="cf-member-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(lib_bytes)
            self.predictor = tl2cgen.Predictor(path, nthread=1)
        finally:
            os.unlink(path)  # the loaded library stays mapped
        kind = KINDS.get(native.learner)
        self.dtype = "float32" if kind is not None and kind.float32 else "float64"

    def predict_encoded(self, M: np.ndarray, schema: Any, n_threads: int = 1) -> np.ndarray:
        tl2cgen = optional("tl2cgen", "scoring a compiled export")
        M = np.ascontiguousarray(M, dtype=self.dtype)  # the member's rows, already float64: no copy for LightGBM
        out = np.asarray(self.predictor.predict(tl2cgen.DMatrix(M, dtype=self.dtype)), dtype=np.float64)
        out = out.reshape(len(M), -1)
        if self.classes is None:
            return out[:, 0]
        if len(self.classes) == 2 and out.shape[1] == 1:  # binary: P(second class), as _BoosterMember
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return out

    def model_bytes(self) -> bytes:
        return self.native.model_bytes()


MEMBER_LOADERS["lib"] = lambda entry, data, native: CompiledMember(native, data)

__all__ = ["write_compiled", "CompiledMember"]
