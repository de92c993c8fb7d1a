"""Training data in the FlagEmbedding JSONL format, its validation, and BEIR conversion.

One JSON object per line::

    {"query": str, "pos": [str, ...], "neg": [str, ...],
     "pos_scores": [float, ...], "neg_scores": [float, ...],   # optional, teacher scores
     "prompt": str,                                              # optional query instruction
     "related": [str, ...]}                                      # optional, rankwise extension

``pos_scores``/``neg_scores``, when present, have one score per text of ``pos``/``neg``.
``related`` lists judged documents that are neither positives nor negatives (e.g. grade 1
when positives need grade 2): mining never uses them as negatives. FlagEmbedding's
readers ignore the extra key, so files stay interchangeable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.data import BeirDataset, document_text
from rankwise.errors import DataError
from rankwise.textfiles import jsonl_rows

_FIELDS = ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "related")


@dataclass
class TrainExample:
    """One query with its positive and negative documents (texts, not ids)."""

    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    related: list[str] = field(default_factory=list)

    @property
    def has_scores(self) -> bool:
        return self.pos_scores is not None and self.neg_scores is not None

    def known_texts(self) -> set[str]:
        """Texts that must never become a mined negative: positives and related."""
        return set(self.pos) | set(self.related)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query, "pos": self.pos, "neg": self.neg}
        if self.pos_scores is not None:
            out["pos_scores"] = self.pos_scores
        if self.neg_scores is not None:
            out["neg_scores"] = self.neg_scores
        if self.prompt:
            out["prompt"] = self.prompt
        if self.related:
            out["related"] = self.related
        return out


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: field '{key}' must be a list of strings")
    return value


def _score_list(
    obj: Mapping[str, Any], key: str, texts: list[str], where: str
) -> list[float] | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise DataError(f"{where}: field '{key}' must be a list of numbers")
    text_key = key.removesuffix("_scores")
    if len(value) != len(texts):
        raise DataError(
            f"{where}: '{key}' has {len(value)} scores but '{text_key}' has {len(texts)} texts"
        )
    return [float(v) for v in value]


def parse_example(obj: Any, where: str = "<example>") -> TrainExample:
    """Validate one decoded JSON object. ``where`` ("file:line") prefixes every error."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in _FIELDS]
    if unknown:
        raise DataError(
            f"{where}: unknown field '{unknown[0]}'; expected some of {', '.join(_FIELDS)}"
        )
    query = obj.get("query")
    if not isinstance(query, str) or not query.strip():
        raise DataError(f"{where}: field 'query' must be a non-empty string")
    pos = _str_list(obj, "pos", where)
    if not pos:
        raise DataError(f"{where}: field 'pos' needs at least one positive text")
    neg = _str_list(obj, "neg", where)
    prompt = obj.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise DataError(f"{where}: field 'prompt' must be a string")
    pos_scores = _score_list(obj, "pos_scores", pos, where)
    neg_scores = _score_list(obj, "neg_scores", neg, where)
    if (pos_scores is None) != (neg_scores is None) and neg:
        raise DataError(f"{where}: give both 'pos_scores' and 'neg_scores', or neither")
    return TrainExample(
        query, pos, neg, pos_scores, neg_scores, prompt, _str_list(obj, "related", where)
    )


def read_examples(path: str | Path) -> list[TrainExample]:
    """Read and validate a FlagEmbedding JSONL file (errors name the file and line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"training file not found: {p}")
    out = []
    for n, obj in jsonl_rows(p):
        out.append(parse_example(obj, f"{p}:{n}"))
    if not out:
        raise DataError(f"{p}: the training file is empty")
    return out


def write_examples(examples: Iterable[TrainExample], path: str | Path) -> Path:
    """Write examples as FlagEmbedding JSONL (UTF-8, one object per line)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(p)
    return p


def from_beir(
    dataset: BeirDataset,
    *,
    threshold: int = 1,
    judged_negatives: bool = True,
    max_chars: int | None = None,
    prompt: str | None = None,
) -> list[TrainExample]:
    """Convert a BEIR split into examples, one per query that has a positive.

    Args:
        dataset: from :func:`rankwise.data.load_beir` (queries and qrels of one split).
        threshold: grades ``>= threshold`` are positives.
        judged_negatives: judged documents with grade 0 seed ``neg`` (human-checked
            negatives); grades between 0 and ``threshold`` go to ``related``.
        max_chars: cut document texts (see :func:`rankwise.data.document_text`).
        prompt: query instruction to store with each example.

    Queries are emitted in sorted id order; queries without a positive are skipped.
    """
    out = []
    for qid in sorted(dataset.qrels):
        judged = dataset.qrels[qid]

        def texts(keep, judged=judged) -> list[str]:
            ids = sorted(d for d, g in judged.items() if keep(g))
            return list(dict.fromkeys(document_text(dataset.corpus[d], max_chars) for d in ids))

        pos = texts(lambda g: g >= threshold)
        if not pos:
            continue
        neg = texts(lambda g: g <= 0) if judged_negatives else []
        related = texts(lambda g: 0 < g < threshold) if judged_negatives else []
        known = set(pos)
        out.append(
            TrainExample(
                dataset.queries[qid],
                pos,
                [t for t in neg if t not in known],
                prompt=prompt,
                related=[t for t in related if t not in known],
            )
        )
    if not out:
        raise DataError(
            f"{dataset.path}: no query of split '{dataset.split}' has a document graded >= {threshold}"
        )
    return out


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (md5), independent of PYTHONHASHSEED."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[:8], "big") / 2**64


def split_by_query(
    examples: Sequence[TrainExample], dev_fraction: float = 0.1, min_dev: int = 0
) -> tuple[list[TrainExample], list[TrainExample]]:
    """Split into (train, dev) by a stable hash of the query text.

    Every example of one query lands on the same side, and adding examples never moves
    existing queries across the split. ``min_dev``: when the fraction gives fewer dev
    queries, the train queries with the next-lowest hashes move to dev until there are
    ``min_dev`` (at most half of all queries), so a small set still gets a dev set large
    enough to decide; the caller warns when even that falls short.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise DataError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    if min_dev < 0:
        raise DataError(f"min_dev must be >= 0, got {min_dev}")

    def key(ex: TrainExample) -> str:
        return ex.query.strip().lower()

    frac = {key(ex): stable_fraction(key(ex)) for ex in examples}
    dev_keys = {k for k, f in frac.items() if f < dev_fraction}
    wanted = min(min_dev, len(frac) // 2)
    if len(dev_keys) < wanted:
        rest = sorted((f, k) for k, f in frac.items() if k not in dev_keys)
        dev_keys |= {k for _, k in rest[: wanted - len(dev_keys)]}
    train, dev = [], []
    for ex in examples:
        (dev if key(ex) in dev_keys else train).append(ex)
    return train, dev
