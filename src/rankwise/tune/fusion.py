"""Calibrated recall: choose the first-stage recipe for one catalog on judged train queries.

``rankwise tune fusion`` (and a step of ``rankwise tune run``) runs each judged query's dense
and lexical lists once, at the deepest depth tried, then scores every candidate recipe on
those lists (lexical alone, dense alone, RRF over a grid of ``k`` and weights, weighted
min-max fusion, per-list depths) with the evaluation engine's own nDCG@10. The choice is
made per query language (script), so Chinese queries may be served lexically while English
ones are fused, and a language the embedder does not cover never goes to dense recall.

**A fused recipe must earn its place.** The best recipe is kept only if it beats the best
single list (lexical or dense) by a paired randomisation test (``alpha``, default 0.05);
otherwise that single list is the choice. The test is cross-fitted, so the winner's luck on
the queries that picked it (selection bias over ~120 recipes) cannot pass the gate: the
judged queries are split in two halves by a stable hash (``confirm_fraction``), "the best of
all recipes" and "the better single list" are picked on each half and score the other, and
the paired test runs on all queries. The recipe served is the best on all queries. So on data where fusion
does not help, calibration falls back to the better part instead of averaging in the worse
one: the default RRF of a weak dense model and BM25 lost to BM25 alone on both sets here
(homedepot 0.348 vs 0.372, kuake_qtr 0.615 vs 0.759 nDCG@10, ``benchmarks/results/relevance.md``).

Scoring ~120 recipes costs one dense and one lexical search per query; the recipes then run
as array operations on the cached lists (:mod:`rankwise.tune.recipe_scores`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rankwise.config import DEFAULT_TOP_K, DEFAULT_TOP_N
from rankwise.errors import DataError
from rankwise.evaluate.significance import randomization_test
from rankwise.recipe import Pipeline, RecallRecipe, covers, detect_language
from rankwise.tune.data import stable_fraction
from rankwise.tune.gate import (  # noqa: F401 - MIN_CONFIRM_QUERIES re-exported
    MIN_CONFIRM_QUERIES,
    confirm_split,
    cross_fitted,
)
from rankwise.tune.recipe_scores import Lists, RecipeScorer


@dataclass(frozen=True)
class FusionConfig:
    """Grid and rules of :func:`calibrate_pipeline`.

    Attributes:
        top_k: first-stage depth the recipe serves (what the reranker sees).
        metric: what is maximised, a column of :func:`compute_metrics` (``ndcg@10``).
        depths: per-list depths tried before fusion (each ≥ ``top_k`` is used).
        rrf_ks: RRF constants tried.
        dense_weights: dense list's weight tried (lexical gets ``1 - w``).
        alpha: a fused recipe must beat the best single list at this p-value.
        confirm_fraction: share of the queries in the second half of the cross-fitted test
            (0: pick and test on the same queries, which favours fused recipes by chance).
        max_queries: at most this many judged queries (picked by a stable hash).
        min_language_queries: a language gets its own recipe from this many queries up.
        threshold: smallest grade that counts as relevant.
    """

    top_k: int = DEFAULT_TOP_K
    metric: str = "ndcg@10"
    depths: tuple[int, ...] = (50, 100, 200)
    rrf_ks: tuple[int, ...] = (1, 5, 10, 20, 40, 60, 100)
    dense_weights: tuple[float, ...] = (0.2, 0.35, 0.5, 0.65, 0.8)
    alpha: float = 0.05
    confirm_fraction: float = 0.5
    max_queries: int | None = 1000
    min_language_queries: int = 30
    threshold: int = 1

    def candidates(self) -> list[RecallRecipe]:
        """Single lists first (they win ties), then every fused recipe of the grid."""
        out = [RecallRecipe("lexical"), RecallRecipe("dense")]
        depths = sorted({max(self.top_k, d) for d in self.depths})
        for depth in depths:
            for w in self.dense_weights:
                weights = (w, 1.0 - w)
                out += [RecallRecipe("hybrid", "rrf", k, weights, depth) for k in self.rrf_ks]
                out.append(RecallRecipe("hybrid", "weighted", 60, weights, depth))
        return out


@dataclass
class GroupChoice:
    """The choice for one group of queries (a language, or all of them)."""

    group: str
    queries: int
    chosen: RecallRecipe
    scores: dict[str, float] = field(default_factory=dict)  # label -> mean metric
    best: str = ""
    best_single: str = ""
    p_value: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "queries": self.queries,
            "chosen": self.chosen.label(),
            "recipe": self.chosen.to_dict(),
            "best": self.best,
            "best_single": self.best_single,
            "p_value": self.p_value,
            "reason": self.reason,
            "scores": {
                k: round(v, 5) for k, v in sorted(self.scores.items(), key=lambda kv: -kv[1])[:10]
            },
            "lexical": round(self.scores.get("lexical", float("nan")), 5),
            "dense": round(self.scores.get("dense", float("nan")), 5),
        }


def collect_lists(
    searcher: Any,
    queries: Mapping[str, str],
    depth: int,
    *,
    show_progress: bool = True,
) -> Lists:
    """Dense and lexical candidates (``depth`` each) of every query, one search each."""
    qids = sorted(queries)
    texts = [queries[q] for q in qids]
    vectors = np.asarray(searcher.catalog.embedder.encode_queries(texts), dtype=np.float32)
    out: Lists = {}
    for i, q in enumerate(tqdm(qids, desc="recall lists", disable=not show_progress)):
        dense = searcher.recall(
            texts[i], recipe=RecallRecipe("dense"), top_k=depth, query_vector=vectors[i]
        )
        lexical = searcher.recall(texts[i], recipe=RecallRecipe("lexical"), top_k=depth)
        out[q] = (dense, lexical)
    return out


def choose(
    group: str,
    per_recipe: Mapping[RecallRecipe, np.ndarray],
    allowed: Sequence[RecallRecipe],
    alpha: float,
    confirm: np.ndarray | None = None,
) -> GroupChoice:
    """Best recipe of ``allowed`` on all queries; a fused one only if fusing earns it.

    ``confirm`` (bool per query) splits the queries in two halves and the paired test is
    cross-fitted (:func:`~rankwise.tune.gate.cross_fitted`): "pick the best of all recipes"
    against "pick the better single list", each half scored by the picks made on the other,
    so no query's value comes from a choice it helped make and all queries count in the
    test. With fewer than :data:`MIN_CONFIRM_QUERIES` on either side (or none given), the
    recipes are picked and tested on the same queries. ``scores`` are means over all queries.
    """
    n = len(next(iter(per_recipe.values())))
    means = {r: float(per_recipe[r].mean()) for r in allowed}
    scores = {r.label(): v for r, v in means.items()}
    best = max(allowed, key=lambda r: means[r])  # max() keeps the first of ties: singles
    singles = [r for r in allowed if r.mode != "hybrid"]
    single = max(singles, key=lambda r: means[r])
    if best.mode != "hybrid":
        return GroupChoice(group, n, best, scores, best.label(), single.label(), None,
                           f"{best.label()} is the best recipe")  # fmt: skip
    held = confirm_split(confirm)
    if held is None:
        cand, base = per_recipe[best], per_recipe[single]
        where = f"picked and tested on the same {n} queries"
    else:
        cand, on_a, on_b = cross_fitted({r: per_recipe[r] for r in allowed}, held)
        base, _, _ = cross_fitted({r: per_recipe[r] for r in singles}, held)
        where = (
            f"cross-fitted over {int((~held).sum())} + {int(held.sum())} queries: "
            f"{on_a.label()} picked on the first half scored the second, "
            f"{on_b.label()} the other way round"
        )
    delta = float(cand.mean() - base.mean())
    p = randomization_test(cand, base, n_resamples=2000)
    if p < alpha and delta > 0:
        reason = (
            f"{best.label()} beats {single.label()}: {delta:+.4f} (p={p:.3g} < {alpha}; {where})"
        )
        return GroupChoice(group, n, best, scores, best.label(), single.label(), p, reason)
    reason = (
        f"best fused recipe {best.label()} ({delta:+.4f}) is not significantly better than "
        f"{single.label()} (p={p:.3g} >= {alpha}; {where}): kept the single list"
    )
    return GroupChoice(group, n, single, scores, best.label(), single.label(), p, reason)


def calibrate_pipeline(
    searcher: Any,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    cfg: FusionConfig | None = None,
    *,
    provenance: Mapping[str, Any] | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Pipeline, list[GroupChoice]]:
    """Choose the :class:`Pipeline` for ``searcher``'s catalog on judged ``queries``.

    Args:
        searcher: a :class:`~rankwise.search.Searcher` over the catalog (its embedder and
            store are used; its own mode is ignored).
        queries, qrels: judged *train* queries (``{qid: text}``, ``{qid: {doc: grade}}``).
        cfg: the grid and rules (:class:`FusionConfig`).
        provenance: extra facts recorded in the pipeline (data path, split, ...).

    Returns:
        the pipeline and one :class:`GroupChoice` per group (``all`` plus each language
        with at least ``cfg.min_language_queries`` queries).
    """
    cfg = cfg or FusionConfig()
    t0 = time.perf_counter()
    judged = [q for q in sorted(qrels) if q in queries and any(
        g >= cfg.threshold for g in qrels[q].values())]  # fmt: skip
    if cfg.max_queries is not None and len(judged) > cfg.max_queries:
        judged = sorted(judged, key=lambda q: stable_fraction("fusion:" + q))[: cfg.max_queries]
        judged.sort()
    if len(judged) < 2:
        raise DataError(
            f"fusion calibration needs judged queries with a relevant document; found {len(judged)}"
        )
    embedder = searcher.catalog.embedder
    languages = getattr(getattr(embedder, "spec", None), "languages", None)
    depth = max(max(cfg.depths), cfg.top_k)
    lists = collect_lists(searcher, {q: queries[q] for q in judged}, depth,
                          show_progress=show_progress)  # fmt: skip
    recipes = cfg.candidates()
    scorer = RecipeScorer(lists, qrels, top_k=cfg.top_k, metric=cfg.metric, threshold=cfg.threshold)
    per_recipe = {
        r: scorer.score(r) for r in tqdm(recipes, desc="recipes", disable=not show_progress)
    }
    lang_of = {q: detect_language(queries[q]) for q in judged}

    def allowed_for(lang: str | None) -> list[RecallRecipe]:
        if lang is None or covers(languages, lang):
            return recipes
        return [r for r in recipes if r.mode == "lexical"]

    confirm = np.array(
        [stable_fraction("fusion-confirm:" + q) < cfg.confirm_fraction for q in judged], dtype=bool
    )
    choices = [choose("all", per_recipe, allowed_for(None), cfg.alpha, confirm)]
    by_language: dict[str, RecallRecipe] = {}
    for lang in sorted(set(lang_of.values())):
        rows = np.array([i for i, q in enumerate(judged) if lang_of[q] == lang])
        if not covers(languages, lang):
            by_language[lang] = RecallRecipe("lexical")
        if len(rows) < cfg.min_language_queries:
            continue
        sub = {r: v[rows] for r, v in per_recipe.items()}
        c = choose(lang, sub, allowed_for(lang), cfg.alpha, confirm[rows])
        if not covers(languages, lang):
            c.reason = f"the embedder does not cover '{lang}' queries: lexical only"
        choices.append(c)
        by_language[lang] = c.chosen
    pipeline = Pipeline(
        default=choices[0].chosen,
        by_language=by_language,
        dense_languages=languages,
        provenance={
            **dict(provenance or {}),
            "metric": cfg.metric,
            "queries": len(judged),
            "embedder": getattr(embedder, "model_id", None),
            "embedder_version": getattr(embedder, "version", None),
            "embedder_languages": list(languages) if languages else None,
            "store": getattr(searcher.catalog.store, "uri", None),
            "top_k": cfg.top_k,
            "alpha": cfg.alpha,
            "confirm_fraction": cfg.confirm_fraction,
            "groups": [c.to_dict() for c in choices],
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    for c in choices:
        log(f"[fusion] {c.group} ({c.queries} queries): {c.chosen.label()} — {c.reason}")
    return pipeline, choices


def tune_fusion(
    data: str | Any,
    index: str,
    embedder: Any,
    *,
    reranker: Any | None = None,
    split: str = "train",
    cfg: FusionConfig | None = None,
    top_n: int = DEFAULT_TOP_N,
    out: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Pipeline, list[GroupChoice], Any]:
    """``rankwise tune fusion``: calibrate the index's pipeline on a BEIR split's queries
    (``train``), gate ``reranker`` on the same queries, write the pipeline beside the index
    (or to ``out``). Returns the pipeline, the group choices and the reranker gate result.

    The index must hold the BEIR corpus (document ids as in the qrels). Gate a reranker that
    was trained on these queries with ``tune run`` instead, which holds out a dev split.
    """
    from rankwise.catalog import Catalog
    from rankwise.data import load_beir
    from rankwise.errors import ConfigError
    from rankwise.recipe import pipeline_path
    from rankwise.search import Searcher
    from rankwise.tune.gate import gate_reranker

    cfg = cfg or FusionConfig()
    ds = load_beir(data, split)
    target = out or pipeline_path(index)
    if target is None:
        raise ConfigError(
            f"{index} is a server URI: pass --out FILE for the pipeline (and RANKWISE_PIPELINE)"
        )
    with Catalog.open(index, embedder, create=False) as catalog:
        missing = {d for docs in ds.qrels.values() for d in docs} - set(
            r["id"] for r in catalog.store.get(sorted({d for v in ds.qrels.values() for d in v}))
        )
        if len(missing) == sum(len(v) for v in ds.qrels.values()):
            raise DataError(
                f"none of the judged documents of {ds.path} ({split}) are in {index}: index the "
                "BEIR corpus first (`rankwise index DATA/corpus.jsonl --index ...`)"
            )
        searcher = Searcher(catalog, reranker, top_k=cfg.top_k, top_n=top_n, pipeline=None)
        pipeline, choices = calibrate_pipeline(
            searcher, ds.queries, ds.qrels, cfg,
            provenance={"data": str(ds.path), "split": split}, show_progress=show_progress, log=log,
        )  # fmt: skip
        gate = None
        if reranker is not None:
            searcher.pipeline = pipeline
            used = pipeline.provenance["queries"]
            qids = sorted(ds.qrels)
            judged = [q for q in qids if any(g >= cfg.threshold for g in ds.qrels[q].values())]
            picked = sorted(judged, key=lambda q: stable_fraction("fusion:" + q))[:used]
            decision, gate = gate_reranker(
                searcher, {q: ds.queries[q] for q in picked}, ds.qrels, alpha=cfg.alpha,
                top_k=cfg.top_k, top_n=top_n, threshold=cfg.threshold,
                show_progress=show_progress, log=log,
            )  # fmt: skip
            pipeline = pipeline.with_rerank(decision)
    pipeline.save(target)
    log(f"[fusion] pipeline written to {target}")
    return pipeline, choices, gate
