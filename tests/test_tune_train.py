"""Trainers on tiny real models: training lowers the loss and changes the weights, the output
loads in rankwise as-is with the same vectors/scores, and resume continues from a checkpoint."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample
from rankwise.tune.embedder import EmbedderTrainConfig, load_student, train_embedder
from rankwise.tune.reranker import RerankerTrainConfig, load_cross_encoder, train_reranker

WORDS = (
    "apple iphone pro smartphone black fresh red apples fruit bag summer breathable running "
    "shoes mesh lightweight leather dress brown oxford cordless drill lithium battery kit "
    "wireless bluetooth headphones noise stainless steel kitchen sink faucet"
).split()


def make_examples(n: int, seed: int = 0, scores: bool = False) -> list[TrainExample]:
    """Queries of 2 words whose positive repeats them; negatives are random words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = rng.sample(WORDS, 2)
        pos = " ".join(q + rng.sample(WORDS, 2))
        negs = [" ".join(rng.sample([w for w in WORDS if w not in q], 4)) for _ in range(4)]
        out.append(
            TrainExample(
                " ".join(q), [pos], negs, [3.0] if scores else None,
                [float(-i) for i in range(4)] if scores else None,
            )
        )  # fmt: skip
    return out


def infonce(model, examples: list[TrainExample], scale: float = 50.0) -> float:
    """Full-data in-batch contrastive loss of a SentenceTransformer, deterministic (eval mode)."""
    q = model.encode([e.query for e in examples], convert_to_tensor=True)
    d = model.encode([e.pos[0] for e in examples], convert_to_tensor=True)
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    return float(torch.nn.functional.cross_entropy(sims * scale, torch.arange(len(examples))))


def group_ce(model, examples: list[TrainExample]) -> float:
    """Listwise cross-entropy of a CrossEncoder over each example's [pos, negs]."""
    losses = []
    for e in examples:
        s = model.predict(
            [(e.query, t) for t in (*e.pos[:1], *e.neg)], activation_fn=torch.nn.Identity()
        )
        losses.append(
            float(torch.nn.functional.cross_entropy(torch.tensor(s)[None], torch.tensor([0])))
        )
    return float(np.mean(losses))  # fmt: skip


def first_tensor(folder) -> tuple[str, torch.Tensor]:
    weights = load_file(str(folder / "model.safetensors"))
    name = next(k for k in sorted(weights) if "layer.0.attention.self.query.weight" in k)
    return name, weights[name]


FAST = dict(batch_size=8, logging_steps=1, save_steps=1000, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def st_base(tiny_embedder_dir, tmp_path_factory):
    """The tiny encoder as a sentence-transformers folder with mean pooling.

    (A random tiny BERT's CLS vector barely depends on the input, so CLS pooling, the
    default for an unknown plain folder, gives near-identical vectors to start from.)
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    tr = Transformer(str(tiny_embedder_dir), max_seq_length=64)
    pool = Pooling(tr.get_embedding_dimension(), pooling_mode="mean")
    out = tmp_path_factory.mktemp("st-base")
    SentenceTransformer(modules=[tr, pool, Normalize()], device="cpu").save_pretrained(str(out))
    return str(out)


def test_embedder_training_lowers_loss_changes_weights_and_loads(
    st_base, tiny_embedder_dir, tmp_path
):
    from rankwise.models import Embedder

    examples = make_examples(16)
    cfg = EmbedderTrainConfig(max_steps=16, group_size=3, learning_rate=1e-3, **FAST)
    before = infonce(load_student(st_base, cfg.max_length), examples)
    result = train_embedder(examples, st_base, tmp_path / "emb", cfg)
    trained = load_student(str(tmp_path / "emb"), cfg.max_length)
    after = infonce(trained, examples)
    assert result.global_step == 16 and len(result.losses) >= 16
    assert after < before - 0.1, (before, after)
    name, w = first_tensor(tmp_path / "emb")
    import transformers

    base = transformers.AutoModel.from_pretrained(str(tiny_embedder_dir)).state_dict()
    assert not torch.allclose(base[name.removeprefix("bert.")], w)
    # rankwise loads the folder as-is, with the pooling it was trained with
    emb = Embedder(str(tmp_path / "emb"))
    ours = emb.encode_queries([e.query for e in examples[:4]])
    theirs = trained.encode([e.query for e in examples[:4]], normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert (tmp_path / "emb" / "rankwise_tune.json").is_file()


def test_embedder_resume_continues_from_checkpoint(tiny_embedder_dir, tmp_path):
    examples = make_examples(32, seed=1)
    cfg = EmbedderTrainConfig(max_steps=4, group_size=2, learning_rate=5e-4, **FAST)
    cfg.save_steps = 2
    cfg.keep_checkpoints = True  # they are removed after a finished training otherwise
    full = train_embedder(examples, str(tiny_embedder_dir), tmp_path / "a", cfg)
    ckpt = tmp_path / "a" / "checkpoints" / "checkpoint-2"
    assert ckpt.is_dir() and full.global_step == 4
    resumed = train_embedder(
        examples, str(tiny_embedder_dir), tmp_path / "b", cfg, resume_from_checkpoint=str(ckpt)
    )
    assert resumed.global_step == 4 and resumed.resumed_from == str(ckpt)
    # the resumed run trained steps 3-4 only and ends where the uninterrupted run ended
    assert [s for s, _ in resumed.losses if s > 2] == [3, 4]
    _, wa = first_tensor(tmp_path / "a")
    _, wb = first_tensor(tmp_path / "b")
    torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-4)


def test_embedder_distillation_and_cached_loss_run(tiny_embedder_dir, tmp_path):
    examples = make_examples(16, scores=True)
    distill = EmbedderTrainConfig(max_steps=2, group_size=3, distill_weight=1.0, **FAST)
    r = train_embedder(examples, str(tiny_embedder_dir), tmp_path / "kd", distill)
    assert r.global_step == 2 and all(np.isfinite(loss) for _, loss in r.losses)
    cached = EmbedderTrainConfig(max_steps=2, group_size=2, cached=True, mini_batch_size=4, **FAST)
    assert train_embedder(examples, str(tiny_embedder_dir), tmp_path / "c", cached).global_step == 2
    with pytest.raises(InvalidRequest, match="teacher scores"):
        train_embedder(make_examples(4), str(tiny_embedder_dir), tmp_path / "x", distill)
    with pytest.raises(InvalidRequest, match="negatives"):
        bad = EmbedderTrainConfig(group_size=9, **FAST)
        train_embedder(examples, str(tiny_embedder_dir), tmp_path / "y", bad)


def test_reranker_from_plain_encoder_learns_and_loads(minilm_dir, tmp_path):
    """all-MiniLM-L6-v2 is a plain encoder (no classification head). A tiny random BERT
    trained too erratically here: its loss rose on one CPU and fell on another."""
    from rankwise.models import Reranker

    examples = make_examples(24, seed=2)
    train, dev = examples[:16], examples[16:]
    cfg = RerankerTrainConfig(max_steps=16, group_size=4, learning_rate=2e-4, max_length=32, **FAST)
    torch.manual_seed(cfg.seed)  # the same random head the trainer starts from
    before = group_ce(load_cross_encoder(str(minilm_dir), 32), train)
    assert before > 1.4  # about log(5): the new head cannot tell the positive from 4 negatives
    result = train_reranker(train, str(minilm_dir), tmp_path / "rr", cfg, dev=dev)
    trained = load_cross_encoder(str(tmp_path / "rr"), 32)
    assert group_ce(trained, train) < before - 0.6
    assert set(result.dev) == {"before", "after"} and "ndcg@10" in result.dev["after"]
    rr = Reranker(str(tmp_path / "rr"))  # a one-logit sequence classifier: loads as-is
    pairs = [(e.query, e.pos[0]) for e in dev[:4]]
    ours = rr.score_pairs(pairs)
    theirs = trained.predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_judged_dev_check_warns_when_real_candidates_get_worse(minilm_dir, tmp_path):
    """Mined negatives rise while judged candidates, as evaluation sees them, fall: warn.
    (Real MiniLM weights and tokenizer: the tiny random fixtures train too erratically.)"""
    examples = make_examples(16, seed=0)
    cfg = RerankerTrainConfig(max_steps=32, group_size=4, learning_rate=2e-4, max_length=32, **FAST)
    # judged documents that contradict what training teaches: the matching product judged 0,
    # the random ones judged relevant (on the queries the model fits)
    contrary = [TrainExample(e.query, e.neg, [], related=e.pos) for e in examples]
    result = train_reranker(
        examples, str(minilm_dir), tmp_path / "rr", cfg, dev=examples, judged_dev=contrary
    )
    print(result.dev)
    assert result.dev["after"]["ndcg@10"] > result.dev["before"]["ndcg@10"] + 0.1
    assert result.dev["judged_after"]["ndcg@10"] < result.dev["judged_before"]["ndcg@10"] - 0.1
    assert any("judged held-out" in w for w in result.warnings), result.warnings
    assert not any("dev nDCG@10 fell" in w for w in result.warnings), result.warnings


def test_reranker_pointwise_margin_and_lora_run(tiny_embedder_dir, tmp_path):
    examples = make_examples(8, scores=True)
    for objective, extra in (("pointwise", {}), ("margin_mse", {}), ("listwise", {"lora_rank": 4})):
        cfg = RerankerTrainConfig(objective=objective, max_steps=2, group_size=3, **extra, **FAST)
        out = tmp_path / objective
        r = train_reranker(examples, str(tiny_embedder_dir), out, cfg)
        assert r.global_step == 2 and all(np.isfinite(loss) for _, loss in r.losses)
        assert (out / "model.safetensors").is_file()
    with pytest.raises(InvalidRequest, match="objective"):
        train_reranker(
            examples,
            str(tiny_embedder_dir),
            tmp_path / "z",
            RerankerTrainConfig(objective="pairwise"),
        )


def test_pointwise_rows_carry_graded_labels():
    """Pointwise rows: positives 1, related (judged, below the positive grade) the middle
    label, negatives 0; teacher scores replace them when distilling."""
    from rankwise.tune.data import TrainExample
    from rankwise.tune.reranker import _pointwise_rows

    ex = TrainExample("drill", ["drill kit"], ["garden hose"], related=["drill bits"])
    rows = _pointwise_rows([ex], distill=False, related_label=0.4)
    assert {(r["document"], r["label"]) for r in rows} == {
        ("drill kit", 1.0),
        ("drill bits", 0.4),
        ("garden hose", 0.0),
    }
    scored = TrainExample("drill", ["drill kit"], ["garden hose"], [2.0], [-2.0])
    labels = [r["label"] for r in _pointwise_rows([scored], distill=True)]
    assert labels == pytest.approx([1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))])
    with pytest.raises(InvalidRequest, match="related_label"):
        RerankerTrainConfig(objective="pointwise", related_label=1.5).check()


def test_a_registered_objective_trains_without_touching_train_reranker(
    tiny_embedder_dir, tmp_path, monkeypatch
):
    """Issue 14: objectives are a registry; a new one is rows + loss, registered once."""
    from rankwise.tune import objectives

    seen = {}

    def rows(examples, cfg, distill):
        seen["rows"] = cfg.objective
        return objectives._pointwise_rows(examples, distill, cfg.related_label), 0

    def loss(cfg, model):
        from sentence_transformers.cross_encoder.losses import MSELoss

        seen["loss"] = True
        return MSELoss(model)

    monkeypatch.setitem(
        objectives.OBJECTIVES, "pointwise_mse", objectives.Objective("pointwise_mse", rows, loss)
    )
    cfg = RerankerTrainConfig(objective="pointwise_mse", max_steps=1, group_size=1, **FAST)
    r = train_reranker(make_examples(4), str(tiny_embedder_dir), tmp_path / "mse", cfg)
    assert r.global_step == 1 and seen == {"rows": "pointwise_mse", "loss": True}
    with pytest.raises(InvalidRequest, match="pointwise_mse"):  # the error lists it
        RerankerTrainConfig(objective="nope").check()
