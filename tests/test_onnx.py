"""ONNX Runtime backend: parity with torch, int8 keeps rankings, export cache reuse."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from tiny_models import TOKENIZER_CORPUS, build_tokenizer

import rankwise.models.onnx as rw_onnx
from rankwise.models import Embedder, Reranker
from rankwise.models.loading import resolve_model

DOCS = [
    "apple iphone 15 pro smartphone 256gb black",
    "fresh red apples fruit 1kg bag",
    "summer breathable running shoes mesh lightweight " * 5,
    "苹果手机 iPhone 15 黑色 256G 全网通",
    "cordless drill",
    "",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "rw-cache"))


def train_tiny_reranker(out: Path, steps: int = 600) -> Path:
    """The tiny cross-encoder trained to tell a product from a query made of its words."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    # hidden 128 rather than tiny_models' 32: with 32-term dot products int8 rounding noise is as
    # large as what a few hundred steps teach, and the test would measure noise, not rankings.
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)  # the same model in every process: its tests cannot flake
    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=128,
        num_hidden_layers=3,  # mixed int8 keeps layers 0-1's feed-forward fp32: quantise layer 2's
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(str(out))
    model = BertForSequenceClassification.from_pretrained(str(out))
    products = [p for p in TOKENIZER_CORPUS if " " in p]
    rng = random.Random(0)
    torch.manual_seed(0)  # dropout draws: keep training identical whatever ran before
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # tiny matrices: threading only adds overhead (and hurts on a busy CI box)
    for _ in range(steps):
        queries, docs, labels = [], [], []
        for _ in range(16):
            doc = rng.choice(products)
            words = doc.split()
            query = " ".join(rng.sample(words, k=min(2, len(words))))
            match = rng.random() < 0.5
            docs.append(doc if match else rng.choice([p for p in products if p != doc]))
            queries.append(query)
            labels.append(float(match))
        batch = tok(
            queries, docs, padding=True, truncation=True, max_length=64, return_tensors="pt"
        )
        logits = model(**batch).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def trained_reranker_dir(tmp_path_factory) -> Path:
    return train_tiny_reranker(tmp_path_factory.mktemp("trained-reranker"))


def test_onnx_fp32_matches_torch(tiny_reranker_dir, tiny_embedder_dir):
    torch_rr = Reranker(str(tiny_reranker_dir))
    onnx_rr = Reranker(str(tiny_reranker_dir), backend="onnx")
    np.testing.assert_allclose(
        onnx_rr.score("apple phone", DOCS), torch_rr.score("apple phone", DOCS), atol=1e-4
    )
    torch_emb = Embedder(str(tiny_embedder_dir))
    onnx_emb = Embedder(str(tiny_embedder_dir), backend="onnx")
    np.testing.assert_allclose(
        onnx_emb.encode_documents(DOCS), torch_emb.encode_documents(DOCS), atol=1e-4
    )
    assert onnx_rr.version != torch_rr.version
    assert onnx_rr.device == "cpu"


def test_spinning_is_off_only_when_asked_and_scores_do_not_change(tiny_reranker_dir, monkeypatch):
    from rankwise.models.onnx import session_options

    key = "session.intra_op.allow_spinning"
    monkeypatch.delenv("RANKWISE_ONNX_SPIN", raising=False)
    with pytest.raises(RuntimeError):  # no entry: ORT's default, spinning
        session_options(1).get_session_config_entry(key)
    spinning = Reranker(str(tiny_reranker_dir), backend="onnx").score("apple phone", DOCS)
    monkeypatch.setenv("RANKWISE_ONNX_SPIN", "0")
    assert session_options(1).get_session_config_entry(key) == "0"
    quiet = Reranker(str(tiny_reranker_dir), backend="onnx").score("apple phone", DOCS)
    np.testing.assert_allclose(quiet, spinning, atol=1e-6)


