"""The query language subset of the QuickBooks Online sandbox (reference §1.2 grammar, §4.1 item 3).

`SELECT * | count(*) FROM Entity [WHERE a op v AND ...] [ORDERBY f [ASC|DESC]] [STARTPOSITION n]
[MAXRESULTS n]` with `= < > <= >= IN LIKE('%')`; OR, JOIN and projections are refused as QBO refuses them.
String literals escape a quote as `\\'`. Also the Fault-raising `ApiError` the whole sandbox shares.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo


class ApiError(Exception):
    """A Fault answer: HTTP status, QBO code, message, detail and the Fault type."""

    def __init__(self, status: int, code: str, message: str, detail: str | None = None,
                 element: str | None = None, fault_type: str = "ValidationFault") -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.detail, self.element, self.fault_type = detail or message, element or "", fault_type


def validation_fault(code: str, message: str, detail: str, element: str | None = None) -> ApiError:
    return ApiError(400, code, message, detail, element)



_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:\\.|[^'\\])*')|(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),*])"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


def parse_error(detail: str) -> ApiError:
    return validation_fault("4000", "Error parsing query", f"QueryParserError: {detail}")


def invalid_query(detail: str) -> ApiError:
    return validation_fault("4001", "Invalid query", f"QueryValidationError: {detail}")


@dataclass
class Query:
    entity: str
    count: bool = False
    conditions: list[tuple[str, str, list[Any]]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    start: int = 1
    max_results: int | None = None


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while text[pos:].strip():
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise parse_error(f'Encountered "{text[pos:pos + 12].strip()}" at column {pos + 1}')
        kind = match.lastgroup or ""
        value: Any = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens, self.at = tokens, 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def word(self) -> str | None:
        token = self.peek()
        return token[1].upper() if token and token[0] == "word" else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise parse_error("Encountered <EOF>")
        self.at += 1
        return token

    def expect(self, kind: str, value: str | None = None) -> Any:
        token = self.take()
        matches = token[0] == kind and (value is None or str(token[1]).upper() == value)
        if not matches:
            raise parse_error(f'Encountered "{token[1]}"; was expecting {value or kind}')
        return token[1]

    def parse(self) -> Query:
        self.expect("word", "SELECT")
        count = False
        if self.peek() == ("punct", "*"):
            self.take()
        elif self.word() == "COUNT":
            self.take()
            self.expect("punct", "(")
            self.expect("punct", "*")
            self.expect("punct", ")")
            count = True
        else:
            raise invalid_query("projections are not supported: use SELECT * or SELECT count(*)")
        self.expect("word", "FROM")
        query = Query(entity=self.expect("word"), count=count)
        if self.word() == "WHERE":
            self.take()
            query.conditions.append(self.condition())
            while self.word() == "AND":
                self.take()
                query.conditions.append(self.condition())
        self.clauses(query)
        return query

    def clauses(self, query: Query) -> None:
        while self.peek() is not None:
            word = self.word()
            if word in ("OR", "JOIN", "GROUP", "HAVING"):
                raise parse_error(f"{word} is not supported by the QuickBooks query language")
            if word in ("ORDERBY", "ORDER"):
                self.take()
                if word == "ORDER":
                    self.expect("word", "BY")
                query.order.append(self.sort_term())
                while self.peek() == ("punct", ","):
                    self.take()
                    query.order.append(self.sort_term())
            elif word in ("STARTPOSITION", "MAXRESULTS"):
                self.take()
                number = int(Decimal(self.expect("num")))
                if word == "STARTPOSITION":
                    query.start = max(number, 1)
                else:
                    query.max_results = number
            else:
                raise parse_error(f'Encountered "{self.take()[1]}"')

    def sort_term(self) -> tuple[str, bool]:
        name = self.expect("word")
        descending = False
        if self.word() in ("ASC", "DESC"):
            descending = self.take()[1].upper() == "DESC"
        return name, descending

    def condition(self) -> tuple[str, str, list[Any]]:
        name = self.expect("word")
        word = self.word()
        if word == "IN":
            self.take()
            self.expect("punct", "(")
            values = [self.value()]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.value())
            self.expect("punct", ")")
            return name, "IN", values
        if word == "LIKE":
            self.take()
            return name, "LIKE", [self.expect("str")]
        op = self.expect("op")
        return name, "!=" if op == "<>" else op, [self.value()]

    def value(self) -> Any:
        kind, value = self.take()
        if kind in ("str", "num"):
            return value
        if kind == "word" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise parse_error(f'Encountered "{value}"; was expecting a value')


def parse_query(text: str) -> Query:
    return _Parser(_tokens(text)).parse()


# Queryable (and sortable) properties: lower-cased dotted name -> (path in the record, kind).
COMMON_FIELDS = {
    "id": (("Id",), "id"),
    "metadata.createtime": (("MetaData", "CreateTime"), "datetime"),
    "metadata.lastupdatedtime": (("MetaData", "LastUpdatedTime"), "datetime"),
}
QUERYABLE: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "Invoice": {"docnumber": (("DocNumber",), "str"), "txndate": (("TxnDate",), "date"),
                "duedate": (("DueDate",), "date"), "balance": (("Balance",), "money"),
                "totalamt": (("TotalAmt",), "money"), "customerref": (("CustomerRef", "value"), "id")},
    "Customer": {"displayname": (("DisplayName",), "str"), "companyname": (("CompanyName",), "str"),
                 "givenname": (("GivenName",), "str"), "familyname": (("FamilyName",), "str"),
                 "primaryemailaddr": (("PrimaryEmailAddr", "Address"), "str"), "active": (("Active",), "bool"),
                 "balance": (("Balance",), "money"), "customertyperef": (("CustomerTypeRef", "value"), "id")},
    "Payment": {"txndate": (("TxnDate",), "date"), "totalamt": (("TotalAmt",), "money"),
                "customerref": (("CustomerRef", "value"), "id"), "paymentrefnum": (("PaymentRefNum",), "str")},
    "Attachable": {"attachableref.entityref.type": (("AttachableRef", "EntityRef", "type"), "ci"),
                   "attachableref.entityref.value": (("AttachableRef", "EntityRef", "value"), "id")},
    "CustomerType": {"name": (("Name",), "str"), "active": (("Active",), "bool")},
    "CompanyInfo": {},
}


def values_at(record: Any, path: tuple[str, ...]) -> list[Any]:
    """Every value at `path`; arrays on the way (AttachableRef) fan out."""
    if not path:
        return [record] if record is not None else []
    if isinstance(record, list):
        return [v for item in record for v in values_at(item, path)]
    if not isinstance(record, dict) or path[0] not in record:
        return []
    return values_at(record[path[0]], path[1:])


def comparable(kind: str, value: Any, zone: ZoneInfo) -> Any:
    """Stored value or query literal -> something `<`/`==` order correctly. Raises ValueError."""
    if kind == "id":
        text = str(value).strip()
        return (0, int(text), "") if text.isdigit() else (1, 0, text)
    if kind == "str":
        return str(value)
    if kind == "ci":
        return str(value).lower()
    if kind == "date":
        return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])
    if kind == "datetime":
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        text = str(value).strip()
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), zone).astimezone(UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    if kind == "money":
        if isinstance(value, bool):
            raise ValueError("boolean is not an amount")
        amount = Decimal(str(value))
        if not amount.is_finite():
            raise ValueError("not finite")
        return amount
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError("not a boolean")
    raise ValueError(f"unknown kind {kind}")


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}


def like_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("%")) + "$", re.IGNORECASE | re.S)
