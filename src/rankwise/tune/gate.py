"""Promotion gate: a tuned model (or recipe) replaces the current one only when it wins.

Every gate compares per-query values of the current pipeline and the candidate on the same
held-out *train* queries (the dev split: never the test queries that reports are made on),
with the evaluation engine's paired randomisation test. The candidate is promoted only if
its mean is higher **and** ``p < alpha``; otherwise the current one stays, and the decision
says what lost and by how much. This is the rule that would have kept the tuned MiniLM
cross-encoder out of kuake_qtr's pipeline, where it took hybrid from 0.627 to 0.244 nDCG@10
(global pool) while its training loss looked fine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rankwise.config import DEFAULT_TOP_K, DEFAULT_TOP_N
from rankwise.evaluate.metrics import compute_metrics
from rankwise.evaluate.significance import randomization_test
from rankwise.recipe import RerankDecision

N_RESAMPLES = 2000


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: ``promoted`` and the numbers behind it."""

    what: str
    promoted: bool
    current: float
    candidate: float
    p_value: float
    queries: int
    reason: str

    @property
    def delta(self) -> float:
        return self.candidate - self.current

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta": self.delta}


def paired_gate(
    what: str,
    current: np.ndarray,
    candidate: np.ndarray,
    *,
    alpha: float = 0.05,
    metric: str = "ndcg@10",
) -> GateResult:
    """Promote ``candidate`` iff its mean beats ``current`` with ``p < alpha`` (paired)."""
    cur, cand = float(np.mean(current)), float(np.mean(candidate))
    p = randomization_test(candidate, current, n_resamples=N_RESAMPLES)
    promoted = cand > cur and p < alpha
    verdict = "promoted" if promoted else "not promoted"
    if cand > cur:
        why = f"p={p:.3g} {'<' if promoted else '>='} {alpha}"
    else:
        why = "it is worse" if cand < cur else "no gain"
    reason = (
        f"{what} {verdict}: {metric} {cur:.4f} -> {cand:.4f} ({cand - cur:+.4f}) on "
        f"{len(current)} dev queries, {why}"
    )
    return GateResult(what, promoted, cur, cand, p, len(current), reason)


def run_values(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metric: str = "ndcg@10",
    threshold: int = 1,
) -> np.ndarray:
    """Per-query ``metric`` of ``run`` (queries of ``qrels`` in sorted order; none skipped)."""
    name, _, k = metric.partition("@")
    m = compute_metrics(
        dict(run), qrels, ks=(int(k),), metrics=(name,), threshold=threshold, no_relevant="zero"
    )
    return m.values[metric]


def routed_recalls(
    searcher: Any,
    texts: Sequence[str],
    top_k: int,
    *,
    desc: str = "recall",
    show_progress: bool = True,
) -> Iterator[list[Any]]:
    """Each text's routed first-stage hits (``searcher.route`` then ``recall``), in order.

    The queries that recall densely are encoded in one batched call first: one model call
    per query costs ~100x more on a CPU (per-call overhead dominates one short query), which
    made the first-stage negatives of 7,000 train queries take hours instead of minutes.
    """
    routes = [searcher.route(t)[1] for t in texts]
    dense = [i for i, r in enumerate(routes) if r.mode != "lexical"]
    vectors: dict[int, np.ndarray] = {}
    if dense:
        enc = searcher.catalog.require_embedder().encode_queries([texts[i] for i in dense])
        vectors = {i: np.asarray(v, dtype=np.float32) for i, v in zip(dense, enc, strict=True)}
    for i in tqdm(range(len(texts)), desc=desc, disable=not show_progress):
        yield searcher.recall(texts[i], recipe=routes[i], top_k=top_k, query_vector=vectors.get(i))


#: Fewest queries on each side of a pick/test split (else both use all queries).
MIN_CONFIRM_QUERIES = 10


def confirm_split(confirm: np.ndarray | None) -> np.ndarray | None:
    """``confirm`` (bool per query: the held-out ones) when both sides have at least
    :data:`MIN_CONFIRM_QUERIES` queries, else None: too few for a split."""
    if confirm is None or min(confirm.sum(), (~confirm).sum()) < MIN_CONFIRM_QUERIES:
        return None
    return confirm


def cross_fitted(
    per_choice: Mapping[Any, np.ndarray], held: np.ndarray
) -> tuple[np.ndarray, Any, Any]:
    """Each query's value under the choice picked on the *other* half (cross-fitting).

    ``per_choice`` maps each choice to its per-query values; ``held`` (bool per query)
    splits the queries in two. The choice with the best mean on the unheld half scores the
    held queries and the other way round, so no query's value comes from a choice it
    helped make, and every query counts in the test: about twice the queries of testing
    on one half only. Ties go to the first choice listed. Returns (values, choice picked
    on the unheld half, choice picked on the held half).
    """
    choices = list(per_choice)
    on_a = max(choices, key=lambda c: float(per_choice[c][~held].mean()))
    on_b = max(choices, key=lambda c: float(per_choice[c][held].mean()))
    return np.where(held, per_choice[on_a], per_choice[on_b]), on_a, on_b


