"""bge-m3's three outputs from one forward pass: dense, sparse (lexical weights), ColBERT.

BAAI ships bge-m3 as an XLM-R encoder plus two small heads beside the weights, in
FlagEmbedding's layout: ``colbert_linear.pt`` (a ``torch.nn.Linear`` state dict,
hidden → colbert_dim) and ``sparse_linear.pt`` (hidden → 1). The conventions below follow
FlagEmbedding's ``BGEM3FlagModel`` / ``M3Embedder`` (``inference/embedder/encoder_only/m3.py``
and ``finetune/embedder/encoder_only/m3/modeling.py``):

* **dense**: the pooled first token (CLS), L2-normalised (rankwise's usual dense path).
* **sparse**: ``relu(sparse_linear(hidden))`` per token; per token id the *max* weight over
  its occurrences; weights ``<= 0`` and the tokenizer's cls/eos/pad/unk ids dropped (for
  XLM-R vocabularies sep == eos, so ``<s>``, ``</s>``, ``<pad>``, ``<unk>``). Returned as
  ``{token_id: weight}``; the lexical score of two texts is the sum over shared ids of the
  product of weights.
* **colbert**: ``colbert_linear(hidden[:, 1:])`` for the real (unpadded) tokens after CLS
  (the trailing ``</s>`` is kept, as FlagEmbedding keeps it), each vector L2-normalised.
  Scored by MaxSim (:func:`rankwise.cascade.maxsim`): the mean over query tokens of the best
  dot product with any document token.

sentence-transformers' ``SparseEncoder`` covers SPLADE-style models (an MLM head over the
whole vocabulary) and its modules do not read BAAI's ``*.pt`` heads; pylate covers ColBERT
checkpoints in its own layout. Neither loads bge-m3's heads, so the two linear layers are
applied here, on the hidden states of the same transformers model rankwise already runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rankwise.errors import ModelLoadError

Output = Literal["dense", "sparse", "colbert"]
OUTPUTS: tuple[Output, ...] = ("dense", "sparse", "colbert")
COLBERT_FILE = "colbert_linear.pt"
SPARSE_FILE = "sparse_linear.pt"
HEAD_FILES = {"sparse": SPARSE_FILE, "colbert": COLBERT_FILE}


@dataclass(frozen=True)
class MultiOutput:
    """What :meth:`Embedder.encode_multi` returns; an output not asked for is ``None``.

    Attributes:
        dense: float32 (n, dim), L2-normalised.
        sparse: n dicts ``{token_id: weight}`` (weights > 0, float).
        colbert: n float32 arrays (tokens after CLS, colbert_dim), rows L2-normalised.
    """

    dense: np.ndarray | None = None
    sparse: list[dict[int, float]] | None = None
    colbert: list[np.ndarray] | None = None


def check_outputs(outputs: Sequence[str]) -> tuple[Output, ...]:
    """``outputs`` de-duplicated, in :data:`OUTPUTS` order; InvalidRequest for unknown names."""
    from rankwise.errors import InvalidRequest

    if isinstance(outputs, str):
        outputs = [outputs]
    bad = [o for o in outputs if o not in OUTPUTS]
    if bad or not outputs:
        raise InvalidRequest(
            f"unknown embedder output(s) {bad or outputs!r}; use any of {', '.join(OUTPUTS)}"
        )
    return tuple(o for o in OUTPUTS if o in outputs)


def head_outputs(root: Path) -> tuple[Output, ...]:
    """The outputs a model folder can give: dense always, sparse/colbert when its head is there."""
    return ("dense",) + tuple(o for o, f in HEAD_FILES.items() if (Path(root) / f).is_file())


def missing_heads_error(model_id: str, root: Path, wanted: Sequence[str]) -> ModelLoadError:
    files = ", ".join(HEAD_FILES[o] for o in wanted)
    return ModelLoadError(
        f"Embedder '{model_id}' cannot give {'/'.join(wanted)} output: {root} has no {files} "
        "(bge-m3's heads, as BAAI ships them beside the weights). Fix: use a bge-m3-shaped "
        f"folder that holds {files}, or ask for the dense output only."
    )


def fetch_heads(model_id: str, revision: str | None, local_files_only: bool) -> None:
    """Bring a hub model's head files into its cache snapshot (rankwise's snapshot download
    skips ``*.pt`` files); a repository without them is left as it is."""
    from huggingface_hub import hf_hub_download

    for name in HEAD_FILES.values():
        try:
            hf_hub_download(model_id, name, revision=revision, local_files_only=local_files_only)
        except Exception:  # not in that repository, or not cached offline: reported on use
            pass


def copy_heads(src: Path, dst: Path) -> list[str]:
    """Copy a base model's head files into a fine-tuned folder, unchanged; returns their names.

    A dense-only fine-tune trains the encoder, not the heads: without this the tuned folder
    would silently lose the sparse and ColBERT outputs. The copies are byte-identical (the
    heads are not corrupted), but they now read a changed encoder's hidden states, so
    their outputs drift with the fine-tune; FlagEmbedding's unified fine-tuning (all three
    losses with self-distillation) would keep them trained together.
    """
    import shutil

    copied = []
    for name in HEAD_FILES.values():
        if (Path(src) / name).is_file():
            shutil.copyfile(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


def _load_linear(path: Path, hidden: int, model_id: str):
    """A ``torch.nn.Linear`` from a FlagEmbedding head file (state dict with weight, bias)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weight = state["weight"]
        if weight.ndim != 2 or weight.shape[1] != hidden:
            raise ValueError(f"weight shape {tuple(weight.shape)} does not take {hidden} inputs")
        layer = torch.nn.Linear(hidden, int(weight.shape[0]), bias="bias" in state)
        layer.load_state_dict(state)
    except Exception as e:  # torch.load raises many types for bad files
        raise ModelLoadError(
            f"Cannot load embedder '{model_id}': {path.name} is not a usable head "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Fix: re-download the model's head files."
        ) from None
    return layer.eval()


