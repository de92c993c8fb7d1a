"""Business signals and behaviour as ranking features.

- **Event log**: JSONL, one event a line: ``{query, product_id, event, user_id?, ts,
  position?}`` with ``event`` one of ``click``, ``add_to_cart``, ``purchase``; ``ts`` epoch
  seconds or an ISO-8601 time; ``position`` the 1-based rank the product was shown at (needed
  for position-bias correction). :func:`read_events` validates every line and raises one
  :class:`~rankwise.errors.DataError` naming the file, line and field of each bad line.
- **Behaviour features** (:class:`Behaviour`): per (query, product) the events it got,
  inverse-propensity weighted when positions and a propensity model are given (a click at rank
  r counts ``1 / P(examined at r)``, ``P = (1/r)^eta``: Joachims et al. 2017's IPW), per product
  its events from *other* queries (popularity), and per user the affinity to the product's
  category and brand: the user's share of events on it, smoothed towards the population's
  share (``prior_events`` pseudo-events); a user with no history (cold start) gets the
  population's share.
- **Numeric product fields** (popularity, stock, price, margin, recency, ...) are read
  from the record as they are; missing values are NaN (LightGBM routes them).

Queries are matched case- and space-insensitively.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.errors import DataError

#: Event names and their gain as a training label (purchase > add-to-cart > click).
EVENTS: dict[str, int] = {"click": 1, "add_to_cart": 2, "purchase": 3}
BEHAVIOUR_FEATURES = (
    "q_clicks",
    "q_carts",
    "q_purchases",
    "p_events",
    "user_category_affinity",
    "user_brand_affinity",
    "user_events",
    "q_logged",
)
#: Features that exist only for queries the log has seen (zero for a new query).
QUERY_FEATURES = ("q_clicks", "q_carts", "q_purchases", "q_logged")
_MAX_REPORTED = 20


@dataclass(frozen=True)
class Event:
    query: str
    product_id: str
    event: str
    ts: float
    user_id: str | None = None
    position: int | None = None


def normalise_query(q: str) -> str:
    return " ".join(q.lower().split())


def _ts(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("must be epoch seconds or an ISO-8601 time, not a boolean")
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return float(v)
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO-8601 time (e.g. 2026-12-01T10:00:00Z)") from None
    raise ValueError(f"must be epoch seconds or an ISO-8601 time, got {type(v).__name__}")


def parse_event(obj: Any) -> Event:
    """One validated event; ``ValueError("field 'x': ...")`` naming the bad field."""
    if not isinstance(obj, dict):
        raise ValueError(f"must be a JSON object, got {type(obj).__name__}")

    def need(name: str) -> Any:
        if obj.get(name) is None:
            raise ValueError(f"field '{name}': missing (required: query, product_id, event, ts)")
        return obj[name]

    query = need("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("field 'query': must be a non-empty string")
    pid = need("product_id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or str(pid) == "":
        raise ValueError("field 'product_id': must be a non-empty string or an integer")
    event = need("event")
    if event not in EVENTS:
        raise ValueError(f"field 'event': {event!r} is not one of {', '.join(EVENTS)}")
    try:
        ts = _ts(need("ts"))
    except ValueError as e:
        if str(e).startswith("field"):
            raise
        raise ValueError(f"field 'ts': {e}") from None
    user = obj.get("user_id")
    if user is not None and (isinstance(user, bool) or not isinstance(user, (str, int))):
        raise ValueError("field 'user_id': must be a string or an integer")
    pos = obj.get("position")
    if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int) or pos < 1):
        raise ValueError("field 'position': must be an integer >= 1 (the rank shown)")
    return Event(query, str(pid), event, ts, None if user is None else str(user), pos)


def parse_lines(
    path: str | Path, lines: Iterable[str], first_no: int = 1
) -> tuple[list[Event], list[str]]:
    """Events of ``lines`` (numbered from ``first_no``) and one message per bad line
    (``file:line: field 'x': problem``); blank lines are skipped."""
    events: list[Event] = []
    errors: list[str] = []
    for no, line in enumerate(lines, first_no):
        if not line.strip():
            continue
        try:
            events.append(parse_event(json.loads(line)))
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{no}: not JSON ({e.msg} at column {e.colno})")
        except ValueError as e:
            errors.append(f"{path}:{no}: {e}")
    return events, errors


def error_summary(path: str | Path, errors: Sequence[str]) -> str:
    """One message for many bad lines (the first 20 listed)."""
    shown = "\n  ".join(errors[:_MAX_REPORTED])
    more = f"\n  ... and {len(errors) - _MAX_REPORTED} more" if len(errors) > _MAX_REPORTED else ""
    return f"{len(errors)} invalid line(s) in event log {path}:\n  {shown}{more}"


def read_events(path: str | Path) -> list[Event]:
    """All events of a JSONL log; one :class:`DataError` listing each bad line (file:line:
    field: problem, the first 20) when any line is invalid. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"event log {path} does not exist")
    with path.open(encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 ({e})") from None
    events, errors = parse_lines(path, lines)
    if errors:
        raise DataError(error_summary(path, errors))
    if not events:
        raise DataError(f"event log {path} holds no events")
    return events


def propensity(position: int | None, eta: float | None) -> float:
    """P(examined at ``position``) = (1/position)^eta; 1 without a position or model."""
    if position is None or eta is None:
        return 1.0
    return float(position) ** (-eta)


class Behaviour:
    """Behaviour features from an event log (see the module docstring).

    Args:
        events: validated events (:func:`read_events`).
        records: product id → record, for the category and brand of products users touched.
        eta: position-bias exponent for inverse propensity weighting (``None``: no weighting).
        category_field, brand_field: the record fields personal affinities use.
        prior_events: pseudo-events pulling a user's affinity towards the population's.
    """

    def __init__(
        self,
        events: Iterable[Event],
        records: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        eta: float | None = None,
        category_field: str = "category",
        brand_field: str = "brand",
        prior_events: float = 5.0,
    ):
        self.eta = eta
        self.fields = (category_field, brand_field)
        self.prior = float(prior_events)
        self.qp: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.queries: set[str] = set()
        self.qp_n: Counter[tuple[str, str]] = Counter()  # unweighted events per (query, product)
        self.product: Counter[str] = Counter()
        self.user_attr: dict[str, list[Counter[str]]] = defaultdict(lambda: [Counter(), Counter()])
        self.user_n: Counter[str] = Counter()
        self.global_attr: list[Counter[str]] = [Counter(), Counter()]
        self.records: Mapping[str, Mapping[str, Any]] = records or {}
        self.added_records: dict[str, Mapping[str, Any]] = {}  # looked up for appended events
        self.n_events = 0
        self.add(events)

    def add(
        self, events: Iterable[Event], records: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Count more events in (incremental: what a followed log appends); ``records`` adds
        the category and brand of products not known yet."""
        self.added_records.update(records or {})
        slot = {name: i for i, name in enumerate(EVENTS)}
        for e in events:
            self.n_events += 1
            w = 1.0 / propensity(e.position, self.eta)
            q = normalise_query(e.query)
            self.qp[(q, e.product_id)][slot[e.event]] += w
            self.queries.add(q)
            self.qp_n[(q, e.product_id)] += 1
            self.product[e.product_id] += 1
            rec = self.record(e.product_id)
            for k, name in enumerate(self.fields):
                value = None if rec is None else rec.get(name)
                if value is None:
                    continue
                self.global_attr[k][str(value)] += 1
                if e.user_id is not None:
                    self.user_attr[e.user_id][k][str(value)] += 1
            if e.user_id is not None:
                self.user_n[e.user_id] += 1
        self.global_n = [sum(c.values()) for c in self.global_attr]

    def record(self, product_id: str) -> Mapping[str, Any] | None:
        return self.added_records.get(product_id) or self.records.get(product_id)

    def _affinity(self, user: str | None, k: int, value: Any) -> float:
        if value is None:
            return math.nan
        g_total = self.global_n[k]
        g_share = self.global_attr[k][str(value)] / g_total if g_total else 0.0
        if user is None or user not in self.user_attr:
            return g_share  # cold start: the population's taste
        counts = self.user_attr[user][k]
        n = sum(counts.values())
        return (counts[str(value)] + self.prior * g_share) / (n + self.prior)

    def features(
        self, query: str, ids: Sequence[str], records: Sequence[Mapping[str, Any]], user: str | None
    ) -> np.ndarray:
        """float32 (len(ids), 8) in :data:`BEHAVIOUR_FEATURES` order (counts as log1p;
        ``q_logged`` 1 when the log holds the query at all)."""
        q = normalise_query(query)
        out = np.zeros((len(ids), len(BEHAVIOUR_FEATURES)), dtype=np.float32)
        user_events = math.log1p(self.user_n.get(user, 0)) if user is not None else 0.0
        for i, (pid, rec) in enumerate(zip(ids, records, strict=True)):
            clicks, carts, buys = self.qp.get((q, pid), (0.0, 0.0, 0.0))
            out[i, :4] = [
                math.log1p(clicks),
                math.log1p(carts),
                math.log1p(buys),
                # popularity elsewhere: this query's own events are q_* already, and counting
                # them twice would teach the model a feature that new queries never have
                math.log1p(self.product.get(pid, 0) - self.qp_n.get((q, pid), 0)),
            ]
            out[i, 4] = self._affinity(user, 0, rec.get(self.fields[0]))
            out[i, 5] = self._affinity(user, 1, rec.get(self.fields[1]))
            out[i, 6] = user_events
        out[:, 7] = float(q in self.queries)
        return out


def numeric_features(records: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> np.ndarray:
    """float32 (len(records), len(fields)): each numeric field as is; missing or not a
    number → NaN."""
    out = np.full((len(records), len(fields)), np.nan, dtype=np.float32)
    for i, rec in enumerate(records):
        for j, name in enumerate(fields):
            v = rec.get(name)
            if isinstance(v, bool):
                out[i, j] = float(v)
            elif isinstance(v, (int, float)) and math.isfinite(v):
                out[i, j] = float(v)
    return out


def event_labels(
    events: Iterable[Event], eta: float | None = None
) -> dict[str, dict[str, tuple[int, float]]]:
    """Training labels from a log: query → product → (gain of its strongest event, IPW
    weight of its first click: ``1/P(examined)``, 1 without positions)."""
    out: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for e in sorted(events, key=lambda e: e.ts):
        q = normalise_query(e.query)
        gain, weight = out[q].get(e.product_id, (0, 0.0))
        if weight == 0.0:
            weight = 1.0 / propensity(e.position, eta)
        out[q][e.product_id] = (max(gain, EVENTS[e.event]), weight)
    return dict(out)
