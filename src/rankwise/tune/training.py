"""Pieces shared by the embedder and reranker trainers: grouping examples into
fixed-width rows, the result record, and reading the trainer's loss history."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample


@dataclass
class TrainConfig:
    """Options both trainers share, read by :func:`common_args`; the embedder's and the
    reranker's configs add their own and override the defaults that differ.

    ``group_size`` = 1 positive + ``group_size - 1`` negatives per query;
    ``distill_weight`` > 0 needs teacher scores in the examples.
    """

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    group_size: int = 4
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int = 64
    distill_weight: float = 0.0
    teacher_temperature: float = 1.0
    freeze_embeddings: bool = False
    save_steps: int = 500
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    logging_steps: int = 10
    seed: int = 42


@dataclass
class TrainResult:
    """What a training run produced.

    ``losses`` is ``[(global_step, training loss)]`` as logged every ``logging_steps``;
    ``dev`` holds the dev metrics before and after training when a dev set was given;
    ``checkpoints`` says where the intermediate checkpoints were, how big, and whether they
    were kept (:func:`tidy_checkpoints`); ``first_stage`` (rerankers with a judged dev set
    and a first-stage scorer) compares the tuned reranker with the first-stage order of the
    same judged candidates: ``{"scorer", "queries", "ndcg@10", "mrr@10", "map",
    "reranker_ndcg@10", "delta", "beats"}`` (what a promotion gate reads).
    """

    out_dir: Path
    global_step: int
    losses: list[tuple[int, float]]
    seconds: float
    rows: int
    dropped: int
    resumed_from: str | None = None
    dev: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    first_stage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d

    def save(self, name: str = "rankwise_tune.json") -> Path:
        path = self.out_dir / name
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        return path

    @classmethod
    def of_trainer(
        cls,
        trainer: Any,
        out_dir: Path,
        cfg: TrainConfig,
        base: str,
        *,
        seconds: float,
        rows: int,
        dropped: int,
        resumed_from: str | Path | None,
        **extra: Any,
    ) -> TrainResult:
        """The result of a finished (transformers) ``trainer`` run, saved beside the model:
        steps and losses from its state, the config with ``base``, tidied checkpoints (the
        best kept, when the trainer tracked one); ``extra``: ``dev``, ``warnings``, ..."""
        best = getattr(trainer.state, "best_model_checkpoint", None)
        result = cls(
            out_dir=out_dir,
            global_step=int(trainer.state.global_step),
            losses=loss_history(trainer.state.log_history),
            seconds=seconds,
            rows=rows,
            dropped=dropped,
            resumed_from=str(resumed_from) if resumed_from else None,
            config={**asdict(cfg), "base": base},
            checkpoints=tidy_checkpoints(out_dir, cfg.keep_checkpoints, best),
            **extra,
        )
        result.save()
        return result


def group_rows(
    examples: Sequence[TrainExample],
    group_size: int,
    *,
    with_scores: bool = False,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Turn examples into rows ``{query, positive, negative_1..n[, label]}``.

    Each row takes one positive (drawn at random) and ``group_size - 1`` distinct negatives
    drawn without replacement; examples with too few negatives are dropped (returned as the
    second value). ``label`` holds the teacher scores ``[pos, neg_1, ...]``.
    """
    if group_size < 1:
        raise InvalidRequest(f"group size must be >= 1, got {group_size}")
    rng = random.Random(seed)
    n_neg = group_size - 1
    rows, dropped = [], 0
    for ex in examples:
        if with_scores and not ex.has_scores:
            raise InvalidRequest(
                f"query {ex.query!r} has no teacher scores; run `rankwise tune score` first "
                "or train without distillation"
            )
        negs = list(dict.fromkeys(t for t in ex.neg if t not in ex.pos))
        if len(negs) < n_neg:
            dropped += 1
            continue
        p = rng.randrange(len(ex.pos))
        picked = rng.sample(range(len(ex.neg)), len(ex.neg))
        neg_idx = []
        seen: set[str] = set()
        for i in picked:  # distinct texts, keep the index for its score
            t = ex.neg[i]
            if t not in seen and t not in ex.pos:
                seen.add(t)
                neg_idx.append(i)
            if len(neg_idx) == n_neg:
                break
        query = f"{ex.prompt}{ex.query}" if ex.prompt else ex.query
        row: dict[str, Any] = {"query": query, "positive": ex.pos[p]}
        for j, i in enumerate(neg_idx, 1):
            row[f"negative_{j}"] = ex.neg[i]
        if with_scores:
            row["label"] = [ex.pos_scores[p], *(ex.neg_scores[i] for i in neg_idx)]
        rows.append(row)
    if not rows:
        raise InvalidRequest(
            f"no example has {n_neg} distinct negatives for group size {group_size}; "
            "mine negatives first (`rankwise tune mine`) or lower the group size"
        )
    return rows, dropped


