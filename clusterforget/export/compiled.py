"""``format="compiled"``: a bundle whose tree members are also compiled to native shared libraries.

Each member whose learner registers a treelite converter (``LearnerKind.treelite``: LightGBM, XGBoost)
is converted with treelite, written out as C by tl2cgen and compiled by gcc into
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

Each library also holds a batch entry (``cf_predict_rows``, ``KERNEL``): the rows of a dense float64 matrix fed
to the trees' ``predict`` exactly as tl2cgen's runtime feeds them, in one call. The Scorer calls it through
ctypes (no tl2cgen at scoring time), with a member's rows split among ``Scorer(n_threads=)`` threads; a library
from before the entry goes through tl2cgen's runtime on one thread. Every member's C files are compiled by one
pool of gcc runs, one per core (a large member's trees in several files), instead of one member after another.

A library is named by the member it compiles, so a re-export after a forget compiles only the retrained
members. A library is native code, and loading it runs it: the Scorer loads libraries only from an
authenticated compiled export (``key=``) or with ``trust_code=True``, and only a copy of the bytes it verified
against the manifest's sha256, never the file on disk after the check.
"""

from __future__ import annotations

import _ctypes
import ctypes
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from .._compat import optional
from ..errors import ExportError, quoted
from ..members import KINDS, Member
from ..store.fs import sha
from .bundle import LIBS, MANIFEST, MEMBER_LOADERS, write_bundle


# gcc's flags as tl2cgen's own build sets them; no -march: a compiled export runs wherever it is served (the
# x86-64 baseline), and the tree code is branches on integers, which newer instruction sets do not speed up
# (measured: -march=x86-64-v2 / -v3 within noise of the baseline). -Bsymbolic binds the library's calls to its own
# functions: every member library defines ``predict``, and one must never reach another's.
CFLAGS = ["-O3", "-fPIC", "-std=c99"]
LDFLAGS = ["-shared", "-Wl,-Bsymbolic"]
TREES_PER_UNIT = 20  # trees per translation unit: a large member compiles as several gcc runs, side by side

# A batch of dense rows through the library's ``predict``, fed as tl2cgen's runtime feeds it (a NaN is missing,
# every entry reset to missing after its row), so the outputs are the runtime's bit for bit; one call per batch
# instead of the runtime's matrix copy, shape query and thread pool.
KERNEL = r"""
#include "header.h"

int cf_predict_rows(const double* X, size_t n, size_t ncol, int pred_margin, LEAF_T* out) {
  size_t nf = (size_t)get_num_feature();
  size_t width = ncol > nf ? ncol : nf;
  size_t k = (size_t)N_TARGET * MAX_N_CLASS;
  union Entry* inst = (union Entry*)malloc((width ? width : 1) * sizeof(union Entry));
  if (inst == NULL) return -1;
  for (size_t j = 0; j < width; ++j) inst[j].missing = -1;
  for (size_t r = 0; r < n; ++r) {
    const double* row = X + r * ncol;
    for (size_t j = 0; j < ncol; ++j) {
      if (!isnan(row[j])) inst[j].fvalue = row[j];
    }
    LEAF_T* res = out + r * k;
    for (size_t c = 0; c < k; ++c) res[c] = 0;
    predict(inst, pred_margin, res);
    for (size_t j = 0; j < ncol; ++j) inst[j].missing = -1;
  }
  free(inst);
  return 0;
}
"""
ENTRY = "cf_predict_rows"
_PREDICT = re.compile(r"void predict\(union Entry\* data, int pred_margin, (double|float|uint32_t)\* result\);")


