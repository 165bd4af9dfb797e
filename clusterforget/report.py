"""What an operation that changed the model did."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Report:
    """Returned by every operation that changes a model (``fit`` excepted).

    ``is_deletion`` is True only when the operation removed rows (``forget_rows``, ``forget_group``): it is
    derived where the report is made, from the rows removed. Adding, relabeling, reweighting, retraining
    pending members and ``set_group_weight`` are not deletions: a down-weighted group still holds its rows
    and its member still saw them.
    """

    operation: str
    rows_removed: int = 0
    rows_added: int = 0
    rows_relabeled: int = 0
    rows_reweighted: int = 0  # rows whose sample weight changed (reweight); they stay in the model
    groups_retrained: list[str] = field(default_factory=list)
    # boosting rounds of each retrained group's new member (early stopping's choice when it stopped early)
    rounds: dict[str, int] = field(default_factory=dict)
    # combine="auto" on keys: what the held-out slices chose after this change, with both scores
    combine: str = ""
    groups_dropped: list[str] = field(default_factory=list)
    groups_added: list[str] = field(default_factory=list)
    groups_pending: list[str] = field(default_factory=list)
    clustering_refit: bool = False
    clustering_changed: bool = False
    rows_moved: int = 0
    regrouped: bool = False  # a sized grouping ("auto") resolved to another partition: every group was rebuilt
    is_deletion: bool = False
    seconds: float = 0.0
    version: int | None = None
    rule: str = ""
    rows_matched: int = 0
    note: str = ""
    request_id: str = ""  # the deletion request (ticket) this operation served, as the caller named it
    # forget_rows(..., audit=True): the output-difference attack's figures (aggregates only; see verify.diff)
    audit: dict[str, Any] | None = None
    # no row id is ever part of a report: the ids a change removed, added or reweighted travel beside it, in
    # ``ensemble.Outcome``, to the store (tombstones and ledger, as keyed hashes) only

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), list) else dict(v) if isinstance(v, dict) else v)
            for f in fields(self)
        }

    def __str__(self) -> str:
        parts = [f"{self.operation}:"]
        if self.rule and self.operation.startswith("relabel"):
            parts.append(f"rule {self.rule!r} matched {self.rows_matched} row(s)")
        for verb in ("removed", "added", "relabeled", "reweighted"):
            if count := getattr(self, f"rows_{verb}"):
                parts.append(f"{count} row(s) {verb}")
        parts.append(f"{len(self.groups_retrained)} group(s) retrained")
        parts += [f"{len(names)} {what}" for names, what in
                  ((self.groups_dropped, "dropped"), (self.groups_pending, "pending retrain")) if names]
        if self.clustering_refit:
            parts.append("clustering refit" + (f", {self.rows_moved} row(s) moved" if self.clustering_changed else ", unchanged"))
        if self.regrouped:
            parts.append("regrouped")
        parts.append(f"{self.seconds:.3f}s")
        if self.version is not None:
            parts.append(f"version {self.version}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        text = ", ".join([parts[0] + " " + parts[1]] + parts[2:]) if len(parts) > 1 else parts[0]
        if self.note:
            text += f" ({self.note})"
        return text
