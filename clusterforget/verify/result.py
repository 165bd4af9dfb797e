"""What a verification found: one ``Check`` per check that ran, gathered in a ``VerifyResult``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    """One check's outcome.

    ``ok`` is True (passed), False (failed: ``VerifyResult.ok`` is then False) or None (informational or
    skipped: the check measured something that is not a pass/fail property, or lacked its inputs).
    """

    name: str
    ok: bool | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "info"}[self.ok]


@dataclass
class VerifyResult:
    """What ``verify`` checked and found; ``ok`` is True only if every check that ran passed.

    ``ids_still_held``, ``fresh_fit_equal``, ``max_abs_diff`` and ``rows_probed`` keep the meaning they had
    before checks were named; ``checks`` holds every named check's ``Check``.
    """

    ok: bool
    ids_checked: int = 0
    ids_still_held: list = field(default_factory=list)
    fresh_fit_equal: bool | None = None
    max_abs_diff: float | None = None
    rows_probed: int = 0
    seconds: float = 0.0
    checks: dict[str, Check] = field(default_factory=dict)
    request_id: str = ""
    signature: str = ""  # verify_store with a key: HMAC-SHA256 of the rest of the JSON

    def add(self, check: Check) -> Check:
        self.checks[check.name] = check
        if check.ok is False:
            self.ok = False
        return check

    def __str__(self) -> str:
        head = "verified" if self.ok else "VERIFICATION FAILED"
        if self.request_id:
            head += f" (request {self.request_id})"
        rows = [(c.name, c.status, c.summary) for c in self.checks.values()]
        if self.ids_checked and "held" not in self.checks:
            held = len(self.ids_still_held)
            rows.insert(0, ("held", "pass" if not held else "FAIL",
                            f"{self.ids_checked} forgotten id(s): " + ("none held" if not held else f"{held} STILL HELD")))
        if self.fresh_fit_equal is not None and "exact" not in self.checks:
            rows.append(("fresh fit", "pass" if self.fresh_fit_equal else "FAIL",
                         f"predictions on {self.rows_probed} row(s) "
                         + ("identical to a fresh fit" if self.fresh_fit_equal
                            else f"differ from a fresh fit by up to {self.max_abs_diff:g}")))
        width = max([len(r[0]) for r in rows] + [5])
        lines = [f"{head} ({self.seconds:.2f}s)"]
        if rows:
            lines.append(f"{'check':<{width}}  result  details")
            lines += [f"{n:<{width}}  {s:<6}  {t}" for n, s, t in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = {k: asdict(c) | {"status": c.status} for k, c in self.checks.items()}
        return d

    def to_json(self, **kwargs: Any) -> str:
        """The result as JSON (numbers, text and lists only: safe to file next to a deletion request)."""
        return json.dumps(self.to_dict(), default=_plain, **kwargs)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


__all__ = ["Check", "VerifyResult"]