def unused_token_ids(path: Path) -> set[int]:
    """The ids FlagEmbedding drops from lexical weights: the tokenizer's cls, eos, pad, unk
    (and sep, which is eos for XLM-R and must not carry lexical weight for BERT vocabularies)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    ids = {getattr(tok, f"{name}_token_id", None) for name in ("cls", "eos", "sep", "pad", "unk")}
    return {int(i) for i in ids if i is not None}


class M3Heads:
    """The sparse and ColBERT heads on top of an encoder's last hidden states (torch).

    ``encoder`` is the transformers model (its first output: (b, seq, hidden)); the dense
    output is pooled and normalised as rankwise's :class:`PooledEncoder` does.
    """

    def __init__(
        self,
        encoder: Any,
        root: Path,
        *,
        hidden: int,
        pooling: str,
        device: str,
        model_id: str,
        tokenizer_path: Path,
    ):
        import torch

        self.encoder, self.pooling, self.device = encoder, pooling, device
        self.available = head_outputs(root)
        dtype = next(encoder.parameters()).dtype
        self.sparse = self.colbert = None
        if "sparse" in self.available:
            self.sparse = _load_linear(root / SPARSE_FILE, hidden, model_id).to(device, dtype)
        if "colbert" in self.available:
            self.colbert = _load_linear(root / COLBERT_FILE, hidden, model_id).to(device, dtype)
        self.colbert_dim = None if self.colbert is None else int(self.colbert.out_features)
        self.unused = np.array(sorted(unused_token_ids(tokenizer_path)), dtype=np.int64)
        self._torch = torch

    def __call__(
        self, feed: dict[str, np.ndarray], outputs: Sequence[Output]
    ) -> tuple[np.ndarray | None, list[dict[int, float]] | None, list[np.ndarray] | None]:
        """One forward pass over a padded batch; returns (dense, sparse, colbert) per row."""
        torch = self._torch
        F = torch.nn.functional
        with torch.inference_mode():
            t = {k: torch.from_numpy(v).to(self.device) for k, v in feed.items()}
            hidden = self.encoder(**t)[0]
            mask = t["attention_mask"]
            dense = sparse = colbert = None
            if "dense" in outputs:
                h = hidden.float()
                if self.pooling == "cls":
                    pooled = h[:, 0]
                else:
                    m = mask.unsqueeze(-1).to(h.dtype)
                    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                dense = F.normalize(pooled, p=2.0, dim=-1).cpu().numpy()
            if "sparse" in outputs:
                weights = torch.relu(self.sparse(hidden)).squeeze(-1).float().cpu().numpy()
                sparse = [
                    _lexical_weights(w, ids, self.unused)
                    for w, ids in zip(weights, feed["input_ids"], strict=True)
                ]
            if "colbert" in outputs:
                vecs = self.colbert(hidden[:, 1:]) * mask[:, 1:, None].to(hidden.dtype)
                vecs = F.normalize(vecs.float(), p=2.0, dim=-1).cpu().numpy()
                lengths = feed["attention_mask"].sum(1)
                colbert = [v[: int(n) - 1].copy() for v, n in zip(vecs, lengths, strict=True)]
        return dense, sparse, colbert


def _lexical_weights(weights: np.ndarray, ids: np.ndarray, unused: np.ndarray) -> dict[int, float]:
    """``{token_id: max weight}`` over positions with weight > 0 and an id not in ``unused``."""
    keep = (weights > 0) & ~np.isin(ids, unused)
    out: dict[int, float] = {}
    for i, w in zip(ids[keep].tolist(), weights[keep].tolist(), strict=True):
        if w > out.get(i, 0.0):
            out[i] = w
    return out


def lexical_score(query: dict[int, float], doc: dict[int, float]) -> float:
    """FlagEmbedding's lexical matching score: Σ over shared token ids of q_w · d_w."""
    return float(sum(w * doc[t] for t, w in query.items() if t in doc))
