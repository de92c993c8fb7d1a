"""Hard-negative mining with a false-negative guard.

For each query: embed it, rank the whole corpus exactly (faiss ``IndexFlatIP`` over
L2-normalised vectors), keep the candidates ranked ``lo..hi`` (1-based, inclusive), drop

* known positives and ``related`` texts (never a negative, whatever the guard says);
* **similarity guard**: candidates whose similarity is at least
  ``min(positive similarities) - margin`` — a product as close to the query as a known
  positive is more likely an unlabelled positive than a negative (the "positive-aware"
  filter of NV-Retriever, arXiv 2407.15831);
* **teacher guard** (when a reranker is given): candidates whose teacher logit exceeds
  ``teacher_max``;

then sample ``negative_number`` of the survivors (uniformly, as FlagEmbedding does, or the
top ones). Shortfalls are filled with random corpus documents that pass the same checks.
Judged negatives already in the example (e.g. grade-0 BEIR judgments) are kept first.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from tqdm.auto import tqdm

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample
from rankwise.tune.vectors import encode_cached, exact_search

if TYPE_CHECKING:
    from rankwise.models import Embedder, Reranker

log = logging.getLogger(__name__)


@dataclass
class MiningConfig:
    """Options for :func:`mine_hard_negatives` (defaults follow FlagEmbedding)."""

    rank_range: tuple[int, int] = (2, 200)
    negative_number: int = 10
    margin: float | None = 0.05
    teacher_max: float | None = None
    random_negatives: int = 0
    sample: Literal["random", "top"] = "random"
    fill_random: bool = True
    keep_existing: bool = True
    seed: int = 0

    def check(self) -> None:
        lo, hi = self.rank_range
        if not 1 <= lo <= hi:
            raise InvalidRequest(f"rank range must satisfy 1 <= lo <= hi, got {lo}-{hi}")
        if self.negative_number < 1:
            raise InvalidRequest(f"negative_number must be >= 1, got {self.negative_number}")
        if self.random_negatives < 0:
            raise InvalidRequest("random_negatives must be >= 0")
        if self.sample not in ("random", "top"):
            raise InvalidRequest(f"sample must be 'random' or 'top', got {self.sample!r}")


@dataclass
class MiningReport:
    """What mining kept and dropped, summed over queries."""

    queries: int = 0
    negatives: int = 0
    dropped_known: int = 0
    dropped_similarity: int = 0
    dropped_teacher: int = 0
    filled_random: int = 0
    short_queries: int = 0
    positive_rank_mean: float = 0.0
    seconds: float = 0.0
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_range(text: str) -> tuple[int, int]:
    """``"2-200"`` → ``(2, 200)``."""
    lo, sep, hi = text.partition("-")
    try:
        return int(lo), int(hi if sep else lo)
    except ValueError:
        raise InvalidRequest(f"rank range must look like 2-200, got {text!r}") from None


def mine_hard_negatives(
    examples: Sequence[TrainExample],
    corpus: Sequence[str],
    embedder: Embedder,
    config: MiningConfig | None = None,
    *,
    teacher: Reranker | None = None,
    doc_vectors: np.ndarray | None = None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> tuple[list[TrainExample], MiningReport]:
    """Return copies of ``examples`` with mined ``neg`` (teacher scores are dropped).

    Args:
        examples: queries with positives (``related`` texts are excluded too).
        corpus: candidate document texts (deduplicated here); positives need not be in it.
        embedder: any :class:`rankwise.models.Embedder`; queries get its instruction.
        config: :class:`MiningConfig`.
        teacher: optional cross-encoder for the teacher guard (needs ``teacher_max``).
        doc_vectors: precomputed ``embedder`` vectors of ``corpus`` (float32 (n, dim), same
            order), e.g. from the evaluation cache; embedded here when None.
        cache_dir: embedding cache folder (see :mod:`rankwise.tune.vectors`).
    """
    import time

    cfg = config or MiningConfig()
    cfg.check()
    if cfg.teacher_max is not None and teacher is None:
        raise InvalidRequest("teacher_max needs a teacher reranker")
    t0 = time.perf_counter()
    first: dict[str, int] = {}
    for i, text in enumerate(corpus):
        first.setdefault(text, i)
    docs = list(first)
    if not docs:
        raise InvalidRequest("mining needs a non-empty corpus")
    if doc_vectors is not None and len(doc_vectors) != len(corpus):
        raise InvalidRequest(f"{len(doc_vectors)} vectors given for {len(corpus)} documents")
    lo, hi = cfg.rank_range
    rng = random.Random(cfg.seed)
    if doc_vectors is not None:
        doc_vecs = np.ascontiguousarray(doc_vectors[list(first.values())], dtype=np.float32)
    else:
        doc_vecs = encode_cached(embedder, docs, "document", cache_dir, show_progress)
    queries = [ex.query for ex in examples]
    q_vecs = encode_cached(embedder, queries, "query", cache_dir, show_progress=False)
    pos_vecs, pos_index = _positive_vectors(
        examples, docs, doc_vecs, embedder, cache_dir, show_progress
    )
    sims, idx = exact_search(doc_vecs, q_vecs, hi)

    report = MiningReport(queries=len(examples), config=asdict(cfg))
    out, pos_ranks = [], []
    for qi, ex in enumerate(tqdm(examples, desc="mining", disable=not show_progress)):
        known = ex.known_texts()
        pos_sim = pos_vecs[[pos_index[t] for t in ex.pos]] @ q_vecs[qi]
        bound = float(pos_sim.min()) - cfg.margin if cfg.margin is not None else np.inf
        ranked = [docs[j] for j in idx[qi] if j >= 0]
        pos_ranks += [r for r, t in enumerate(ranked, 1) if t in ex.pos][:1]
        candidates = []
        for text, sim in zip(ranked[lo - 1 : hi], sims[qi][lo - 1 : hi], strict=False):
            if text in known:
                report.dropped_known += 1
            elif sim >= bound:
                report.dropped_similarity += 1
            else:
                candidates.append(text)
        if cfg.sample == "random":
            rng.shuffle(candidates)
        chosen = _teacher_filter(ex.query, candidates, cfg, teacher, report)
        existing = [t for t in ex.neg if t not in known] if cfg.keep_existing else []
        taken = set(existing) | set(chosen)
        fill = cfg.random_negatives + (
            max(0, cfg.negative_number - len(chosen)) if cfg.fill_random else 0
        )
        randoms = _random_negatives(ex, docs, doc_vecs, q_vecs[qi], bound, taken, fill, rng)
        report.filled_random += len(randoms)
        if len(chosen) < cfg.negative_number:
            report.short_queries += 1
        neg = list(dict.fromkeys(existing + chosen + randoms))
        report.negatives += len(neg)
        out.append(replace(ex, neg=neg, pos_scores=None, neg_scores=None))
    report.positive_rank_mean = float(np.mean(pos_ranks)) if pos_ranks else 0.0
    report.seconds = time.perf_counter() - t0
    log.info("mining: %s", report.to_dict())
    return out, report


def _positive_vectors(
    examples: Sequence[TrainExample],
    docs: list[str],
    doc_vecs: np.ndarray,
    embedder: Embedder,
    cache_dir: str | Path | None,
    show_progress: bool,
) -> tuple[np.ndarray, dict[str, int]]:
    """Vectors of every positive text and ``{text: row}``. Positives that are corpus
    documents (the usual case: qrels point into the corpus) reuse the corpus vectors;
    only the others are embedded, with a progress bar."""
    row = {t: i for i, t in enumerate(docs)}
    pos_texts = list(dict.fromkeys(t for ex in examples for t in ex.pos))
    outside = [t for t in pos_texts if t not in row]
    if outside:
        log.info("mining: embedding %d positives that are not in the corpus", len(outside))
    extra = encode_cached(embedder, outside, "document", cache_dir, show_progress)
    extra_row = {t: i for i, t in enumerate(outside)}
    vecs = np.empty((len(pos_texts), doc_vecs.shape[1]), dtype=np.float32)
    for i, t in enumerate(pos_texts):
        vecs[i] = doc_vecs[row[t]] if t in row else extra[extra_row[t]]
    return vecs, {t: i for i, t in enumerate(pos_texts)}


def _teacher_filter(
    query: str,
    candidates: list[str],
    cfg: MiningConfig,
    teacher: Reranker | None,
    report: MiningReport,
) -> list[str]:
    """The first ``negative_number`` candidates whose teacher logit is <= ``teacher_max``.

    Scores candidates in chunks so a teacher only sees about as many texts as needed.
    """
    if teacher is None or cfg.teacher_max is None:
        return candidates[: cfg.negative_number]
    chosen: list[str] = []
    step = 2 * cfg.negative_number
    for start in range(0, len(candidates), step):
        chunk = candidates[start : start + step]
        scores = teacher.score(query, chunk)
        for text, s in zip(chunk, scores, strict=True):
            if s > cfg.teacher_max:
                report.dropped_teacher += 1
            elif len(chosen) < cfg.negative_number:
                chosen.append(text)
        if len(chosen) >= cfg.negative_number:
            break
    return chosen


def _random_negatives(
    ex: TrainExample,
    docs: list[str],
    doc_vecs: np.ndarray,
    q_vec: np.ndarray,
    bound: float,
    taken: set[str],
    n: int,
    rng: random.Random,
) -> list[str]:
    """Up to ``n`` random corpus texts that are not known, taken, or above the guard."""
    known = ex.known_texts()
    out: list[str] = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        j = rng.randrange(len(docs))
        text = docs[j]
        if text in known or text in taken or float(doc_vecs[j] @ q_vec) >= bound:
            continue
        taken.add(text)
        out.append(text)
    return out