def _sources(member: Member, workdir: Path) -> list[str]:
    """Write the member's C sources into ``workdir`` (tl2cgen's code and the batch entry); their file names."""
    optional("treelite", "format='compiled'")  # says what to install; the learner's converter imports it
    tl2cgen = optional("tl2cgen", "format='compiled'")
    model = KINDS[member.learner].treelite(member)
    # quantize: each feature value becomes its position among the member's thresholds once per row, and the
    # trees compare small integers (the same comparisons, so the same leaves: bitwise). The trees are split
    # into units called in tree order, each adding into the same sums: the same additions in the same order.
    units = max(1, -(-int(model.num_tree) // TREES_PER_UNIT))
    tl2cgen.generate_c_code(model, str(workdir), params={"parallel_comp": units, "quantize": 1})
    leaf = _PREDICT.search((workdir / "header.h").read_text())
    if leaf is None:
        raise RuntimeError("tl2cgen wrote a predict() of an unknown signature")
    (workdir / "cf_rows.c").write_text(KERNEL.replace("LEAF_T", leaf.group(1)))
    recipe = json.loads((workdir / "recipe.json").read_text())
    return [f"{s['name']}.c" for s in recipe["sources"]] + ["cf_rows.c"]


def _gcc(args: list[str], cwd: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise OSError("gcc was not found on PATH")
    done = subprocess.run([gcc, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(args)} failed: {quoted(done.stderr.strip(), 300)}")


def compile_members(members: list[Member], workdir: Path, names: list[str] | None = None,
                    progress: bool = False) -> list[bytes]:
    """Each member's shared library, in order: every member's sources written, then every source compiled and
    every library linked by one pool of gcc runs (one per core), so members and the units of a large member
    compile side by side. A failure raises ``RuntimeError`` naming the member."""
    from tqdm.auto import tqdm  # a core dependency, imported where used as the other progress bars are
    names = names or [str(i) for i in range(len(members))]
    dirs = [workdir / str(i) for i in range(len(members))]
    for d in dirs:
        d.mkdir()

    def named(i: int, work: Any, *args: Any) -> Any:
        try:
            return work(*args)
        except Exception as exc:  # noqa: BLE001 - treelite, tl2cgen and gcc each raise their own
            raise RuntimeError(f"member {names[i]!r}: {type(exc).__name__}: {exc}") from exc

    def link(i: int) -> None:
        _gcc([*LDFLAGS, *CFLAGS, "-o", "member.so", *[src[:-2] + ".o" for src in sources[i]], "-lm"], dirs[i])

    workers = max(1, min(os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # the work runs in gcc and native code, not Python
        sources = list(pool.map(lambda i: named(i, _sources, members[i], dirs[i]), range(len(members))))
        jobs = [pool.submit(named, i, _gcc, ["-c", *CFLAGS, "-o", src[:-2] + ".o", src], dirs[i])
                for i, srcs in enumerate(sources) for src in srcs]
        for done in tqdm(as_completed(jobs), total=len(jobs), desc="compiling members", unit="file",
                         disable=not progress):
            done.result()
        list(pool.map(lambda i: named(i, link, i), range(len(members))))
    return [(d / "member.so").read_bytes() for d in dirs]


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
    todo = [e for e in doc["members"] if _compilable(members[e["name"]])]
    fresh = []
    for entry in todo:
        name = entry["lib"] = f"{LIBS}/{entry['file'].split('/')[-1].rsplit('.', 1)[0]}.so"
        old = out / name
        if name in previous and old.is_file() and not old.is_symlink():
            data = old.read_bytes()
            # compiled by the last export, unchanged since, and with the batch entry (an older library is
            # compiled again rather than kept on tl2cgen's one-thread runtime)
            if sha(data) == previous[name] and ENTRY.encode() in data:
                files[name] = data
                continue
        fresh.append(entry)
    if not fresh:
        return
    with tempfile.TemporaryDirectory(prefix="cf-compile-") as tmp:
        try:
            libs = compile_members([members[e["name"]] for e in fresh], Path(tmp), [e["name"] for e in fresh],
                                   progress=len(fresh) >= 4)
        except RuntimeError as exc:
            raise ExportError(f"{exc}: it could not be compiled; is gcc installed? Export format='bundle' or "
                              "'onnx' instead") from exc
    for entry, data in zip(fresh, libs):
        files[entry["lib"]] = data


def write_compiled(model: Any, path: Any, key: Any = None) -> dict[str, Any]:
    """Export ``model`` as a bundle directory with compiled members (see the module docstring)."""
    return write_bundle(model, path, fmt="compiled", add_files=lambda out, doc, files: _add_libraries(
        model, out, doc, files), key=key)


MIN_ROWS_PER_THREAD = 2048  # below this a thread costs more than it saves
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="cf-compiled")
        return _pools[n]


_OUTPUT = {"float64": (np.float64, ctypes.c_double), "float32": (np.float32, ctypes.c_float),
           "uint32": (np.uint32, ctypes.c_uint32)}


class CompiledMember(Member):
    """A member scored by its compiled library; outputs shaped as the native member's.

    A library with the batch entry (``cf_predict_rows``, every export since it was added) is called directly: one
    call per batch, its rows split among ``n_threads`` threads (each row is scored alone, so the outputs do not
    depend on the split); an older library goes through tl2cgen's runtime, one thread.
    """

    learner = "compiled"

    def __init__(self, native: Member, lib_bytes: bytes):
        super().__init__(native.classes, native.vocab, native.n_rows)
        self.native = native
        self.predictor = self.lib = self._handle = None
        # load exactly the verified bytes: a private copy, not the file a writer could replace meanwhile
        fd, path = tempfile.mkstemp(suffix=".so", prefix="cf-member-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(lib_bytes)
            # opened here (not by CDLL) so that the handle to close is this object's own
            self._handle = _ctypes.dlopen(path, ctypes.DEFAULT_MODE)
            lib = ctypes.CDLL(path, handle=self._handle)
            if hasattr(lib, ENTRY):
                self.lib = lib
            else:  # a library compiled before the batch entry: tl2cgen's runtime (which opens it itself)
                self._close()
                tl2cgen = optional("tl2cgen", "scoring a compiled export")
                self.predictor = tl2cgen.Predictor(path, nthread=1)
        finally:
            os.unlink(path)  # the loaded library stays mapped
        kind = KINDS.get(native.learner)
        self.dtype = "float32" if kind is not None and kind.float32 else "float64"
        if self.lib is not None:
            lib = self.lib
            lib.get_leaf_output_type.restype = ctypes.c_char_p
            leaf = lib.get_leaf_output_type().decode()
            if leaf not in _OUTPUT:
                raise ExportError(f"a compiled member outputs {leaf!r}, not a float type; export it again")
            self.out_dtype, c_out = _OUTPUT[leaf]
            n_target = int(lib.get_num_target())
            per_target = (ctypes.c_int32 * max(n_target, 1))()
            lib.get_num_class(per_target)
            self.width = n_target * max(int(v) for v in per_target[:max(n_target, 1)])
            self.entry = getattr(lib, ENTRY)
            self.entry.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                                   ctypes.POINTER(c_out)]
            self.entry.restype = ctypes.c_int
            self.c_out = c_out

    def _rows(self, M: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
        ncol = M.shape[1]
        rows = M.ctypes.data + start * ncol * M.itemsize
        at = ctypes.cast(out.ctypes.data + start * self.width * out.itemsize, ctypes.POINTER(self.c_out))
        if self.entry(rows, stop - start, ncol, 0, at) != 0:
            raise MemoryError("a compiled member could not allocate its row buffer")

    def _predict(self, M: np.ndarray, n_threads: int) -> np.ndarray:
        if self.lib is None:
            tl2cgen = optional("tl2cgen", "scoring a compiled export")
            M = np.ascontiguousarray(M, dtype=self.dtype)  # the member's rows, already float64: no copy for LightGBM
            return np.asarray(self.predictor.predict(tl2cgen.DMatrix(M, dtype=self.dtype)), dtype=np.float64)
        M = np.ascontiguousarray(M, dtype=np.float64)  # a float32 library converts each value as numpy would
        n = len(M)
        out = np.empty((n, self.width), dtype=self.out_dtype)
        parts = min(int(n_threads), n // MIN_ROWS_PER_THREAD)
        if parts <= 1:
            if n:
                self._rows(M, out, 0, n)
        else:
            bounds = np.linspace(0, n, parts + 1).astype(int)
            for done in [_pool(parts).submit(self._rows, M, out, int(a), int(b))
                         for a, b in zip(bounds[:-1], bounds[1:])]:
                done.result()
        return out.astype(np.float64, copy=False)

    def predict_encoded(self, M: np.ndarray, schema: Any, n_threads: int = 1) -> np.ndarray:
        out = self._predict(M, n_threads).reshape(len(M), -1)
        if self.classes is None:
            return out[:, 0]
        if len(self.classes) == 2 and out.shape[1] == 1:  # binary: P(second class), as _BoosterMember
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return out

    def model_bytes(self) -> bytes:
        return self.native.model_bytes()

    def _close(self) -> None:
        handle, self._handle, self.lib = getattr(self, "_handle", None), None, None
        if handle is not None:
            try:
                _ctypes.dlclose(handle)
            except OSError:
                pass

    def __del__(self) -> None:
        # unmapped with the last scorer holding it (a service swapping exports all day must not keep every one)
        self._close()


MEMBER_LOADERS["lib"] = lambda entry, data, native: CompiledMember(native, data)

__all__ = ["write_compiled", "CompiledMember"]
