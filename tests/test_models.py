"""Embedder and Reranker through the public API, on tiny real models (random weights) and MiniLM."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from rankwise.errors import ConfigError, InvalidRequest, ModelLoadError
from rankwise.models import Embedder, RankedResults, Reranker, sigmoid, spec_for
from rankwise.models.batching import token_budget_batches
from rankwise.models.specs import BGE_ZH_QUERY_INSTRUCTION

DOCS = [
    "apple iphone 15 pro smartphone 256gb black",
    "fresh red apples fruit 1kg bag",
    "summer breathable running shoes mesh lightweight " * 6,
    "leather dress shoes for men brown oxford",
    "苹果手机 iPhone 15 黑色 256G 全网通",
    "新鲜红富士苹果 水果 5斤装",
    "cordless drill",
    "wireless bluetooth headphones noise cancelling stainless steel kitchen sink faucet " * 3,
    "",
]


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir):
    return Embedder(str(tiny_embedder_dir), batch_size=4)


@pytest.fixture(scope="module")
def reranker(tiny_reranker_dir):
    # no score cache: the tests below call it again with the same pairs to test the model
    return Reranker(str(tiny_reranker_dir), batch_size=4, max_length=64, score_cache_size=0)


# -- batching ---------------------------------------------------------------------------------
def test_token_budget_batches_cover_every_item_once_within_budget():
    lengths = [5, 40, 12, 40, 3, 100, 7, 7]
    batches = token_budget_batches(lengths, max_batch_size=3, token_budget=90)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 90
    assert batches[0].tolist() == [5]  # over budget alone
    assert token_budget_batches([], max_batch_size=4) == []


def test_overhead_aware_cuts_are_the_cheapest_and_respect_the_caps():
    """With a per-batch overhead, the cuts minimise sum(overhead + rows x longest): checked
    against brute force over every split of short sorted inputs, then on a Top-50 call."""
    import itertools

    def cost(batches, lengths, overhead):
        return sum(overhead + len(b) * max(lengths[i] for i in b) for b in batches)

    rng = np.random.default_rng(3)
    for _ in range(30):
        lengths = rng.integers(1, 60, size=int(rng.integers(1, 9))).tolist()
        overhead = float(rng.choice([0, 4, 20, 200]))
        got = token_budget_batches(lengths, max_batch_size=4, batch_overhead=overhead)
        flat = np.concatenate(got)
        assert sorted(flat.tolist()) == list(range(len(lengths)))
        assert all(len(b) <= 4 for b in got)
        srt = sorted(lengths, reverse=True)
        brute = min(
            sum(overhead + (b - a) * srt[a] for a, b in zip((0, *c), (*c, len(srt)), strict=True))
            for r in range(len(srt))
            for c in itertools.combinations(range(1, len(srt)), r)
            if all(b - a <= 4 for a, b in zip((0, *c), (*c, len(srt)), strict=True))
        )
        assert cost(got, lengths, overhead) == pytest.approx(brute)

    top50 = rng.integers(20, 400, size=50).tolist()
    filled = token_budget_batches(top50, max_batch_size=32)
    cheap = token_budget_batches(top50, max_batch_size=32, batch_overhead=8)
    assert cost(cheap, top50, 8) < 0.8 * cost(filled, top50, 8)  # a real saving, not a no-op
    equal = token_budget_batches([50] * 70, max_batch_size=32, batch_overhead=8)
    assert sorted(len(b) for b in equal) == [6, 32, 32]  # no padding to save: full batches
    budget = token_budget_batches(top50, max_batch_size=32, token_budget=900, batch_overhead=1e6)
    assert all(len(b) == 1 or len(b) * max(top50[i] for i in b) <= 900 for b in budget)
    with pytest.raises(ValueError):
        token_budget_batches(top50, batch_overhead=-1)


# -- embedder ---------------------------------------------------------------------------------
def test_embedder_vectors_are_fp32_unit_and_order_independent(tiny_embedder_dir, embedder):
    vecs = embedder.encode_documents(DOCS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(DOCS), embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    big = Embedder(str(tiny_embedder_dir), batch_size=64, token_budget=10_000)
    np.testing.assert_allclose(big.encode_documents(DOCS), vecs, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(DOCS))
    np.testing.assert_allclose(
        embedder.encode_documents([DOCS[i] for i in perm]), vecs[perm], atol=1e-5
    )
    one_by_one = np.vstack([embedder.encode_documents([d]) for d in DOCS])
    np.testing.assert_allclose(one_by_one, vecs, atol=1e-5)
    assert embedder.encode_documents([]).shape == (0, embedder.dim)
    assert embedder.version == big.version and len(embedder.version) == 12


class _WidthRecorder:
    """Observes a real runner's input widths; its outputs pass through untouched."""

    def __init__(self, runner):
        self.runner, self.input_names = runner, runner.input_names
        self.pad_multiple = runner.pad_multiple
        self.row_buckets = getattr(runner, "row_buckets", False)
        self.widths: list[int] = []
        self.rows: list[int] = []

    def __call__(self, feed):
        self.rows.append(feed["input_ids"].shape[0])
        self.widths.append(feed["input_ids"].shape[1])
        return self.runner(feed)


