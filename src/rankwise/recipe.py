"""Recall recipes: how the first stage is run for one catalog, and the choice written beside it.

A :class:`RecallRecipe` is one way to run recall (mode, fusion, RRF ``k`` or weights, depth of
each list before fusion). A :class:`Pipeline` is what ``rankwise tune fusion`` (or ``tune
run``) chose for a catalog and its models on judged *train* queries: a recipe per query
language (a query in a language the embedder does not cover never goes to dense recall), a
default recipe, and the promotion decisions for tuned models (a reranker that did not beat
the first stage is recorded as not promoted, and the Searcher then skips it with that reason).

The choice is stored as JSON beside the index (``<index dir>/rankwise-pipeline.json``; for a
Milvus Lite file ``<file>.pipeline.json``; a Milvus server needs an explicit path), with the
data, models and scores it was chosen on, so a person can read why.

Language routing is by script, which is enough to separate Chinese from English queries (the
case that matters here: an English-only embedder turns Chinese into ``[UNK]`` tokens):
:func:`detect_language` returns ``zh`` (Han), ``ja`` (kana), ``ko`` (Hangul), ``ru``
(Cyrillic), ``ar`` (Arabic), ``en`` (Latin letters) or ``other``.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from rankwise.errors import ConfigError, InvalidRequest

Mode = Literal["dense", "lexical", "hybrid"]
MODES = ("dense", "lexical", "hybrid")
FUSIONS = ("rrf", "weighted")
PIPELINE_FILE = "rankwise-pipeline.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RecallRecipe:
    """One way to run the first stage.

    Attributes:
        mode: ``dense``, ``lexical`` or ``hybrid`` (both lists fused).
        fusion: ``rrf`` (``Σ w / (rrf_k + rank)``) or ``weighted`` (min-max normalised scores).
        rrf_k: the RRF constant (60 in Cormack et al.; small values trust the top ranks more).
        weights: ``(dense, lexical)`` weight of each list in either fusion.
        depth: candidates taken from each list before fusion (``None``: the search's Top-K).
    """

    mode: Mode = "hybrid"
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = 60
    weights: tuple[float, float] = (0.5, 0.5)
    depth: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidRequest(
                f"unknown search mode {self.mode!r}; use one of {', '.join(MODES)}"
            )
        if self.fusion not in FUSIONS:
            raise InvalidRequest(f"unknown fusion {self.fusion!r}; use 'rrf' or 'weighted'")
        if self.rrf_k < 0 or (self.depth is not None and self.depth < 1):
            raise InvalidRequest("rrf_k must be >= 0 and depth >= 1")
        if len(self.weights) != 2 or min(self.weights) < 0:
            raise InvalidRequest("weights must be two non-negative numbers (dense, lexical)")
        object.__setattr__(self, "weights", (float(self.weights[0]), float(self.weights[1])))

    def label(self) -> str:
        """Short human-readable name, e.g. ``hybrid rrf k=10 w=0.67/0.33 depth=100``."""
        if self.mode != "hybrid":
            return self.mode
        k = f" k={self.rrf_k}" if self.fusion == "rrf" else ""
        depth = f" depth={self.depth}" if self.depth else ""
        return f"hybrid {self.fusion}{k} w={self.weights[0]:.2f}/{self.weights[1]:.2f}{depth}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["weights"] = list(self.weights)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecallRecipe:
        known = {k: d[k] for k in ("mode", "fusion", "rrf_k", "weights", "depth") if k in d}
        if "weights" in known:
            known["weights"] = tuple(known["weights"])
        return cls(**known)


#: What search does when nothing was calibrated: RRF of both lists, k=60, equal weights.
DEFAULT_RECIPE = RecallRecipe()
LEXICAL = RecallRecipe("lexical")


@dataclass(frozen=True)
class RerankDecision:
    """Whether a reranker (by model version) was promoted for this catalog, and why.

    ``weight``: the reranker's share of the final order, interpolated with the recall
    score (:func:`rankwise.ranking.interpolate`); 1 = the reranker's own order."""

    model: str
    version: str
    promoted: bool
    reason: str
    scores: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ConfigError(f"rerank weight must be in [0, 1], got {self.weight!r}")


@dataclass(frozen=True)
class Pipeline:
    """The calibrated first stage for one catalog, plus promotion decisions.

    Attributes:
        default: recipe for queries of languages without their own entry.
        by_language: recipe per detected query language (see :func:`detect_language`).
        rerank: decisions about rerankers, by model version.
        dense_languages: languages the embedder covers (``None``: all); a query in another
            language is served lexically whatever its recipe says.
        provenance: what the choice was made on (data, split, query count, models, scores).
    """

    default: RecallRecipe = DEFAULT_RECIPE
    by_language: dict[str, RecallRecipe] = field(default_factory=dict)
    rerank: tuple[RerankDecision, ...] = ()
    dense_languages: tuple[str, ...] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def route(self, query: str) -> tuple[str, RecallRecipe]:
        """The query's language and the recipe that serves it."""
        lang = detect_language(query)
        recipe = self.by_language.get(lang, self.default)
        if recipe.mode != "lexical" and not covers(self.dense_languages, lang):
            recipe = LEXICAL
        return lang, recipe

    def rerank_decision(self, version: str | None) -> RerankDecision | None:
        """The decision recorded for the reranker of ``version``, if any."""
        return next((d for d in self.rerank if d.version == version), None)

    def with_rerank(self, decision: RerankDecision) -> Pipeline:
        """A copy with ``decision`` replacing any earlier one for the same version."""
        kept = tuple(d for d in self.rerank if d.version != decision.version)
        return replace(self, rerank=(*kept, decision))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "default": self.default.to_dict(),
            "by_language": {k: v.to_dict() for k, v in sorted(self.by_language.items())},
            "rerank": [asdict(d) for d in self.rerank],
            "dense_languages": list(self.dense_languages) if self.dense_languages else None,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pipeline:
        return cls(
            default=RecallRecipe.from_dict(d.get("default") or {}),
            by_language={
                k: RecallRecipe.from_dict(v) for k, v in (d.get("by_language") or {}).items()
            },
            rerank=tuple(RerankDecision(**r) for r in d.get("rerank") or ()),
            dense_languages=tuple(d["dense_languages"]) if d.get("dense_languages") else None,
            provenance=dict(d.get("provenance") or {}),
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Pipeline:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, InvalidRequest) as e:
            raise ConfigError(
                f"{path} is not a readable rankwise pipeline ({e}); re-run `rankwise tune fusion` "
                "or delete the file to search with the default recipe"
            ) from None


def pipeline_path(index_uri: str) -> Path | None:
    """Where the pipeline of the index at ``index_uri`` lives (``None`` for a server URI)."""
    if "://" in index_uri:
        return None
    p = Path(index_uri)
    if p.suffix == ".db":
        return p.with_name(p.name + ".pipeline.json")
    return p / PIPELINE_FILE


def find_pipeline(index_uri: str) -> Pipeline | None:
    """The pipeline stored beside the index, or ``None`` when none was calibrated."""
    path = pipeline_path(index_uri)
    return Pipeline.load(path) if path is not None and path.is_file() else None


# Unicode script of a character, by the first word of its name: cheap and table-free.
_SCRIPTS = {
    "CJK": "zh",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "CYRILLIC": "ru",
    "ARABIC": "ar",
    "LATIN": "en",
}


def detect_language(text: str) -> str:
    """The query's language by script: the script of most of its letters.

    Kana anywhere means Japanese (Japanese mixes kana with Han), Hangul Korean; otherwise the
    majority of Han vs Latin vs other letters decides. ``other`` when no letter is found.
    Digits, punctuation and spaces are ignored. A Han character carries about as much as a
    short Latin word, so it counts three letters: ``iPhone 15 手机壳`` (six Latin letters,
    three Han) is ``zh``; ``USB-C cable 线`` is ``en``.
    """
    counts: dict[str, float] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        try:
            first = unicodedata.name(ch).split(" ", 1)[0]
        except ValueError:
            continue
        lang = _SCRIPTS.get(first, "other")
        counts[lang] = counts.get(lang, 0.0) + (3.0 if lang == "zh" else 1.0)
    if not counts:
        return "other"
    if "ja" in counts:
        return "ja"
    if "ko" in counts:
        return "ko"
    return max(counts, key=lambda k: counts[k])


def covers(languages: tuple[str, ...] | None, lang: str) -> bool:
    """Whether a model declaring ``languages`` (``None``: multilingual/unknown) covers ``lang``."""
    return languages is None or lang in languages or lang == "other"
