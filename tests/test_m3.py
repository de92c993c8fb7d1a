"""bge-m3's three outputs on a tiny M3-shaped model, against a plain-torch reference."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_m3 import build_tiny_m3

from rankwise.errors import InvalidRequest, ModelLoadError
from rankwise.models import Embedder
from rankwise.models.m3 import lexical_score

TEXTS = [
    "apple iphone 15 pro smartphone 256gb black apple",
    "cordless drill",
    "苹果手机 iPhone 15 黑色",
    "summer breathable running shoes mesh lightweight leather dress shoes for men brown oxford",
]


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    return build_tiny_m3(tmp_path_factory.mktemp("tiny-m3"))


@pytest.fixture(scope="module")
def m3(m3_dir):
    return Embedder(str(m3_dir), device="cpu", batch_size=2)


def reference(folder, texts):
    """FlagEmbedding's conventions written out in plain torch from the same files."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    colbert = torch.nn.Linear(32, 24)
    colbert.load_state_dict(torch.load(folder / "colbert_linear.pt"))
    sparse = torch.nn.Linear(32, 1)
    sparse.load_state_dict(torch.load(folder / "sparse_linear.pt"))
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        dense = torch.nn.functional.normalize(h[:, 0], dim=-1).numpy()
        w = torch.relu(sparse(h)).squeeze(-1).numpy()
        cv = colbert(h[:, 1:]) * batch["attention_mask"][:, 1:, None]
        cv = torch.nn.functional.normalize(cv, dim=-1).numpy()
    unused = {tok.cls_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    sparse_out, colbert_out = [], []
    for r in range(len(texts)):
        ids = batch["input_ids"][r].tolist()
        n = int(batch["attention_mask"][r].sum())
        d: dict[int, float] = {}
        for i, wt in zip(ids, w[r].tolist(), strict=True):
            if i not in unused and wt > 0 and wt > d.get(i, 0.0):
                d[i] = wt
        sparse_out.append(d)
        colbert_out.append(cv[r][: n - 1])
    return dense, sparse_out, colbert_out


def test_three_outputs_match_plain_torch_reference(m3, m3_dir):
    out = m3.encode_multi(TEXTS, "document", ("dense", "sparse", "colbert"))
    dense, sparse, colbert = reference(m3_dir, TEXTS)
    assert out.dense.shape == (4, 32) and out.dense.dtype == np.float32
    np.testing.assert_allclose(out.dense, dense, atol=1e-5)
    np.testing.assert_allclose(out.dense, m3.encode(TEXTS), atol=1e-5)  # same as plain dense
    for got, want in zip(out.sparse, sparse, strict=True):
        assert set(got) == set(want)  # same token ids, none of the specials
        assert not set(got) & {0, 1, 2, 3}
        np.testing.assert_allclose([got[t] for t in want], list(want.values()), atol=1e-5)
    assert sum(map(len, out.sparse)) >= 4  # the heads are random, but not all-negative
    for got, want, text in zip(out.colbert, colbert, TEXTS, strict=True):
        n_tokens = len(m3.tokens.encode_single([text], m3.max_length)[0][0])
        assert got.shape == (n_tokens - 1, 24)  # CLS dropped, </s> kept
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_repeated_token_keeps_its_max_weight_and_scores_lexically(m3):
    out = m3.encode_multi(["apple apple apple", "apple"], "query", ("sparse",))
    assert out.dense is None and out.colbert is None
    apple = m3.tokens.content_ids(["apple"])[0][0]
    a, b = out.sparse
    if apple in a:  # the max over occurrences, not the sum
        assert a[apple] >= b.get(apple, 0.0) - 1e-6
    assert lexical_score(a, b) == pytest.approx(sum(w * b[t] for t, w in a.items() if t in b))


def test_outputs_listed_and_missing_heads_are_a_clear_error(m3, tmp_path):
    assert m3.outputs == ("dense", "sparse", "colbert")
    bare = Embedder(str(build_tiny_m3(tmp_path / "bare", heads=False)), device="cpu")
    assert bare.outputs == ("dense",)
    assert bare.encode_multi(["x"], "query", ("dense",)).dense.shape == (1, 32)
    with pytest.raises(ModelLoadError, match="sparse_linear.pt"):
        bare.encode_multi(["x"], "query", ("dense", "sparse"))
    with pytest.raises(ModelLoadError, match="colbert_linear.pt"):
        bare.encode_multi(["x"], "document", ("colbert",))
    with pytest.raises(InvalidRequest, match="unknown embedder output"):
        m3.encode_multi(["x"], "query", ("splade",))


def test_bge_m3_spec_lists_three_outputs():
    from rankwise.models.specs import spec_for

    assert spec_for("BAAI/bge-m3").outputs == ("dense", "sparse", "colbert")
    assert spec_for("BAAI/bge-small-zh-v1.5").outputs == ("dense",)


def test_dense_fine_tune_keeps_the_sparse_and_colbert_heads(m3_dir, tmp_path):
    """A dense-only fine-tune trains the encoder; the heads travel with it unchanged."""
    from test_tune_train import FAST, make_examples

    from rankwise.tune.embedder import EmbedderTrainConfig, train_embedder

    out = tmp_path / "tuned"
    cfg = EmbedderTrainConfig(max_steps=4, group_size=2, learning_rate=1e-3, unified=False, **FAST)
    train_embedder(make_examples(8), str(m3_dir), out, cfg)
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        assert (out / name).read_bytes() == (m3_dir / name).read_bytes()
    tuned = Embedder(str(out), device="cpu")
    base = Embedder(str(m3_dir), device="cpu")
    assert tuned.outputs == ("dense", "sparse", "colbert")
    got = tuned.encode_multi(TEXTS, "document")
    assert not np.allclose(got.dense, base.encode(TEXTS), atol=1e-4)  # the encoder did change
    np.testing.assert_allclose(got.dense, tuned.encode(TEXTS), atol=1e-5)
    assert [c.shape for c in got.colbert] == [c.shape for c in base.encode_multi(TEXTS).colbert]
    assert all(w > 0 for s in got.sparse for w in s.values())
