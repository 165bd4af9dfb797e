"""The rule grammar: text -> syntax tree (lark, LALR), and the positioned ``RuleError``s of bad input.

The language is described in ``clusterforget.rules``; this module knows nothing of columns or data.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from ..errors import RuleError

MAX_DEPTH = 100  # nesting of parentheses / not
# Bounds on rule size: pyarrow's expression code crashes the process (segfault) on ~10,000 or-ed terms,
# so anything larger than a business rule is refused as a RuleError before it reaches Arrow.
MAX_TERMS = 4_000  # comparisons / in / is null predicates in one rule
MAX_RULE_CHARS = 100_000
_PREDICATES = frozenset({"compare", "isin", "notin", "isnull", "notnull"})

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



def parse_tree(text: str):
    """The syntax tree of ``text``; raises ``RuleError`` (with ``.position``) if it is not a rule."""
    if not isinstance(text, str):
        raise RuleError(f"a rule is a string such as \"fare == 0\", got {type(text).__name__} {text!r}")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"the rule has {len(text):,} characters (more than {MAX_RULE_CHARS:,}) and too many terms; split it "
            "into several rules, or use `column in (...)` for long lists of values"
        )
    from lark.exceptions import UnexpectedInput

    try:
        tree = _get_parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except RecursionError:
        raise RuleError(f"the rule is nested more than {MAX_DEPTH} levels deep; simplify it") from None
    terms = sum(1 for t in tree.iter_subtrees() if t.data in _PREDICATES)
    if terms > MAX_TERMS:
        raise RuleError(
            f"the rule has {terms:,} terms (more than {MAX_TERMS:,}); split it into several rules, or use "
            "`column in (...)` for long lists of values"
        )
    return tree


# comparison operators as written -> their meaning (both spellings of equal and not equal)
COMPARISONS = {"==": "==", "=": "==", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_UNESCAPE = re.compile(r"\\(.)", re.S)


def unquote(raw: str) -> str:
    """The text of a quoted token (a `column` name or a 'string'), without its quotes and escapes."""
    return _UNESCAPE.sub(r"\1", raw[1:-1])


def show_column(name: str) -> str:
    """How to write column ``name`` in a rule (backticks when it is not a plain name)."""
    if re.fullmatch(r"[^\W\d]\w*", name) and name.lower() not in _KEYWORDS:
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
