"""Models: Embedder (bi-encoder vectors) and Reranker (cross-encoder scores), their specs,
backends (torch, ONNX Runtime) and token-budget batching."""

from rankwise.models.embedder import DEFAULT_EMBEDDER, Embedder
from rankwise.models.reranker import DEFAULT_RERANKER, Reranker
from rankwise.models.results import RankedResult, RankedResults, sigmoid
from rankwise.models.specs import ModelSpec, spec_for

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_RERANKER",
    "Embedder",
    "ModelSpec",
    "RankedResult",
    "RankedResults",
    "Reranker",
    "sigmoid",
    "spec_for",
]
