"""Fine-tune a cross-encoder (reranker) with the sentence-transformers CrossEncoder trainer.

Objectives (``RerankerTrainConfig.objective``):

* ``"listwise"`` (default): each row is a group ``[pos, neg_1..n]``; softmax
  cross-entropy with the positive as the target (:class:`GroupCrossEntropyLoss`, the
  FlagEmbedding reranker objective). With teacher scores and ``distill_weight > 0`` a KL
  term pulls the group's distribution towards the teacher's (a small model learns from a
  big one).
* ``"pointwise"``: ``BinaryCrossEntropyLoss`` on (query, doc) pairs labelled 1 for
  positives, ``related_label`` (default 0.5) for ``related`` documents (judged, graded
  between 0 and the positive threshold: graded labels, e.g. Home Depot's 0/1/2 as
  0/0.5/1) and 0 for negatives; or sigmoid(teacher logit) when distilling.
* ``"margin_mse"``: ``MarginMSELoss`` on teacher margins (needs teacher scores).

Collapse guard: fine-tuned rerankers sometimes end up scoring everything alike. With a
dev set, the model is evaluated before training and every ``eval_steps``
(``CrossEncoderRerankingEvaluator``, nDCG@10 of each dev query's positives among its
candidates), the best checkpoint is kept, and the result reports the dev metric before
and after plus the spread of dev scores; a collapsed or worse model raises a warning in
the result. Mined negatives make an easy dev set (a reranker can rise on it while it
ranks judged candidates worse), so ``judged_dev`` adds a second check on what evaluation
sees: held-out positives among their *judged* non-positive documents, unmined; a fall
there warns too. ``lora_rank`` trains LoRA adapters (peft) and merges them before saving.

The output folder is a transformers ``*ForSequenceClassification`` model with one logit,
which :class:`rankwise.models.Reranker` loads as-is. A plain encoder (e.g. MiniLM) as
``base`` gets a randomly initialised head.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from rankwise.errors import InvalidRequest, ModelLoadError
from rankwise.tune.data import TrainExample
from rankwise.tune.objectives import (  # noqa: F401 - re-exported
    GroupCrossEntropyLoss,
    _pointwise_rows,
    get_objective,
)
from rankwise.tune.training import (
    TrainConfig,
    TrainResult,
    common_args,
    freeze_input_embeddings,
    quiet_loading,
    to_dataset,
)

log = logging.getLogger(__name__)

#: Names of the registered objectives (``rankwise.tune.objectives.OBJECTIVES``).
Objective = Literal["listwise", "pointwise", "margin_mse"]


@dataclass
class RerankerTrainConfig(TrainConfig):
    """Options for :func:`train_reranker` (the shared ones in
    :class:`~rankwise.tune.training.TrainConfig`, with a cross-encoder's defaults).
    ``group_size`` = 1 positive + n negatives."""

    objective: Objective = "listwise"
    batch_size: int = 16
    group_size: int = 8
    learning_rate: float = 3e-5
    max_length: int = 96
    related_label: float = 0.5
    lora_rank: int = 0
    lora_alpha: int = 16
    eval_steps: int = 0

    def check(self) -> None:
        objective = get_objective(self.objective)  # unknown: an error listing the known ones
        if not 0.0 <= self.related_label <= 1.0:
            raise InvalidRequest(f"related_label must be in [0, 1], got {self.related_label}")
        if self.group_size < objective.min_group_size:
            raise InvalidRequest(f"{self.objective} needs group_size >= {objective.min_group_size}")


def load_cross_encoder(base: str, max_length: int):
    """A one-logit CrossEncoder for ``base`` (a random head if ``base`` is a plain encoder)."""
    from sentence_transformers.cross_encoder import CrossEncoder

    from rankwise.models.loading import resolve_model

    try:  # a trained cross-encoder keeps its head ...
        resolved = resolve_model(base, kind="reranker")
    except ModelLoadError:  # ... a plain encoder gets a new, random one
        resolved = resolve_model(base, kind="embedder")
        log.warning(
            "'%s' has no one-logit classification head: training starts from a new, randomly "
            "initialised one",
            base,
        )
    try:
        with quiet_loading():
            return CrossEncoder(
                str(resolved.path),
                num_labels=1,
                max_length=max_length,
                device="cpu",
                local_files_only=True,
            )
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"Cannot load '{base}' as a cross-encoder for training: {e}") from None


#: Scores a query's candidate documents, higher = better: ``(query, docs) -> (len(docs),)``.
FirstStage = Callable[[str, Sequence[str]], Sequence[float]]


def _dev_samples(
    dev: Sequence[TrainExample], judged: bool = False, first_stage: FirstStage | None = None
) -> list[dict[str, Any]]:
    """Evaluator samples; ``judged``: the judged non-positives (grade 0 and related) are the
    candidates beside the positives. With ``first_stage``, each sample lists its candidates
    as ``documents`` in the first stage's order, so the evaluator also reports that order's
    metrics (``base_ndcg@10``: what the reranker replaces)."""
    out = []
    for ex in dev:
        negative = [*ex.neg, *ex.related] if judged else ex.neg
        if not negative:
            continue
        if first_stage is None:
            out.append({"query": ex.query, "positive": ex.pos, "negative": negative})
            continue
        docs = list(dict.fromkeys([*ex.pos, *negative]))
        scores = np.asarray(first_stage(ex.query, docs), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")  # ties keep the listed order
        out.append({"query": ex.query, "positive": ex.pos, "documents": [docs[i] for i in order]})
    return out


def _apply_lora(model, cfg: RerankerTrainConfig) -> None:
    """Wrap the transformer with LoRA adapters (peft); the classifier head stays trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    transformer = model[0]
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.05
    )
    transformer.model = get_peft_model(transformer.model, lora)


