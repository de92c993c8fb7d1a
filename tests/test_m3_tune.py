"""bge-m3's unified fine-tuning (tune/m3_loss.py) on the tiny M3 (tests/tiny_m3.py)."""

from __future__ import annotations

import math

import pytest
import torch
from test_tune_train import FAST, make_examples
from tiny_m3 import build_tiny_m3

from rankwise.errors import InvalidRequest
from rankwise.models import Embedder
from rankwise.models.m3 import unused_token_ids
from rankwise.tune.embedder import EmbedderTrainConfig, load_student, train_embedder
from rankwise.tune.m3_loss import M3UnifiedLoss, load_heads

HEADS = ("sparse_linear.pt", "colbert_linear.pt")
TERMS = ("dense", "sparse", "colbert", "ensemble")


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    return build_tiny_m3(tmp_path_factory.mktemp("tiny-m3"))


def _batch(model, examples):
    cols = [
        [e.query for e in examples],
        [e.pos[0] for e in examples],
        [e.neg[0] for e in examples],
        [e.neg[1] for e in examples],
    ]
    return [model.tokenize(c) for c in cols]


def test_three_losses_are_finite_and_decrease_on_a_toy_set(m3_dir):
    torch.manual_seed(0)
    model = load_student(str(m3_dir), 32)
    sparse, colbert = load_heads(m3_dir, 32, "tiny-m3")
    loss = M3UnifiedLoss(model, sparse, colbert, unused_token_ids(m3_dir), temperature=0.05)
    assert len(list(loss.parameters())) > len(list(model.parameters()))  # heads are trained
    features = _batch(model, make_examples(8))
    opt = torch.optim.Adam(loss.parameters(), lr=1e-3)
    history = []
    for _ in range(6):
        opt.zero_grad()
        total = loss(features, torch.zeros(8))
        total.backward()
        opt.step()
        history.append({"total": float(total.detach()), **loss.last})
    first, last = history[0], history[-1]
    assert set(TERMS) | {"distill_dense", "distill_sparse", "distill_colbert"} <= set(first)
    assert all(math.isfinite(v) for h in history for v in h.values())
    for term in ("total", *TERMS):
        assert last[term] < first[term], (term, first[term], last[term])
    # the head gradients flowed: the sparse head's weights moved
    assert not torch.equal(sparse.weight, load_heads(m3_dir, 32, "tiny-m3")[0].weight)


def test_sparse_vectors_match_the_inference_weights(m3_dir):
    """The training-side sparse representation equals what Embedder serves (max per id)."""
    model = load_student(str(m3_dir), 32).eval()
    sparse, colbert = load_heads(m3_dir, 32, "tiny-m3")
    loss = M3UnifiedLoss(model, sparse, colbert, unused_token_ids(m3_dir))
    texts = ["apple apple iphone", "cordless drill"]
    with torch.no_grad():
        out = model(model.tokenize(texts))
        vec = loss.sparse_vectors(out["token_embeddings"], out["input_ids"])
    served = Embedder(str(m3_dir), device="cpu").encode_multi(texts, "document", ("sparse",))
    for row, want in zip(vec, served.sparse, strict=True):
        got = {int(i): float(row[i]) for i in torch.nonzero(row).flatten()}
        assert got.keys() == want.keys()
        assert all(abs(got[t] - want[t]) < 1e-5 for t in want)


def test_unified_fine_tune_saves_trained_heads_in_baai_layout(m3_dir, tmp_path):
    out = tmp_path / "tuned"
    cfg = EmbedderTrainConfig(max_steps=4, group_size=3, learning_rate=1e-3, **FAST)
    result = train_embedder(make_examples(16), str(m3_dir), out, cfg)
    assert result.global_step == 4 and all(math.isfinite(v) for _, v in result.losses)
    for name in HEADS:
        assert (out / name).read_bytes() != (m3_dir / name).read_bytes()
        new = torch.load(out / name, weights_only=True)
        old = torch.load(m3_dir / name, weights_only=True)
        assert new.keys() == old.keys() == {"weight", "bias"}
        assert new["weight"].shape == old["weight"].shape
        assert not torch.equal(new["weight"], old["weight"])
    tuned = Embedder(str(out), device="cpu")
    assert tuned.outputs == ("dense", "sparse", "colbert")
    got = tuned.encode_multi(["apple iphone"], "query")
    assert got.colbert[0].shape[1] == 24 and got.sparse[0]


def test_unified_refuses_what_it_does_not_support(m3_dir, tmp_path):
    cfg = EmbedderTrainConfig(max_steps=1, cached=True, **FAST)
    with pytest.raises(InvalidRequest, match="--dense-only"):
        train_embedder(make_examples(8), str(m3_dir), tmp_path / "x", cfg)


def test_cli_dense_only_keeps_heads_and_unified_errors_are_clear(m3_dir, tmp_path, capsys):
    from rankwise.cli import main as cli_main
    from rankwise.tune.data import write_examples

    data = write_examples(make_examples(8), tmp_path / "train.jsonl")
    args = ["tune", "embedder", str(data), "--base", str(m3_dir), "--max-steps", "1"]
    args += ["--train-batch-size", "4", "--group-size", "2", "--cached"]
    with pytest.raises(SystemExit) as err:
        cli_main([*args, "--out", str(tmp_path / "a")])
    assert err.value.code == 2 and "--dense-only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ok:
        cli_main([*args, "--dense-only", "--out", str(tmp_path / "b")])
    assert ok.value.code == 0
    for name in HEADS:
        assert (tmp_path / "b" / name).read_bytes() == (m3_dir / name).read_bytes()
