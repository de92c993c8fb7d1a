"""Sentence-transformers pipelines beyond rankwise's own runner, run by sentence-transformers.

rankwise runs Transformer → Pooling (CLS or mean) → Normalize itself (torch or ONNX, token-budget
batches). A folder whose ``modules.json`` has anything else (``Dense`` projections as in
google/embeddinggemma-300m, ``Router``, ``LayerNorm``, last-token or weighted-mean pooling, ...)
is run by ``SentenceTransformer(folder).encode_query`` / ``encode_document`` so that every
module and the model's own prompt handling (``include_prompt``, routes per task) apply, and the
vectors are the model's. rankwise's instruction (from the spec table, the folder's
``config_sentence_transformers.json`` prompts, or ``query_instruction=``) is passed as
``prompt``. The ONNX backend declines such pipelines (its export covers the native modules only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from rankwise.errors import ModelLoadError
from rankwise.models.loading import ResolvedModel


class SentenceTransformersPipeline:
    """A sentence-transformers folder run by sentence-transformers (torch, ``device``).

    ``dim`` is the pipeline's output size (after Dense projections); ``max_length`` its token
    limit (``max_length=`` overrides it); vectors come back float32, L2-normalised, input order.
    """

    input_names: tuple[str, ...] = ()

    def __init__(self, resolved: ResolvedModel, *, device: str, max_length: int | None = None):
        from sentence_transformers import SentenceTransformer

        from rankwise.models.device import torch_dtype

        try:
            self.model = SentenceTransformer(
                str(resolved.root), device=device, local_files_only=True
            )
        except Exception as e:  # noqa: BLE001 - ST raises OSError/ValueError/ImportError/...
            raise ModelLoadError(
                f"Cannot load embedder '{resolved.model_id}': sentence-transformers could not "
                f"build its pipeline ({type(e).__name__}: {str(e).strip()[:300]}). Fix: check that "
                "every module folder named in modules.json is complete."
            ) from None
        self.model.to(torch_dtype(device))
        self.model.eval()
        if max_length is not None:  # else the pipeline's own limit
            self.model.max_seq_length = max_length
        self.max_length = int(self.model.max_seq_length or max_length or 512)
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelLoadError(
                f"Cannot load embedder '{resolved.model_id}': its pipeline does not state an "
                "output dimension."
            )
        self.dim = int(dim)
        self.modules = [type(m).__name__ for m in self.model]

    def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"],
        prompt: str,
        batch_size: int,
        show_progress: bool = False,
    ) -> np.ndarray:
        """float32 (n, dim), L2-normalised. ``prompt=""`` means no prompt (not the model's
        default prompt): rankwise has already decided which instruction applies."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        fn = self.model.encode_query if input_type == "query" else self.model.encode_document
        vecs = fn(
            list(texts),
            prompt=prompt,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vecs, dtype=np.float32)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:  # pragma: no cover
        raise TypeError("a sentence-transformers pipeline encodes texts, not token arrays")
