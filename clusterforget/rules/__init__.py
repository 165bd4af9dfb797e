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

from .arrow import CompiledRule, parse
from .grammar import MAX_DEPTH, show_column as quote_column

MODES = ("retrain", "override")


def compile_mask(text: str, schema) -> CompiledRule:
    """The match function of a rule: ``f(table) -> np.ndarray[bool]`` (the store rebuilds overrides with it)."""
    return parse(text, schema)


__all__ = ["CompiledRule", "compile_mask", "parse", "quote_column", "MODES", "MAX_DEPTH"]