def to_dataset(rows: list[dict[str, Any]]):
    """A :class:`datasets.Dataset` with the rows' columns in insertion order."""
    from datasets import Dataset

    columns = list(rows[0])
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns})


def loss_history(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """``[(step, loss)]`` from ``trainer.state.log_history`` (training loss entries only)."""
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e]


def common_args(out_dir: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Keyword arguments both trainers' TrainingArguments share, from a training config
    (``EmbedderTrainConfig`` or ``RerankerTrainConfig``: epochs, max_steps, batch_size,
    learning_rate, warmup_ratio, save_steps, save_total_limit, logging_steps, seed)."""
    epochs, max_steps, batch_size = cfg.epochs, cfg.max_steps, cfg.batch_size
    learning_rate, warmup_ratio, seed = cfg.learning_rate, cfg.warmup_ratio, cfg.seed
    save_steps, save_total_limit = cfg.save_steps, cfg.save_total_limit
    logging_steps = cfg.logging_steps
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,  # transformers 5: a float < 1 is a ratio
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=save_total_limit,
        logging_steps=logging_steps,
        logging_first_step=True,
        seed=seed,
        report_to="none",
        dataloader_drop_last=False,
        dataloader_pin_memory=False,  # pinning is for GPUs; on a CPU torch only warns about it
        disable_tqdm=False,
    )


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence transformers' and sentence-transformers' load/save chatter (a coloured
    "LOAD REPORT" table of newly initialised head weights, "Converting ... to CrossEncoder",
    weight loading/writing progress bars) while a model loads or is saved; rankwise says
    the one fact that matters itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    st_logger = logging.getLogger("sentence_transformers")
    st_level = st_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    st_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        st_logger.setLevel(st_level)


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def tidy_checkpoints(out_dir: Path, keep: bool, best: str | None = None) -> dict[str, Any]:
    """Remove ``out_dir/checkpoints`` after a finished training unless ``keep``.

    The final model is saved in ``out_dir`` itself; with best-checkpoint selection the
    trainer has loaded the best checkpoint before that save, so the final model *is* the
    best one and the intermediate checkpoints (optimizer state included: ~250 MB each for
    MiniLM) are only needed to resume an interrupted run. Returns ``{"path", "count",
    "bytes", "kept", "best"}``.
    """
    folder = out_dir / "checkpoints"
    found = sorted(p.name for p in folder.glob("checkpoint-*")) if folder.exists() else []
    info = {"path": str(folder), "count": len(found), "bytes": folder_bytes(folder), "kept": keep}
    if best:
        info["best"] = best
    if not keep and folder.exists():
        shutil.rmtree(folder)
    return info


def describe_checkpoints(info: dict[str, Any]) -> str:
    """One line for the log: what happened to the intermediate checkpoints."""
    if not info or not info.get("count"):
        return "no intermediate checkpoints were written"
    size = f"{info['bytes'] / 1e6:.0f} MB"
    what = f"{info['count']} intermediate checkpoint" + ("s" if info["count"] != 1 else "")
    if info.get("kept"):
        return f"{what} kept in {info['path']} ({size})"
    return (
        f"removed {what} ({size}) from {info['path']}; "
        "the final model (the best one when dev evaluation picks it) is kept"
    )


def freeze_input_embeddings(model) -> int:
    """Freeze the token/position embeddings of a sentence-transformers model.

    Half of a MiniLM's parameters are its vocabulary matrix; freezing it roughly halves the
    optimizer's work and memory, a sensible trade on a CPU or with little data (the
    encoder layers still adapt). Returns the number of frozen parameters.
    """
    frozen = 0
    for module in model.modules():
        if type(module).__name__.endswith("Embeddings"):
            for p in module.parameters():
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen
