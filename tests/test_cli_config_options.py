"""config_from_options: a command's options become its training config, each setting once."""

from __future__ import annotations

from rankwise.cli.common import config_from_options
from rankwise.tune.embedder import EmbedderTrainConfig
from rankwise.tune.reranker import RerankerTrainConfig


def test_options_set_fields_renames_and_prefixed_options_win():
    options = {
        "epochs": 2.0, "batch_size": 7, "lr": 1e-4, "max_steps": 11, "base": "not-a-field",
        "reranker_batch_size": 5, "reranker_lr": 2e-4, "reranker_objective": "pointwise",
        "reranker_base": "not-a-field-either", "related_label": 0.3,
    }  # fmt: skip
    emb = config_from_options(EmbedderTrainConfig, options)
    assert emb == EmbedderTrainConfig(epochs=2.0, batch_size=7, learning_rate=1e-4, max_steps=11)
    rr = config_from_options(RerankerTrainConfig, options, prefix="reranker_")
    assert rr == RerankerTrainConfig(
        epochs=2.0, batch_size=5, learning_rate=2e-4, max_steps=11, objective="pointwise",
        related_label=0.3,
    )  # fmt: skip
    assert config_from_options(RerankerTrainConfig, {}) == RerankerTrainConfig()
