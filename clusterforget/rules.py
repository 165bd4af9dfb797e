"""Business rules over columns: relabel the training rows, or override what the model outputs.

The rule language
-----------------
A rule is a condition on one row, for example::

    fare == 0
    pclass == 3 and embarked in ('S', 'Q')
    age is null or age < 1
    `native-country` != 'United-States'

* comparisons ``==  !=  <  <=  >  >=`` (``=`` and ``<>`` are accepted for ``==`` and ``!=``) between a
  column and a value; ``col in (v1, v2, ...)``, ``col not in (...)``, ``col is null``, ``col is not null``;
* ``and``, ``or``, ``not`` and parentheses (``not`` binds tightest, then ``and``, then ``or``);
* values: numbers (``3``, ``-0.5``, ``1e3``), strings in single or double quotes (a backslash escapes the
  next character: ``'O\\'Brien'``), ``true`` / ``false`` (for numeric columns: 1 / 0);
* column names: a bare name of letters, digits and ``_``, or any name in backticks, as in
  `native-country` or `hours per week` (a backslash escapes a backtick inside);
* keywords (``and or not in is null true false``) are case-insensitive and reserved: a column with such a
  name needs backticks. Column names are case-sensitive.

Numeric columns are compared with numbers (or true/false), categorical (string) columns with strings;
anything else is refused. Missing values follow SQL: a comparison with a missing value is *unknown*, unknown
never matches, and ``not`` keeps it unknown. So neither ``age < 1`` nor ``not (age < 1)`` matches a row
with a missing age; ``age is null`` does.

Rules are parsed by a real parser (lark, LALR), checked against the model's columns, and compiled to
``pyarrow.compute`` expressions evaluated on Arrow data. Nothing is ever ``eval``-ed. Errors are
``RuleError``s that say where (character position) and what was expected.
"""

from __future__ import annotations

import difflib
import math
import re
import threading
import time
from numbers import Integral, Real
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .data import LABEL, NUMERIC, Schema
from .errors import InputError, RuleError
from .members import CLASSIFICATION
from .report import Report

MODES = ("retrain", "override")
MAX_DEPTH = 100  # nesting of parentheses / not

_GRAMMAR = r"""
start: or_
?or_: and_ (_OR and_)*
?and_: not_ (_AND not_)*
?not_: _NOT not_                        -> neg
     | predicate
     | "(" or_ ")"
?predicate: column CMP value            -> compare
          | column _IN "(" values ")"    -> isin
          | column _NOT _IN "(" values ")" -> notin
          | column _IS NULL              -> isnull
          | column _IS _NOT NULL         -> notnull
values: value ("," value)* [","]
?value: NUMBER | STRING | TRUE | FALSE | NULL
column: NAME | QUOTED_NAME

CMP: "==" | "!=" | "<>" | "<=" | ">=" | "<" | ">" | "="
_OR.2: /or\b/i
_AND.2: /and\b/i
_NOT.2: /not\b/i
_IN.2: /in\b/i
_IS.2: /is\b/i
NULL.2: /null\b/i
TRUE.2: /true\b/i
FALSE.2: /false\b/i
NAME: /[^\W\d]\w*/
QUOTED_NAME: /`(?:[^`\\]|\\.)*`/s
STRING: /'(?:[^'\\]|\\.)*'/s | /"(?:[^"\\]|\\.)*"/s
NUMBER: /[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/
%ignore /\s+/
"""

# what each terminal means to a person reading an error message
_TERMINALS = {
    "NAME": "a column name",
    "QUOTED_NAME": "a `quoted column name`",
    "CMP": "a comparison (== != < <= > >=)",
    "NUMBER": "a number",
    "STRING": "a 'string'",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "_OR": "'or'",
    "_AND": "'and'",
    "_NOT": "'not'",
    "_IN": "'in'",
    "_IS": "'is'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "the end of the rule",
}
_KEYWORDS = {"or", "and", "not", "in", "is", "null", "true", "false"}

_parser_lock = threading.Lock()
_parser = None


def _get_parser():
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                try:
                    from lark import Lark
                except ImportError as exc:  # pragma: no cover - lark is a dependency
                    raise ImportError("clusterforget rules need the lark package: pip install lark") from exc
                _parser = Lark(
                    _GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=False, propagate_positions=True
                )
    return _parser


# ---------------------------------------------------------------------------------------------- errors
def _error(text: str, pos: int, message: str, **info: Any) -> RuleError:
    """A RuleError: where (char position, and line/column for multi-line rules), what, and a caret."""
    pos = max(0, min(pos, len(text)))
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : (len(text) if line_end < 0 else line_end)]
    where = f"at char {pos + 1}"
    if "\n" in text:
        where += f" (line {text.count(chr(10), 0, pos) + 1}, column {pos - line_start + 1})"
    err = RuleError(f"rule {text!r}, {where}: {message}\n    {line}\n    {' ' * (pos - line_start)}^")
    err.rule = text
    err.position = pos
    for k, v in info.items():
        setattr(err, k, v)
    return err


