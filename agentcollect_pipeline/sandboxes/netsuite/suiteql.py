"""A small SuiteQL engine for the NetSuite sandbox: parse a SELECT, run it over in-memory tables.

The subset is what an AR integration sends (reference §4.2 item 4): `SELECT cols | * | aggregates`,
`FROM table [alias]` with `[LEFT|INNER] JOIN ... ON`, `WHERE` with `= != <> < > <= >= IN LIKE BETWEEN
IS [NOT] NULL AND OR NOT`, `ORDER BY`, and the functions `TO_DATE`, `TO_TIMESTAMP`, `TO_CHAR`,
`BUILTIN.DF`, `NVL`, `COALESCE`, `UPPER`, `LOWER`. Values keep Python types inside (int ids, Decimal
money, date, aware UTC datetime, 'T'/'F' strings); `render()` turns them into the strings SuiteQL returns.

Errors mirror NetSuite's wording ("Invalid search query. Detailed unprocessed description follows. ...")
so a client that reads the detail sees what it would see in production.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["Catalog", "SuiteQLError", "Table", "check_limit", "execute", "render", "to_char"]

TEXT, INT, MONEY, DATE, DATETIME, BOOL = "text", "int", "money", "date", "datetime", "bool"

_PREFIX = "Invalid search query. Detailed unprocessed description follows. "


class SuiteQLError(Exception):
    """A query NetSuite would refuse with 400 INVALID_PARAMETER; `detail` is the o:errorDetails text."""

    def __init__(self, message: str, *, search_error: bool = True) -> None:
        self.detail = _PREFIX + ("Search error occurred: " if search_error else "") + message
        super().__init__(self.detail)


@dataclass(frozen=True)
class Table:
    name: str
    columns: Mapping[str, str]  # column -> type, in SELECT * order
    rows: Callable[[], Iterable[Mapping[str, Any]]]
    # BUILTIN.DF per column: (value, the whole row) -> display text
    display: Mapping[str, Callable[[Any, Mapping[str, Any]], str | None]] = field(default_factory=dict)


@dataclass
class Catalog:
    tables: Mapping[str, Table]
    timezone: ZoneInfo
    now: Callable[[], datetime]


# ---------------------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<qident>"[^"]+")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_$#]*)
  | (?P<op><=|>=|<>|!=|\|\||[=<>(),.*+\-/])
    """,
    re.VERBOSE | re.DOTALL,
)

KEYWORDS = frozenset((
    "SELECT", "DISTINCT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "AS", "ON",
    "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "FULL", "CROSS", "ORDER", "BY", "ASC", "DESC", "BETWEEN",
    "GROUP", "HAVING", "UNION", "NULLS", "ESCAPE", "CASE", "WHEN", "THEN", "ELSE", "END",
))


@dataclass(frozen=True)
class _Tok:
    kind: str  # string | number | ident | keyword | op | end
    value: str
    pos: int


