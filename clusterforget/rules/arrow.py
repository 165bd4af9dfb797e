"""Compile a rule's syntax tree to a ``pyarrow.compute`` expression, checked against the model's columns.

Nothing is ever ``eval``-ed: the tree's nodes map one to one onto Arrow expression builders.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import NUMERIC, Schema
from ..errors import RuleError
from .grammar import COMPARISONS, MAX_DEPTH, _error, parse_tree, unquote, show_column as _show_col

# ---------------------------------------------------------------------------------------------- compiling
class CompiledRule:
    """A checked rule: ``rule(table)`` is the boolean match mask of the table's rows (missing: no match).

    ``table`` holds the model's feature columns in canonical layout (other columns are ignored).
    """

    def __init__(self, text: str, expression: pc.Expression, columns: dict[str, str]):
        self.text = text
        self.expression = expression
        self.columns = columns  # column name -> kind, the columns the rule reads

    def __repr__(self) -> str:
        return f"CompiledRule({self.text!r})"

    def __call__(self, table: pa.Table) -> np.ndarray:
        n = table.num_rows
        if n == 0:
            return np.zeros(0, dtype=bool)
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise RuleError(f"rule {self.text!r} reads column(s) {missing!r}, which the data does not have")
        cols, names = [], []
        for name, kind in self.columns.items():
            cols.append(_canonical(table.column(name), kind))
            names.append(name)
        row = "__cf_row__"
        while row in names:
            row += "_"
        cols.append(pa.array(np.arange(n, dtype=np.int64)))
        names.append(row)
        kept = pa.table(cols, names=names).filter(self.expression).column(row)
        mask = np.zeros(n, dtype=bool)
        mask[kept.to_numpy()] = True
        return mask


def _canonical(col: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    """A column as rules see it: float64 (NaN as null) or string, whatever the caller passed."""
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    if kind == NUMERIC:
        if col.type != pa.float64():
            col = pc.cast(col, pa.float64())
        if col.null_count < len(col) and pc.any(pc.is_nan(col)).as_py():
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)
        # -0.0 + 0.0 is 0.0: `in` looks values up by their bits, and -0.0 must match 0 as `==` does
        return pc.add(col, pa.scalar(0.0, pa.float64()))
    if col.type != pa.string():
        col = pc.cast(col, pa.string())
    return col


class _Compiler:
    def __init__(self, text: str, schema: Schema):
        self.text = text
        self.schema = schema
        self.used: dict[str, str] = {}

    # -- pieces
    def column(self, node) -> tuple[str, str]:
        tok = node.children[0]
        name = unquote(str(tok)) if tok.type == "QUOTED_NAME" else str(tok)
        if name not in self.schema.names:
            close = difflib.get_close_matches(name, self.schema.names, n=3, cutoff=0.6)
            close += [c for c in self.schema.names if c.lower() == name.lower() and c not in close]
            hint = f"; did you mean {', '.join(_show_col(c) for c in close)}?" if close else ""
            cols = ", ".join(_show_col(c) for c in self.schema.names[:30])
            more = " ..." if len(self.schema.names) > 30 else ""
            raise _error(
                self.text, tok.start_pos,
                f"unknown column {name!r}{hint} (the model's columns: {cols}{more}; "
                "write names with spaces, dashes or other characters in backticks)",
                column_name=name,
            )
        kind = self.schema.kind(name)
        self.used[name] = kind
        return name, kind

    def value(self, tok, name: str, kind: str, what: str) -> Any:
        t = tok.type
        if t == "NULL":
            raise _error(
                self.text, tok.start_pos,
                f"{what} null is never true (a comparison with a missing value is unknown); "
                f"write {_show_col(name)} is null or {_show_col(name)} is not null",
            )
        if kind == NUMERIC:
            if t == "NUMBER":
                return pa.scalar(float(str(tok)) + 0.0, pa.float64())  # + 0.0 folds -0.0 into 0.0
            if t in ("TRUE", "FALSE"):
                return pa.scalar(1.0 if t == "TRUE" else 0.0, pa.float64())
            raise _error(
                self.text, tok.start_pos,
                f"column {name!r} is numeric but is compared with the string {str(tok)}; compare it with a number",
                column_name=name,
            )
        if t == "STRING":
            try:
                return pa.scalar(unquote(str(tok)), pa.string())
            except (UnicodeError, pa.ArrowException) as exc:
                raise _error(self.text, tok.start_pos, f"the string {str(tok)} is not valid text ({exc})") from None
        shown = str(tok)
        raise _error(
            self.text, tok.start_pos,
            f"column {name!r} is categorical (holds strings) but is compared with "
            f"{'the number' if t == 'NUMBER' else 'the boolean'} {shown}; quote the value: '{shown}'",
            column_name=name,
        )

    # -- the tree
    def compile(self, node, depth: int = 0) -> pc.Expression:
        if depth >= MAX_DEPTH:
            pos = 0 if node.meta.empty else node.meta.start_pos
            raise _error(self.text, pos, f"the rule is nested more than {MAX_DEPTH} levels deep; simplify it")
        kind = node.data
        if kind == "start":
            return self.compile(node.children[0], depth)
        if kind == "or_":
            return _balanced([self.compile(c, depth + 1) for c in node.children], lambda a, b: a | b)
        if kind == "and_":
            return _balanced([self.compile(c, depth + 1) for c in node.children], lambda a, b: a & b)
        if kind == "neg":
            return ~self.compile(node.children[0], depth + 1)
        name, ckind = self.column(node.children[0])
        field = pc.field(name)
        if kind == "compare":
            op = COMPARISONS[str(node.children[1])]
            v = self.value(node.children[2], name, ckind, f"comparing {name!r} with")
            return {
                "==": field == v,
                "!=": field != v,
                "<": field < v,
                "<=": field <= v,
                ">": field > v,
                ">=": field >= v,
            }[op]
        if kind in ("isin", "notin"):
            values = [
                self.value(tok, name, ckind, f"{name!r} {'in' if kind == 'isin' else 'not in'} a list with")
                for tok in node.children[1].children
            ]
            typ = pa.float64() if ckind == NUMERIC else pa.string()
            found = pc.if_else(
                field.is_valid(), field.isin(pa.array([v.as_py() for v in values], typ)), pa.scalar(None, pa.bool_())
            )
            return found if kind == "isin" else ~found
        if kind == "isnull":
            return field.is_null()
        if kind == "notnull":
            return field.is_valid()
        raise _error(self.text, 0, f"internal: unknown rule node {kind!r}")  # pragma: no cover


def _balanced(items: list, op):
    """Combine with ``op`` as a balanced tree, so long and/or chains stay shallow."""
    while len(items) > 1:
        items = [op(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


def parse(text: str, schema: Schema) -> CompiledRule:
    """Parse and check ``text`` against ``schema``; raises ``RuleError`` (with ``.position``) if it is bad."""
    tree = parse_tree(text)
    compiler = _Compiler(text, schema)
    expression = compiler.compile(tree)
    return CompiledRule(text, expression, compiler.used)