def _merge_lora(model) -> None:
    transformer = model[0]
    if hasattr(transformer.model, "merge_and_unload"):
        transformer.model = transformer.model.merge_and_unload()


def dev_separation(model, dev: Sequence[TrainExample], limit: int = 200) -> dict[str, float]:
    """Mean positive and negative logit on dev groups, their gap, and the score spread."""
    pos_pairs = [(ex.query, t) for ex in dev[:limit] for t in ex.pos]
    neg_pairs = [(ex.query, t) for ex in dev[:limit] for t in ex.neg]
    pos = np.asarray(model.predict(pos_pairs, activation_fn=nn.Identity(), show_progress_bar=False))
    neg = np.asarray(model.predict(neg_pairs, activation_fn=nn.Identity(), show_progress_bar=False))
    both = np.concatenate([pos, neg])
    return {
        "pos_mean": float(pos.mean()),
        "neg_mean": float(neg.mean()) if len(neg) else 0.0,
        "gap": float(pos.mean() - (neg.mean() if len(neg) else 0.0)),
        "std": float(both.std()),
    }


def train_reranker(
    examples: Sequence[TrainExample],
    base: str,
    out_dir: str | Path,
    config: RerankerTrainConfig | None = None,
    *,
    dev: Sequence[TrainExample] | None = None,
    judged_dev: Sequence[TrainExample] | None = None,
    first_stage: FirstStage | None = None,
    first_stage_name: str | None = None,
    min_dev_queries: int = 0,
    resume_from_checkpoint: str | bool | None = None,
) -> TrainResult:
    """Fine-tune a cross-encoder on ``examples``; the model is saved to ``out_dir``.

    Args:
        examples: queries with positives and negatives (teacher scores for distillation).
        base: a cross-encoder or a plain encoder (hub id or folder).
        out_dir: output folder; checkpoints under ``out_dir/checkpoints``.
        config: :class:`RerankerTrainConfig`.
        dev: held-out examples for the collapse guard and best-checkpoint selection.
        judged_dev: held-out examples as evaluation sees them (positives, judged grade-0
            ``neg`` and ``related``, no mined negatives): nDCG@10 before/after, warning on a fall.
        first_stage: scores of the first stage the reranker follows (e.g. the embedder's
            cosine), ``(query, docs) -> scores``: the same judged candidates in its order are
            the baseline a reranker must beat (``dev["first_stage"]`` and
            ``TrainResult.first_stage``; a warning when the tuned reranker does not beat it).
            A random head starts far below any first stage, so "after > before" alone proves
            nothing. ``first_stage_name`` names it in the result.
        min_dev_queries: warn when fewer judged dev queries than this decide the checks.
        resume_from_checkpoint: a checkpoint folder, or True for the latest.

    Returns:
        :class:`TrainResult` with ``dev`` = ``{"before": ..., "after": ...}`` (nDCG@10, MRR@10,
        separation) when ``dev`` is given; also written to ``out_dir/rankwise_tune.json``.
    """
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    cfg = config or RerankerTrainConfig()
    cfg.check()
    out = Path(out_dir)
    objective = get_objective(cfg.objective)
    distill = cfg.distill_weight > 0 or objective.needs_scores
    rows, dropped = objective.rows(examples, cfg, distill)
    dataset = to_dataset(rows)
    from transformers import set_seed

    set_seed(cfg.seed)  # a plain encoder's new head is random: make runs reproducible
    model = load_cross_encoder(base, cfg.max_length)
    if cfg.lora_rank > 0:
        _apply_lora(model, cfg)
    elif cfg.freeze_embeddings:
        freeze_input_embeddings(model)

    evaluator = None
    samples = _dev_samples(dev or [])
    result_dev: dict[str, Any] = {}
    warnings: list[str] = []
    extra: dict[str, Any] = {}
    judged_samples = _dev_samples(judged_dev or [], judged=True, first_stage=first_stage)
    if judged_dev is not None and len(judged_samples) < min_dev_queries:
        warnings.append(
            f"only {len(judged_samples)} judged dev queries (minimum {min_dev_queries}): too few "
            "to decide whether the reranker helps; raise the dev fraction"
        )
    judged_eval = (
        CrossEncoderRerankingEvaluator(judged_samples, at_k=10, name="judged", write_csv=False)
        if judged_samples
        else None
    )
    if judged_eval is not None:
        result_dev["judged_before"] = _pick(judged_eval(model), "judged")
    if samples:
        evaluator = CrossEncoderRerankingEvaluator(samples, at_k=10, name="dev", write_csv=False)
        result_dev["before"] = {**_pick(evaluator(model)), **dev_separation(model, dev)}
        if cfg.eval_steps > 0:
            extra = dict(
                eval_strategy="steps",
                eval_steps=cfg.eval_steps,
                save_steps=cfg.eval_steps,
                load_best_model_at_end=True,
                metric_for_best_model="eval_dev_ndcg@10",
                greater_is_better=True,
            )
    base_args = common_args(out, cfg)
    args = CrossEncoderTrainingArguments(**{**base_args, **extra})
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=objective.loss(cfg, model),
        evaluator=evaluator if extra else None,
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    seconds = time.perf_counter() - t0
    if cfg.lora_rank > 0:
        _merge_lora(model)
    if evaluator is not None:
        after = {**_pick(evaluator(model)), **dev_separation(model, dev)}
        result_dev["after"] = after
        if after["std"] < 1e-3:
            warnings.append(f"collapse: dev scores barely vary (std {after['std']:.2e})")
        if after["ndcg@10"] < result_dev["before"]["ndcg@10"]:
            warnings.append(
                f"dev nDCG@10 fell from {result_dev['before']['ndcg@10']:.4f} to "
                f"{after['ndcg@10']:.4f}; the base model may be the better reranker"
            )
    first_stage_result = None
    if judged_eval is not None:
        judged_metrics = judged_eval(model)
        before, after = result_dev["judged_before"], _pick(judged_metrics, "judged")
        result_dev["judged_after"] = after
        if first_stage is not None:
            base = _pick(judged_metrics, "judged_base")
            first_stage_result = {
                "scorer": first_stage_name or "first stage",
                "queries": len(judged_samples),
                **base,
                "reranker_ndcg@10": after["ndcg@10"],
                "delta": after["ndcg@10"] - base["ndcg@10"],
                "beats": after["ndcg@10"] > base["ndcg@10"],
            }
            result_dev["first_stage"] = base
            if not first_stage_result["beats"]:
                warnings.append(
                    f"on judged held-out candidates the tuned reranker scores nDCG@10 "
                    f"{after['ndcg@10']:.4f}, the first stage's own order "
                    f"({first_stage_result['scorer']}) {base['ndcg@10']:.4f}: reranking "
                    "would make results worse"
                )
        if after["ndcg@10"] < before["ndcg@10"]:
            warnings.append(
                f"on judged held-out candidates (as evaluation sees them) nDCG@10 fell from "
                f"{before['ndcg@10']:.4f} to {after['ndcg@10']:.4f}: the reranker ranks real "
                "candidates worse than the base model"
            )
    for w in warnings:
        log.warning(w)
    with quiet_loading():
        model.save_pretrained(str(out))
    from rankwise.models.loading import save_model_settings

    save_model_settings(out, "reranker", max_length=cfg.max_length)
    return TrainResult.of_trainer(
        trainer, out, cfg, base, seconds=seconds, rows=len(rows), dropped=dropped,
        resumed_from=resume_from_checkpoint, dev=result_dev, warnings=warnings,
        first_stage=first_stage_result,
    )  # fmt: skip


def _pick(metrics: dict[str, float], prefix: str = "dev") -> dict[str, float]:
    """``{"dev_ndcg@10": x, ...}`` → ``{"ndcg@10": x, "mrr@10": y, "map": z}`` (keys that
    start with exactly ``prefix_``)."""
    out = {}
    for k, v in metrics.items():
        if k.startswith(f"{prefix}_"):
            name = k[len(prefix) + 1 :]
            if name in ("ndcg@10", "mrr@10", "map"):
                out[name] = float(v)
    return out
