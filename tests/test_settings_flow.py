"""Issue 14: one settings flow (CLI, env, TOML, server read one declaration) and the defects
found on the way. Each defect test failed on the code before the fix (noted per test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from store_backends import new_factory
from tiny_models import build_tiny_embedder

from rankwise.cli import main as cli_main
from rankwise.config import Settings, load_settings

PRODUCTS = [
    {"id": "p1", "title": "Apple iPhone 15 苹果手机", "text": "5G smartphone", "price": 5999},
    {"id": "p2", "title": "红富士苹果 新鲜水果", "text": "5斤装", "price": 39},
    {"id": "p3", "title": "summer breathable running shoes", "text": "mesh", "price": 89},
    {"id": "p4", "title": "leather oxford shoes", "text": "breathable lining", "price": 149},
]


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cat") / "products.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in PRODUCTS) + "\n")
    return p


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the real CLI in-process; (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No RANKWISE_* from the caller, no rankwise.toml: the cwd is an empty folder."""
    import os

    for k in list(os.environ):
        if k.startswith("RANKWISE_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- settings
def test_every_setting_is_declared_once_with_help():
    """Each setting carries its help in its one declaration (the CLI option's help)."""
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert missing == []
    # names that mean one thing each
    assert {"record_batch_size", "model_batch_size", "token_budget"} <= set(Settings.model_fields)
    assert {"min_relevance", "relevant_grade"} <= set(Settings.model_fields)


def test_deprecated_threshold_still_means_min_relevance(clean_env, monkeypatch):
    assert load_settings(threshold=0.4).min_relevance == 0.4
    (clean_env / "rankwise.toml").write_text("threshold = 0.3\n")
    assert load_settings().min_relevance == 0.3
    monkeypatch.setenv("RANKWISE_THRESHOLD", "0.2")  # env beats the file
    assert load_settings().min_relevance == 0.2
    assert load_settings(min_relevance=0.1).min_relevance == 0.1  # the option beats both


def test_model_batch_size_and_token_budget_reach_the_model(clean_env, tiny_embedder_dir):
    from rankwise.models import Embedder

    (clean_env / "rankwise.toml").write_text("model_batch_size = 3\ntoken_budget = 77\n")
    emb = Embedder.from_settings(load_settings(embedder=str(tiny_embedder_dir)))
    assert (emb.batch_size, emb.token_budget) == (3, 77)


# ----------------------------------------------------------------------------- defects
def test_from_rankwise_import_evaluate_is_the_function():
    """Old code: False (the subpackage shadowed the function once it was imported)."""
    code = (
        "import inspect, rankwise.evaluate.metrics\n"
        "from rankwise import evaluate\n"
        "from rankwise.evaluate import parse_systems, metrics\n"
        "import rankwise\n"
        "print(inspect.isfunction(evaluate), rankwise.evaluate is evaluate, metrics.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out == ["True", "True", "rankwise.evaluate.metrics"]


def test_cli_search_applies_the_skip_rule_and_toml_skip_margin(
    capsys, clean_env, catalog_file, tiny_embedder_dir, tiny_reranker_dir
):
    """Old code: reranked=True for both (the CLI built its Searcher without the skip rule)."""
    idx = clean_env / "index"
    assert (
        cli(capsys, "index", catalog_file, "--index", idx, "--embedder", tiny_embedder_dir)[0] == 0
    )
    common = ("--index", idx, "--reranker", tiny_reranker_dir, "--json")
    code, out, err = cli(capsys, "search", "leather oxford shoes", *common, "--mode", "lexical")
    assert code == 0, err
    resp = json.loads(out)
    assert (resp["reranked"], resp["skipped_reason"]) == (False, "exact title match")
    # skip_margin from rankwise.toml: any dense top-1 lead >= 0 skips the cross-encoder
    (clean_env / "rankwise.toml").write_text('skip_margin = 0.0\nmode = "dense"\n')
    code, out, err = cli(capsys, "search", "running shoes", *common)
    assert code == 0, err
    resp = json.loads(out)
    assert resp["reranked"] is False and resp["skipped_reason"].startswith("top-1 margin")
    # the same search with the option switched back on: the option wins over the file
    code, out, err = cli(capsys, "search", "running shoes", *common, "--mode", "hybrid")
    assert json.loads(out)["reranked"] is True, err


@pytest.mark.parametrize("backend", ["milvus-lite", "milvus-server"])
def test_milvus_index_refuses_another_embedder_of_the_same_dim(
    backend, request, tmp_path, tiny_embedder_dir
):
    """Old code: no error on the Milvus server (only a directory could hold the stamp file;
    milvus-lite 3.x happens to be one)."""
    from rankwise.catalog import Catalog
    from rankwise.errors import StoreError
    from rankwise.models import Embedder

    where = new_factory(backend, tmp_path, request)
    other = Embedder(str(build_tiny_embedder(tmp_path / "other", seed=1)))
    emb = Embedder(str(tiny_embedder_dir))
    assert other.dim == emb.dim and other.version != emb.version
    with Catalog.open(where.uri, emb, **where.options) as cat:
        cat.add(PRODUCTS)
    with pytest.raises(StoreError, match="was built with embedder"):
        Catalog.open(where.uri, other, create=False, **where.options)
    with Catalog.open(where.uri, emb, create=False, **where.options) as cat:  # same model: fine
        assert cat.stamp["version"] == emb.version


def test_search_uses_the_index_embedder_and_lexical_loads_no_model(
    capsys, clean_env, catalog_file, tiny_embedder_dir
):
    """Old code: the Milvus Lite search tried BAAI/bge-m3 (exit 2), and the lexical search
    loaded the stamped embedder (exit 2 once its folder is gone)."""
    model = clean_env / "model"
    shutil.copytree(tiny_embedder_dir, model)
    idx = clean_env / "idx.db"
    assert cli(capsys, "index", catalog_file, "--index", idx, "--embedder", model)[0] == 0
    code, out, err = cli(capsys, "search", "running shoes", "--index", idx, "--no-rerank",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["results"], out
    # another embedder is an error naming the index's
    other = build_tiny_embedder(clean_env / "other", seed=1)
    code, _, err = cli(capsys, "search", "shoes", "--index", idx, "--embedder", other)
    assert code == 2 and "was built with embedder" in err
    # lexical without rerank needs no model: it works with the model folder gone
    shutil.rmtree(model)
    code, out, err = cli(capsys, "search", "running shoes", "--index", idx, "--mode", "lexical",
                         "--no-rerank", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["results"][0]["id"] == "p3"


def test_search_uses_native_hybrid_on_milvus_with_the_same_fusion(tmp_path, tiny_embedder_dir):
    """Old code: nothing read Store.capabilities and hybrid_search was never called (no
    "hybrid" timing). Native RRF must give rankwise's own RRF scores."""
    from rankwise.catalog import Catalog
    from rankwise.models import Embedder
    from rankwise.search import Searcher, rrf_fuse

    emb = Embedder(str(tiny_embedder_dir))
    with Catalog.open(str(tmp_path / "idx.db"), emb) as cat:
        cat.add(PRODUCTS)
    with Catalog.open(str(tmp_path / "idx.db"), emb, create=False) as cat:
        assert "hybrid" in cat.store.capabilities
        resp = Searcher(cat, mode="hybrid", top_k=4, top_n=4).search("running shoes")
        assert "hybrid" in resp.timings and "dense" not in resp.timings
        qv = emb.encode_queries(["running shoes"])[0]
        own = rrf_fuse(
            [cat.store.dense_search(qv, 4), cat.store.lexical_search("running shoes", 4)],
            60, (0.5, 0.5),
        )  # fmt: skip
        assert {r.id: r.recall_score for r in resp.results} == pytest.approx(
            {h.id: h.score for h in own}
        )
        # weighted fusion normalises scores its own way: fused here, from both lists
        weighted = Searcher(cat, mode="hybrid", fusion="weighted").search("running shoes")
        assert "dense" in weighted.timings and "hybrid" not in weighted.timings


def test_eval_reads_rankwise_toml_and_env(capsys, clean_env, monkeypatch, tiny_embedder_dir):
    """Old code: `rankwise eval` ignored rankwise.toml and RANKWISE_* for its Top-K, Top-N
    and relevant grade (top_k 50, top_n 10, threshold 1 whatever the file said)."""
    from test_tune_data import write_beir

    data = write_beir(
        clean_env / "beir",
        {"d1": "cordless drill", "d2": "drill bits", "d3": "garden hose"},
        {"q1": "drill", "q2": "hose"},
        {"test": [("q1", "d1", 2), ("q1", "d2", 1), ("q2", "d3", 2)]},
    )
    argv = ("eval", "--data", data, "--systems", "lexical", "--embedder", tiny_embedder_dir,
            "--index-dir", clean_env / "cache", "--json")  # fmt: skip
    (clean_env / "rankwise.toml").write_text("top_k = 7\n")
    monkeypatch.setenv("RANKWISE_TOP_N", "3")
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["top_k"], config["top_n"], config["threshold"]) == (7, 3, 1)
    (clean_env / "rankwise.toml").write_text("top_k = 7\nrelevant_grade = 2\n")
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert json.loads(out)["config"]["threshold"] == 2