def test_token_budget_batches_equal_one_by_one(tiny_reranker_dir):
    budgeted = Reranker(str(tiny_reranker_dir), backend="onnx", batch_size=64, token_budget=48)
    single = Reranker(str(tiny_reranker_dir), backend="onnx", batch_size=1)
    one_by_one = np.concatenate([single.score("running shoes", [d]) for d in DOCS])
    np.testing.assert_allclose(budgeted.score("running shoes", DOCS), one_by_one, atol=1e-5)


@pytest.mark.parametrize("mode", ["int8", "int8-full"])
def test_int8_keeps_per_query_ranking(trained_reranker_dir, mode):
    fp32 = Reranker(str(trained_reranker_dir))
    int8 = Reranker(str(trained_reranker_dir), backend="onnx", quantize=mode)
    products = [p for p in TOKENIZER_CORPUS if " " in p]
    rhos = []
    for query in [
        "apple iphone",
        "running shoes",
        "drill battery",
        "red apples",
        "透气 跑步鞋",
        "kitchen faucet",
    ]:
        a, b = fp32.score(query, products), int8.score(query, products)
        assert np.std(a) > 0.1, np.std(a)  # the model learnt to separate products
        rhos.append(spearmanr(a, b).statistic)
    print("int8 spearman per query", np.round(rhos, 4))
    assert min(rhos) >= 0.95, rhos


def test_int8_keeps_the_first_layers_feed_forward_fp32(trained_reranker_dir):
    import onnx

    def graph(mode):
        path = Reranker(str(trained_reranker_dir), backend="onnx", quantize=mode).runner.path
        return onnx.load(str(path)).graph

    mixed, full = graph("int8"), graph("int8-full")
    float_ffn = rw_onnx.fp32_ffn_nodes(mixed, layers=99)
    # layers 0 and 1: intermediate + output dense stay float MatMul; layer 2's are quantised
    assert sorted(float_ffn) == sorted(
        f"/model/bert/encoder/layer.{i}/{part}/dense/MatMul"
        for i in (0, 1)
        for part in ("intermediate", "output")
    ), float_ffn
    assert rw_onnx.fp32_ffn_nodes(full, layers=99) == []
    for g in (mixed, full):
        ops = [n.op_type for n in g.node]
        assert "MatMulInteger" in ops and "QAttention" in ops, ops


def test_export_is_cached_and_reused(tiny_reranker_dir, tmp_path, monkeypatch):
    folder = tmp_path / "rr"
    shutil.copytree(tiny_reranker_dir, folder, ignore=shutil.ignore_patterns("onnx"))
    first = Reranker(str(folder), backend="onnx")
    path = first.runner.path
    assert path.is_file() and path.is_relative_to(folder / "onnx")
    mtime = path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(rw_onnx, "_export", no_export)
    second = Reranker(str(folder), backend="onnx")
    assert second.runner.path == path and path.stat().st_mtime_ns == mtime
    np.testing.assert_allclose(second.score("q", DOCS), first.score("q", DOCS), atol=1e-6)
    assert not list((folder / "onnx").glob(".*"))  # no temporary folders left behind


def test_hub_models_export_to_the_cache_dir(tiny_reranker_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RANKWISE_CACHE_DIR", str(tmp_path / "cache"))
    resolved = resolve_model(str(tiny_reranker_dir), kind="reranker")
    hub_like = type(resolved)(
        **{**resolved.__dict__, "model_id": "BAAI/bge-reranker-v2-m3", "commit": "abc"}
    )
    assert rw_onnx.export_dir(hub_like) == tmp_path / "cache" / "onnx" / "BAAI--bge-reranker-v2-m3"


def test_large_models_use_external_data(tiny_reranker_dir, tmp_path, monkeypatch):
    folder = tmp_path / "big"
    shutil.copytree(tiny_reranker_dir, folder, ignore=shutil.ignore_patterns("onnx"))
    monkeypatch.setattr(rw_onnx, "EXTERNAL_DATA_BYTES", 0)
    big = Reranker(str(folder), backend="onnx")
    assert (big.runner.path.parent / "model.onnx.data").is_file()
    np.testing.assert_allclose(
        big.score("q", DOCS), Reranker(str(folder)).score("q", DOCS), atol=1e-4
    )
