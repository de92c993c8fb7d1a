"""The blend stage: a learned final ranking over stage scores, business signals and behaviour.

Features per candidate (:meth:`BlendSpec.feature_names`): the stage scores (``recall_score``,
``recall_rank``, ``rerank_logit``), the catalog's numeric fields named in the spec
(popularity, stock, price, margin, recency, ...) and, with an event log, the behaviour and
personal-affinity features of :mod:`rankwise.signals`. The model is LightGBM's lambdarank
(trained by ``rankwise tune blend``, :mod:`rankwise.tune.blend`) with:

- **monotone constraints** (``monotone={"stock": 1}``): the score never falls when a
  constrained feature rises (+1) or falls (-1), whatever the other features; LightGBM's
  ``monotone_constraints`` with the ``advanced`` method;
- **a movement cap** (``max_move``): no product moves more than ``max_move`` places from its
  position in the base order (the rerank logit, else the recall score), so a popular
  product cannot jump from rank 40 to rank 1 on signals alone (:func:`capped_order`);
- **explanations**: each feature's contribution to a product's blend score (LightGBM's
  ``pred_contrib``: TreeSHAP values, summing with the bias to the score).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.errors import ConfigError, DataError
from rankwise.signals import BEHAVIOUR_FEATURES, Behaviour, Event, numeric_features

STAGE_FEATURES = ("recall_score", "recall_rank", "rerank_logit")
SPEC_FILE = "blend.json"
MODEL_FILE = "model.txt"


@dataclass(frozen=True)
class BlendSpec:
    """What the blend reads and how it may move products.

    Attributes:
        numeric_fields: record fields used as numeric signals (e.g. ``("popularity", "stock")``).
        behaviour: use the event log's behaviour / affinity features.
        monotone: feature → +1 (may only help) or -1 (may only hurt); others unconstrained.
        max_move: most places a product may move from the base order (``None``: no cap).
        events: the event log (JSONL) the behaviour features are read from.
        eta: position-bias exponent for IPW of logged events (``None``: none).
        category_field, brand_field: record fields of the personal affinities.
    """

    numeric_fields: tuple[str, ...] = ()
    behaviour: bool = False
    monotone: Mapping[str, int] = field(default_factory=dict)
    max_move: int | None = 3
    events: str | None = None
    eta: float | None = None
    category_field: str = "category"
    brand_field: str = "brand"

    def __post_init__(self) -> None:
        names = self.feature_names
        for name, sign in self.monotone.items():
            if name not in names:
                raise ConfigError(
                    f"monotone constraint on '{name}', which is not a blend feature "
                    f"({', '.join(names)})."
                )
            if sign not in (-1, 0, 1):
                raise ConfigError(f"monotone constraint on '{name}' must be +1, -1 or 0.")
        if self.max_move is not None and self.max_move < 0:
            raise ConfigError(f"max_move must be >= 0, got {self.max_move}.")
        if self.behaviour and not self.events:
            raise ConfigError("behaviour features need an event log (events=...).")

    @property
    def feature_names(self) -> list[str]:
        return [
            *STAGE_FEATURES,
            *self.numeric_fields,
            *(BEHAVIOUR_FEATURES if self.behaviour else ()),
        ]

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["numeric_fields"], d["monotone"] = list(self.numeric_fields), dict(self.monotone)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BlendSpec:
        d = dict(d)
        d["numeric_fields"] = tuple(d.get("numeric_fields") or ())
        return cls(**d)


@dataclass(frozen=True)
class Candidate:
    """One product as the blend sees it (``rerank_logit`` NaN when nothing reranked)."""

    id: str
    record: Mapping[str, Any]
    recall_score: float
    recall_rank: int
    rerank_logit: float = math.nan


def build_features(
    spec: BlendSpec,
    query: str,
    candidates: Sequence[Candidate],
    behaviour: Any = None,
    user: str | None = None,
) -> np.ndarray:
    """float32 (n, len(spec.feature_names)), columns in that order; ``behaviour`` is a
    :class:`Behaviour` or a followed log (anything with its ``features``)."""
    stage = np.array(
        [[c.recall_score, c.recall_rank, c.rerank_logit] for c in candidates], dtype=np.float32
    ).reshape(len(candidates), 3)
    records = [c.record for c in candidates]
    parts = [stage, numeric_features(records, spec.numeric_fields)]
    if spec.behaviour:
        if behaviour is None:
            raise ConfigError("this blend uses behaviour features: load it with its event log.")
        parts.append(behaviour.features(query, [c.id for c in candidates], records, user))
    return np.concatenate(parts, axis=1)


def base_scores(candidates: Sequence[Candidate]) -> np.ndarray:
    """The order the movement cap is measured against: rerank logits, else recall scores."""
    logits = np.array([c.rerank_logit for c in candidates], dtype=np.float64)
    if len(logits) and not np.isnan(logits).any():
        return logits
    return np.array([c.recall_score for c in candidates], dtype=np.float64)


def capped_order(base: np.ndarray, blend: np.ndarray, max_move: int | None) -> list[int]:
    """Indices best first by ``blend``, with no index more than ``max_move`` places from its
    place in the ``base`` order (ties keep input order).

    Greedy, position by position: an item that would otherwise fall more than ``max_move``
    below its base place is placed now; else the best blended item whose base place is at
    most ``max_move`` below the current position. At most one item becomes due per position
    and at least ``max_move + 1`` are eligible, so the cap always holds.
    """
    n = len(base)
    blend_order = sorted(range(n), key=lambda i: (-blend[i], i))
    if max_move is None or max_move >= n:
        return blend_order
    by_base = sorted(range(n), key=lambda i: (-base[i], i))
    place = {i: p for p, i in enumerate(by_base)}
    placed = [False] * n
    out: list[int] = []
    for pos in range(n):
        due = pos - max_move
        if due >= 0 and not placed[by_base[due]]:
            pick = by_base[due]
        else:
            pick = next(i for i in blend_order if not placed[i] and place[i] <= pos + max_move)
        placed[pick] = True
        out.append(pick)
    return out


class BlendModel:
    """A trained LightGBM lambdarank booster with its :class:`BlendSpec`."""

    def __init__(self, booster: Any, spec: BlendSpec, info: Mapping[str, Any] | None = None):
        self.booster = booster
        self.spec = spec
        self.info = dict(info or {})
        self._version: str | None = None

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        groups: Sequence[int],
        spec: BlendSpec,
        *,
        weights: np.ndarray | None = None,
        params: Mapping[str, Any] | None = None,
        num_rounds: int = 200,
    ) -> BlendModel:
        """Train on ``X`` (n, f) with integer labels ``y`` (n,), ``groups`` candidates per
        query in row order, optional per-row ``weights`` (IPW)."""
        import lightgbm as lgb

        names = spec.feature_names
        if X.shape[1] != len(names):
            raise DataError(f"blend features: {X.shape[1]} columns for {len(names)} names")
        if int(sum(groups)) != len(X):
            raise DataError("blend training: group sizes do not add up to the rows")
        monotone = [int(spec.monotone.get(n, 0)) for n in names]
        p = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": 15,
            "learning_rate": 0.05,
            "min_data_in_leaf": 20,
            "feature_fraction": 1.0,
            "monotone_constraints": monotone,
            "monotone_constraints_method": "advanced",
            "num_threads": 2,
            "deterministic": True,
            "force_row_wise": True,
            "seed": 0,
            "verbose": -1,
            **(params or {}),
        }
        data = lgb.Dataset(
            X, label=np.asarray(y, dtype=np.int32), group=list(groups), weight=weights,
            feature_name=names, free_raw_data=False,
        )  # fmt: skip
        booster = lgb.train(p, data, num_boost_round=num_rounds)
        return cls(booster, spec, {"rows": len(X), "queries": len(groups), "rounds": num_rounds})

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Blend scores, float64 (n,)."""
        if len(X) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, f + 1): each feature's contribution, then the bias; rows sum to the score."""
        if len(X) == 0:
            return np.zeros((0, len(self.spec.feature_names) + 1))
        return np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=1))

    @property
    def version(self) -> str:
        """Hash of the trees and the spec (computed once: it keys the search cache)."""
        if self._version is None:
            import hashlib

            text = self.booster.model_to_string() + json.dumps(self.spec.to_dict(), sort_keys=True)
            self._version = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._version

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(out / MODEL_FILE))
        body = {"spec": self.spec.to_dict(), "info": self.info}
        (out / SPEC_FILE).write_text(json.dumps(body, indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path) -> BlendModel:
        import lightgbm as lgb

        path = Path(path)
        if not (path / SPEC_FILE).is_file() or not (path / MODEL_FILE).is_file():
            raise ConfigError(
                f"{path} is not a blend folder (needs {SPEC_FILE} and {MODEL_FILE}; "
                "`rankwise tune blend --out DIR` writes one)."
            )
        body = json.loads((path / SPEC_FILE).read_text())
        booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        return cls(booster, BlendSpec.from_dict(body["spec"]), body.get("info"))


#: Product records for the personal affinities: id → record, or ``fn(ids) -> records``.
Records = Mapping[str, Mapping[str, Any]] | Callable[[list[str]], list[dict]]


def records_for(records: Records | None, ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
    """id → record for ``ids`` (a lookup such as ``store.get`` is asked once)."""
    if records is None:
        return {}
    if callable(records):
        return {str(r["id"]): r for r in records(list(ids))}
    return records


def spec_behaviour(spec: BlendSpec, events: Sequence[Event], records: Records | None) -> Behaviour:
    """The behaviour features ``spec`` asks for (its eta and affinity fields) over
    ``events``, with the records of the products they name."""
    ids = list(dict.fromkeys(e.product_id for e in events))
    fields = {"category_field": spec.category_field, "brand_field": spec.brand_field}
    return Behaviour(events, records_for(records, ids), eta=spec.eta, **fields)


class BlendStage:
    """The served stage: reorders a query's candidates by the blend, within the cap.

    Without a given ``behaviour``, the event log ``model.spec.events`` is read and followed
    (:class:`~rankwise.event_log.FollowedLog`): events appended while serving are counted
    in, checked at most every ``reload_s`` seconds (``None``: read once). ``records``
    supply the category and brand of logged products for personal affinities: id → record,
    or a lookup ``fn(ids) -> records`` (e.g. ``store.get``).
    """

    def __init__(
        self,
        model: BlendModel,
        behaviour: Behaviour | None = None,
        records: Records | None = None,
        *,
        reload_s: float | None = None,
    ):
        from rankwise.event_log import FollowedLog

        self.model = model
        spec = model.spec
        self.log: FollowedLog | None = None
        if spec.behaviour and behaviour is None:
            self.log = FollowedLog(
                spec.events,  # type: ignore[arg-type]
                lambda events: spec_behaviour(spec, events, records),
                (lambda ids: records_for(records, ids)) if records is not None else None,
                check_s=reload_s,
            )
        self.behaviour: Behaviour | FollowedLog | None = self.log or behaviour

    @classmethod
    def load(
        cls, path: str | Path, records: Records | None = None, *, reload_s: float | None = None
    ) -> BlendStage:
        return cls(BlendModel.load(path), records=records, reload_s=reload_s)

    @property
    def version(self) -> str:
        """The model's version, and with a followed log what was read of it (this checks
        the log first, at most every ``reload_s``): it keys the search cache."""
        if self.log is None:
            return self.model.version
        self.log.refresh()
        return f"{self.model.version}:{self.log.state}"

    def order(
        self, query: str, candidates: Sequence[Candidate], user: str | None = None
    ) -> tuple[list[int], np.ndarray, np.ndarray]:
        """(capped order best first, blend scores, features) for ``candidates``."""
        if self.log is not None:
            self.log.refresh()  # at most every reload_s: events appended since
        X = build_features(self.model.spec, query, candidates, self.behaviour, user)
        scores = self.model.predict(X)
        return capped_order(base_scores(candidates), scores, self.model.spec.max_move), scores, X

    def apply(
        self, query: str, results: Sequence[Any], *, user: str | None = None, explain: bool = False
    ) -> list[Any]:
        """``results`` (search results with ``id``, ``record``, ``recall_score``,
        ``recall_rank``, ``rerank_score``) reordered, ranked 1.., with ``blend_score`` and,
        with ``explain``, ``explain`` = {features, contributions, bias, base_rank}."""
        cands = [
            Candidate(
                r.id, r.record, r.recall_score, r.recall_rank,
                math.nan if r.rerank_score is None else r.rerank_score,
            )
            for r in results
        ]  # fmt: skip
        order, scores, X = self.order(query, cands, user)
        base = base_scores(cands)
        base_rank = {
            i: p + 1 for p, i in enumerate(sorted(range(len(cands)), key=lambda i: (-base[i], i)))
        }
        contrib = self.model.contributions(X) if explain else None
        names = self.model.spec.feature_names
        out = []
        for rank, i in enumerate(order, 1):
            info = None
            if contrib is not None:
                info = {
                    "blend_score": float(scores[i]),
                    "base_rank": base_rank[i],
                    "bias": float(contrib[i, -1]),
                    "features": {n: _num(X[i, j]) for j, n in enumerate(names)},
                    "contributions": {n: float(contrib[i, j]) for j, n in enumerate(names)},
                }
            out.append(replace(results[i], rank=rank, blend_score=float(scores[i]), explain=info))
        return out


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
