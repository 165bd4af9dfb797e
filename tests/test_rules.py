"""The rule language: parsing, checking, errors, null semantics, and a property test against a reference."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clusterforget as cf
from clusterforget.data import Schema
from clusterforget.rules import compile_mask, parse, quote_column

SCHEMA = Schema(
    ("fare", "pclass", "embarked", "age", "native-country", "hours per week", "and", "odd`name"),
    ("numeric", "numeric", "categorical", "numeric", "categorical", "numeric", "numeric", "categorical"),
)
TABLE = pa.table(
    {
        "fare": [0.0, 7.25, None, 0.0, 71.28, 8.05],
        "pclass": [3.0, 3.0, 1.0, 2.0, 1.0, 3.0],
        "embarked": ["S", "Q", None, "C", "S", "S"],
        "age": [None, 0.5, 3.0, 40.0, 38.0, None],
        "native-country": ["US", "Cuba", "US", None, "US", "O'Land"],
        "hours per week": [40.0, 20.0, None, 60.0, 40.0, 0.0],
        "and": [1.0, 0.0, 1.0, None, 0.0, 1.0],
        "odd`name": ["x", "y", "x", "y", None, "x"],
    }
)


def run(rule: str) -> list[int]:
    return np.flatnonzero(compile_mask(rule, SCHEMA)(TABLE)).tolist()


@pytest.mark.parametrize(
    "rule,rows",
    [
        ("fare == 0", [0, 3]),
        ("fare = 0", [0, 3]),
        ("fare != 0", [1, 4, 5]),  # a missing fare matches neither == nor !=
        ("fare <> 0", [1, 4, 5]),
        ("fare < 8", [0, 1, 3]),
        ("fare <= 7.25", [0, 1, 3]),
        ("fare > 8.05", [4]),
        ("fare >= 8.05", [4, 5]),
        ("fare > -1e1", [0, 1, 3, 4, 5]),
        ("fare < .5", [0, 3]),
        ("pclass == 3 and embarked in ('S', 'Q')", [0, 1, 5]),
        ("pclass == 3 AND embarked IN ('S', \"Q\",)", [0, 1, 5]),  # keywords in any case, trailing comma
        ("age is null or age < 1", [0, 1, 5]),
        ("age is not null", [1, 2, 3, 4]),
        ("`native-country` != 'US'", [1, 5]),
        ("`native-country` == 'O\\'Land'", [5]),
        ('`native-country` == "O\'Land"', [5]),
        ("`hours per week` >= 40", [0, 3, 4]),
        ("`and` == true", [0, 2, 5]),
        ("`and` == false", [1, 4]),
        ("`odd\\`name` == 'y'", [1, 3]),
        ("embarked not in ('S')", [1, 3]),  # a missing port matches neither in nor not in
        ("not embarked in ('S')", [1, 3]),
        ("not (fare == 0)", [1, 4, 5]),  # not keeps unknown unknown (SQL)
        ("not not fare == 0", [0, 3]),
        ("fare == 0 or fare is null", [0, 2, 3]),
        ("(fare == 0 or pclass == 1) and embarked == 'S'", [0, 4]),
        ("fare == 0 or pclass == 1 and embarked == 'S'", [0, 3, 4]),  # and binds tighter than or
        ("embarked > 'Q'", [0, 4, 5]),  # strings compare as text
        ("embarked in ('Z')", []),
        ("fare\n  == 0\nand\tpclass==3", [0]),
    ],
)
def test_rules_evaluate(rule, rows):
    assert run(rule) == rows


def test_mask_ignores_other_columns_and_accepts_raw_types():
    mask = compile_mask("pclass == 3 and embarked == 'S'", SCHEMA)
    raw = pa.table(
        {
            "__cf_id__": [1, 2, 3],
            "pclass": pa.array([3, 3, 1], pa.int8()),  # not yet float64
            "embarked": pa.array(["S", "Q", "S"]).dictionary_encode(),
        }
    )
    assert mask(raw).tolist() == [True, False, False]
    assert mask(raw.slice(0, 0)).dtype == bool and len(mask(raw.slice(0, 0))) == 0
    nan_zero = pa.table({"fare": [float("nan"), 0.0, -0.0]})
    assert compile_mask("fare == 0", SCHEMA)(nan_zero).tolist() == [False, True, True]
    assert compile_mask("fare in (0)", SCHEMA)(pa.table({"fare": [-0.0, 0.0]})).tolist() == [True, True]
    with pytest.raises(cf.RuleError, match="embarked"):
        mask(pa.table({"pclass": [3.0]}))


def _err(rule: str) -> cf.RuleError:
    with pytest.raises(cf.RuleError) as info:
        parse(rule, SCHEMA)
    return info.value


@pytest.mark.parametrize(
    "rule,pos,pieces",
    [
        ("fare == ", 7, ["at char 8", "expected a number", "end of the rule"]),
        ("fare 0", 5, ["at char 6", "comparison", "'0'"]),
        ("fare == 0 and", 13, ["expected a column name", "end of the rule"]),
        ("(fare == 1", 10, ["expected 'or', 'and' or ')'"]),
        ("fare in ()", 9, ["expected a number", "')'"]),
        ("embarked == 'S", 12, ["unterminated string"]),
        ("`fare == 1", 0, ["unterminated `quoted column name`"]),
        ("fare == $", 8, ["the character '$'"]),
        ("fare == 1 )", 10, ["expected 'or', 'and' or the end of the rule", "got ')'"]),
        ("and == 1", 0, ["keyword", "`and`"]),
        ("native-country == 'US'", 6, ["'-'", "backticks"]),
        ("hours per week > 3", 6, ["'per'", "backticks"]),
        ("", 0, ["empty rule"]),
        ("fare === 1", 7, ["got '='"]),
        ("fare == 1\n and (pclass == ", 25, ["line 2", "column 16", "expected a number"]),
    ],
)
def test_syntax_errors_point_at_the_position(rule, pos, pieces):
    err = _err(rule)
    assert err.position == pos
    msg = str(err)
    for piece in pieces:
        assert piece in msg, msg
    assert msg.splitlines()[-1].index("^") - 4 == pos - (rule.rfind("\n", 0, pos) + 1)  # the caret


@pytest.mark.parametrize(
    "rule,pos,pieces",
    [
        ("fre == 0", 0, ["unknown column 'fre'", "did you mean fare"]),
        ("Fare == 0", 0, ["unknown column 'Fare'", "fare"]),
        ("`native country` == 'US'", 0, ["unknown column 'native country'", "`native-country`"]),
        ("fare == 'zero'", 8, ["'fare' is numeric", "the string 'zero'"]),
        ("embarked == 3", 12, ["'embarked' is categorical", "the number 3", "quote the value: '3'"]),
        ("embarked == true", 12, ["categorical", "the boolean true"]),
        ("embarked in ('S', 3)", 18, ["the number 3"]),
        ("pclass not in (1, 'x')", 18, ["numeric", "'x'"]),
        ("fare == null", 8, ["null", "is null"]),
        ("fare in (1, NULL)", 12, ["null", "is null"]),
        ("not " * 120 + "fare == 0", 400, ["nested more than"]),
    ],
)
def test_semantic_errors_quote_the_bad_piece(rule, pos, pieces):
    err = _err(rule)
    assert err.position == pos, str(err)
    for piece in pieces:
        assert piece in str(err), str(err)


def test_rule_must_be_text():
    with pytest.raises(cf.RuleError, match="string"):
        parse(3, SCHEMA)
    with pytest.raises(cf.RuleError, match="string"):
        parse(None, SCHEMA)


def test_long_rules_stay_shallow():
    rule = " or ".join(f"fare == {i}" for i in range(3000))
    assert run(rule) == [0, 3]
    rule = " and ".join("fare is not null" for _ in range(3000))
    assert run(rule) == [0, 1, 3, 4, 5]


def test_quote_column_round_trips():
    for name in SCHEMA.names:
        assert compile_mask(f"{quote_column(name)} is null", SCHEMA).columns == {name: SCHEMA.kind(name)}
    assert quote_column("fare") == "fare" and quote_column("and") == "`and`"
    assert quote_column("native-country") == "`native-country`"


# ------------------------------------------------------------------------------ property test
# a small table with numeric and string columns, nulls, ties, awkward names; rules generated from the grammar,
# rendered to text with random spelling; the reference evaluation is plain Python with SQL null semantics
P_COLUMNS = {"x": "numeric", "y": "numeric", "s": "categorical", "my col": "categorical", "in": "numeric"}
P_SCHEMA = Schema(tuple(P_COLUMNS), tuple(P_COLUMNS.values()))
NUMBERS = [-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, 1e3]
STRINGS = ["", "a", "b", "A", "it's", 'say "hi"', "back\\slash", "é", "z"]
KEYWORDS = ["and", "or", "not", "in", "is", "null", "true", "false"]

numbers = st.sampled_from(NUMBERS) | st.floats(-1e6, 1e6, allow_nan=False)
strings = st.sampled_from(STRINGS) | st.text(max_size=4)
cells_num = st.none() | st.sampled_from(NUMBERS)
cells_str = st.none() | st.sampled_from(STRINGS)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 12))
    data = {}
    for name, kind in P_COLUMNS.items():
        data[name] = draw(st.lists(cells_num if kind == "numeric" else cells_str, min_size=n, max_size=n))
    return {name: list(v) for name, v in data.items()}, n


def to_arrow(data) -> pa.Table:
    return pa.table(
        {name: pa.array(v, pa.float64() if P_COLUMNS[name] == "numeric" else pa.string()) for name, v in data.items()}
    )


# AST: ("cmp", col, op, value) / ("in", col, values, negated) / ("null", col, negated) / ("not", e) / ("and"|"or", [e])
# values: ("num", float) / ("str", str) / ("bool", bool) / ("null",)
any_value = st.one_of(
    numbers.map(lambda v: ("num", v)),
    strings.map(lambda v: ("str", v)),
    st.booleans().map(lambda v: ("bool", v)),
    st.just(("null",)),
)
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "=", "<>"])


@st.composite
def leaves(draw):
    """A predicate; mostly well-typed (values that fit the column), sometimes not, so both paths are exercised."""
    col = draw(st.sampled_from(list(P_COLUMNS)) if draw(st.integers(0, 9)) else st.sampled_from(["nope", "X", "S"]))
    if P_COLUMNS.get(col) == "numeric":
        fitting = numbers.map(lambda v: ("num", v)) | st.booleans().map(lambda v: ("bool", v))
    else:
        fitting = strings.map(lambda v: ("str", v))
    value = st.one_of(fitting, any_value) if draw(st.integers(0, 9)) == 0 else fitting
    kind = draw(st.sampled_from(["cmp", "cmp", "in", "null"]))
    if kind == "cmp":
        return ("cmp", col, draw(ops), draw(value))
    if kind == "in":
        return ("in", col, draw(st.lists(value, min_size=1, max_size=4)), draw(st.booleans()))
    return ("null", col, draw(st.booleans()))


asts = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
    ),
    max_leaves=8,
)


class Invalid(Exception):
    pass


def check(ast) -> None:
    """Raise Invalid where the engine must refuse the rule (unknown column, wrong value type, null value)."""
    kind = ast[0]
    if kind in ("not",):
        return check(ast[1])
    if kind in ("and", "or"):
        for a in ast[1]:
            check(a)
        return
    col = ast[1]
    if col not in P_COLUMNS:
        raise Invalid(col)
    vals = [ast[3]] if kind == "cmp" else ast[2] if kind == "in" else []
    for v in vals:
        if v[0] == "null":
            raise Invalid("null")
        if P_COLUMNS[col] == "numeric" and v[0] == "str":
            raise Invalid("str")
        if P_COLUMNS[col] == "categorical" and v[0] != "str":
            raise Invalid(v[0])


def value_of(v, col):
    if v[0] == "bool":
        return 1.0 if v[1] else 0.0
    return v[1]


def reference(ast, row):
    """Three-valued evaluation of one row: True, False or None (unknown)."""
    kind = ast[0]
    if kind == "not":
        r = reference(ast[1], row)
        return None if r is None else not r
    if kind in ("and", "or"):
        rs = [reference(a, row) for a in ast[1]]
        if kind == "and":
            return False if False in rs else (None if None in rs else True)
        return True if True in rs else (None if None in rs else False)
    cell = row[ast[1]]
    if kind == "null":
        return (cell is not None) if ast[2] else (cell is None)
    if cell is None:
        return None
    if kind == "in":
        found = any(cell == value_of(v, ast[1]) for v in ast[2])
        return (not found) if ast[3] else found
    v = value_of(ast[3], ast[1])
    op = {"=": "==", "<>": "!="}.get(ast[2], ast[2])
    return {
        "==": cell == v, "!=": cell != v, "<": cell < v, "<=": cell <= v, ">": cell > v, ">=": cell >= v,
    }[op]


def spell_keyword(draw, word: str) -> str:
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


def render_value(draw, v) -> str:
    if v[0] == "null":
        return spell_keyword(draw, "null")
    if v[0] == "bool":
        return spell_keyword(draw, "true" if v[1] else "false")
    if v[0] == "num":
        x = v[1]
        forms = [repr(x)]
        if x.is_integer() and abs(x) < 1e15:
            forms.append(str(int(x)) if x or math.copysign(1, x) > 0 else "-0")
        if x > 0:
            forms.append("+" + repr(x))
        if repr(x).startswith("0."):
            forms.append(repr(x)[1:])  # .5
        return draw(st.sampled_from(forms))
    q = draw(st.sampled_from(["'", '"']))
    return q + v[1].replace("\\", "\\\\").replace(q, "\\" + q) + q


def render_column(draw, name: str) -> str:
    plain = name.isidentifier() and name.lower() not in KEYWORDS
    if plain and not draw(st.booleans()):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def render(draw, ast, parent: int = 0) -> str:
    """Text of ``ast``; parentheses where precedence needs them (or, and, not: 1, 2, 3), sometimes more."""
    kind = ast[0]
    ws = lambda: draw(st.sampled_from([" ", "  ", "\n", "\t "]))  # noqa: E731
    if kind in ("and", "or"):
        prec = 1 if kind == "or" else 2
        text = (ws() + spell_keyword(draw, kind) + ws()).join(render(draw, a, prec) for a in ast[1])
    elif kind == "not":
        prec = 3
        text = spell_keyword(draw, "not") + ws() + render(draw, ast[1], 3)
    else:
        prec = 4
        col = render_column(draw, ast[1])
        if kind == "cmp":
            pad = st.sampled_from(["", " "])
            text = col + draw(pad) + ast[2] + draw(pad) + render_value(draw, ast[3])
        elif kind == "in":
            neg = (spell_keyword(draw, "not") + " ") if ast[3] else ""
            text = f"{col} {neg}{spell_keyword(draw, 'in')} (" + ", ".join(render_value(draw, v) for v in ast[2]) + ")"
        else:
            neg = (spell_keyword(draw, "not") + " ") if ast[2] else ""
            text = f"{col} {spell_keyword(draw, 'is')} {neg}" + spell_keyword(draw, "null")
    if prec < parent or (prec <= parent and kind in ("and", "or")) or draw(st.integers(0, 5)) == 0:
        text = "(" + text + ")"
    return text


@st.composite
def rules(draw):
    ast = draw(asts)
    return ast, render(draw, ast)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules(), tables())
def test_random_rules_match_the_reference_or_raise_rule_error(rule, table):
    ast, text = rule
    data, n = table
    try:
        check(ast)
        valid = True
    except Invalid:
        valid = False
    try:
        mask = compile_mask(text, P_SCHEMA)
    except cf.RuleError:
        assert not valid, f"refused a valid rule: {text!r}"
        return
    assert valid, f"accepted an invalid rule: {text!r}"
    got = mask(to_arrow(data))
    want = [reference(ast, {c: data[c][i] for c in P_COLUMNS}) is True for i in range(n)]
    assert got.dtype == bool and got.tolist() == want, text


TOKENS = [
    "x", "y", "s", "`my col`", "`in`", "nope", "==", "!=", "<", ">=", "=", "<>", "and", "or", "not", "in", "is",
    "null", "true", "false", "(", ")", ",", "1", "-2.5", "1e3", "'a'", '"b"', "'", "`", "$", "\\",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(st.sampled_from(TOKENS), max_size=12).map(" ".join)))
def test_any_text_is_a_rule_or_a_rule_error(text):
    try:
        mask = compile_mask(text, P_SCHEMA)
    except cf.RuleError as err:
        assert 0 <= err.position <= len(text)
        return
    data = {c: [None, NUMBERS[1] if k == "numeric" else "a"] for c, k in P_COLUMNS.items()}
    got = mask(to_arrow(data))
    assert got.dtype == bool and got.shape == (2,)
