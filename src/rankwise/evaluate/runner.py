"""Run the systems of an evaluation over a BEIR dataset and score them.

Systems (``--systems``), each evaluated on every requested pool (see ``pools.py``):

* ``lexical``, ``dense``, ``hybrid``: first stage only; the run holds the Top-K
  candidates with their recall scores.
* ``<mode>+rerank``: the same Top-K reranked by the cross-encoder; the run holds the
  Top-N a user would see (raw logits as scores). Metrics at ``k > top_n`` would count
  only those N documents and read as a collapse, so they are not computed (not
  comparable); the same holds for first-stage systems at ``k > top_k``.
* ``rerank-only``: the cross-encoder scores each query's judged documents (the classic
  reranking benchmark; pool ``judged``). Its scores also feed the reranker's separation
  and the threshold calibration. With an embedder, ``dense [judged]`` (cosine order of the
  same candidates) is added as its baseline for the significance test.
* external TREC runs (``runs=``), pool ``external``.

Queries are embedded in one batched call and handed to the :class:`Searcher` as
``query_vector``; the per-query embedding time reported is that batch's time divided by
the number of queries. Latencies of the other stages come from
``SearchResponse.timings``. The reranker's score cache is off during the evaluation, so
rerank latency is measured cold (a second pool or the warm-up query would otherwise hit
scores cached by the first).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rankwise.cascade import parse_cascade
from rankwise.config import DEFAULT_TOP_K, DEFAULT_TOP_N
from rankwise.data import BeirDataset, load_beir
from rankwise.errors import InvalidRequest
from rankwise.evaluate.calibration import CalibrationPlan, ThresholdChoice
from rankwise.evaluate.indexes import corpus_side, corpus_vectors, dataset_root, pool_catalog
from rankwise.evaluate.metrics import QueryMetrics, Run, compute_metrics, parse_ks
from rankwise.evaluate.pools import POOLS, union_of_judged
from rankwise.evaluate.report import EvaluationReport, SystemResult
from rankwise.evaluate.runs import check_run_ids, read_run
from rankwise.evaluate.separation import Separation, sample_negatives, separation
from rankwise.evaluate.significance import TESTS, compare_systems
from rankwise.evaluate.systems import cascade_systems, judged_systems, searched_system
from rankwise.evaluate.templates import parse_templates, with_templates

if TYPE_CHECKING:
    from rankwise.models import Embedder, Reranker
    from rankwise.recipe import Pipeline

# "calibrated": the Searcher's routed pipeline (``pipeline=``; see rankwise.recipe).
RECALL_MODES = ("lexical", "dense", "hybrid", "calibrated")
SYSTEMS = (*RECALL_MODES, *(f"{m}+rerank" for m in RECALL_MODES), "rerank-only")


def parse_systems(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"lexical,dense,hybrid+rerank"`` → validated tuple, order kept, duplicates dropped."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    bad = [s for s in out if s not in SYSTEMS]
    if bad:
        raise InvalidRequest(f"unknown system {bad[0]!r}; choose from {', '.join(SYSTEMS)}")
    return out


def _default_index_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "rankwise" / "eval"


def evaluate(
    data: str | Path | BeirDataset,
    *,
    split: str = "test",
    systems: str | Sequence[str] = ("lexical", "dense", "hybrid"),
    embedder: Embedder | str | None = None,
    reranker: Reranker | str | None = None,
    top_k: int = DEFAULT_TOP_K,
    top_n: int = DEFAULT_TOP_N,
    ks: str | Sequence[int] = (1, 5, 10, 50),
    pools: Sequence[str] = POOLS,
    threshold: int = 1,
    index_dir: str | Path | None = None,
    runs: Mapping[str, str | Path | Run] | None = None,
    significance: str = "randomization",
    min_precision: float | None = None,
    calibration_split: str | None = None,
    negatives_per_query: int = 2,
    max_queries: int | None = None,
    pipeline: Pipeline | Mapping[str, Pipeline] | None = None,
    cascade: str | None = None,
    templates: Sequence[str] | Mapping[str, object] | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Evaluate ``systems`` (and external ``runs``) on the judged queries of ``split``.

    Args:
        data: a BEIR folder or a loaded :class:`BeirDataset`.
        systems: names from :data:`SYSTEMS`, as a list or ``"lexical,dense"``.
        embedder, reranker: model instances or names/paths (loaded here).
        top_k: first-stage candidates; top_n: results after rerank.
        ks: metric cut-offs. pools: ``"test"`` and/or ``"global"``.
        threshold: smallest grade that counts as relevant for binary metrics.
        index_dir: cache for vectors and indexes (default ``~/.cache/rankwise/eval``).
        runs: extra systems as TREC run files or ``{qid: {doc: score}}`` dicts.
        significance: ``"randomization"`` or ``"ttest"``.
        min_precision: also calibrate the rerank threshold for this precision floor.
        calibration_split: choose score thresholds on this split's judged pairs (e.g.
            ``"train"``) and report how they hold on ``split``; default: ``split`` itself.
        negatives_per_query: random corpus documents added as negatives for separation.
        max_queries: evaluate only the first N queries (sorted ids), for quick checks.
        pipeline: the calibrated pipeline that ``calibrated`` systems search with (one for
            every pool, or ``{pool: pipeline}``); ``None``: the uncalibrated default, routed
            by the embedder's languages.
        cascade: e.g. ``"hybrid:200,colbert:50,rerank:10"``: each prefix of it is one more
            system, named ``cascade <prefix>`` (see :mod:`rankwise.cascade`).
        templates: rerank templates to compare: each adds ``<mode>+rerank[template=NAME]``
            per rerank system, same candidates (see :mod:`rankwise.evaluate.templates`).

    Returns:
        :class:`EvaluationReport` (``.to_markdown()``, ``.to_dict()``, ``.save(dir)``).
    """
    t_start = time.perf_counter()
    notes: list[str] = []

    def say(msg: str) -> None:  # index/embedding events are facts of this run: keep them
        notes.append(msg)
        if log is not None:
            log(msg)

    systems = parse_systems(systems)
    templates = parse_templates(templates)
    ks = parse_ks(ks)
    if top_k < 1 or top_n < 1:
        raise InvalidRequest("top_k and top_n must be at least 1")
    if significance not in TESTS:
        raise InvalidRequest(f"unknown test {significance!r}; choose from {', '.join(TESTS)}")
    bad_pools = [p for p in pools if p not in POOLS]
    if bad_pools:
        raise InvalidRequest(f"unknown pool {bad_pools[0]!r}; choose from {', '.join(POOLS)}")
    ds = data if isinstance(data, BeirDataset) else load_beir(data, split)
    split = ds.split  # "all" / "test, train" resolved to the qrels files read
    qrels = ds.qrels
    if max_queries is not None:
        qrels = {q: qrels[q] for q in sorted(qrels)[:max_queries]}
    qids = sorted(qrels)
    queries = [ds.queries[q] for q in qids]

    def score(run: Run, depth: int | None = None) -> QueryMetrics | None:
        """Metrics at the cut-offs a system returning ``depth`` results can fill."""
        usable = [k for k in ks if depth is None or k <= depth]
        return compute_metrics(run, qrels, usable, threshold=threshold) if usable else None

    plan = CalibrationPlan(split, qrels, threshold, min_precision)
    if calibration_split and calibration_split != split:
        cal = load_beir(ds.path, calibration_split)
        cal_qrels = {q: cal.qrels[q] for q in sorted(cal.qrels)[:max_queries]}
        plan = replace(
            plan,
            cal_split=calibration_split,
            cal_qrels=cal_qrels,
            cal_queries={q: cal.queries[q] for q in cal_qrels},
        )

    results: list[SystemResult] = []
    separations: list[Separation] = []
    calibration: list[ThresholdChoice] = []
    searched = [s for s in systems if s != "rerank-only"]
    prefixes = parse_cascade(cascade).prefixes() if cascade else []
    if prefixes:
        searched = searched or ["(cascade)"]  # the cascade needs the embedder too
    emb = _load_embedder(embedder) if searched or "rerank-only" in systems else None
    rr = _load_reranker(reranker) if reranker is not None else None
    # rerank latency is measured cold: no score cached by an earlier pool or the warm-up
    cold = rr.score_cache_disabled() if rr is not None else contextlib.nullcontext()
    if searched and emb is None:
        raise InvalidRequest(f"systems {', '.join(searched)} need an embedder (--embedder)")

    neg = sample_negatives(qrels, sorted(ds.corpus), negatives_per_query, seed=0)
    pairs = {q: sorted(set(qrels[q]) | set(neg[q])) for q in qids}

    with cold:
        dense_pairs: dict[str, dict[str, float]] | None = None
        if emb is not None:
            root = dataset_root(index_dir or _default_index_dir(), ds.path.name, ds.corpus, emb)
            ids, vectors = corpus_vectors(
                ds.corpus, emb, root, show_progress=show_progress, log=say
            )
            t = time.perf_counter()
            qvecs = np.asarray(emb.encode_queries(queries), dtype=np.float32)
            embed_per_query = (time.perf_counter() - t) / max(1, len(qids))
            row = {d: i for i, d in enumerate(ids)}
            dense_pairs = {
                q: {d: float(vectors[row[d]] @ qvecs[i]) for d in pairs[q]}
                for i, q in enumerate(qids)
            }
            separations.append(
                separation(dense_pairs, qrels, threshold=threshold, model=emb.model_id)
            )
            cal_dense = None
            if plan.cal_split:
                cal_ids = sorted(plan.cal_qrels)
                cvecs = emb.encode_queries([plan.cal_queries[q] for q in cal_ids])
                cal_dense = {
                    q: {d: float(vectors[row[d]] @ cvecs[i]) for d in plan.cal_qrels[q]}
                    for i, q in enumerate(cal_ids)
                }
            calibration += plan.choose(emb.model_id, dense_pairs, cal_dense)

            from rankwise.search import Searcher

            for pool in pools:
                doc_ids = None if pool == "global" else sorted(union_of_judged(qrels))
                name = "global" if pool == "global" else "test-" + split
                cat = pool_catalog(
                    ds.corpus, doc_ids, emb, root, name, ids=ids, vectors=vectors, log=say
                )
                chosen = pipeline.get(pool) if isinstance(pipeline, Mapping) else pipeline
                searcher = Searcher(cat, rr, top_k=top_k, top_n=top_n, pipeline=chosen)
                if prefixes:  # bge-m3's sparse/ColBERT outputs, embedded once like the vectors
                    extra = tuple(o for o in prefixes[-1].needs() if o != "dense")
                    cat.side = corpus_side(ds.corpus, emb, root, extra, log=say) if extra else None
                    cat.side_outputs = extra
                    results += cascade_systems(
                        searcher, qids, queries, prefixes, rr, pool, score, show_progress
                    )
                results += [
                    searched_system(
                        srch,
                        system,
                        pool,
                        qids,
                        queries,
                        qvecs,
                        rr,
                        top_k=top_k,
                        top_n=top_n,
                        embed_per_query=embed_per_query,
                        score=score,
                        show_progress=show_progress,
                    )  # fmt: skip
                    for system, srch in with_templates(searcher, searched, templates, ds.corpus)
                    if system != "(cascade)"
                ]

        if "rerank-only" in systems:
            judged = judged_systems(
                ds, qids, queries, qrels, pairs, rr, dense_pairs,
                score=score, threshold=threshold, plan=plan, show_progress=show_progress,
            )  # fmt: skip
            results += judged[0]
            separations += judged[1]
            calibration += judged[2]

    for name, source in (runs or {}).items():
        run = read_run(source) if isinstance(source, str | Path) else source
        check_run_ids(run, ds.corpus, source=f"run {name!r}")
        results.append(SystemResult(name, "external", score(run), dict(run), {}))

    primary = f"ndcg@{top_n}" if top_n in ks else f"ndcg@{ks[-1]}"
    comparisons = compare_systems(results, primary, significance)
    per_split = ds.split_counts(qids)
    notes.append(
        f"evaluated {len(qids)} judged queries of qrels "
        + ", ".join(f"{name} ({n})" for name, n in per_split.items())
    )
    if max_queries is not None:
        notes.append(f"only the first {len(qids)} queries (sorted ids) were evaluated")
    if rr is not None:
        notes.append("rerank latency measured cold: the reranker's score cache was off")
    return EvaluationReport(
        dataset=ds.path.name,
        split=split,
        config={
            "systems": list(systems),
            "pools": list(pools),
            "embedder": getattr(emb, "model_id", None),
            "embedder_version": getattr(emb, "version", None),
            "reranker": getattr(rr, "model_id", None),
            "reranker_version": getattr(rr, "version", None),
            "top_k": top_k,
            "top_n": top_n,
            "ks": list(ks),
            "threshold": threshold,
            "significance": significance,
            "primary_metric": primary,
            **({"templates": {n: t.to_dict() for n, t in templates.items()}} if templates else {}),
            "n_queries": len(qids),
            "queries_per_split": per_split,
            "n_corpus": len(ds.corpus),
            "n_test_pool": len(union_of_judged(qrels)),
        },
        results=results,
        comparisons=comparisons,
        separation=separations,
        calibration=calibration,
        notes=notes,
        seconds=time.perf_counter() - t_start,
    )


def _load_embedder(embedder: Embedder | str | None) -> Embedder | None:
    if embedder is None or not isinstance(embedder, str):
        return embedder
    from rankwise.models import Embedder

    return Embedder(embedder)


def _load_reranker(reranker: Reranker | str) -> Reranker | None:
    if not isinstance(reranker, str):
        return reranker
    from rankwise.config import model_or_none
    from rankwise.models import Reranker

    if model_or_none(reranker) is None:  # "none" / "off": no reranker, as in `serve`
        return None

    return Reranker(reranker)
