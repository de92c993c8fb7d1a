"""``rankwise tune blend``: train the blend stage (LightGBM lambdarank) on judged or logged
queries and report it against the unblended pipeline on held-out queries.

1. Candidates: each training query runs through the pipeline as served (recall + rerank,
   no blend), its Top-K kept with their stage scores (:func:`collect`).
2. Labels: judged grades (``qrels``), or logged events (:func:`split_log`): the log is cut
   in time; events before the cut build the behaviour features, events after it are the
   labels (purchase 3 > add-to-cart 2 > click 1), each click weighted by its inverse
   propensity ``1 / P(examined at its rank)`` when positions and ``eta`` are known. Labels
   and features never come from the same events.
3. Fit on the train part, evaluate nDCG@10 on the dev part (queries picked by a stable hash)
   against the base order (the rerank logit, else the recall score), with a paired
   randomisation test; :func:`train_blend` returns the model and that report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankwise.blend import (
    BlendModel,
    BlendSpec,
    Candidate,
    base_scores,
    build_features,
    capped_order,
    records_for,
    spec_behaviour,
)
from rankwise.errors import DataError
from rankwise.evaluate.metrics import compute_metrics
from rankwise.evaluate.significance import randomization_test
from rankwise.signals import QUERY_FEATURES, Behaviour, Event, event_labels, normalise_query


@dataclass
class QueryCandidates:
    """One query's candidates in the base pipeline's order."""

    qid: str
    query: str
    candidates: list[Candidate]
    user: str | None = None


def collect(
    searcher: Any,
    queries: Mapping[str, str],
    *,
    top_k: int | None = None,
    rerank: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[QueryCandidates]:
    """Run each query through ``searcher`` without its blend stage and keep every candidate."""
    saved, searcher.blend = getattr(searcher, "blend", None), None
    k = top_k or searcher.top_k
    out: list[QueryCandidates] = []
    try:
        for n, (qid, text) in enumerate(queries.items(), 1):
            resp = searcher.search(text, top_k=k, top_n=k, rerank=rerank)
            cands = [
                Candidate(r.id, r.record, r.recall_score, r.recall_rank,
                          np.nan if r.rerank_score is None else r.rerank_score)
                for r in resp.results
            ]  # fmt: skip
            out.append(QueryCandidates(qid, text, cands))
            if log and n % 200 == 0:
                log(f"candidates: {n}/{len(queries)} queries")
    finally:
        searcher.blend = saved
    return out


def split_log(events: Sequence[Event], at: float = 0.5) -> tuple[list[Event], list[Event]]:
    """(feature events, label events): cut at the ``at`` quantile of the timestamps."""
    if not events:
        raise DataError("the event log is empty")
    cut = float(np.quantile([e.ts for e in events], at))
    past = [e for e in events if e.ts < cut]
    future = [e for e in events if e.ts >= cut]
    if not past or not future:
        raise DataError("the event log's timestamps do not split into a past and a future")
    return past, future


def labels_from_events(
    events: Sequence[Event], queries: Sequence[QueryCandidates], eta: float | None
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """qid → product → gain, and qid → product → IPW weight, for ``queries``' text."""
    by_text = event_labels(events, eta)
    labels: dict[str, dict[str, int]] = {}
    weights: dict[str, dict[str, float]] = {}
    for q in queries:
        got = by_text.get(normalise_query(q.query), {})
        labels[q.qid] = {p: g for p, (g, _) in got.items()}
        weights[q.qid] = {p: w for p, (_, w) in got.items()}
    return labels, weights


def is_dev(qid: str, fraction: float) -> bool:
    h = int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16)
    return (h % 10_000) / 10_000 < fraction


def matrices(
    spec: BlendSpec,
    groups: Sequence[QueryCandidates],
    labels: Mapping[str, Mapping[str, int]],
    behaviour: Behaviour | None,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    cold_copies: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray]:
    """(X, y, group sizes, row weights) over ``groups`` (unlabelled candidates get 0).

    ``cold_copies``: each query appears a second time with its query-level behaviour
    features zeroed (as a query the log has never seen), so the model also learns to rank
    new queries from the other features instead of reading "no clicks" as "irrelevant"."""
    xs, ys, ws, sizes = [], [], [], []
    for g in groups:
        if not g.candidates:
            continue
        xs.append(build_features(spec, g.query, g.candidates, behaviour, g.user))
        lab = labels.get(g.qid, {})
        wq = (weights or {}).get(g.qid, {})
        ys.append([int(lab.get(c.id, 0)) for c in g.candidates])
        ws.append([float(wq.get(c.id, 1.0)) for c in g.candidates])
        sizes.append(len(g.candidates))
        if cold_copies and spec.behaviour:
            cold = xs[-1].copy()
            cold[:, [spec.feature_names.index(n) for n in QUERY_FEATURES]] = 0.0
            xs.append(cold)
            ys.append(ys[-1])
            ws.append(ws[-1])
            sizes.append(len(g.candidates))
    if not xs:
        raise DataError("no query has candidates to train the blend on")
    return np.vstack(xs), np.concatenate(ys), sizes, np.concatenate(ws)