def _tokenize(sql: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN_RE.match(sql, pos)
        if match is None:
            raise SuiteQLError(f"Syntax error near position {pos}: {sql[pos:pos + 20]!r}", search_error=False)
        kind = match.lastgroup or ""
        text = match.group()
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "string":
            tokens.append(_Tok("string", text[1:-1].replace("''", "'"), match.start()))
        elif kind == "qident":
            tokens.append(_Tok("ident", text[1:-1].lower(), match.start()))
        elif kind == "ident":
            upper = text.upper()
            if upper in KEYWORDS:
                tokens.append(_Tok("keyword", upper, match.start()))
            else:
                tokens.append(_Tok("ident", text.lower(), match.start()))
        else:
            tokens.append(_Tok(kind, text, match.start()))
    tokens.append(_Tok("end", "", len(sql)))
    return tokens


# ---------------------------------------------------------------------------------------------------------
# Syntax tree (tuples keep it small): ("col", qualifier|None, name) ("lit", value) ("func", name, args)
# ("agg", name, arg|None, distinct) ("bin", op, l, r) ("and", l, r) ("or", l, r) ("not", e)
# ("in", e, items, negated) ("like", e, pattern, negated) ("null", e, negated)
# ("between", e, low, high, negated) ("neg", e) ("case", [(cond, value)], else)

_AGGREGATES = {"COUNT", "MAX", "MIN", "SUM", "AVG"}


@dataclass
class _Join:
    kind: str  # inner | left
    table: str
    alias: str
    on: Any


@dataclass
class _Select:
    items: list[tuple[Any, str | None]] | None  # None means *
    distinct: bool
    table: str
    alias: str
    joins: list[_Join]
    where: Any
    order: list[tuple[Any, bool, bool | None]]  # (expr, descending, nulls_first)


class _Parser:
    def __init__(self, sql: str) -> None:
        self.tokens = _tokenize(sql)
        self.i = 0

    # -- helpers
    def peek(self, offset: int = 0) -> _Tok:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def next(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    def accept(self, kind: str, value: str | None = None) -> _Tok | None:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            return self.next()
        return None

    def keyword(self, *words: str) -> bool:
        if self.peek().kind == "keyword" and self.peek().value in words:
            self.next()
            return True
        return False

    def expect(self, kind: str, value: str | None = None) -> _Tok:
        tok = self.accept(kind, value)
        if tok is None:
            got = self.peek()
            wanted = value or kind
            raise SuiteQLError(f"Syntax error: expected {wanted} at position {got.pos}, found {got.value or 'end'!r}",
                               search_error=False)
        return tok

    # -- grammar
    def parse(self) -> _Select:
        self.expect("keyword", "SELECT")
        distinct = self.keyword("DISTINCT")
        items = self.select_list()
        self.expect("keyword", "FROM")
        table, alias = self.table_ref()
        joins = []
        while True:
            kind = self.join_kind()
            if kind is None:
                break
            jtable, jalias = self.table_ref()
            self.expect("keyword", "ON")
            joins.append(_Join(kind, jtable, jalias, self.expr()))
        where = self.expr() if self.keyword("WHERE") else None
        if self.peek().kind == "keyword" and self.peek().value in ("GROUP", "HAVING", "UNION"):
            raise SuiteQLError(f"{self.peek().value} is not supported by this sandbox", search_error=False)
        order = []
        if self.keyword("ORDER"):
            self.expect("keyword", "BY")
            while True:
                expr = self.expr()
                descending = self.keyword("DESC")
                if not descending:
                    self.keyword("ASC")
                nulls_first = None
                if self.keyword("NULLS"):
                    word = self.expect("ident").value
                    if word not in ("first", "last"):
                        raise SuiteQLError("NULLS must be followed by FIRST or LAST", search_error=False)
                    nulls_first = word == "first"
                order.append((expr, descending, nulls_first))
                if not self.accept("op", ","):
                    break
        if self.peek().kind != "end":
            tok = self.peek()
            raise SuiteQLError(f"Syntax error near {tok.value!r} at position {tok.pos}", search_error=False)
        return _Select(items, distinct, table, alias, joins, where, order)

    def join_kind(self) -> str | None:
        if self.keyword("JOIN"):
            return "inner"
        if self.keyword("INNER"):
            self.expect("keyword", "JOIN")
            return "inner"
        if self.keyword("LEFT"):
            self.keyword("OUTER")
            self.expect("keyword", "JOIN")
            return "left"
        if self.peek().kind == "keyword" and self.peek().value in ("RIGHT", "FULL", "CROSS"):
            raise SuiteQLError(f"{self.peek().value} JOIN is not supported by this sandbox", search_error=False)
        return None

    def table_ref(self) -> tuple[str, str]:
        name = self.expect("ident").value
        self.keyword("AS")
        alias_tok = self.accept("ident")
        return name, (alias_tok.value if alias_tok else name)

    def select_list(self) -> list[tuple[Any, str | None]] | None:
        if self.accept("op", "*"):
            return None
        items = []
        while True:
            expr = self.expr()
            alias = None
            if self.keyword("AS"):
                alias = self.expect("ident").value
            elif self.peek().kind == "ident":
                alias = self.next().value
            items.append((expr, alias))
            if not self.accept("op", ","):
                return items

    def expr(self) -> Any:
        left = self.and_expr()
        while self.keyword("OR"):
            left = ("or", left, self.and_expr())
        return left

    def and_expr(self) -> Any:
        left = self.not_expr()
        while self.keyword("AND"):
            left = ("and", left, self.not_expr())
        return left

    def not_expr(self) -> Any:
        if self.keyword("NOT"):
            return ("not", self.not_expr())
        return self.predicate()

    def predicate(self) -> Any:
        left = self.additive()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("=", "!=", "<>", "<", ">", "<=", ">="):
            self.next()
            op = "!=" if tok.value == "<>" else tok.value
            return ("bin", op, left, self.additive())
        negated = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect("op", "(")
            items = [self.additive()]
            while self.accept("op", ","):
                items.append(self.additive())
            self.expect("op", ")")
            return ("in", left, items, negated)
        if self.keyword("LIKE"):
            pattern = self.additive()
            if self.keyword("ESCAPE"):
                raise SuiteQLError("LIKE ... ESCAPE is not supported by this sandbox", search_error=False)
            return ("like", left, pattern, negated)
        if self.keyword("BETWEEN"):
            low = self.additive()
            self.expect("keyword", "AND")
            return ("between", left, low, self.additive(), negated)
        if negated:
            raise SuiteQLError(f"Syntax error near NOT at position {tok.pos}", search_error=False)
        if self.keyword("IS"):
            is_not = self.keyword("NOT")
            self.expect("keyword", "NULL")
            return ("null", left, is_not)
        return left

    def additive(self) -> Any:
        left = self.multiplicative()
        while self.peek().kind == "op" and self.peek().value in ("+", "-", "||"):
            op = self.next().value
            left = ("bin", op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Any:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().value in ("*", "/"):
            op = self.next().value
            left = ("bin", op, left, self.unary())
        return left

    def unary(self) -> Any:
        if self.accept("op", "-"):
            return ("neg", self.unary())
        return self.primary()

    def primary(self) -> Any:
        tok = self.next()
        if tok.kind == "number":
            return ("lit", Decimal(tok.value) if "." in tok.value else int(tok.value))
        if tok.kind == "string":
            return ("lit", tok.value)
        if tok.kind == "keyword" and tok.value == "NULL":
            return ("lit", None)
        if tok.kind == "keyword" and tok.value == "CASE":
            return self.case()
        if tok.kind == "op" and tok.value == "(":
            inner = self.expr()
            self.expect("op", ")")
            return inner
        if tok.kind == "ident":
            name = tok.value
            if self.accept("op", "."):
                member = self.expect("ident").value
                if self.peek().kind == "op" and self.peek().value == "(":
                    return self.call(f"{name}.{member}")
                return ("col", name, member)
            if self.peek().kind == "op" and self.peek().value == "(":
                return self.call(name)
            return ("col", None, name)
        raise SuiteQLError(f"Syntax error near {tok.value or 'end'!r} at position {tok.pos}", search_error=False)

    def case(self) -> Any:
        branches = []
        while self.keyword("WHEN"):
            cond = self.expr()
            self.expect("keyword", "THEN")
            branches.append((cond, self.expr()))
        otherwise = self.expr() if self.keyword("ELSE") else ("lit", None)
        self.expect("keyword", "END")
        if not branches:
            raise SuiteQLError("CASE without WHEN", search_error=False)
        return ("case", branches, otherwise)

    def call(self, name: str) -> Any:
        self.expect("op", "(")
        upper = name.upper()
        if upper in _AGGREGATES:
            distinct = self.keyword("DISTINCT")
            if self.accept("op", "*"):
                if upper != "COUNT":
                    raise SuiteQLError(f"{upper}(*) is not valid", search_error=False)
                arg = None
            else:
                arg = self.expr()
            self.expect("op", ")")
            return ("agg", upper, arg, distinct)
        args = []
        if not self.accept("op", ")"):
            args.append(self.expr())
            while self.accept("op", ","):
                args.append(self.expr())
            self.expect("op", ")")
        return ("func", upper, args)


# ---------------------------------------------------------------------------------------------------------
# Values: coercion, comparison, formats


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def _parse_loose(text: str, tz: ZoneInfo) -> date | datetime | None:
    """A string compared with a date: ISO or M/D/YYYY, as NetSuite's implicit conversion would accept."""
    text = text.strip()
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=tz).astimezone(UTC)
        except ValueError:
            pass
    for pattern in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text, pattern).date()
        except ValueError:
            pass
    return None


def _number(value: Any) -> Decimal | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return value
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return None
        return parsed if parsed.is_finite() else None
    return None


def _compare(a: Any, b: Any, tz: ZoneInfo) -> int | None:
    """-1/0/1, or None when either side is NULL or the values cannot be compared (treated as false)."""
    if a is None or b is None:
        return None
    if isinstance(a, date | datetime) or isinstance(b, date | datetime):
        a, b = _as_time(a, tz), _as_time(b, tz)
        if a is None or b is None:
            return None
        if isinstance(a, datetime) != isinstance(b, datetime):
            a = a if isinstance(a, datetime) else _local_midnight(a, tz)
            b = b if isinstance(b, datetime) else _local_midnight(b, tz)
    elif isinstance(a, int | Decimal) or isinstance(b, int | Decimal):
        a, b = _number(a), _number(b)
        if a is None or b is None:
            return None
    else:
        a, b = str(a), str(b)
    return (a > b) - (a < b)


def _as_time(value: Any, tz: ZoneInfo) -> date | datetime | None:
    if isinstance(value, date | datetime):
        return value
    if isinstance(value, str):
        return _parse_loose(value, tz)
    return None


_FORMAT_TOKEN = re.compile(r'YYYY|HH24|HH12|HH|MM|DD|MI|SS|AM|PM|"[^"]*"|.', re.IGNORECASE | re.DOTALL)


def _format_tokens(fmt: str) -> list[str]:
    return _FORMAT_TOKEN.findall(fmt)


def to_char(value: Any, fmt: str | None, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    if fmt is None or not isinstance(value, date | datetime):
        return render(value, tz)
    moment = value.astimezone(tz) if isinstance(value, datetime) else datetime.combine(value, time())
    out = []
    for token in _format_tokens(fmt):
        upper = token.upper()
        if upper == "YYYY":
            out.append(f"{moment.year:04d}")
        elif upper == "MM":
            out.append(f"{moment.month:02d}")
        elif upper == "DD":
            out.append(f"{moment.day:02d}")
        elif upper == "HH24":
            out.append(f"{moment.hour:02d}")
        elif upper in ("HH", "HH12"):
            out.append(f"{(moment.hour % 12) or 12:02d}")
        elif upper == "MI":
            out.append(f"{moment.minute:02d}")
        elif upper == "SS":
            out.append(f"{moment.second:02d}")
        elif upper in ("AM", "PM"):
            out.append("AM" if moment.hour < 12 else "PM")
        elif token.startswith('"'):
            out.append(token[1:-1])
        else:
            out.append(token)
    return "".join(out)


def parse_with_format(text: str, fmt: str, tz: ZoneInfo, *, timestamp: bool) -> date | datetime:
    """TO_DATE / TO_TIMESTAMP: Oracle-style format tokens to a value; timestamps are read in `tz`."""
    pattern = []
    has_time = False
    for token in _format_tokens(fmt):
        upper = token.upper()
        if upper == "YYYY":
            pattern.append("%Y")
        elif upper == "MM":
            pattern.append("%m")
        elif upper == "DD":
            pattern.append("%d")
        elif upper == "HH24":
            pattern.append("%H")
            has_time = True
        elif upper in ("HH", "HH12"):
            pattern.append("%I")
            has_time = True
        elif upper == "MI":
            pattern.append("%M")
            has_time = True
        elif upper == "SS":
            pattern.append("%S")
            has_time = True
        elif upper in ("AM", "PM"):
            pattern.append("%p")
        elif token.startswith('"'):
            pattern.append(token[1:-1].replace("%", "%%"))
        else:
            pattern.append(token.replace("%", "%%"))
    try:
        parsed = datetime.strptime(text.strip(), "".join(pattern))
    except ValueError:
        raise SuiteQLError(f"Invalid date value {text!r} for format {fmt!r}") from None
    if timestamp or has_time:
        return parsed.replace(tzinfo=tz).astimezone(UTC)
    return parsed.date()


def render(value: Any, tz: ZoneInfo) -> str | None:
    """How SuiteQL writes a value: strings throughout, M/D/YYYY for dates (date only, local time)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        local = value.astimezone(tz)
        return f"{local.month}/{local.day}/{local.year}"
    if isinstance(value, date):
        return f"{value.month}/{value.day}/{value.year}"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


# ---------------------------------------------------------------------------------------------------------
# Compilation: syntax tree -> closures over a row context {alias: record or None}

Row = Mapping[str, Mapping[str, Any] | None]
Fn = Callable[[Row], Any]


@dataclass
class _Scope:
    catalog: Catalog
    aliases: list[tuple[str, Table]]  # in FROM/JOIN order
    select_aliases: dict[str, int] = field(default_factory=dict)  # only for ORDER BY

    def resolve(self, qualifier: str | None, name: str) -> tuple[str, Table]:
        if qualifier is not None:
            for alias, table in self.aliases:
                if qualifier in (alias, table.name):
                    if name not in table.columns:
                        raise SuiteQLError(
                            f"Field '{name}' for record '{table.name}' was not found. "
                            "Reason: NOT_EXPOSED - Not available for channel SEARCH"
                        )
                    return alias, table
            raise SuiteQLError(f"Unknown identifier '{qualifier}.{name}'. Available identifiers are: "
                               f"{self.identifiers()}.")
        for alias, table in self.aliases:
            if name in table.columns:
                return alias, table
        raise SuiteQLError(f"Unknown identifier '{name}'. Available identifiers are: {self.identifiers()}.")

    def identifiers(self) -> str:
        return "{" + ", ".join(f"{alias}={table.name}" for alias, table in self.aliases) + "}"


def _compile(node: Any, scope: _Scope) -> Fn:
    kind = node[0]
    tz = scope.catalog.timezone
    if kind == "lit":
        value = node[1]
        return lambda row: value
    if kind == "col":
        return _compile_column(node, scope)
    if kind == "neg":
        inner = _compile(node[1], scope)

        def negate(row: Row) -> Any:
            value = _number(inner(row))
            return None if value is None else -value

        return negate
    if kind == "bin":
        return _compile_binary(node, scope)
    if kind == "and":
        left, right = _compile(node[1], scope), _compile(node[2], scope)
        return lambda row: bool(left(row)) and bool(right(row))
    if kind == "or":
        left, right = _compile(node[1], scope), _compile(node[2], scope)
        return lambda row: bool(left(row)) or bool(right(row))
    if kind == "not":
        inner = _compile(node[1], scope)
        return lambda row: not inner(row)
    if kind == "null":
        inner, negated = _compile(node[1], scope), node[2]
        return lambda row: (inner(row) is not None) if negated else (inner(row) is None)
    if kind == "in":
        return _compile_in(node, scope)
    if kind == "like":
        return _compile_like(node, scope)
    if kind == "between":
        value, low, high, negated = (_compile(node[1], scope), _compile(node[2], scope), _compile(node[3], scope),
                                     node[4])

        def between(row: Row) -> bool:
            v = value(row)
            lo, hi = _compare(v, low(row), tz), _compare(v, high(row), tz)
            if lo is None or hi is None:
                return False
            return (lo >= 0 and hi <= 0) != negated

        return between
    if kind == "func":
        return _compile_function(node, scope)
    if kind == "case":
        branches = [(_compile(cond, scope), _compile(value, scope)) for cond, value in node[1]]
        otherwise = _compile(node[2], scope)

        def case(row: Row) -> Any:
            for cond, value in branches:
                if cond(row):
                    return value(row)
            return otherwise(row)

        return case
    if kind == "agg":
        raise SuiteQLError(f"{node[1]} is only allowed in the select list of a query without GROUP BY",
                           search_error=False)
    raise SuiteQLError(f"unsupported expression {kind}", search_error=False)


_SPECIAL_IDENTIFIERS = ("sysdate", "current_date", "current_timestamp")


def _compile_column(node: Any, scope: _Scope) -> Fn:
    _, qualifier, name = node
    if qualifier is None and name in scope.select_aliases:
        position = scope.select_aliases[name]
        return lambda row: row["__select__"][position]  # type: ignore[index]
    if qualifier is None and name in _SPECIAL_IDENTIFIERS and not any(name in t.columns for _, t in scope.aliases):
        now = scope.catalog.now
        if name == "current_date":
            tz = scope.catalog.timezone
            return lambda row: now().astimezone(tz).date()
        return lambda row: now()
    alias, _ = scope.resolve(qualifier, name)

    def column(row: Row) -> Any:
        record = row[alias]
        return None if record is None else record.get(name)

    return column


def _compile_binary(node: Any, scope: _Scope) -> Fn:
    _, op, left_node, right_node = node
    left, right = _compile(left_node, scope), _compile(right_node, scope)
    tz = scope.catalog.timezone
    if op == "||":
        return lambda row: "".join(render(v, tz) or "" for v in (left(row), right(row)))
    if op in ("+", "-", "*", "/"):
        def arithmetic(row: Row) -> Any:
            a, b = _number(left(row)), _number(right(row))
            if a is None or b is None:
                return None
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            return None if b == 0 else Decimal(a) / Decimal(b)

        return arithmetic
    tests = {"=": lambda c: c == 0, "!=": lambda c: c != 0, "<": lambda c: c < 0, ">": lambda c: c > 0,
             "<=": lambda c: c <= 0, ">=": lambda c: c >= 0}
    test = tests[op]

    def comparison(row: Row) -> bool:
        result = _compare(left(row), right(row), tz)
        return result is not None and test(result)

    return comparison


def _compile_in(node: Any, scope: _Scope) -> Fn:
    _, value_node, item_nodes, negated = node
    value = _compile(value_node, scope)
    items = [_compile(item, scope) for item in item_nodes]
    tz = scope.catalog.timezone
    constants = all(item[0] == "lit" for item in item_nodes)
    if constants:
        # Long literal lists (a batch of ids) are the common case: match by normalised key, not one by one.
        keys = {_in_key(item[1]) for item in item_nodes if item[1] is not None}

        def member(row: Row) -> bool:
            v = value(row)
            return v is not None and ((_in_key(v) in keys) != negated)

        return member

    def member_slow(row: Row) -> bool:
        v = value(row)
        found = any(_compare(v, item(row), tz) == 0 for item in items)
        return v is not None and (found != negated)

    return member_slow


def _in_key(value: Any) -> Any:
    number = _number(value)
    if number is not None and not isinstance(value, date | datetime):
        return ("n", Decimal(number).normalize())
    return ("s", str(value))


def _compile_like(node: Any, scope: _Scope) -> Fn:
    _, value_node, pattern_node, negated = node
    value, pattern = _compile(value_node, scope), _compile(pattern_node, scope)
    tz = scope.catalog.timezone
    cache: dict[str, re.Pattern[str]] = {}

    def like(row: Row) -> bool:
        v, p = value(row), pattern(row)
        if v is None or p is None:
            return False
        text = str(p)
        regex = cache.get(text)
        if regex is None:
            regex = re.compile("".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in text),
                               re.DOTALL)
            cache[text] = regex
        return (regex.fullmatch(render(v, tz) or "") is not None) != negated

    return like


def _compile_function(node: Any, scope: _Scope) -> Fn:
    _, name, arg_nodes = node
    tz = scope.catalog.timezone
    if name == "BUILTIN.DF":
        if len(arg_nodes) != 1 or arg_nodes[0][0] != "col":
            raise SuiteQLError("BUILTIN.DF takes one field", search_error=False)
        _, qualifier, column = arg_nodes[0]
        alias, table = scope.resolve(qualifier, column)
        display = table.display.get(column)
        get = _compile(arg_nodes[0], scope)
        if display is None:
            return lambda row: render(get(row), tz)

        def display_form(row: Row) -> Any:
            value = get(row)
            return None if value is None else display(value, row[alias] or {})

        return display_form
    args = [_compile(arg, scope) for arg in arg_nodes]

    def arity(*counts: int) -> None:
        if len(args) not in counts:
            raise SuiteQLError(f"{name} takes {' or '.join(map(str, counts))} arguments", search_error=False)

    if name in ("TO_DATE", "TO_TIMESTAMP"):
        arity(1, 2)
        timestamp = name == "TO_TIMESTAMP"

        def convert(row: Row) -> Any:
            text = args[0](row)
            if text is None or isinstance(text, date | datetime):
                return text
            fmt = args[1](row) if len(args) == 2 else ("YYYY-MM-DD HH24:MI:SS" if timestamp else "MM/DD/YYYY")
            return parse_with_format(str(text), str(fmt), tz, timestamp=timestamp)

        return convert
    if name == "TO_CHAR":
        arity(1, 2)
        return lambda row: to_char(args[0](row), args[1](row) if len(args) == 2 else None, tz)
    if name in ("NVL", "COALESCE"):
        if name == "NVL":
            arity(2)
        return lambda row: next((v for v in (a(row) for a in args) if v is not None), None)
    if name in ("UPPER", "LOWER", "TRIM"):
        arity(1)
        method = {"UPPER": str.upper, "LOWER": str.lower, "TRIM": str.strip}[name]
        return lambda row: None if (v := args[0](row)) is None else method(render(v, tz) or "")
    if name == "ABS":
        arity(1)
        return lambda row: None if (v := _number(args[0](row))) is None else abs(v)
    raise SuiteQLError(f"Unknown function {name}", search_error=False)


# ---------------------------------------------------------------------------------------------------------
# Execution


def _output_name(node: Any, alias: str | None, position: int) -> str:
    if alias:
        return alias
    if node[0] == "col":
        return node[2]
    return f"expr{position + 1}"


def _join_rows(select: _Select, scope: _Scope) -> list[dict[str, Any]]:
    base = scope.catalog.tables[select.table]
    rows: list[dict[str, Any]] = [{select.alias: record} for record in base.rows()]
    joined_aliases = [(select.alias, base)]
    for join in select.joins:
        table = scope.catalog.tables[join.table]
        joined_aliases.append((join.alias, table))
        on = _compile(join.on, _Scope(scope.catalog, list(joined_aliases)))
        index = _equi_index(join, table, scope)
        records = list(table.rows()) if index is None else None
        out: list[dict[str, Any]] = []
        for row in rows:
            if index is not None:
                key_fn, buckets = index
                candidates = buckets.get(_in_key(key_fn(row)), ()) if key_fn(row) is not None else ()
            else:
                candidates = records or ()
            matched = False
            for record in candidates:
                trial = {**row, join.alias: record}
                if on(trial):
                    out.append(trial)
                    matched = True
            if not matched and join.kind == "left":
                out.append({**row, join.alias: None})
        rows = out
    return rows


def _equi_index(join: _Join, table: Table, scope: _Scope) -> tuple[Fn, dict[Any, list]] | None:
    """For `ON new.x = old.y`, bucket the joined table by x so the join is not a nested loop."""
    on = join.on
    if on[0] != "bin" or on[1] != "=" or on[2][0] != "col" or on[3][0] != "col":
        return None
    for mine, theirs in ((on[2], on[3]), (on[3], on[2])):
        if mine[1] == join.alias and theirs[1] not in (join.alias, None) and mine[2] in table.columns:
            earlier = [(a, t) for a, t in scope.aliases if a != join.alias]
            key_fn = _compile(theirs, _Scope(scope.catalog, earlier))
            buckets: dict[Any, list] = {}
            for record in table.rows():
                value = record.get(mine[2])
                if value is not None:
                    buckets.setdefault(_in_key(value), []).append(record)
            return key_fn, buckets
    return None


def _sort_key(value: Any, tz: ZoneInfo) -> tuple:
    if value is None:
        return (3,)
    number = _number(value) if not isinstance(value, str) else None
    if number is not None:
        return (0, number)
    if isinstance(value, datetime):
        return (1, value)
    if isinstance(value, date):
        return (1, _local_midnight(value, tz))
    return (2, str(value))


def execute(catalog: Catalog, sql: str) -> list[dict[str, Any]]:
    """Run one SELECT; rows are {output column: typed value} in result order (NULLs included)."""
    select = _Parser(sql).parse()
    for name in [select.table] + [join.table for join in select.joins]:
        if name not in catalog.tables:
            raise SuiteQLError(f"Invalid search type: {name}.", search_error=False)
    aliases = [(select.alias, catalog.tables[select.table])]
    aliases += [(join.alias, catalog.tables[join.table]) for join in select.joins]
    scope = _Scope(catalog, aliases)

    if select.items is None:
        items: list[tuple[Any, str | None]] = []
        seen: set[str] = set()
        for alias, table in aliases:
            for column in table.columns:
                if column not in seen:
                    seen.add(column)
                    items.append((("col", alias, column), column))
    else:
        items = select.items
    names = [_output_name(node, alias, position) for position, (node, alias) in enumerate(items)]
    aggregates = [node[0] == "agg" for node, _ in items]
    if any(aggregates) and not all(aggregates):
        raise SuiteQLError("Mixing aggregate and plain columns needs GROUP BY, which this sandbox does not support",
                           search_error=False)
    where = _compile(select.where, scope) if select.where is not None else None
    rows = _join_rows(select, scope)
    if where is not None:
        rows = [row for row in rows if where(row)]

    if all(aggregates) and items:
        return [dict(zip(names, (_aggregate(node, rows, scope) for node, _ in items), strict=True))]

    compiled = [_compile(node, scope) for node, _ in items]
    for row in rows:
        row["__select__"] = [fn(row) for fn in compiled]
    if select.order:
        order_scope = _Scope(catalog, aliases, {name: i for i, name in enumerate(names)})
        tz = catalog.timezone
        for expr, descending, nulls_first in reversed(select.order):
            if expr[0] == "lit" and isinstance(expr[1], int):
                position = expr[1] - 1
                if not 0 <= position < len(items):
                    raise SuiteQLError(f"ORDER BY position {expr[1]} is out of range", search_error=False)

                def key_fn(row: dict, p: int = position) -> Any:
                    return row["__select__"][p]
            else:
                key_fn = _compile(expr, order_scope)
            # Oracle: NULLs sort last ascending and first descending unless told otherwise.
            nulls_high = not nulls_first if nulls_first is not None else True
            if descending and nulls_first is not None:
                nulls_high = nulls_first

            def sort_key(row: dict, fn: Fn = key_fn, high: bool = nulls_high) -> tuple:
                key = _sort_key(fn(row), tz)
                return key if key[0] != 3 else ((3,) if high else (-1,))

            rows.sort(key=sort_key, reverse=descending)
    out = [dict(zip(names, row["__select__"], strict=True)) for row in rows]
    if select.distinct:
        unique, seen_keys = [], set()
        for record in out:
            key = tuple(_in_key(v) if v is not None else None for v in record.values())
            if key not in seen_keys:
                seen_keys.add(key)
                unique.append(record)
        out = unique
    return out


def _aggregate(node: Any, rows: Sequence[Row], scope: _Scope) -> Any:
    _, name, arg, distinct = node
    if arg is None:
        return len(rows)
    fn = _compile(arg, scope)
    values = [v for v in (fn(row) for row in rows) if v is not None]
    if distinct:
        values = list({_in_key(v): v for v in values}.values())
    if name == "COUNT":
        return len(values)
    if not values:
        return None
    if name in ("SUM", "AVG"):
        numbers = [n for n in (_number(v) for v in values) if n is not None]
        total = sum((Decimal(n) for n in numbers), Decimal(0))
        return total if name == "SUM" else (total / len(numbers) if numbers else None)
    key = lambda v: _sort_key(v, scope.catalog.timezone)  # noqa: E731
    return max(values, key=key) if name == "MAX" else min(values, key=key)


def check_limit(limit: Any, offset: Any) -> tuple[int, int]:
    """Validate the ?limit= and ?offset= query parameters as NetSuite does (limit 1..1000)."""
    try:
        limit_value = 1000 if limit in (None, "") else int(limit)
        offset_value = 0 if offset in (None, "") else int(offset)
    except ValueError:
        raise SuiteQLError("limit and offset must be integers", search_error=False) from None
    if not 1 <= limit_value <= 1000:
        raise SuiteQLError(f"Invalid limit {limit_value}: the limit must be between 1 and 1000.", search_error=False)
    if offset_value < 0:
        raise SuiteQLError("offset must not be negative", search_error=False)
    return limit_value, offset_value
