"""Runners map padded numpy batches to outputs: pooled unit vectors (embedder) or logits (reranker).

The model-specific head (pooling + L2 normalisation, or the single logit) lives in small torch
modules (:class:`PooledEncoder`, :class:`PairScorer`) so that the torch runner and the ONNX
export run the very same graph. Outputs are always float32, whatever the compute dtype.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import numpy as np

from rankwise.errors import ModelLoadError
from rankwise.models.loading import ResolvedModel
from rankwise.models.specs import Kind, Pooling


class Runner(Protocol):
    """``input_names`` are the arrays the runner wants (``input_ids``, ``attention_mask``,
    maybe ``token_type_ids``), each int64 of shape (batch, seq)."""

    input_names: tuple[str, ...]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


def _heads():
    """Torch modules are defined lazily so that importing rankwise does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PooledEncoder(nn.Module):
        """(input_ids, attention_mask[, token_type_ids]) -> L2-normalised pooled vectors (b, dim), fp32."""

        def __init__(self, model: nn.Module, pooling: Pooling):
            super().__init__()
            self.model, self.pooling = model, pooling

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[
                0
            ].float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=-1)

    class PairScorer(nn.Module):
        """(input_ids, attention_mask[, token_type_ids]) -> one raw logit per pair (b,), fp32."""

        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]
            return logits[:, 0].to(torch.float32)

    return PooledEncoder, PairScorer


def load_torch_head(
    resolved: ResolvedModel, *, kind: Kind, pooling: Pooling, dtype, attn: str | None = None
):
    """Load the transformers model from ``resolved.path`` and wrap it in its head (eval mode).

    Returns ``(module, input_names)``. ``attn`` picks transformers' attention implementation
    (``None``: its default, SDPA where available; the ONNX export asks for ``"eager"``).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    loader = AutoModel if kind == "embedder" else AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    extra = {"attn_implementation": attn} if attn else {}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise in CLI output
    try:
        model = loader.from_pretrained(str(resolved.path), dtype=dtype, **extra)
    except Exception as e:  # transformers raises OSError/ValueError/RuntimeError for bad folders
        raise ModelLoadError(
            f"Cannot load {kind} '{resolved.model_id}' from {resolved.path}: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}. Fix: re-download the model "
            "or check that the folder holds complete weights (model.safetensors or pytorch_model.bin)."
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    PooledEncoder, PairScorer = _heads()
    head = PooledEncoder(model, pooling) if kind == "embedder" else PairScorer(model)
    head.eval()
    params = inspect.signature(model.forward).parameters
    names = ("input_ids", "attention_mask") + (
        ("token_type_ids",) if "token_type_ids" in params else ()
    )
    return head, names


#: token step of a torch CPU batch's width (see TorchRunner)
CPU_PAD_MULTIPLE = 16


class TorchRunner:
    """Runs a head module with torch on ``device`` (fp16 on GPUs, fp32 on CPU)."""

    def __init__(self, resolved: ResolvedModel, *, kind: Kind, pooling: Pooling, device: str):
        from rankwise.models.device import torch_dtype

        self.device = device
        self.module, self.input_names = load_torch_head(
            resolved, kind=kind, pooling=pooling, dtype=torch_dtype(device)
        )
        self.module.to(device)
        # CPU: batch widths in steps of 16 tokens. torch's CPU kernels (oneDNN) compile and
        # cache a primitive per input shape, up to 1,024 of them; serving's ever-new (rows,
        # width) shapes grew an embedder's RSS by 152 MB over 700 calls, still rising after
        # 600, and by 78 MB, flat after 100 calls, with widths in steps of 16
        # (benchmarks/native_cache_rss.py). A GPU keeps exact widths.
        self.pad_multiple = CPU_PAD_MULTIPLE if device == "cpu" else 1
        # rows in buckets too (batching.bucket_rows): oneDNN caches a primitive per shape
        self.row_buckets = device == "cpu"

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feed = {k: torch.from_numpy(inputs[k]).to(self.device) for k in self.input_names}
            return self.module(**feed).float().cpu().numpy()