def test_torch_cpu_widths_step_by_16_and_keep_the_vectors(tiny_embedder_dir, tiny_reranker_dir):
    """On the CPU each new (rows, width) shape costs torch's kernels a cached primitive (RSS
    that grew for as long as new shapes came); widths in steps of 16 and rows in buckets
    bound the shapes and change no output beyond float noise."""
    from rankwise.models.runners import CPU_PAD_MULTIPLE

    docs = DOCS + [f"cordless drill kit {i} " * (i % 5 + 1) for i in range(14)]  # 23 texts
    for model, run in (
        (Embedder(str(tiny_embedder_dir), device="cpu"), lambda m: m.encode_documents(docs)),
        (Reranker(str(tiny_reranker_dir), device="cpu", backend="torch", score_cache_size=0),
         lambda m: m.score("running shoes", docs)),
    ):  # fmt: skip
        assert model.runner.pad_multiple == CPU_PAD_MULTIPLE == 16 and model.runner.row_buckets
        recorder = _WidthRecorder(model.runner)
        model.runner = recorder
        padded = run(model)
        widths = recorder.widths
        assert widths and all(w % 16 == 0 for w in widths), widths
        allowed = {1, 2, 4, 8, 16, 24, 32, model.batch_size}
        assert set(recorder.rows) <= allowed, recorder.rows
        assert sum(recorder.rows) >= len(docs)
        model.runner = recorder.runner
        model.runner.pad_multiple, model.runner.row_buckets = 1, False
        exact = _WidthRecorder(model.runner)
        model.runner = exact
        np.testing.assert_allclose(padded, run(model), atol=1e-5)
        assert sum(exact.rows) == len(docs)  # no padded rows without the buckets
        model.runner = exact.runner


def test_row_buckets_and_the_cuts_that_count_padded_rows():
    from rankwise.models.batching import bucket_rows

    assert [bucket_rows(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 31)] == [
        1, 2, 4, 4, 8, 8, 16, 16, 24, 32
    ]  # fmt: skip
    assert bucket_rows(17, cap=20) == 20 and bucket_rows(30, cap=20) == 30  # never below rows
    # 11 items of equal length: exact rows take one batch of 11; with buckets, 11 would be
    # computed as 16, so the cheapest cuts are 8 + 2 + 1 (or another split of bucket sizes)
    exact = token_budget_batches([32] * 11, max_batch_size=32, batch_overhead=8)
    assert [len(b) for b in exact] == [11]
    bucketed = token_budget_batches(
        [32] * 11, max_batch_size=32, batch_overhead=8, row_buckets=True
    )
    assert sum(len(b) for b in bucketed) == 11
    assert all(len(b) == bucket_rows(len(b)) for b in bucketed), [len(b) for b in bucketed]


