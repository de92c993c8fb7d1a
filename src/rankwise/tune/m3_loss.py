"""bge-m3's unified fine-tuning: dense, sparse and ColBERT trained together, as a
sentence-transformers loss.

It follows FlagEmbedding's ``finetune/embedder/encoder_only/m3/modeling.py``
(``EncoderOnlyEmbedderM3Model.forward`` with ``unified_finetuning`` and ``use_self_distill``):

* three scores per (query, passage) over in-batch + hard negatives, each divided by the
  temperature: **dense** ``q·p`` of the pooled, normalised vectors; **sparse** ``q·p`` of
  vocabulary-sized vectors (``relu(sparse_linear(h))``, max per token id, cls/eos/pad/unk
  zeroed); **colbert** the sum over the query's tokens after CLS of the best ``q_i·p_j``
  (``colbert_linear(h[:, 1:])``, normalised, padding zeroed), over the query's token count;
* **ensemble** ``dense + 0.3 · sparse + colbert``;
* InfoNCE (cross-entropy, target = the query's own positive) of each, combined as
  ``(dense + ensemble + 0.1 · sparse + colbert) / 4``;
* **self-distillation**: the ensemble's softmax (detached) is the teacher of each head,
  ``-Σ teacher · log_softmax(student)`` averaged over queries, combined as
  ``(dense + 0.1 · sparse + colbert) / 3``; the total is ``(contrastive + distill) / 2``.

Written by hand because neither sentence-transformers nor FlagEmbedding offers it as a loss
for another trainer (FlagEmbedding's is fused into its model class and trainer). The two
heads are ``torch.nn.Linear`` modules owned by the loss: the sentence-transformers trainer
optimises a loss's parameters with the model's, and :func:`save_heads` writes them in BAAI's
layout (``colbert_linear.pt``, ``sparse_linear.pt``: state dicts) that
:class:`rankwise.models.Embedder` loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

#: FlagEmbedding's weights: sparse scores in the ensemble, sparse terms in the loss sums.
ENSEMBLE_SPARSE_WEIGHT = 0.3
SPARSE_LOSS_WEIGHT = 0.1


class M3UnifiedLoss(nn.Module):
    """The unified bge-m3 loss over ``[query, positive, negative_1..n]`` columns.

    Args:
        model: the SentenceTransformer being trained (Transformer → CLS Pooling → Normalize);
            its forward gives ``sentence_embedding`` and ``token_embeddings``.
        sparse_linear: hidden → 1 (trained here).
        colbert_linear: hidden → colbert_dim (trained here).
        unused_ids: token ids whose lexical weight is zeroed (cls, eos, pad, unk).
        temperature: divides every score (FlagEmbedding's ``temperature``; bge-m3: 0.02).
        self_distill: add the self-distillation terms (FlagEmbedding's ``use_self_distill``).

    After each forward, :attr:`last` holds the float value of each term (``dense``,
    ``sparse``, ``colbert``, ``ensemble``, and with self-distillation ``distill_*``).
    """

    def __init__(
        self,
        model: nn.Module,
        sparse_linear: nn.Linear,
        colbert_linear: nn.Linear,
        unused_ids: Iterable[int],
        temperature: float = 0.02,
        self_distill: bool = True,
    ):
        super().__init__()
        self.model = model
        self.sparse_linear = sparse_linear
        self.colbert_linear = colbert_linear
        self.register_buffer("unused", torch.tensor(sorted(set(unused_ids)), dtype=torch.long))
        self.temperature = temperature
        self.self_distill = self_distill
        self.vocab_size = int(model[0].auto_model.config.vocab_size)
        self.last: dict[str, float] = {}

    # -- the three representations -------------------------------------------------------------
    def sparse_vectors(self, hidden: Tensor, input_ids: Tensor) -> Tensor:
        """(b, vocab): per token id the max of ``relu(sparse_linear(h))``, unused ids zeroed."""
        weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1)  # (b, seq)
        out = torch.zeros(
            input_ids.size(0), self.vocab_size, dtype=weights.dtype, device=weights.device
        ).scatter_reduce(-1, input_ids, weights, reduce="amax")  # not in place: autograd-safe
        keep = torch.ones(self.vocab_size, dtype=weights.dtype, device=weights.device)
        return out * keep.index_fill(0, self.unused.to(weights.device), 0.0)

    def colbert_vectors(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """(b, seq - 1, colbert_dim): the tokens after CLS, normalised, padding zeroed."""
        vecs = self.colbert_linear(hidden[:, 1:]) * mask[:, 1:, None].to(hidden.dtype)
        return nn.functional.normalize(vecs, dim=-1)

    def _encode(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model(features)
        hidden, mask = out["token_embeddings"], out["attention_mask"]
        return (
            out["sentence_embedding"],
            self.sparse_vectors(hidden, out["input_ids"]),
            self.colbert_vectors(hidden, mask),
            mask,
        )

    # -- scores ---------------------------------------------------------------------------------
    def colbert_scores(self, q: Tensor, p: Tensor, q_mask: Tensor) -> Tensor:
        """(nq, np): Σ_i max_j q_i·p_j over the query's tokens, / its token count."""
        token = torch.einsum("qin,pjn->qipj", q, p)
        return token.max(-1).values.sum(1) / q_mask[:, 1:].sum(-1, keepdim=True).clamp(min=1)

    def forward(self, sentence_features: Sequence[dict[str, Tensor]], labels: Tensor) -> Tensor:
        """``sentence_features``: [queries, positives, negatives_1..n], each (b, ...)."""
        q_dense, q_sparse, q_cb, q_mask = self._encode(sentence_features[0])
        docs = [self._encode(f) for f in sentence_features[1:]]
        group = len(docs)
        # passages ordered as FlagEmbedding's: query i's group at rows i*group .. i*group+g-1
        p_dense = torch.stack([d[0] for d in docs], 1).flatten(0, 1)
        p_sparse = torch.stack([d[1] for d in docs], 1).flatten(0, 1)
        width = max(d[2].size(1) for d in docs)  # columns are padded separately
        p_cb = torch.stack(
            [nn.functional.pad(d[2], (0, 0, 0, width - d[2].size(1))) for d in docs], 1
        ).flatten(0, 1)
        t = self.temperature
        scores = {
            "dense": q_dense @ p_dense.T / t,
            "sparse": q_sparse @ p_sparse.T / t,
            "colbert": self.colbert_scores(q_cb, p_cb, q_mask) / t,
        }
        scores["ensemble"] = (
            scores["dense"] + ENSEMBLE_SPARSE_WEIGHT * scores["sparse"] + scores["colbert"]
        )
        target = torch.arange(q_dense.size(0), device=q_dense.device) * group
        ce = {k: nn.functional.cross_entropy(s, target) for k, s in scores.items()}
        loss = (
            ce["dense"] + ce["ensemble"] + SPARSE_LOSS_WEIGHT * ce["sparse"] + ce["colbert"]
        ) / 4
        self.last = {k: float(v.detach()) for k, v in ce.items()}
        if self.self_distill:
            teacher = torch.softmax(scores["ensemble"].detach(), dim=-1)
            kd = {
                k: -(teacher * torch.log_softmax(scores[k], dim=-1)).sum(-1).mean()
                for k in ("dense", "sparse", "colbert")
            }
            distill = (kd["dense"] + SPARSE_LOSS_WEIGHT * kd["sparse"] + kd["colbert"]) / 3
            loss = (loss + distill) / 2
            self.last.update({f"distill_{k}": float(v.detach()) for k, v in kd.items()})
        return loss


def load_heads(root: Path, hidden: int, model_id: str) -> tuple[nn.Linear, nn.Linear] | None:
    """The (sparse, colbert) heads of a bge-m3-shaped folder, trainable; ``None`` unless it
    has both files."""
    from rankwise.models.m3 import COLBERT_FILE, SPARSE_FILE, _load_linear

    if not ((root / SPARSE_FILE).is_file() and (root / COLBERT_FILE).is_file()):
        return None
    heads = tuple(_load_linear(root / f, hidden, model_id) for f in (SPARSE_FILE, COLBERT_FILE))
    for h in heads:
        h.train()
    return heads  # type: ignore[return-value]


def save_heads(loss: M3UnifiedLoss, out: Path) -> list[str]:
    """Write the trained heads as BAAI ships them (``torch.nn.Linear`` state dicts, on CPU)."""
    from rankwise.models.m3 import COLBERT_FILE, SPARSE_FILE

    for name, layer in ((SPARSE_FILE, loss.sparse_linear), (COLBERT_FILE, loss.colbert_linear)):
        state = {k: v.detach().clone().cpu() for k, v in layer.state_dict().items()}
        torch.save(state, Path(out) / name)
    return [SPARSE_FILE, COLBERT_FILE]


def unified_loss_for(base: str, model: nn.Module, cfg) -> M3UnifiedLoss | None:
    """The unified loss when ``cfg.unified`` and ``base`` is bge-m3-shaped (both head files),
    else ``None`` (dense-only training; the heads, if any, are copied unchanged).
    ``cfg``: an :class:`~rankwise.tune.embedder.EmbedderTrainConfig`."""
    from rankwise.errors import InvalidRequest
    from rankwise.models.loading import resolve_model
    from rankwise.models.m3 import unused_token_ids

    if not cfg.unified:
        return None
    root = resolve_model(base, kind="embedder").root
    tr = model[0]
    heads = load_heads(Path(root), int(tr.auto_model.config.hidden_size), base)
    if heads is None:
        return None
    if cfg.cached or cfg.distill_weight > 0:
        raise InvalidRequest(
            f"'{base}' has bge-m3's sparse and ColBERT heads: the unified three-head loss "
            "supports neither --cached nor teacher distillation yet; drop them, or train the "
            "dense output only (--dense-only; the heads are then copied unchanged)"
        )
    return M3UnifiedLoss(
        model, *heads, unused_ids=unused_token_ids(Path(root)), temperature=cfg.temperature
    )