#: The reranker's shares of the final order the gate tries (1: the reranker alone; below
#: 1: interpolated with the recall score, :func:`rankwise.ranking.interpolate`).
RERANK_WEIGHTS = (1.0, 0.7, 0.5, 0.3, 0.2)


def rank_run(ids: Sequence[str], top_n: int) -> dict[str, float]:
    """A ranked list as rank-derived scores (ties in fused scores keep the fused order)."""
    return {d: float(top_n - r) for r, d in enumerate(ids[:top_n])}


def pipeline_runs(
    searcher: Any,
    queries: Mapping[str, str],
    *,
    rerank: bool,
    top_k: int,
    top_n: int,
    weights: Sequence[float] = (1.0,),
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[float, dict[str, dict[str, float]]]]:
    """Runs of ``searcher``'s routed first stage and, per ``weights``, of the same
    candidates reranked (each candidate scored once).

    The reranked runs are empty unless ``rerank``; all hold the Top-``top_n`` a user sees.
    """
    first: dict[str, dict[str, float]] = {}
    second: dict[float, dict[str, dict[str, float]]] = {w: {} for w in weights}
    qids = sorted(queries)
    recalls = routed_recalls(searcher, [queries[q] for q in qids], top_k, desc="gate",
                             show_progress=show_progress)  # fmt: skip
    for q, hits in zip(qids, recalls, strict=True):
        first[q] = rank_run([h.id for h in hits], top_n)
        if rerank and hits:
            logits = searcher.rerank_logits(queries[q], hits)
            for w in weights:
                results = searcher.rerank_results(hits, logits, top_n=top_n, weight=w)
                second[w][q] = rank_run([r.id for r in results], top_n)
        elif rerank:
            for w in weights:
                second[w][q] = {}
    return first, second


def gate_reranker(
    searcher: Any,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    alpha: float = 0.05,
    top_k: int = DEFAULT_TOP_K,
    top_n: int = DEFAULT_TOP_N,
    threshold: int = 1,
    weights: Sequence[float] = RERANK_WEIGHTS,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[RerankDecision, GateResult]:
    """Does ``searcher.reranker`` improve its calibrated first stage on dev ``queries``, on
    its own or interpolated with the recall score (``weights``)?

    The reranker sees the first stage's real Top-``top_k`` candidates, as in serving. The
    queries are split in two halves (a stable hash) and the test is cross-fitted
    (:func:`cross_fitted`): each half is scored at the weight picked on the other, and the
    paired test runs on all queries, so the pick does not flatter its own test. Testing on
    one half only (the first version) left 205 of 388 Home Depot dev queries to the test:
    +0.014 nDCG@10 at p=0.11. The weight served is the one best on all queries. With too
    few queries for two halves, the weight is picked and tested on all of them. The
    decision records the weight; ``scores["weights"]`` every weight's mean on all queries.
    """
    from rankwise.tune.data import stable_fraction

    rr = searcher.reranker
    weights = tuple(dict.fromkeys(float(w) for w in weights)) or (1.0,)
    first, second = pipeline_runs(
        searcher, queries, rerank=True, top_k=top_k, top_n=top_n, weights=weights,
        show_progress=show_progress,
    )  # fmt: skip
    qids = sorted(queries)
    sub = {q: qrels[q] for q in qids}
    metric = f"ndcg@{min(10, top_n)}"
    base = run_values(first, sub, metric, threshold)
    per_w = {w: run_values(second[w], sub, metric, threshold) for w in weights}
    held = np.array([stable_fraction("rerank-confirm:" + q) < 0.5 for q in qids], dtype=bool)
    best = max(weights, key=lambda w: float(per_w[w].mean()))  # ties: the first listed
    label = f"reranker {rr.model_id}" + ("" if best >= 1.0 else f" (weight {best:g} with recall)")
    if len(weights) > 1 and confirm_split(held) is not None:
        cand, on_a, on_b = cross_fitted(per_w, held)
        where = (
            f"cross-fitted: weight {on_a:g} picked on {int((~held).sum())} queries scored the "
            f"{int(held.sum())} others, {on_b:g} picked on those scored the first; weight "
            f"{best:g} picked on all {len(qids)}"
        )
    else:
        cand = per_w[best]
        where = f"weight picked and tested on the same {len(qids)} queries"
    res = paired_gate(label, base, cand, alpha=alpha, metric=metric)
    if best < 1.0 and 1.0 in per_w:  # say what the reranker does on its own too
        alone, cur = float(per_w[1.0].mean()), float(base.mean())
        verdict = "worse" if alone < cur else "no better" if alone == cur else "better"
        where += f"; the reranker alone is {verdict}: {cur:.4f} -> {alone:.4f}"
    res = replace(res, reason=f"{res.reason}; {where}")
    log(f"[gate] {res.reason}")
    scores = {
        **res.to_dict(),
        "weight": best,
        "weights": {f"{w:g}": float(v.mean()) for w, v in per_w.items()},
        "first_stage": float(base.mean()),
    }
    decision = RerankDecision(rr.model_id, rr.version, res.promoted, res.reason, scores,
                              weight=best)  # fmt: skip
    return decision, res
