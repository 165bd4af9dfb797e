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
    ("errors", "report", "version"),
    ("_compat",),
    ("data",),
    ("preprocess",),  # a transformer fitted per group, persisted as checked JSON
    ("grouping", "members", "rules"),
    ("scoring", "executors"),
    ("ensemble", "explain"),
    ("estimators",),
    ("store",),  # fs, ledger, tombstones, commit; codec is the only one that knows the estimators
    ("verify", "export", "backends", "plan", "suspects"),
    ("mlflow",),  # the MLflow flavor: the bundle export as an MLflow Model, and the registry
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


def _owner_names(name: str, path: Path, modules: dict[str, Path]):
    """(module a name is imported from, the name) for every ``from X import name`` in ``name``'s source."""
    pkg = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (("", a.name) for a in node.names if a.name == "clusterforget")
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = ".".join(pkg[: len(pkg) - (node.level - 1)] + ([node.module] if node.module else []))
        elif (node.module or "").split(".")[0] == "clusterforget":
            base = node.module.removeprefix("clusterforget").removeprefix(".")
        else:
            continue
        for alias in node.names:
            full = f"{base}.{alias.name}" if base else alias.name
            yield (full if full in modules else base), alias.name


def test_no_private_name_crosses_packages_and_no_import_of_the_root():
    """Other layers use public names (a private one is free to change under them), and no module inside the
    package imports the package root (it imports every layer: the version lives in ``version``)."""
    modules = _modules()
    found = []
    for name, path in sorted(modules.items()):
        if not name or path.name == "__init__.py":
            continue
        for owner, imported in _owner_names(name, path, modules):
            if owner == "" and name.split(".")[0] not in ("cli", "serve", "__main__"):
                found.append(f"{name} imports {imported} from the package root")
            elif (imported.startswith("_") and not imported.startswith("__") and owner in modules
                  and owner.split(".")[0] != name.split(".")[0]):
                found.append(f"{name} imports the private name {imported} from {owner}")
    assert not found, "\n".join(found)


def _private_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns, class-level fields."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def test_no_private_attribute_of_another_module_is_read():
    """``model._ensemble()``-style reach-ins across layers go through public accessors
    (``estimators.ensemble_of``, ``store_of``, ...): a private attribute is read only by the module defining it."""
    found = []
    for name, path in sorted(_modules().items()):
        tree = ast.parse(path.read_text())
        mine = _private_defined(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            v = node.value
            if (isinstance(v, ast.Name) and v.id in ("self", "cls", "os")) or (
                    isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"):
                continue
            if isinstance(v, ast.Name) and v.id.startswith("_"):
                continue  # a module imported under a private alias (``_estimators.ensemble_of``)
            if node.attr not in mine:
                found.append(f"{name}:{node.lineno} reads {ast.unparse(node)}")
    assert not found, "\n".join(found)


def test_only_the_state_module_writes_ensemble_state():
    """An ensemble state is immutable: no module but ``ensemble`` assigns an attribute named like a field of a
    state or a group (``ens.schema = ...``, ``g.remote = ...``) on anything but ``self`` (a class's own field)
    or a report; nor calls ``setattr`` / ``object.__setattr__`` on one. Runtime: writing raises."""
    from dataclasses import fields

    from clusterforget.ensemble import Group, GroupedEnsemble

    state_fields = set(GroupedEnsemble.FIELDS) | {f.name for f in fields(Group)}
    found = []
    for name, path in sorted(_modules().items()):
        if name == "ensemble":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                for a in ast.walk(t):
                    if (isinstance(a, ast.Attribute) and isinstance(a.ctx, ast.Store) and a.attr in state_fields
                            and not (isinstance(a.value, ast.Name) and a.value.id in ("self", "report"))):
                        found.append(f"{name}:{node.lineno} writes {ast.unparse(a)}")
            if (isinstance(node, ast.Call) and ast.unparse(node.func) in ("setattr", "object.__setattr__")
                    and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in state_fields):
                found.append(f"{name}:{node.lineno} calls {ast.unparse(node)}")
    assert not found, "a change makes a new state (GroupedEnsemble.evolve), never writes one:\n" + "\n".join(found)


def test_a_state_is_never_changed():
    """Every change returns a new state; the old one (an undo, a store's cache) keeps what it had."""
    from clusterforget.data import conform
    from clusterforget.ensemble import FrozenStateError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(3), n_jobs=1, learner_params={"num_iterations": 5}).fit(X, y)
    old = model.ensemble_
    groups, version, before = dict(old.groups), old.version, old.predict_raw(conform(X, old.schema))
    with pytest.raises(FrozenStateError):
        old.version = 7
    with pytest.raises(AttributeError):
        next(iter(old.groups.values())).member = None
    model.forget_rows([0, 1, 2], retrain="deferred")
    model.set_group_weight(1, 0.5)
    model.relabel("x0 > 1", 0, mode="override")
    model.retrain_pending()
    assert model.ensemble_ is not old and old.version == version and old.groups == groups
    assert all(a is b for a, b in zip(old.groups.values(), groups.values()))
    assert np.array_equal(old.predict_raw(conform(X, old.schema)), before)


def test_the_core_does_not_branch_on_where_the_rows_are():
    """Rows in this process and rows held by a cluster are one interface (``ensemble.Rows``: ``LocalRows``,
    ``ClusterRows``): outside those classes the state, ``plan`` and ``execute`` never test where the rows are
    (``remote``, ``on_cluster``, a ``RowHolder``), and the estimators read the interface, not ``ens.remote``."""
    tree = ast.parse((PACKAGE / "ensemble.py").read_text())
    rows_classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)
                    and any(isinstance(b, ast.Name) and b.id == "Rows" for b in n.bases)} | {"Rows"}
    assert rows_classes >= {"Rows", "LocalRows", "ClusterRows"}
    where = ("remote", "on_cluster", "RowHolder")
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in rows_classes:
            continue
        if isinstance(node, ast.FunctionDef) and node.name == "rows_held":  # the one choice of implementation
            continue
        for n in ast.walk(node):
            tests = [n.test] if isinstance(n, (ast.If, ast.IfExp, ast.While)) else (
                [v for v in n.values] if isinstance(n, ast.BoolOp) else [])
            for t in tests:
                names = {a.attr for a in ast.walk(t) if isinstance(a, ast.Attribute)} | {
                    a.id for a in ast.walk(t) if isinstance(a, ast.Name)}
                if names & set(where):
                    found.append(f"ensemble:{n.lineno} tests {ast.unparse(t)}")
    for name in ("estimators", "store/codec", "verify/exact", "suspects"):
        for n in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(n, ast.Attribute) and n.attr == "remote" and ast.unparse(n.value) in ("ens", "e", "state"):
                found.append(f"{name}:{n.lineno} reads {ast.unparse(n)}")
    assert not found, "ask the state's Rows (ens.holder), never where the rows are:\n" + "\n".join(found)


def test_a_state_holds_its_dataclass_fields_only():
    """``GroupedEnsemble.FIELDS`` is the dataclass's fields (not a list kept by hand), and a fitted, changed,
    stored and loaded state holds nothing else but what it derives once (``DERIVED``)."""
    from dataclasses import fields

    from clusterforget.ensemble import GroupedEnsemble

    assert GroupedEnsemble.FIELDS == tuple(f.name for f in fields(GroupedEnsemble))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(int)
    model = cf.ForgetClassifier(grouping=cf.HashGroups(3), n_jobs=1, learner_params={"num_iterations": 5}).fit(X, y)
    model.forget_rows([0, 1], retrain="deferred")
    model.predict(X[:5])
    for state in (model.ensemble_, model.ensemble_.evolve(version=9), model.ensemble_.compact()):
        assert set(vars(state)) - set(GroupedEnsemble.DERIVED) == set(GroupedEnsemble.FIELDS)
    with pytest.raises(TypeError, match="not fields"):
        model.ensemble_.evolve(colour="red")


def test_core_does_not_import_optional_layers():
    """The engine imports no optional library at module level (dask, onnx, fastapi live in their layers)."""
    core = [PACKAGE / f"{name}.py" for name in ("ensemble", "estimators", "scoring", "executors", "data")]
    for path in core + sorted([*(PACKAGE / "members").glob("*.py"), *(PACKAGE / "grouping").glob("*.py")]):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not {m.split(".")[0] for m in mods} & {"dask", "distributed", "onnx", "onnxruntime", "fastapi", "xgboost"}


class SubClassifier(cf.ForgetClassifier):
    """A subclass, as a user or a library defines one: it must come back from a store as itself."""


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


# ------------------------------------------------------------------------- a learner is known by its module only
def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(("clusterforget", *(rel.parts[:-1] if rel.name == "__init__" else rel.parts)))


def _learner_mentions(sources: dict[str, str], kinds: list) -> list[str]:
    """Where a module other than a learner kind's own names it: its name as a string (``DEFAULT_LEARNER``'s one
    assignment excepted) or an import of one of its libraries."""
    found = []
    for module, source in sources.items():
        tree = ast.parse(source)
        allowed = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and [getattr(t, "id", None) for t in n.targets] == ["DEFAULT_LEARNER"]}
        for kind in kinds:
            if kind.module_path == module:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value == kind.name and id(node) not in allowed:
                    found.append(f"{module}:{node.lineno} names learner {kind.name!r}")
                imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                            else [])
                for lib in {m.split(".")[0] for m in imported} & set(kind.libraries):
                    found.append(f"{module}:{node.lineno} imports {lib}, the library of learner {kind.name!r}")
    return found


def test_no_module_but_a_learners_own_names_it_or_imports_its_library():
    """Adding a learner is its module: no other module of the package names a registered learner (the one
    default, ``members.DEFAULT_LEARNER``, excepted) or imports its library; planted, both are found."""
    from clusterforget import members

    kinds = list(members.KINDS.values())
    sources = {_module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}
    assert _learner_mentions(sources, kinds) == []
    assert sum(s.count("DEFAULT_LEARNER = ") for s in sources.values()) == 1
    planted = {"clusterforget.cli.planted": 'import xgboost.core\nLEARNER = "lightgbm"\nDEFAULT_LEARNER = "lightgbm"\n'}
    assert _learner_mentions(planted, kinds) == [
        "clusterforget.cli.planted:2 names learner 'lightgbm'",
        "clusterforget.cli.planted:1 imports xgboost, the library of learner 'xgboost'"]


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower().replace("_", "-") for r in requirements}


def _extra_problems(kinds: list, project: dict) -> list[str]:
    """What pyproject.toml's ``project`` table lacks for the built-in learner kinds (defined in
    ``clusterforget.members``): an optional library's kind names an extra that installs one of its distributions,
    and ``dev`` installs it too; a kind without one has each library in the core dependencies."""
    extras = project.get("optional-dependencies", {})
    core = _requirement_names(project.get("dependencies", []))
    problems = []
    for kind in kinds:
        if not kind.module_path.startswith("clusterforget.members."):
            continue  # a plugin's package declares its own dependencies
        if kind.requires is None:
            for lib, dists in kind.libraries.items():
                if not core & {d.lower() for d in dists}:
                    problems.append(f"{kind.name}: its library {lib} ({dists}) is not a core dependency")
            continue
        dists = {d.lower() for d in kind.libraries[kind.requires]}
        if kind.extra is None or kind.extra not in extras:
            problems.append(f"{kind.name}: requires {kind.requires} but names no extra of pyproject.toml "
                            f"(extra={kind.extra!r})")
            continue
        for extra in (kind.extra, "dev"):
            if not _requirement_names(extras.get(extra, [])) & dists:
                problems.append(f"{kind.name}: extra {extra!r} installs none of {sorted(dists)}")
    return problems


def test_every_built_in_learner_is_installed_by_its_extra():
    """pyproject.toml is packaging metadata, the one file outside its module a built-in learner needs: a learner
    with an optional library names its extra (``LearnerKind.extra``, the install hint), which must exist and
    install the library, as ``dev`` must; the default learner's library is a core dependency. Planted: found."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from clusterforget import members

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    kinds = list(members.KINDS.values())
    assert _extra_problems(kinds, project) == []
    default = members.learner_kind(members.DEFAULT_LEARNER)
    assert default.requires is None and default.module_path.startswith("clusterforget.members.")
    assert _extra_problems([default], project) == []

    planted = [members.LearnerKind(name="planted", member=members.ConstantMember, requires="cf_absent",
                                   libraries={"cf_absent": ("cf-absent",)}, extra=extra,
                                   module="clusterforget.members.planted") for extra in (None, "xgboost")]
    planted.append(members.LearnerKind(name="core_planted", member=members.ConstantMember,
                                       libraries={"cf_absent": ("cf-absent",)}, module="clusterforget.members.cp"))
    plugin = members.LearnerKind(name="plugin", member=members.ConstantMember, requires="cf_absent",
                                 libraries={"cf_absent": ("cf-absent",)}, module="my_package.learner")
    assert _extra_problems([*planted, plugin], project) == [
        "planted: requires cf_absent but names no extra of pyproject.toml (extra=None)",
        "planted: extra 'xgboost' installs none of ['cf-absent']",
        "planted: extra 'dev' installs none of ['cf-absent']",
        "core_planted: its library cf_absent (('cf-absent',)) is not a core dependency"]
    assert members.learner_kind("xgboost").install == "pip install 'clusterforget[xgboost]'"
    assert plugin.install == "pip install cf-absent"