def test_bge_zh_instruction_applies_to_queries_only(tiny_embedder_dir, tmp_path):
    folder = tmp_path / "bge-small-zh-v1.5"
    shutil.copytree(tiny_embedder_dir, folder)
    emb = Embedder(str(folder))
    assert emb.spec.query_instruction == BGE_ZH_QUERY_INSTRUCTION
    assert emb.spec.pooling == "cls" and emb.spec.document_instruction is None
    q = emb.encode_queries(["跑步鞋"])
    np.testing.assert_allclose(
        q, emb.encode_documents([BGE_ZH_QUERY_INSTRUCTION + "跑步鞋"]), atol=1e-6
    )
    assert not np.allclose(q, emb.encode_documents(["跑步鞋"]), atol=1e-3)
    plain = Embedder(str(folder), query_instruction="")
    np.testing.assert_allclose(
        plain.encode_queries(["跑步鞋"]), emb.encode_documents(["跑步鞋"]), atol=1e-6
    )
    assert plain.version != emb.version
    assert spec_for("BAAI/bge-m3").query_instruction is None
    assert spec_for("BAAI/bge-reranker-v2-m3", "reranker").max_length == 512


def test_bad_inputs_and_options_raise_rankwise_errors(tiny_embedder_dir, embedder, reranker):
    with pytest.raises(InvalidRequest, match="list of strings"):
        embedder.encode_documents("a single string")
    with pytest.raises(InvalidRequest, match=r"\[1\]"):
        embedder.encode_queries(["ok", 3])
    with pytest.raises(InvalidRequest, match="pair"):
        reranker.score_pairs([("q", "d", "x")])
    with pytest.raises(ConfigError, match="backend"):
        Embedder(str(tiny_embedder_dir), backend="tensorrt")
    with pytest.raises(ConfigError, match="onnx"):
        Embedder(str(tiny_embedder_dir), quantize="int8")
    with pytest.raises(ConfigError, match="supports"):
        Embedder(str(tiny_embedder_dir), max_length=4096)


# -- reranker ---------------------------------------------------------------------------------
def test_reranker_scores_fp32_independent_of_batching_and_order(tiny_reranker_dir, reranker):
    q = "breathable running shoes"
    scores = reranker.score(q, DOCS)
    assert scores.dtype == np.float32 and scores.shape == (len(DOCS),)
    for other in (
        Reranker(str(tiny_reranker_dir), batch_size=1, max_length=64),
        Reranker(str(tiny_reranker_dir), batch_size=64, token_budget=64, max_length=64),
    ):
        np.testing.assert_allclose(other.score(q, DOCS), scores, atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(DOCS))
    np.testing.assert_allclose(reranker.score(q, [DOCS[i] for i in perm]), scores[perm], atol=1e-5)
    pairs = [(q, d) for d in DOCS] + [("苹果手机", d) for d in DOCS]
    mixed = reranker.score_pairs(pairs)
    np.testing.assert_allclose(mixed[: len(DOCS)], scores, atol=1e-5)
    np.testing.assert_allclose(mixed[len(DOCS) :], reranker.score("苹果手机", DOCS), atol=1e-5)
    assert reranker.score(q, []).shape == (0,)


