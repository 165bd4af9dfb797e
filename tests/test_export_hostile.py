"""Exports from elsewhere: a bundle that asks for native code, edited with recomputed checksums, with malformed
member files or manifest fields, or with symbolic links. Each is refused with a typed error before anything is
built (issue 19, findings 1, 2, 3, 5 and 7); each case failed before the fix it tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clusterforget as cf
from clusterforget.store.commit import manifest_checksum
from clusterforget.store.fs import sha
from conftest import FAST, ROOT, make_table, rewrite_export as rewrite

KEY = bytes(range(32))


@pytest.fixture(scope="module")
def fitted():
    X, y, ids, test = make_table("multiclass", n=240)
    model = cf.ForgetClassifier(grouping="region", learner_params=FAST["lightgbm"], n_jobs=1).fit(X, y, ids=ids)
    return model, test


def replace_member(path: Path, name: str, data: bytes, **fields) -> str:
    """Swap member file ``name`` for ``data`` (and set manifest ``fields``), checksums recomputed; the new name."""
    new = f"members/{sha(data)}.txt"

    def swap(doc):
        doc.update(fields)
        for m in doc["members"]:
            if m["file"] == name:
                m["file"] = new

    rewrite(path, swap, {new: data})
    return new


def member_text(path: Path, i: int = 0) -> tuple[str, str]:
    doc = json.loads((path / "manifest.json").read_text())
    entry = next(m for m in doc["members"] if m["meta"]["learner"] == "lightgbm")
    return entry["file"], (path / entry["file"]).read_text()


def test_a_plain_bundle_never_loads_a_shared_library(fitted, tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the planted library")
    model, test = fitted
    marker = tmp_path / "ran"
    src = tmp_path / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", tmp_path / "evil.so", src], check=True)
    lib = (tmp_path / "evil.so").read_bytes()
    path = tmp_path / "bundle"
    model.export(path, format="bundle")
    name = f"libs/{sha(lib)}.so"

    def plant(doc):
        doc["members"][0]["lib"] = name

    rewrite(path, plant, {name: lib})
    with pytest.raises(cf.ExportError, match="only a format='compiled' export lists shared libraries"):
        cf.Scorer(path)
    doc = json.loads((path / "manifest.json").read_text())  # claim to be compiled: still not without a key
    doc["export_format"] = "compiled"
    doc["checksum"] = manifest_checksum(doc)
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(cf.ExportError, match="runs its code"):
        cf.Scorer(path)
    assert not marker.exists()


def test_an_authenticated_export_refuses_any_change_made_without_the_key(fitted, tmp_path):
    model, test = fitted
    path = tmp_path / "auth"
    info = model.export(path, key=KEY)
    assert info["model_version"] == model.version_
    scorer = cf.Scorer(path, key=KEY)
    assert scorer.authenticated and np.array_equal(scorer.predict_proba(test), model.predict_proba(test))
    with pytest.raises(cf.AuthenticationError, match="pass its key"):
        cf.Scorer(path)
    with pytest.raises(cf.AuthenticationError, match="another key"):
        cf.Scorer(path, key=bytes(32))
    name, text = member_text(path)
    i = text.index("leaf_value=") + len("leaf_value=")
    edited = text[:i] + ("9" if text[i] != "9" else "8") + text[i + 1:]  # same length: tree_sizes still match
    replace_member(path, name, edited.encode())
    with pytest.raises(cf.AuthenticationError, match="modified without the key"):
        cf.Scorer(path, key=KEY)
    plain = tmp_path / "plain"  # without a key the same edit is only caught if the checksums are not recomputed
    model.export(plain)
    with pytest.raises(cf.AuthenticationError, match="not authenticated"):
        cf.Scorer(plain, key=KEY)


def test_onnx_exports_are_authenticated_beside_the_graph(fitted, tmp_path):
    pytest.importorskip("onnxruntime")
    from clusterforget.export.onnx import read_onnx

    model, _ = fitted
    path = tmp_path / "m.onnx"
    model.export(path, format="onnx", key=KEY)
    assert read_onnx(path, KEY) == path.read_bytes()
    with pytest.raises(cf.AuthenticationError):
        read_onnx(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(cf.AuthenticationError, match="modified without the key"):
        read_onnx(path, KEY)


def test_an_onnx_graph_s_auth_json_is_a_manifest_s_authentication(fitted, tmp_path):
    """One format: the ``.auth.json`` holds ``auth`` and ``mac`` as a bundle's manifest does, under one key id, and the
    manifests' reader checks it; each way of tampering with it is refused, an old-format file too (export again)."""
    pytest.importorskip("onnxruntime")
    from clusterforget.export.onnx import auth_path, read_onnx
    from clusterforget.store.auth import check_manifest
    from clusterforget.store.commit import manifest_checksum
    from clusterforget.store.fs import sha

    model, _ = fitted
    path = tmp_path / "m.onnx"
    model.export(path, format="onnx", key=KEY)
    model.export(tmp_path / "bundle", key=KEY)
    side = json.loads(auth_path(path).read_text())
    bundle = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert side["auth"] == bundle["auth"] and {"checksum", "mac"} <= set(side)
    assert side["checksum"] == manifest_checksum(side) and check_manifest(side, KEY, path, "export")
    graph = path.read_bytes()
    assert side["graph_sha256"] == sha(graph) and read_onnx(path, KEY) == graph  # honest: loads and serves

    def refused(doc, data=graph, key=KEY, match=None):
        auth_path(path).write_text(json.dumps(doc))
        path.write_bytes(data)
        with pytest.raises(cf.AuthenticationError, match=match):
            read_onnx(path, key)

    edited = bytearray(graph)
    edited[-1] ^= 1
    # the graph edited and its sha256 in the document fixed, the checksum recomputed: the mac is the key's
    forged = {**side, "graph_sha256": sha(bytes(edited))}
    refused({**forged, "checksum": manifest_checksum(forged)}, bytes(edited), match="fails its HMAC")
    refused(side, bytes(edited), match="modified without the key")  # the graph alone edited
    stripped = {k: v for k, v in side.items() if k not in ("auth", "mac")}
    refused({**stripped, "checksum": manifest_checksum(stripped)}, match="auth altered or removed")
    refused(side, key=bytes(32), match="another key")
    refused(side, key=None, match="pass its key")
    refused({**side, "format": "clusterforget-bundle"}, match="not an authentication document")
    # the format written before (scheme, key_id, mac at the top): refused, saying what to do
    old = {"scheme": side["auth"]["scheme"], "key_id": side["auth"]["key_id"], "mac": side["mac"]}
    for key in (KEY, None):
        refused(old, key=key, match="format written before.*export the graph again")
    auth_path(path).write_text(json.dumps(side))
    assert read_onnx(path, KEY) == graph