_ORDER = list(_TERMINALS)


def _expected(names) -> str:
    names = set(names)
    if "NUMBER" in names:
        names.discard("NULL")  # null is a value only for `is null`; never suggest comparing with it
    words = [_TERMINALS.get(n, n) for n in sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else 99, n))]
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _accepts_at(text: str, pos: int) -> set[str] | None:
    """The terminals the parser would accept after ``text[:pos]`` (None when that prefix does not lex)."""
    try:
        ip = _get_parser().parse_interactive(text[:pos])
        ip.exhaust_lexer()
        return set(ip.accepts())
    except Exception:  # the prefix itself is bad; fall back to the lexer's view
        return None


_NAME_HINT = "a column name with spaces, dashes or other characters goes in backticks, e.g. `native-country`"


def _syntax_error(text: str, exc: Exception) -> RuleError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream
        ch = text[pos]
        accepts = _accepts_at(text, pos)
        expected = sorted(accepts if accepts is not None else (exc.allowed or ()))
        if ch in "'\"":
            what = f"an unterminated string starting with {ch}"
        elif ch == "`":
            what = "an unterminated `quoted column name`"
        else:
            what = f"the character {ch!r}"
            if pos and re.match(r"\w", text[pos - 1]) and accepts is not None and "CMP" in accepts:
                what += f" ({_NAME_HINT})"
        return _error(text, pos, f"expected {_expected(expected)}, got {what}", expected=expected)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        at = len(text) if tok.type == "$END" else tok.start_pos
        accepts = _accepts_at(text, at)
        expected = sorted(accepts if accepts is not None else (exc.expected or ()))
        if tok.type == "$END":
            pos = len(text.rstrip())
            got = "the end of the rule" if text.strip() else "an empty rule"
        else:
            pos = tok.start_pos
            got = repr(str(tok))
            if tok.type in {"_OR", "_AND", "_NOT", "_IN", "_IS", "NULL", "TRUE", "FALSE"} and "NAME" in expected:
                got += f" (a keyword: write a column of that name in backticks, `{tok}`)"
            elif tok.type in ("NAME", "QUOTED_NAME") and "CMP" in expected:
                got += f" ({_NAME_HINT})"
        return _error(text, pos, f"expected {_expected(expected)}, got {got}", expected=expected)
    return _error(text, 0, f"cannot parse: {exc}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- compiling
_UNESCAPE = re.compile(r"\\(.)", re.S)
_OPS = {"==": "==", "=": "==", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _unquote(raw: str) -> str:
    return _UNESCAPE.sub(r"\1", raw[1:-1])


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
        name = _unquote(str(tok)) if tok.type == "QUOTED_NAME" else str(tok)
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
                return pa.scalar(_unquote(str(tok)), pa.string())
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
            op = _OPS[str(node.children[1])]
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


def _show_col(name: str) -> str:
    if re.fullmatch(r"[^\W\d]\w*", name) and name.lower() not in _KEYWORDS:
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def parse(text: str, schema: Schema) -> CompiledRule:
    """Parse and check ``text`` against ``schema``; raises ``RuleError`` (with ``.position``) if it is bad."""
    if not isinstance(text, str):
        raise RuleError(f"a rule is a string such as \"fare == 0\", got {type(text).__name__} {text!r}")
    from lark.exceptions import UnexpectedInput

    try:
        tree = _get_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    compiler = _Compiler(text, schema)
    expression = compiler.compile(tree)
    return CompiledRule(text, expression, compiler.used)


def compile_mask(text: str, schema: Schema) -> CompiledRule:
    """The match function of a rule: ``f(table) -> np.ndarray[bool]`` (the store rebuilds overrides with it)."""
    return parse(text, schema)


def quote_column(name: str) -> str:
    """How to write column ``name`` in a rule (backticks when it is not a plain name)."""
    return _show_col(name)


# ---------------------------------------------------------------------------------------------- operations
def _check_label(model, ens, label: Any, mode: str) -> Any:
    """The label as a plain Python value of the model's label type, or an InputError quoting it."""
    if ens.task != CLASSIFICATION:
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, Real) or not math.isfinite(float(label)):
            raise InputError(f"label={label!r} is not a finite number; a regressor's label is the target value to set")
        return float(label)
    typ = ens.label_type
    if pa.types.is_boolean(typ):
        ok = isinstance(label, (bool, np.bool_))
    elif pa.types.is_integer(typ):
        ok = isinstance(label, Integral) and not isinstance(label, (bool, np.bool_))
    elif pa.types.is_floating(typ):
        ok = isinstance(label, Real) and not isinstance(label, (bool, np.bool_)) and math.isfinite(float(label))
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        ok = isinstance(label, str)
    else:  # pragma: no cover - labels are bool, int, float or str
        ok = True
    value = None
    if ok:
        try:
            value = pa.scalar(label.item() if isinstance(label, np.generic) else label, type=typ).as_py()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            ok = False
    classes = ens.classes.tolist() if ens.classes is not None else []
    if not ok:
        raise InputError(
            f"label={label!r} ({type(label).__name__}) does not match this model's labels, which are {typ} "
            f"(classes {classes[:10]!r}); pass a label of the same type"
        )
    if mode == "override" and not any(value == c for c in classes):
        raise InputError(
            f"label={label!r} is not one of the model's classes {classes[:20]!r}; an override can only output a "
            "class the model knows (relabel with mode='retrain' to teach it a new class)"
        )
    return value


def _count(ens, rule: CompiledRule, label: Any) -> tuple[int, int]:
    """(rows matching the rule, of which already have ``label``) over the stored training rows."""
    matched = already = 0
    for g in ens.groups.values():
        mask = rule(g.rows)
        k = int(mask.sum())
        if k:
            matched += k
            labels = g.rows.column(LABEL).filter(pa.array(mask))
            already += int(pc.sum(pc.equal(labels, pa.scalar(label, labels.type))).as_py() or 0)
    return matched, already


def _next_rule_id(ens) -> str:
    # "r<version the rule was created at>": versions only grow, so an id is never reused, even after remove_rule
    taken = {o.rule_id for o in ens.overrides}
    n = ens.version + 1
    while f"r{n}" in taken:  # pragma: no cover - only if versions were rewound by hand
        n += 1
    return f"r{n}"


def relabel(model, rule: str, label: Any, mode: str = "retrain") -> Report:
    """Apply a business rule to the training labels (``mode="retrain"``) or to the outputs (``"override"``).

    ``retrain``: every stored row matching the rule gets ``label``; only the members whose groups hold a row
    whose label changed are retrained, and the model equals a fresh fit on the relabeled rows. A rule that
    matches no row (or only rows that already have ``label``) changes nothing and says so in ``report.note``.

    ``override``: nothing is retrained; at predict time inputs matching the rule get ``label`` (probability 1
    for that class; the value for regression). Overrides apply in order, the first matching one wins; list
    them with ``model.rules`` and remove one with ``model.remove_rule(rule_id)``.
    """
    ens = model._ensemble()
    if mode not in MODES:
        raise InputError(f"mode={mode!r} is not an option; use 'retrain' (relabel training rows) or 'override'")
    compiled = parse(rule, ens.schema)
    value = _check_label(model, ens, label, mode)
    matched, already = _count(ens, compiled, value)

    if mode == "override":
        def add_override(e) -> Report:
            from .ensemble import Override

            t0 = time.perf_counter()
            rule_id = _next_rule_id(e)
            # a new list, never changed in place: a failed store commit restores the old one by reference
            e.overrides = [*e.overrides, Override(rule_id, rule, compiled, value)]
            e.version += 1
            return Report(
                operation="relabel_override",
                is_deletion=False,
                rule=rule,
                rows_matched=matched,
                seconds=time.perf_counter() - t0,
                note=f"override {rule_id}: inputs matching the rule now predict {value!r}; nothing was retrained "
                f"and the training rows keep their labels ({matched} training row(s) match the rule). "
                f"model.remove_rule({rule_id!r}) takes it back",
            )

        return model._mutate(add_override)

    if matched == 0 or matched == already:
        note = (
            "the rule matches no training row; nothing was changed"
            if matched == 0
            else f"all {matched} matching training row(s) already have label {value!r}; nothing was changed"
        )
        return Report(operation="relabel", is_deletion=False, rule=rule, rows_matched=matched,
                      version=ens.version, note=note)

    def change(e) -> Report:
        report = e.apply("relabel", relabel=(compiled, value))
        report.rule = rule
        report.rows_matched = matched
        if already:
            report.note = f"{matched} row(s) matched, {already} of them already had label {value!r}"
        return report

    return model._mutate(change)


def remove_rule(model, rule_id: str) -> Report:
    """Take an output override out of the model (the other overrides keep their order)."""
    ens = model._ensemble()
    found = [o for o in ens.overrides if o.rule_id == rule_id]
    if not found:
        known = [o.rule_id for o in ens.overrides]
        raise RuleError(
            f"no rule with id {rule_id!r}; the rules in force are {known!r} (see model.rules)"
            if known
            else f"no rule with id {rule_id!r}: this model has no output overrides"
        )

    def drop(e) -> Report:
        e.overrides = [o for o in e.overrides if o.rule_id != rule_id]
        e.version += 1
        return Report(
            operation="remove_rule",
            is_deletion=False,
            rule=found[0].text,
            note=f"override {rule_id} ({found[0].text!r} -> {found[0].label!r}) removed",
        )

    return model._mutate(drop)


__all__ = ["CompiledRule", "compile_mask", "parse", "quote_column", "relabel", "remove_rule", "MODES"]
