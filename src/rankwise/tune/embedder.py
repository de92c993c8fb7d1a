"""Fine-tune a bi-encoder with the sentence-transformers trainer.

Loss: InfoNCE over in-batch and hard negatives (``MultipleNegativesRankingLoss``,
``scale = 1 / temperature``; temperature 0.02 as in the seed, i.e. scale 50), or its
cached-gradient form (``CachedMultipleNegativesRankingLoss``, GradCache) for large batches
in little memory. Batches never hold the same text twice (``BatchSamplers.NO_DUPLICATES``)
so a duplicate is never an in-batch "negative" of itself. With teacher scores,
:class:`ContrastiveDistillLoss` adds a KL term that pulls the student's distribution over
each group towards the teacher's.

The output folder is a sentence-transformers folder (``modules.json``, ``1_Pooling``,
``2_Normalize``) that :class:`rankwise.models.Embedder` loads as-is, with the same pooling
the model was trained with and the query instruction saved as the ``query`` prompt;
``rankwise_model.json`` records the trained ``max_length``, pooling and instructions, which
is what loads unless the caller overrides them. Intermediate checkpoints are removed after
a finished training unless ``keep_checkpoints``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rankwise.errors import InvalidRequest, ModelLoadError
from rankwise.tune.data import TrainExample
from rankwise.tune.m3_loss import save_heads, unified_loss_for
from rankwise.tune.training import (
    TrainConfig,
    TrainResult,
    common_args,
    freeze_input_embeddings,
    group_rows,
    quiet_loading,
    to_dataset,
)

log = logging.getLogger(__name__)


@dataclass
class EmbedderTrainConfig(TrainConfig):
    """Options for :func:`train_embedder`; defaults suit a small model on a CPU (the shared
    ones in :class:`~rankwise.tune.training.TrainConfig`).

    ``temperature``: of the contrastive loss; ``cached``: the cached-gradient loss, run in
    ``mini_batch_size`` pieces; ``query_instruction``: the query prompt to train with.
    """

    temperature: float = 0.02
    cached: bool = False
    mini_batch_size: int = 16
    query_instruction: str | None = None
    #: a bge-m3-shaped base (sparse/ColBERT heads): train all three (tune/m3_loss.py);
    #: False trains the dense output only and copies the heads unchanged
    unified: bool = True

    def check(self) -> None:
        if self.temperature <= 0:
            raise InvalidRequest(f"temperature must be > 0, got {self.temperature}")
        if self.batch_size < 2:
            raise InvalidRequest("batch size must be >= 2 for in-batch negatives")
        if self.cached and self.distill_weight > 0:
            raise InvalidRequest("the cached loss does not support distillation; pick one")
        if self.distill_weight > 0 and self.group_size < 2:
            raise InvalidRequest("distillation needs group_size >= 2 (a positive and negatives)")


class ContrastiveDistillLoss(nn.Module):
    """InfoNCE (in-batch + hard negatives) plus ``weight`` x KL(teacher || student).

    The KL term is computed per row over its own group ``[pos, neg_1..n]``:
    ``softmax(teacher_scores / teacher_temperature)`` against
    ``log_softmax(cos(q, d) / temperature)``. Unlike sentence-transformers'
    ``DistillKLDivLoss`` it is not multiplied by the student temperature squared, which at
    temperature 0.02 would shrink the term 2500-fold. Embeddings are computed once and
    shared by both terms.
    """

    def __init__(
        self,
        model,
        contrastive: nn.Module,
        weight: float,
        temperature: float,
        teacher_temperature: float = 1.0,
    ):
        super().__init__()
        self.model = model
        self.contrastive = contrastive
        self.weight = weight
        self.temperature = temperature
        self.teacher_temperature = teacher_temperature
        self.kl = nn.KLDivLoss(reduction="batchmean")

    def forward(self, sentence_features, labels: Tensor) -> Tensor:
        emb = [self.model(f)["sentence_embedding"] for f in sentence_features]
        loss = self.contrastive.compute_loss_from_embeddings(emb, labels)
        q = nn.functional.normalize(emb[0], dim=-1)
        docs = torch.stack([nn.functional.normalize(d, dim=-1) for d in emb[1:]], dim=1)
        student = torch.einsum("bd,bgd->bg", q, docs) / self.temperature
        teacher = torch.softmax(labels.float() / self.teacher_temperature, dim=-1)
        return loss + self.weight * self.kl(torch.log_softmax(student, dim=-1), teacher)


def load_student(base: str, max_length: int):
    """A SentenceTransformer for ``base`` with rankwise's pooling and L2 normalisation.

    A sentence-transformers folder is loaded as it is; a plain transformers folder or hub
    id gets the pooling rankwise's spec table gives it (e.g. CLS for BGE, mean for MiniLM)
    plus a Normalize module, so training and :class:`rankwise.models.Embedder` agree.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from rankwise.models import spec_for
    from rankwise.models.loading import resolve_model

    resolved = resolve_model(base, kind="embedder")
    root = str(resolved.root)
    try:
        if resolved.st is not None:
            model = SentenceTransformer(root, local_files_only=True, device="cpu")
        else:
            spec = spec_for(base, "embedder")
            tr = Transformer(root, max_seq_length=max_length)
            pool = Pooling(tr.get_embedding_dimension(), pooling_mode=spec.pooling)
            model = SentenceTransformer(modules=[tr, pool, Normalize()], device="cpu")
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"Cannot load '{base}' for training: {e}") from None
    model.max_seq_length = max_length
    return model