def evaluate_orders(
    model: BlendModel | None,
    groups: Sequence[QueryCandidates],
    qrels: Mapping[str, Mapping[str, int]],
    behaviour: Behaviour | None,
    k: int = 10,
) -> dict[str, np.ndarray]:
    """Per-query nDCG@k of the base order and, with ``model``, of the capped blend order,
    over the queries of ``groups`` that have a relevant judged document (aligned arrays)."""
    base_run: dict[str, dict[str, float]] = {}
    blend_run: dict[str, dict[str, float]] = {}
    for g in groups:
        cands = g.candidates
        n = len(cands)
        base = base_scores(cands)
        base_order = sorted(range(n), key=lambda i: (-base[i], i))
        base_run[g.qid] = {cands[i].id: float(n - p) for p, i in enumerate(base_order)}
        if model is not None and n:
            X = build_features(model.spec, g.query, cands, behaviour, g.user)
            order = capped_order(base, model.predict(X), model.spec.max_move)
            blend_run[g.qid] = {cands[i].id: float(n - p) for p, i in enumerate(order)}
        elif model is not None:
            blend_run[g.qid] = {}
    judged = {q: dict(qrels.get(q, {})) for q in base_run if q in qrels}
    metric = f"ndcg@{k}"
    out = {"base": compute_metrics(base_run, judged, (k,), ("ndcg",)).values[metric]}
    if model is not None:
        out["blend"] = compute_metrics(blend_run, judged, (k,), ("ndcg",)).values[metric]
    return out


def train_blend(
    groups: Sequence[QueryCandidates],
    labels: Mapping[str, Mapping[str, int]],
    spec: BlendSpec,
    *,
    behaviour: Behaviour | None = None,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    eval_qrels: Mapping[str, Mapping[str, int]] | None = None,
    dev_fraction: float = 0.2,
    num_rounds: int = 200,
    params: Mapping[str, Any] | None = None,
    cold_copies: bool = True,
) -> tuple[BlendModel, dict[str, Any]]:
    """Fit on the non-dev queries (with cold copies, see :func:`matrices`); report dev
    nDCG@10 (``eval_qrels``, default ``labels``) of the base order and the blend, with the
    paired randomisation p-value."""
    train = [g for g in groups if not is_dev(g.qid, dev_fraction)]
    dev = [g for g in groups if is_dev(g.qid, dev_fraction)]
    X, y, sizes, w = matrices(spec, train, labels, behaviour, weights, cold_copies)
    if not (y > 0).any():
        raise DataError("no candidate of any training query has a positive label")
    model = BlendModel.fit(X, y, sizes, spec, weights=w, params=params, num_rounds=num_rounds)
    report: dict[str, Any] = {
        "train_queries": len(train),
        "train_groups": len(sizes),
        "train_rows": int(len(X)),
        "dev_queries": len(dev),
        "spec": spec.to_dict(),
        "weighted": weights is not None,
    }
    if dev:
        res = evaluate_orders(model, dev, eval_qrels or labels, behaviour)
        report["dev"] = {
            "queries": int(len(res["base"])),
            "ndcg@10_base": float(res["base"].mean()) if len(res["base"]) else None,
            "ndcg@10_blend": float(res["blend"].mean()) if len(res["blend"]) else None,
            "p_value": randomization_test(res["blend"], res["base"]) if len(res["base"]) else None,
        }
    model.info.update(report)
    return model, report


def parse_monotone(text: str | None) -> dict[str, int]:
    """``"stock=+1,price=-1"`` → ``{"stock": 1, "price": -1}``."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, sign = item.partition("=")
        if not sep or sign.strip() not in ("+1", "1", "-1", "0"):
            raise DataError(f"bad monotone constraint {item!r}: use field=+1 or field=-1")
        out[name.strip()] = int(sign.strip())
    return out


def tune_blend(
    searcher: Any,
    data: str,
    spec: BlendSpec,
    out: str,
    *,
    split: str = "train",
    labels: str = "judged",
    max_queries: int = 2000,
    num_rounds: int = 200,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole of ``rankwise tune blend``: candidates for the judged ``split`` queries of
    the BEIR folder ``data``, labels from the judgments (``labels="judged"``) or from the
    later half of the event log (``"events"``), fit, dev report; the model is saved to ``out``."""
    from rankwise.data import load_beir
    from rankwise.signals import read_events

    if labels not in ("judged", "events"):
        raise DataError(f"labels must be 'judged' or 'events', got {labels!r}")
    if labels == "events" and not spec.events:
        raise DataError("labels='events' needs an event log (--events)")
    ds = load_beir(data, split)
    qids = sorted(ds.qrels)[:max_queries]
    groups = collect(searcher, {q: ds.queries[q] for q in qids}, log=log)
    behaviour, weights = None, None
    lab: Mapping[str, Mapping[str, int]] = ds.qrels
    if spec.events:
        events = read_events(spec.events)
        feature_events = events
        if labels == "events":
            feature_events, label_events = split_log(events)
            lab, weights = labels_from_events(label_events, groups, spec.eta)
        ids = list(dict.fromkeys(e.product_id for e in events))  # label events' products too
        records = records_for(searcher.catalog.store.get, ids)
        behaviour = spec_behaviour(spec, feature_events, records)
    model, report = train_blend(
        groups, lab, spec, behaviour=behaviour, weights=weights, eval_qrels=ds.qrels,
        num_rounds=num_rounds,
    )  # fmt: skip
    report["labels"], report["out"] = labels, str(model.save(out))
    return report