def test_score_cache_scores_only_new_pairs_and_keys_on_exact_text(tiny_reranker_dir, reranker):
    cached = Reranker(str(tiny_reranker_dir), batch_size=4, max_length=64)
    q = "breathable running shoes"
    first = cached.score(q, DOCS)
    assert cached.score_cache_info() == {"hits": 0, "misses": len(DOCS), "size": len(DOCS)}
    # the same query with a changed list: old pairs from the cache, one new and one edited doc
    docs = [*DOCS[2:], "waterproof hiking boots", DOCS[0] + " (new)"]
    again = cached.score(q, docs)
    info = cached.score_cache_info()
    assert info["hits"] == len(DOCS) - 2 and info["misses"] == len(DOCS) + 2, info
    np.testing.assert_array_equal(again[: len(DOCS) - 2], first[2:])
    np.testing.assert_allclose(again, reranker.score(q, docs), atol=1e-5)  # = no cache at all
    # another query never reuses these scores
    np.testing.assert_allclose(
        cached.score("苹果手机", DOCS), reranker.score("苹果手机", DOCS), atol=1e-5
    )
    assert cached.score_cache_info()["hits"] == len(DOCS) - 2
    off = Reranker(str(tiny_reranker_dir), max_length=64, score_cache_size=0)
    off.score(q, DOCS), off.score(q, DOCS)
    assert off.score_cache_info() == {"hits": 0, "misses": 2 * len(DOCS), "size": 0}


def test_reranker_pair_tokens_match_transformers(tiny_reranker_dir, reranker):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_reranker_dir))
    q = "running shoes"
    docs = [d for d in DOCS if d]  # transformers treats an empty second text as "no pair"
    for (ids, types), d in zip(
        reranker.tokens.encode_pairs([(q, d) for d in docs], 64, 0.5), docs, strict=True
    ):
        ref = tok(q, d, truncation="only_second", max_length=64)
        assert ids.tolist() == ref["input_ids"] and types.tolist() == ref["token_type_ids"]


def test_reranker_query_share_caps_the_query(reranker):
    long_query = "apple iphone smartphone " * 40
    ((ids, types),) = reranker.tokens.encode_pairs(
        [(long_query, "fresh red apples fruit")], 64, 0.25
    )
    assert len(ids) <= 64
    assert int((types == 0).sum()) == 16 + 2  # [CLS] + 16 query tokens + [SEP]
    assert int((types == 1).sum()) >= 5  # the document keeps its tokens


def test_rank_sorts_thresholds_and_dedups(reranker):
    docs = DOCS + [DOCS[0], DOCS[1]]
    res = reranker.rank("apple phone", docs)
    assert isinstance(res, RankedResults) and len(res) == len(docs)
    assert [r.rank for r in res] == list(range(1, len(docs) + 1))
    assert np.all(np.diff(res.scores) <= 0)
    assert res[0].document == docs[res[0].index]
    assert sorted(res.indices) == list(range(len(docs)))
    scores = reranker.score("apple phone", docs)
    assert scores[0] == scores[len(DOCS)] and scores[1] == scores[len(DOCS) + 1]
    for r in res:
        assert r.relevance == pytest.approx(float(sigmoid(np.float32(r.score))), abs=1e-7)
    cut = float(np.median([r.relevance for r in res]))
    top = reranker.rank("apple phone", docs, top_n=3, threshold=cut)
    assert len(top) <= 3 and all(r.relevance >= cut for r in top)
    assert [r.index for r in top] == res.indices[: len(top)]
    assert len(reranker.rank("apple phone", docs, top_n=0)) == 0


def test_reranker_is_thread_safe(reranker):
    expected = reranker.score("apple phone", DOCS)
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(5):
                np.testing.assert_allclose(reranker.score("apple phone", DOCS), expected, atol=1e-5)
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_sigmoid_is_stable_fp32():
    with np.errstate(over="raise"):
        out = sigmoid(np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0066929, 0.5, 0.9933071, 1.0], atol=1e-6)


# -- loading errors ---------------------------------------------------------------------------
def test_missing_folder_error_names_model_and_fix(tmp_path):
    with pytest.raises(ModelLoadError, match=r"'\./no/such/model'.*folder not found.*Fix"):
        Embedder("./no/such/model")


def test_not_a_cross_encoder(tiny_embedder_dir):
    with pytest.raises(
        ModelLoadError, match=r"not a cross-encoder.*BertModel.*num_labels=1.*Embedder"
    ):
        Reranker(str(tiny_embedder_dir))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        Embedder(str(tmp_path))


