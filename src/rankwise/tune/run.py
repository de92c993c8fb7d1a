"""The whole tuning loop in one call: split → mine → score → train → evaluate → report.

:func:`tune_run` works on a BEIR folder: ``qrels/train.tsv`` queries are tuned on (with a
dev slice held out by a stable hash of the query), ``qrels/test.tsv`` queries are only
used for the before/after evaluation, which is :func:`rankwise.evaluate.evaluate` run
twice (base models, tuned models) on the test pool and the global pool. Output::

    OUT/data/{train,dev}.jsonl           examples from the qrels (FlagEmbedding JSONL)
    OUT/data/{train,dev}.mined.jsonl     with mined hard negatives (+ teacher scores)
    OUT/embedder/                        the tuned bi-encoder (loads with Embedder(OUT/embedder))
    OUT/reranker/                        the tuned cross-encoder, when a reranker base is given
    OUT/eval/{before,after}.{md,json}    the evaluation engine's own reports
    OUT/report.md, OUT/report.json       before/after table, stage wall times, settings
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from rankwise.config import DEFAULT_TOP_K, DEFAULT_TOP_N
from rankwise.data import BeirDataset, document_text, load_beir
from rankwise.errors import InvalidRequest
from rankwise.tune.data import (
    TrainExample,
    from_beir,
    read_examples,
    split_by_query,
    stable_fraction,
    write_examples,
)
from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder
from rankwise.tune.mine import MiningConfig, mine_hard_negatives
from rankwise.tune.promote import (
    PromotionConfig,
    calibrated_searcher,
    dev_query_ids,
    first_stage_negatives,
    promote,
)
from rankwise.tune.reranker import RerankerTrainConfig, train_reranker
from rankwise.tune.run_report import (  # noqa: F401 - REPORT_METRICS, SIGNIFICANCE re-exported
    REPORT_METRICS,
    SIGNIFICANCE,
    compare_reports,
    promoted_rows,
    render_markdown,
)
from rankwise.tune.score import score_examples
from rankwise.tune.training import TrainResult, describe_checkpoints

log = logging.getLogger(__name__)


@dataclass
class TuneRunConfig:
    """Settings of :func:`tune_run` (see the CLI ``rankwise tune run --help``)."""

    data: Path
    base: str
    out: Path
    reranker_base: str | None = None
    teacher: str | None = None
    pos_threshold: int = 1
    max_train_queries: int | None = None
    dev_fraction: float = 0.05
    min_dev_queries: int = 30
    mining: MiningConfig = field(default_factory=MiningConfig)
    embedder: EmbedderTrainConfig = field(default_factory=EmbedderTrainConfig)
    reranker: RerankerTrainConfig = field(default_factory=RerankerTrainConfig)
    pools: tuple[str, ...] = ("test", "global")
    rerank_pools: tuple[str, ...] | None = None
    top_k: int = DEFAULT_TOP_K
    top_n: int = DEFAULT_TOP_N
    max_eval_queries: int | None = None
    rerank_max_queries: int | None = None
    index_dir: Path | None = None
    reuse: bool = True
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d, default=str))


#: Beside each reused output: the key of the settings that produced it.
REUSE_FILE = "rankwise_reuse.json"


def settings_key(*parts: Any) -> str:
    """A stable hash of the settings (dataclasses, paths, numbers) that produce an output."""
    blob = json.dumps([asdict(p) if is_dataclass(p) else p for p in parts], sort_keys=True,
                      default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _data_fingerprint(data: Path) -> list[Any]:
    """Which data a run read: the content hash of its corpus, queries and train qrels (a
    changed file invalidates what was mined and trained from it; a rewritten but equal one,
    as ``--judgments`` writes each run, does not)."""
    files = [data / "corpus.jsonl", data / "queries.jsonl", data / "qrels" / "train.tsv"]
    out: list[Any] = []
    for f in files:
        if f.is_file():
            h = hashlib.sha256()
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out.append([f.name, h.hexdigest()])
    return out


def _key_matches(folder: Path, key: str) -> bool:
    try:
        return json.loads((folder / REUSE_FILE).read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


def _write_key(folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REUSE_FILE).write_text(json.dumps({"key": key}))


def _reused(folder: Path, reuse: bool, say: Callable[[str], None], key: str) -> TrainResult | None:
    """The saved :class:`TrainResult` of a finished training in ``folder``, when reusing and
    it was trained with the settings ``key`` stands for (else None: train again)."""
    path = folder / "rankwise_tune.json"
    if not (reuse and path.is_file()):
        return None
    if not _key_matches(folder, key):
        say(f"[tune] settings changed since {folder} was trained: training it again")
        return None
    say(f"[tune] reusing the model trained earlier in {folder} (same settings)")
    d = json.loads(path.read_text())
    d["out_dir"] = Path(d["out_dir"])
    d["losses"] = [tuple(x) for x in d["losses"]]
    return TrainResult(**d)


def test_pool_dataset(ds: BeirDataset, max_queries: int | None = None) -> BeirDataset:
    """``ds`` restricted to its test pool: the documents judged for the evaluated queries
    (the first ``max_queries`` by sorted id). Its global pool equals the original's test pool.
    """
    qids = sorted(ds.qrels)[:max_queries] if max_queries else sorted(ds.qrels)
    qrels = {q: ds.qrels[q] for q in qids}
    corpus = {d: ds.corpus[d] for d in sorted({d for docs in qrels.values() for d in docs})}
    return BeirDataset(ds.path, ds.split, corpus, {q: ds.queries[q] for q in qids}, qrels)


def _subsample(examples: list[TrainExample], n: int | None) -> list[TrainExample]:
    """At most ``n`` examples, picked by a stable hash of the query (reproducible)."""
    if n is None or n >= len(examples):
        return examples
    return sorted(examples, key=lambda ex: stable_fraction("sample:" + ex.query))[:n]


def tune_run(cfg: TuneRunConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the loop; returns the report dict (also written to ``OUT/report.{md,json}``)."""
    from rankwise.config import model_or_none
    from rankwise.evaluate import evaluate
    from rankwise.evaluate.indexes import corpus_vectors, dataset_root
    from rankwise.models import Embedder, Reranker

    # "none" switches the reranker (and the teacher) off, as everywhere else
    cfg = replace(
        cfg, reranker_base=model_or_none(cfg.reranker_base), teacher=model_or_none(cfg.teacher)
    )
    if cfg.reranker_base is None:
        say("[tune] no reranker base (--reranker-base): reranker training and rerank rows skipped")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    index_dir = Path(cfg.index_dir or out / "cache")
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        say(f"[tune] {name}: {timings[name]:.1f}s")

    # 1. data and split
    t = time.perf_counter()
    train_ds = load_beir(cfg.data, "train")
    examples = _subsample(from_beir(train_ds, threshold=cfg.pos_threshold), cfg.max_train_queries)
    train, dev = split_by_query(examples, cfg.dev_fraction, cfg.min_dev_queries)
    judged_dev = dev  # before mining: positives among their judged documents only
    if len(dev) < cfg.min_dev_queries:
        say(
            f"[tune] warning: {len(dev)} dev queries, fewer than --min-dev-queries "
            f"{cfg.min_dev_queries}: the dev checks cannot decide much"
        )
    write_examples(train, out / "data" / "train.jsonl")
    write_examples(dev, out / "data" / "dev.jsonl")
    say(
        f"[tune] {len(train)} train and {len(dev)} dev queries (positives: grade >= {cfg.pos_threshold})"
    )
    stage("split", t)

    # the gates and the calibration serve the run's own Top-K / Top-N
    promo = replace(cfg.promotion, fusion=replace(cfg.promotion.fusion, top_k=cfg.top_k),
                    top_n=cfg.top_n)  # fmt: skip
    dev_qids = dev_query_ids(train_ds, dev)
    calib_qids = [q for q in sorted(train_ds.qrels) if q not in set(dev_qids)]

    # 2. mining with the base embedder (its corpus vectors are shared with the evaluation)
    t = time.perf_counter()
    # the base runs at the length the tuned model is trained at: before/after compare equal
    # lengths (and the tuned folder records its length, so it loads at the same one)
    base_emb = Embedder(cfg.base, max_length=cfg.embedder.max_length)
    # the base embedder's calibrated first stage: its real candidates become negatives, and
    # it is what a tuned model must beat to be promoted
    base_searcher, base_pipeline, _ = calibrated_searcher(
        train_ds, base_emb, index_dir, calib_qids, promo, say=say
    )
    stage("calibrate_base", t)
    t = time.perf_counter()
    root = dataset_root(index_dir, train_ds.path.name, train_ds.corpus, base_emb)
    ids, vectors = corpus_vectors(train_ds.corpus, base_emb, root, log=say)
    mined_files = [out / "data" / f"{part}.mined.jsonl" for part in ("train", "dev")]
    mining_file = out / "data" / "mining.json"
    # what was mined is reused only when the settings that produced it are the same
    data_key = settings_key(
        _data_fingerprint(cfg.data), cfg.base, cfg.pos_threshold, cfg.max_train_queries,
        cfg.dev_fraction, cfg.min_dev_queries, cfg.mining, cfg.teacher, cfg.top_k,
        cfg.embedder.max_length, promo.first_stage_negatives, promo.fusion,
    )  # fmt: skip
    mined_ok = mining_file.is_file() and all(f.is_file() for f in mined_files)
    if cfg.reuse and mined_ok and not _key_matches(out / "data", data_key):
        say("[tune] settings changed since the negatives were mined: mining them again")
    if cfg.reuse and mined_ok and _key_matches(out / "data", data_key):
        say(f"[tune] reusing the negatives mined earlier in {out / 'data'} (same settings)")
        train, dev = (read_examples(f) if f.stat().st_size else [] for f in mined_files)
        mining = json.loads(mining_file.read_text())
    else:
        corpus = [document_text(train_ds.corpus[i]) for i in ids]
        teacher = Reranker(cfg.teacher) if cfg.teacher else None
        mined, report = mine_hard_negatives(
            train + dev, corpus, base_emb, cfg.mining, teacher=teacher, doc_vectors=vectors
        )
        train, dev = mined[: len(train)], mined[len(train) :]
        n_first = promo.first_stage_negatives
        train = first_stage_negatives(train, base_searcher, n_first)
        dev = first_stage_negatives(dev, base_searcher, n_first)
        stage("mine", t)
        # 3. teacher scores
        if teacher is not None:
            t = time.perf_counter()
            train = score_examples(train, teacher)
            dev = score_examples(dev, teacher)
            stage("score", t)
        write_examples(train, mined_files[0])
        write_examples(dev, mined_files[1])
        mining = report.to_dict()
        mining_file.write_text(json.dumps(mining, indent=2, default=str))
        _write_key(out / "data", data_key)

    # 4. training (a finished model in OUT is reused when cfg.reuse: reruns skip it)
    t = time.perf_counter()
    emb_key = settings_key(data_key, cfg.embedder)
    emb_result = _reused(out / "embedder", cfg.reuse, say, emb_key)
    if emb_result is None:
        emb_result = train_embedder(train, cfg.base, out / "embedder", cfg.embedder)
        _write_key(out / "embedder", emb_key)
        stage("train_embedder", t)
        say(f"[tune] embedder: {describe_checkpoints(emb_result.checkpoints)}")
    rr_result = None
    if cfg.reranker_base:
        t = time.perf_counter()
        rr_key = settings_key(emb_key, cfg.reranker_base, cfg.reranker)
        rr_result = _reused(out / "reranker", cfg.reuse, say, rr_key)
        if rr_result is None:
            # what the reranker replaces: the tuned embedder's order of the same candidates
            fs_emb = Embedder(str(out / "embedder"))

            def first_stage(query: str, docs: Sequence[str]):
                return fs_emb.encode_documents(list(docs)) @ fs_emb.encode_queries([query])[0]

            rr_result = train_reranker(
                train,
                cfg.reranker_base,
                out / "reranker",
                cfg.reranker,
                dev=dev,
                judged_dev=judged_dev,
                first_stage=first_stage,
                first_stage_name="tuned embedder cosine",
                min_dev_queries=cfg.min_dev_queries,
            )
            _write_key(out / "reranker", rr_key)
            stage("train_reranker", t)
            say(f"[tune] reranker: {describe_checkpoints(rr_result.checkpoints)}")
        for w in rr_result.warnings:
            say(f"[tune] warning: {w}")

    # 5. promotion: each tuned model must beat what it would replace on the dev queries
    t = time.perf_counter()
    tuned_emb = Embedder(str(out / "embedder"))
    tuned_rr = Reranker(str(out / "reranker")) if cfg.reranker_base else None
    tuned_searcher, tuned_pipeline, _ = calibrated_searcher(
        train_ds, tuned_emb, index_dir, calib_qids, promo, say=say
    )
    serving_emb, pipeline, gates = promote(
        train_ds, dev_qids, (base_emb, base_searcher, base_pipeline),
        (tuned_emb, tuned_searcher, tuned_pipeline), tuned_rr, promo, say=say,
    )  # fmt: skip
    pipeline.save(out / "pipeline.json")
    stage("promote", t)

    # 6. before/after with the evaluation engine. With pools == ("test",) every evaluation
    # runs over the test-pool documents only: the same pool, without embedding the corpus.
    common = dict(
        split="test", top_k=cfg.top_k, top_n=cfg.top_n, ks=(1, 5, 10), pools=cfg.pools,
        index_dir=index_dir, max_queries=cfg.max_eval_queries, log=say,
    )  # fmt: skip
    test_ds = load_beir(cfg.data, "test")
    pool_only = tuple(cfg.pools) == ("test",)
    source = test_pool_dataset(test_ds, cfg.max_eval_queries) if pool_only else test_ds
    reranked = None
    if tuned_rr is not None:
        # Reranking is the costly stage: it goes first, cfg.rerank_pools may restrict it to
        # the test pool and cfg.rerank_max_queries to fewer queries; its own "hybrid" run is
        # the baseline it is compared with (same queries).
        t = time.perf_counter()
        rerank_pools = tuple(cfg.rerank_pools or cfg.pools)
        n_rr = cfg.rerank_max_queries or cfg.max_eval_queries
        rr_source = test_pool_dataset(test_ds, n_rr) if rerank_pools == ("test",) else test_ds
        reranked = evaluate(
            rr_source, systems="hybrid,hybrid+rerank,rerank-only", embedder=tuned_emb,
            reranker=tuned_rr,
            **{**common, "pools": rerank_pools, "max_queries": n_rr},
        )  # fmt: skip
        reranked.save(out / "eval", stem="rerank")
        stage("evaluate_rerank", t)
    t = time.perf_counter()
    before = evaluate(source, systems="lexical,dense,hybrid", embedder=base_emb, **common)
    before.save(out / "eval", stem="before")
    stage("evaluate_before", t)
    t = time.perf_counter()
    after = evaluate(source, systems="dense,hybrid", embedder=tuned_emb, **common)
    after.save(out / "eval", stem="after")
    stage("evaluate_after", t)
    t = time.perf_counter()
    promoted = evaluate(
        source, systems="calibrated+rerank" if tuned_rr else "calibrated",
        embedder=serving_emb, reranker=tuned_rr, pipeline=pipeline, **common,
    )  # fmt: skip
    promoted.save(out / "eval", stem="promoted")
    stage("evaluate_promoted", t)

    report = {
        "config": cfg.to_dict(),
        "wall_seconds": timings,
        "data": {"train_queries": len(train), "dev_queries": len(dev)},
        "max_length": {
            "embedder_before": base_emb.max_length,
            "embedder_after": tuned_emb.max_length,
            "reranker": tuned_rr.max_length if tuned_rr is not None else None,
        },
        "significance": SIGNIFICANCE,
        "mining": mining,
        "embedder_training": emb_result.to_dict(),
        "reranker_training": rr_result.to_dict() if rr_result else None,
        "table": compare_reports(before, after, cfg.pools, reranked),
        "promotion": gates,
        "pipeline": pipeline.to_dict(),
        "promoted": promoted_rows(before, promoted, cfg.pools),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    say(f"[tune] report: {out / 'report.md'}")
    return report


def check_pools(pools: Sequence[str]) -> tuple[str, ...]:
    bad = [p for p in pools if p not in ("test", "global")]
    if bad:
        raise InvalidRequest(f"unknown pool {bad[0]!r}; choose from test, global")
    return tuple(pools)