CRASH = """
import sys
import clusterforget as cf
for path in sys.argv[1:]:
    try:
        cf.Scorer(path, isolate=True)
    except cf.ExportError as exc:
        print("refused:", exc)
"""


def test_members_that_make_lightgbm_abort_are_refused_and_the_process_lives(fitted, tmp_path):
    model, _ = fitted
    paths, names = [], []
    for damage in ("tree_sizes", "truncated"):
        path = tmp_path / damage
        model.export(path)
        name, text = member_text(path)
        if damage == "tree_sizes":  # one more character in a tree: LightGBM's "Model format error", then abort
            i = text.index("leaf_value=") + len("leaf_value=")
            bad = text[:i] + "1" + text[i:]
        else:  # half a file: a segmentation fault inside LightGBM
            bad = text[: len(text) // 2]
        names.append(replace_member(path, name, bad.encode()))
        paths.append(str(path))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", CRASH, *paths], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    refusals = [line for line in r.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 2 and all("is malformed" in line and new in line for line, new in zip(refusals, names))



def test_verdicts_given_before_the_manifest_is_verified_count_only_for_the_bytes_verified(fitted, tmp_path):
    """The child parses a swap's changed members while the parent verifies them (``MemberChecker.begin``): its
    verdict counts only for the very bytes object the parent verified, a refusal stands, and nothing is remembered
    from a manifest that was not verified."""
    from clusterforget.export import isolate
    from clusterforget.export.bundle import read_bundle

    model, _ = fitted
    model.export(tmp_path / "b")
    doc, files = read_bundle(tmp_path / "b")
    n = len({isolate._tag(doc, m, doc["schema"]) for m in doc["members"]})
    checker = isolate.MemberChecker()
    asked: list[bytes] = []
    checker._ask = lambda request, data: asked.append(data)  # the child's answer: fine (None)
    copies = {k: bytes(bytearray(v)) for k, v in files.items()}  # equal bytes, other objects
    checker.check(doc, files, early=checker.begin(doc, copies))
    assert len(asked) == 2 * n and len(checker._good) == n  # the copies' verdicts did not count
    checker._good.clear(), asked.clear()
    checker.check(doc, files, early=checker.begin(doc, files))
    assert len(asked) == n and all(any(a is files[m["file"]] for m in doc["members"]) for a in asked)
    checker._good.clear(), asked.clear()
    checker._ask = lambda request, data: asked.append(data) or "planted refusal"
    early = checker.begin(doc, files)
    with pytest.raises(cf.ExportError, match="planted refusal"):
        checker.check(doc, files, early=early)
    assert len(asked) == 1 and not checker._good

    # a member file changed under an unchanged manifest: the real child gets it early (and dies on it), the parent
    # refuses it on its sha256, and nothing is remembered; restored, every member is checked and accepted
    real = isolate.MemberChecker()
    name, text = member_text(tmp_path / "b")
    begun: list[isolate.Early] = []
    begin = real.begin
    real.begin = lambda doc, read: begun.append(begin(doc, read)) or begun[-1]
    try:
        (tmp_path / "b" / name).write_text(text[: len(text) // 2])
        with pytest.raises(cf.ChecksumError, match="sha256"):
            cf.Scorer(tmp_path / "b", checker=real)
        verdicts = begun[0].verdicts()  # the child's round trips, finished
        assert any(len(data) == len(text) // 2 and error for data, error in verdicts.values()), verdicts
        assert not real._good
        (tmp_path / "b" / name).write_text(text)
        cf.Scorer(tmp_path / "b", checker=real)
        assert len(real._good) == n
    finally:
        real.close()


def _set(field, value):
    def change(doc):
        doc[field] = value
    return change


def _member(field, value, i=0):
    def change(doc):
        doc["members"][i][field] = value
    return change


def _meta_classes(doc):
    doc["members"][0]["meta"]["classes"] = list(reversed(doc["members"][0]["meta"]["classes"]))


BAD_MANIFESTS = {
    "version text": (_set("model_version", "abc"), "model_version"),
    "version null": (_set("model_version", None), "model_version"),
    "version missing": (lambda d: d.pop("model_version"), "model_version"),
    "version bool": (_set("model_version", True), "model_version"),
    "no members": (_set("members", []), "members"),
    "task": (_set("task", "regression"), "classes"),
    "task unknown": (_set("task", "ranking"), "task"),
    "no classes": (_set("classes", []), "classes"),
    "class index out of range": (_member("class_index", [0, 1, 99]), "class_index"),
    "class index not list": (_member("class_index", "0"), "class_index"),
    "weight nan": (_member("weight", "nan"), "weight"),
    "weight inf": (_member("weight", float("inf")), "weight"),
    "weight negative": (_member("weight", -1.0), "weight"),
    "all weights zero": (lambda d: [m.update(weight=0.0) for m in d["members"]], "weights"),
    "shard": (_member("shard", 5), "shard"),
    "file outside": (_member("file", "../../etc/passwd"), "file"),
    "file unlisted": (_member("file", "members/none.txt"), "file"),
    "files outside": (lambda d: d["files"].update({"/etc/passwd": "0" * 64}), "file name"),
    "schema": (_set("schema", {"names": ["a", "a"], "kinds": ["numeric", "numeric"], "from_frame": True}), "schema"),
    "meta classes": (_meta_classes, "meta.classes"),
    "learner": (lambda d: d["members"][0]["meta"].update(learner="pickle"), "meta"),
    "combine": (_set("combine", "vote"), "combine"),
    "grouping": (_set("grouping", {"kind": "nope"}), "cannot be read"),
    "override class": (lambda d: d["overrides"].append({"rule_id": "r9", "rule": "a > 0", "label": "x",
                                                        "class_index": 42}), "overrides"),
    "override rule": (lambda d: d["overrides"].append({"rule_id": "r9", "rule": "a >>> 0", "label": "low",
                                                       "class_index": 0}), "cannot be read"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_every_manifest_field_is_checked_before_anything_is_built(fitted, tmp_path, case):
    model, _ = fitted
    path = tmp_path / "bundle"
    model.export(path)
    change, where = BAD_MANIFESTS[case]
    rewrite(path, change)
    with pytest.raises(cf.ExportError, match=where) as info:
        cf.Scorer(path)
    assert len(str(info.value)) < 1000


def test_export_refuses_symlinked_folders_and_files_and_deletes_nothing_outside(fitted, tmp_path):
    model, test = fitted
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "members").symlink_to(outside, target_is_directory=True)
    with pytest.raises(cf.ExportError, match="symbolic link"):
        model.export(path)
    assert (outside / "precious.txt").read_text() == "keep me"

    good = tmp_path / "good"
    model.export(good)
    name, text = member_text(good)
    copy = outside / "member.txt"
    copy.write_text(text)  # the same content, outside the export
    (good / name).unlink()
    (good / name).symlink_to(copy)
    with pytest.raises(cf.ExportError, match="symbolic link"):
        cf.Scorer(good)
    with pytest.raises(cf.ExportError, match="symbolic link"):
        model.export(good)  # a re-export does not write through, or delete, the link
    assert copy.read_text() == text

    linked = tmp_path / "linked"
    model.export(linked)
    shutil.move(str(linked / "members"), str(tmp_path / "elsewhere"))
    (linked / "members").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(cf.ExportError, match="symbolic link"):
        cf.Scorer(linked)


def test_a_fifo_named_as_a_member_does_not_block_the_reader(fitted, tmp_path):
    model, _ = fitted
    path = tmp_path / "bundle"
    model.export(path)
    name, _ = member_text(path)
    (path / name).unlink()
    os.mkfifo(path / name)
    with pytest.raises(cf.ExportError, match="not a regular file"):
        cf.Scorer(path)


def test_the_checker_keys_members_by_their_verified_hash_and_copies_no_member(fitted, tmp_path, monkeypatch):
    """A member is recognised by the sha256 reading the bundle verified: the checker hashes no member data again
    (nor a copy of it joined to its meta)."""
    from clusterforget.export import isolate
    from clusterforget.export.bundle import read_bundle

    model, _ = fitted
    model.export(tmp_path / "b")
    doc, files = read_bundle(tmp_path / "b")
    biggest = max(len(files[m["file"]]) for m in doc["members"])
    hashed = []
    real = isolate.sha
    monkeypatch.setattr(isolate, "sha", lambda data: hashed.append(len(data)) or real(data))
    checker = isolate.MemberChecker()
    try:
        checker.check(doc, files, tmp_path / "b")
        checker.check(doc, files, tmp_path / "b")  # every member known: nothing sent to the child again
    finally:
        checker.close()
    assert hashed and max(hashed) < biggest, (hashed, biggest)
    assert len(checker._good) == len({m["file"] for m in doc["members"]})