def _st_dense_folder(tiny_embedder_dir, out):
    """A sentence-transformers pipeline rankwise's own runner does not cover: Transformer →
    mean Pooling → Dense (32 → 16, tanh) → Normalize, with query/document prompts."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        Normalize,
        Pooling,
        Transformer,
    )

    torch.manual_seed(0)
    tr = Transformer(str(tiny_embedder_dir), max_seq_length=64)
    model = SentenceTransformer(
        modules=[tr, Pooling(32, pooling_mode="mean"), Dense(32, 16), Normalize()],
        prompts={"query": "query: ", "document": "passage: "},
        device="cpu",
    )
    model.save(str(out))
    return out


def test_dense_pipeline_gives_sentence_transformers_vectors(tiny_embedder_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = _st_dense_folder(tiny_embedder_dir, tmp_path / "st-dense")
    emb = Embedder(str(folder))
    assert emb.dim == 16 and emb.pipeline is not None
    assert emb.pipeline.modules == ["Transformer", "Pooling", "Dense", "Normalize"]
    ref = SentenceTransformer(str(folder), device="cpu")
    texts = ["apple iphone 15 pro smartphone", "fresh red apples fruit", "夏季透气跑步鞋"]
    want_q = ref.encode(texts, prompt_name="query", normalize_embeddings=True)
    want_d = ref.encode(texts, prompt_name="document", normalize_embeddings=True)
    np.testing.assert_allclose(emb.encode_queries(texts), want_q, atol=1e-6)
    np.testing.assert_allclose(emb.encode_documents(texts), want_d, atol=1e-6)
    assert not np.allclose(want_q, want_d)  # the prompts took effect
    # an explicit instruction still wins over the folder's prompts
    none = Embedder(str(folder), query_instruction="")
    np.testing.assert_allclose(
        none.encode_queries(texts),
        ref.encode(texts, prompt="", normalize_embeddings=True),
        atol=1e-6,
    )
    assert none.version != emb.version


def test_onnx_declines_a_pipeline_it_cannot_export(tiny_embedder_dir, tmp_path):
    folder = _st_dense_folder(tiny_embedder_dir, tmp_path / "st-dense")
    with pytest.raises(ModelLoadError, match=r"backend='onnx'.*Dense.*Fix: use backend='torch'"):
        Embedder(str(folder), backend="onnx")


@pytest.fixture
def isolated_hub(tmp_path, monkeypatch):
    """An empty HF cache and a hub endpoint nobody listens on."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)


def test_offline_and_not_cached(isolated_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelLoadError,
        match=r"'BAAI/bge-m3'.*not in the local.*cache.*offline.*hf download BAAI/bge-m3",
    ):
        Embedder()


def test_hub_unreachable(isolated_hub):
    with pytest.raises(
        ModelLoadError,
        match=r"'BAAI/bge-reranker-v2-m3' at revision v1.*could not be reached.*local folder.*--revision v1",
    ):
        Reranker(revision="v1", local_files_only=False)


# -- MiniLM quality ---------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_matches_sentence_transformers_and_makes_sense(minilm_dir):
    from sentence_transformers import SentenceTransformer

    emb = Embedder(str(minilm_dir))
    assert emb.dim == 384 and emb.spec.pooling == "mean" and emb.max_length == 256
    docs = ["apple iPhone 15 smartphone", "fresh red apples, fruit", "leather oxford dress shoes"]
    vecs = emb.encode_documents(docs)
    ref = SentenceTransformer(str(minilm_dir), device="cpu").encode(docs, normalize_embeddings=True)
    np.testing.assert_allclose(vecs, ref, atol=1e-5)
    sims = emb.encode_queries(["mobile phone", "formal shoes for men"]) @ vecs.T
    assert sims[0].argmax() == 0 and sims[1].argmax() == 2
