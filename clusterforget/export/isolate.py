"""Member files (and ONNX graphs) parsed in a child process, where a native parser's abort cannot take the caller
down.

LightGBM aborts the whole process on some malformed model files (a ``tree_sizes`` line that no longer matches
the trees: ``[LightGBM] [Fatal] Model format error``, then ``terminate called``), and a truncated file can
make it read out of bounds; XGBoost has its own such cases. A scoring service must not die on one bad export,
so before it builds a new export it hands the member files to a long-lived child process
(``export/_member_check.py``, which imports only the member kinds and the learner) that parses each one with the
same code as ``Scorer`` (its kind's ``from_bytes``) and scores a few probe rows with it. If the child answers, the member is safe to parse here; if it dies, the export is
refused and the next check starts a new child.

The child is started once (interpreter and learner imports: a second or more on a busy machine), and a member
is checked once per content hash, so a swap after a forget checks only the retrained members. A ``Scorer`` sends
those members to the child as soon as it has parsed the manifest (``begin``) and verifies the manifest and their
files meanwhile; a verdict counts only for the very bytes it then verified (``check``), and nothing is built or
remembered unless both passed.

Protocol (over the child's stdin / stdout): a request is one JSON line ``{"meta": ..., "schema": ..., "size": n}``
(with ``"module"``: the importable module of a plugin learner's kind, ``members.register_module``) followed by ``size`` bytes of the member file; the answer is one JSON line ``{"ok": true}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..store.fs import sha

# parsing and probing one member: generous, a 100 MB LightGBM text takes seconds on a busy machine
TIMEOUT = 120.0


def _plugin(meta: Any) -> dict[str, str]:
    """The module the child imports for a member's learner kind, when it is not one of the package's own (a
    plugin, ``members.register_module``): chosen from this process's registry, never from the file."""
    from ..members import KINDS

    kind = KINDS.get(meta.get("learner")) if isinstance(meta, dict) and isinstance(meta.get("learner"), str) else None
    if kind is None or kind.module_path.startswith("clusterforget."):
        return {}
    return {"module": kind.module_path}


def _tag(doc: dict[str, Any], entry: dict[str, Any], schema: Any) -> str:
    """A member's check key: its file's sha256 as the manifest says (which reading the bundle verifies: no second
    hash, no copy), its meta and the schema."""
    return sha((doc["files"][entry["file"]] + json.dumps([entry["meta"], schema], sort_keys=True)).encode())


class Early:
    """The child's verdicts on members sent before their manifest was verified (``MemberChecker.begin``)."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[bytes, str | None]] = {}  # tag -> (the bytes object sent, error or None)
        self.thread: threading.Thread | None = None

    def verdicts(self) -> dict[str, tuple[bytes, str | None]]:
        if self.thread is not None:
            self.thread.join()  # each round trip is bounded by TIMEOUT
        return self.found


class MemberChecker:
    """A child process that parses member files; ``check`` raises ``ExportError`` if one fails or kills it."""

    _shared: "MemberChecker | None" = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._good: set[str] = set()  # content hashes (with the probe width) that parsed and scored

    @classmethod
    def shared(cls) -> "MemberChecker":
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _start(self) -> subprocess.Popen:
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "OMP_NUM_THREADS": "1"}
        return subprocess.Popen([sys.executable, str(Path(__file__).with_name("_member_check.py"))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def start(self) -> None:
        """Start the child now (a service does at start-up, so the first swap does not wait for it)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def check(self, doc: dict[str, Any], files: dict[str, bytes], root: Any = "", early: "Early | None" = None) -> None:
        """Parse and probe every member file of a verified manifest ``doc`` in the child.

        ``early``: the child's verdicts on members sent before ``doc`` was verified (``begin``). One counts only
        for the very bytes object ``files`` holds (the bytes this process verified and will parse) under the same
        file sha256, meta and schema; any other member is sent now."""
        schema = doc["schema"]
        verdicts = {} if early is None else early.verdicts()
        with self._lock:
            for entry in doc["members"]:
                data = files[entry["file"]]
                tag = _tag(doc, entry, schema)
                if tag in self._good:
                    continue
                sent, error = verdicts.get(tag, (None, None))
                if sent is not data:  # not sent early, or other bytes than those verified: ask now
                    error = self._ask({"meta": entry["meta"], "schema": schema, **_plugin(entry["meta"])}, data)
                if error is not None:
                    raise ExportError(f"member file {entry['file']!r} of the export {str(root)!r} is malformed: "
                                      f"{error}; export the model again")
                self._good.add(tag)

    def begin(self, doc: dict[str, Any], files: dict[str, bytes]) -> "Early":
        """Send members of a manifest not verified yet (``doc``: its members to check; ``files``: their bytes,
        read but not verified) to the child now, in a thread: the caller verifies meanwhile, then passes the
        result to ``check``, which counts a verdict only for bytes it verified. Nothing is remembered here."""
        early = Early()

        def run() -> None:
            with self._lock:
                try:
                    schema = doc["schema"]
                    for entry in doc["members"]:
                        tag, data = _tag(doc, entry, schema), files[entry["file"]]
                        if tag in self._good or tag in early.found:
                            continue
                        error = self._ask({"meta": entry["meta"], "schema": schema, **_plugin(entry["meta"])}, data)
                        early.found[tag] = (data, error)
                        if error is not None:  # the child was killed or refused: the rest wait for ``check``
                            return
                except Exception:  # noqa: BLE001 - a manifest not verified yet may be anything: ``check`` decides
                    return

        early.thread = threading.Thread(target=run, name="clusterforget-member-check", daemon=True)
        early.thread.start()
        return early

    def check_graph(self, data: bytes, root: Any = "") -> None:
        """Parse an ONNX graph (verified bytes) and score probe rows with it in the child: onnxruntime's parser is
        native code too."""
        with self._lock:
            error = self._ask({"graph": True}, data)
        if error is not None:
            raise ExportError(f"the ONNX export {str(root)!r} is malformed: {error}; export the model again")

    def _ask(self, request: dict[str, Any], data: bytes) -> str | None:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        head = json.dumps({**request, "size": len(data)}).encode() + b"\n"
        answer: list[bytes] = []

        def talk() -> None:
            try:
                proc.stdin.write(head)
                proc.stdin.write(data)
                proc.stdin.flush()
                answer.append(proc.stdout.readline())
            except OSError:
                pass

        t = threading.Thread(target=talk, daemon=True)
        t.start()
        t.join(TIMEOUT)
        if not answer or not answer[0]:
            proc.kill()
            code = proc.wait()
            self._proc = self._start()  # warm again before the next export arrives
            return (f"parsing it killed the checking process (exit {code})" if code is not None and not t.is_alive()
                    else f"parsing it did not finish in {TIMEOUT:.0f}s")
        try:
            reply = json.loads(answer[0])
        except ValueError:
            reply = None
        if not isinstance(reply, dict):  # out of step with the protocol: the next answer read could be this one's
            proc.kill()
            proc.wait()
            self._proc = self._start()
            return "the checking process answered garbage"
        return None if reply.get("ok") is True else str(reply.get("error"))[:500]
