"""rankwise's filter syntax, parsed once and translated by each backend.

Two input forms, same meaning:

* a mapping (Python and HTTP)::

      {"category": "phone", "price": {"gte": 100, "lt": 500}, "brand": {"in": ["a", "b"]}}

  A bare value means equality; an operator dict may combine ``eq, ne, gt, gte, lt, lte, in``.
* strings (CLI ``--filter``, repeatable)::

      category=phone   price>=100   price<500   brand in a,b   in_stock=true

All conditions are ANDed. Values stay typed (int/float/bool/str) and are *never* pasted
into an expression without the backend's escaping (see ``quote_sql`` / Milvus'
``quote_expr``), so a product field cannot inject an expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rankwise.errors import FilterError

OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STRING_RE = re.compile(
    r"^\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>>=|<=|!=|==|=|>|<|\s+in\s+)\s*(?P<value>.*?)\s*$",
    re.S,
)
_STRING_OPS = {">=": "gte", "<=": "lte", "!=": "ne", "==": "eq", "=": "eq", ">": "gt", "<": "lt"}

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Scalar | tuple[Scalar, ...]

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Evaluate in Python (used by tests and by post-filtering fallbacks)."""
        v = record.get(self.field)
        if v is None:
            return False
        if self.op == "in":
            return v in self.value  # type: ignore[operator]
        t = self.value
        return {
            "eq": lambda: v == t,
            "ne": lambda: v != t,
            "gt": lambda: v > t,
            "gte": lambda: v >= t,
            "lt": lambda: v < t,
            "lte": lambda: v <= t,
        }[self.op]()


@dataclass(frozen=True)
class Filter:
    conditions: tuple[Condition, ...]

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(c.matches(record) for c in self.conditions)

    @property
    def fields(self) -> set[str]:
        return {c.field for c in self.conditions}


#: Every form a filter may be given in (a Filter, a mapping, ``field=value`` strings, None).
FilterSpec = Filter | Mapping[str, Any] | Iterable[str] | str | None


def _check_scalar(field: str, value: Any) -> Scalar:
    if isinstance(value, bool | int | float | str):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            raise FilterError(f"filter on '{field}': {value} is not a valid value")
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise FilterError(f"filter on '{field}': {value} does not fit a 64-bit integer")
        return value
    raise FilterError(f"filter on '{field}': value {value!r} must be a string, number or boolean")


def _coerce(text: str) -> Scalar:
    """CLI values: true/false → bool, numbers → int/float, quotes stripped, else str."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
        if f == f:
            return f
    except ValueError:
        pass
    return s


def parse_filter_string(expr: str) -> Condition:
    m = _STRING_RE.match(expr)
    if not m:
        raise FilterError(
            f"cannot parse filter {expr!r}; use field=value, field>=number, field<number, "
            "or 'field in a,b,c'"
        )
    field, op, raw = m["field"], m["op"].strip(), m["value"]
    if op == "in":
        values = tuple(_check_scalar(field, _coerce(p)) for p in raw.split(",") if p.strip())
        if not values:
            raise FilterError(f"filter {expr!r}: 'in' needs at least one value")
        return Condition(field, "in", values)
    return Condition(field, _STRING_OPS[op], _check_scalar(field, _coerce(raw)))


def build_filter(spec: FilterSpec) -> Filter | None:
    """Normalise any accepted filter form to a :class:`Filter` (or None for no filter)."""
    if spec is None or isinstance(spec, Filter):
        return spec or None
    if isinstance(spec, str):
        spec = [spec]
    conditions: list[Condition] = []
    if isinstance(spec, Mapping):
        for field, value in spec.items():
            if not isinstance(field, str) or not _FIELD_RE.match(field):
                raise FilterError(f"invalid filter field name {field!r}")
            if isinstance(value, Mapping):
                if not value:
                    raise FilterError(f"filter on '{field}': empty operator object")
                for op, v in value.items():
                    if op not in OPS:
                        raise FilterError(
                            f"filter on '{field}': unknown operator {op!r}; use one of {', '.join(OPS)}"
                        )
                    if op == "in":
                        if not isinstance(v, list | tuple) or not v:
                            raise FilterError(f"filter on '{field}': 'in' needs a non-empty list")
                        conditions.append(
                            Condition(field, "in", tuple(_check_scalar(field, x) for x in v))
                        )
                    else:
                        conditions.append(Condition(field, op, _check_scalar(field, v)))
            elif isinstance(value, list | tuple):
                if not value:
                    raise FilterError(f"filter on '{field}': empty list")
                conditions.append(
                    Condition(field, "in", tuple(_check_scalar(field, x) for x in value))
                )
            else:
                conditions.append(Condition(field, "eq", _check_scalar(field, value)))
    else:
        for item in spec:
            if not isinstance(item, str):
                raise FilterError(f"filter {item!r} must be a string like 'field=value'")
            conditions.append(parse_filter_string(item))
    return Filter(tuple(conditions)) if conditions else None


def quote_sql(value: Scalar) -> str:
    """A literal for LanceDB/DataFusion SQL: strings single-quoted with '' escaping."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def quote_ident_sql(name: str) -> str:
    if not _FIELD_RE.match(name):
        raise FilterError(f"invalid field name {name!r}")
    return f"`{name}`"


def to_sql(flt: Filter | None) -> str | None:
    """Translate to a LanceDB ``where`` clause (DataFusion SQL)."""
    if not flt:
        return None
    sym = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    parts = []
    for c in flt.conditions:
        col = quote_ident_sql(c.field)
        if c.op == "in":
            parts.append(f"{col} IN ({', '.join(quote_sql(v) for v in c.value)})")  # type: ignore[union-attr]
        else:
            parts.append(f"{col} {sym[c.op]} {quote_sql(c.value)}")  # type: ignore[arg-type]
    return " AND ".join(parts)
