"""The package's imports run one way (ARCHITECTURE.md), and persistence goes by type, so subclasses round-trip."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf

PACKAGE = Path(cf.__file__).resolve().parent

# a module may import only modules of a lower layer, or siblings inside its own subpackage
LAYERS = [
    ("errors", "report"),
    ("_compat",),
    ("data",),
    ("grouping", "members", "rules"),
    ("scoring", "executors"),
    ("ensemble", "explain"),
    ("estimators",),
    ("store",),  # fs, ledger, tombstones, commit; codec is the only one that knows the estimators
    ("verify", "export", "backends", "plan", "suspects"),
    ("serve",),  # the scoring service: serves exports
    ("cli",),
    ("__main__",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Package-internal modules imported by ``name`` (imports inside functions count)."""
    pkg = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)] + ([node.module] if node.module else [])
            for alias in node.names:
                found.add(".".join([*base, alias.name]) if not node.module else ".".join(base))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            for target in [mod] if mod else [a.name for a in node.names]:
                if target.startswith("clusterforget."):
                    found.add(target.removeprefix("clusterforget."))
    return {f for f in found if f}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    if top not in RANK:
        raise AssertionError(f"module {module!r} has no layer in tests/test_architecture.py: add it to LAYERS")
    return RANK[top]


def test_imports_run_one_way():
    modules = _modules()
    upward = []
    for name, path in sorted(modules.items()):
        if not name or path.name == "__init__.py":
            continue  # a package's face re-exports; its imports are not dependencies of the design
        for target in sorted(_imports(name, path)):
            target_top = target.split(".")[0]
            if target_top not in RANK:  # `from . import x` inside a subpackage, or a package-level name
                continue
            if target_top == name.split(".")[0] and "." in name:
                continue  # a sibling inside the same subpackage
            if _layer(target) >= _layer(name):
                upward.append(f"{name} imports {target}")
    assert not upward, "imports must run one way (ARCHITECTURE.md):\n" + "\n".join(upward)


def test_no_import_cycle():
    modules = _modules()
    edges = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        edges[name] = set()
        for t in _imports(name, path):
            while t and t not in modules and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in modules and t not in (name, ""):
                edges[name].add(t)
    state: dict[str, int] = {}

    def visit(n, trail):
        state[n] = 1
        for m in edges.get(n, ()):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, n, m]))
            if not state.get(m):
                visit(m, [*trail, n])
        state[n] = 2

    for n in edges:
        if not state.get(n):
            visit(n, [])


def test_core_does_not_import_optional_layers():
    """The engine imports no optional library at module level (dask, onnx, fastapi live in their layers)."""
    for name in ("ensemble", "estimators", "scoring", "executors", "members", "data", "grouping"):
        source = (PACKAGE / f"{name}.py").read_text()
        tree = ast.parse(source)
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not {m.split(".")[0] for m in mods} & {"dask", "distributed", "onnx", "onnxruntime", "fastapi", "xgboost"}


class SubClassifier(cf.ForgetClassifier):
    """A subclass, as a backend defines one: it must come back from a store as itself."""


def test_save_load_round_trips_a_subclass(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    model = SubClassifier(grouping=cf.HashGroups(2), n_jobs=1, learner_params={"num_iterations": 5}).fit(X, y)
    model.save(tmp_path / "s")
    loaded = cf.load(tmp_path / "s")
    assert type(loaded) is SubClassifier
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_unknown_estimator_name_is_refused_without_importing_it(tmp_path):
    from clusterforget.store.codec import estimator_class

    with pytest.raises(cf.StoreError, match="unknown estimator"):
        estimator_class("os.system")
    assert estimator_class("ForgetRegressor") is cf.ForgetRegressor  # the 0.1.0 name


def test_predict_reads_the_scoring_spec():
    """predict is score(scoring_spec()): an export reading the same spec scores the same."""
    from clusterforget.scoring import score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    model = cf.ForgetClassifier(grouping=cf.KMeansGroups(2), n_jobs=1, learner_params={"num_iterations": 5}).fit(X, y)
    from clusterforget.data import conform

    spec = model.ensemble_.scoring_spec()
    assert spec.combine == "route" and len(spec.members) == 2
    assert np.array_equal(score(spec, conform(X, spec.schema)), model.predict_proba(X))