def train_embedder(
    examples: Sequence[TrainExample],
    base: str,
    out_dir: str | Path,
    config: EmbedderTrainConfig | None = None,
    *,
    resume_from_checkpoint: str | bool | None = None,
) -> TrainResult:
    """Fine-tune ``base`` on ``examples``; the model is saved to ``out_dir``.

    Args:
        examples: queries with positives and (mined) negatives; teacher scores if
            ``config.distill_weight > 0``.
        base: hub id or folder (sentence-transformers or plain transformers).
        out_dir: output folder; checkpoints go to ``out_dir/checkpoints``.
        config: :class:`EmbedderTrainConfig`.
        resume_from_checkpoint: a checkpoint folder, or True for the latest one under
            ``out_dir/checkpoints``; training continues from its global step.

    Returns:
        :class:`TrainResult` (also written to ``out_dir/rankwise_tune.json``).
    """
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    cfg = config or EmbedderTrainConfig()
    cfg.check()
    out = Path(out_dir)
    distill = cfg.distill_weight > 0
    rows, dropped = group_rows(examples, cfg.group_size, with_scores=distill, seed=cfg.seed)
    dataset = to_dataset(rows)
    with quiet_loading():
        model = load_student(base, cfg.max_length)
    if cfg.freeze_embeddings:
        freeze_input_embeddings(model)
    scale = 1.0 / cfg.temperature
    if cfg.cached:
        loss: nn.Module = CachedMultipleNegativesRankingLoss(
            model, scale=scale, mini_batch_size=cfg.mini_batch_size
        )
    else:
        loss = MultipleNegativesRankingLoss(model, scale=scale)
    if distill:
        loss = ContrastiveDistillLoss(
            model, loss, cfg.distill_weight, cfg.temperature, cfg.teacher_temperature
        )
    unified = unified_loss_for(base, model, cfg)  # bge-m3: dense + sparse + ColBERT together
    loss = unified or loss
    query_prefix, doc_prefix = _instructions(base, cfg)
    prompts = {"query": query_prefix} if query_prefix else {}
    if doc_prefix:  # every document column (positive, negative_1..n) gets the document prefix
        prompts.update({c: doc_prefix for c in rows[0] if c not in ("query", "label")})
    if query_prefix:
        model.prompts = {**(model.prompts or {}), "query": query_prefix}
    args = SentenceTransformerTrainingArguments(
        **common_args(out, cfg),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=prompts or None,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    with quiet_loading():
        model.save_pretrained(str(out))
    _save_settings(out, base, cfg)
    from rankwise.models.loading import resolve_model
    from rankwise.models.m3 import copy_heads

    if unified is not None:
        save_heads(unified, out)
    else:  # dense only: keep the sparse/ColBERT heads as they were
        copy_heads(resolve_model(base, kind="embedder").root, out)
    return TrainResult.of_trainer(
        trainer, out, cfg, base, seconds=time.perf_counter() - t0, rows=len(rows),
        dropped=dropped, resumed_from=resume_from_checkpoint,
    )  # fmt: skip


def _instructions(base: str, cfg: EmbedderTrainConfig) -> tuple[str | None, str | None]:
    """Query and document prefixes used in training: ``cfg.query_instruction`` if given
    (``""``: none), else what rankwise gives the base model (spec table, then the folder's
    prompts), so training, mining and the loaded model all see the same inputs."""
    from rankwise.models import spec_for
    from rankwise.models.loading import resolve_model

    spec = spec_for(base, "embedder")
    resolved = resolve_model(base, kind="embedder")
    prompts = resolved.st.prompts if resolved.st else {}
    query = spec.query_instruction or prompts.get("query")
    if cfg.query_instruction is not None:
        query = cfg.query_instruction
    document = spec.document_instruction or prompts.get("document") or prompts.get("passage")
    return query or None, document or None


def _save_settings(out: Path, base: str, cfg: EmbedderTrainConfig) -> None:
    """Record the trained length, pooling and instructions so the folder loads as trained
    (whatever its name: the spec table matches folder names, a tuned copy needs no match)."""
    from rankwise.models.loading import read_st_layout, save_model_settings

    query, document = _instructions(base, cfg)
    layout = read_st_layout(out, model_id=str(out), kind="embedder")
    save_model_settings(
        out,
        "embedder",
        max_length=cfg.max_length,
        pooling=layout.pooling if layout else None,
        query_instruction=query,
        document_instruction=document,
    )
