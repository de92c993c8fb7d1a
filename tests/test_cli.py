"""The real console script: index + search round trip, errors, rerank from stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RANKWISE = str(Path(sys.executable).parent / "rankwise")


def run(*args, stdin: str | None = None, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKWISE_RERANKER": ""}
    return subprocess.run(
        [RANKWISE, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    p = tmp_path_factory.mktemp("cat") / "products.jsonl"
    rows = [
        {
            "id": "p1",
            "title": "Apple iPhone 15 苹果手机",
            "text": "5G smartphone",
            "category": "phone",
            "price": 5999,
        },
        {
            "id": "p2",
            "title": "红富士苹果 新鲜水果",
            "text": "5斤装",
            "category": "fruit",
            "price": 39,
        },
        {
            "id": "p3",
            "title": "summer breathable running shoes",
            "text": "mesh",
            "category": "shoes",
            "price": 89,
        },
        {
            "id": "p4",
            "title": "leather oxford shoes",
            "text": "breathable lining",
            "category": "shoes",
            "price": 149,
        },
    ]
    p.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return p


def test_index_then_search_round_trip(tmp_path, catalog, tiny_embedder_dir, tiny_reranker_dir):
    idx = tmp_path / "index"
    r = run("index", catalog, "--index", idx, "--embedder", tiny_embedder_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total_in_store"] == 4

    r = run(
        "search",
        "running shoes",
        "--index",
        idx,
        "--embedder",
        tiny_embedder_dir,
        "--no-rerank",
        "--mode",
        "lexical",
        "--filter",
        "category=shoes",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reranked"] is False
    assert [x["id"] for x in out["results"]][0] == "p3"
    assert {x["record"]["category"] for x in out["results"]} == {"shoes"}

    r = run(
        "search",
        "苹果手机",
        "--index",
        idx,
        "--embedder",
        tiny_embedder_dir,
        "--reranker",
        tiny_reranker_dir,
        "--top-n",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reranked"] is True and len(out["results"]) == 2
    assert all(0.0 <= x["relevance"] <= 1.0 for x in out["results"])

    r = run("search", "shoes", "--index", idx, "--embedder", tiny_embedder_dir, "--no-rerank")
    assert r.returncode == 0 and "shoes" in r.stdout  # the rich table


def test_bad_catalog_line_fails_cleanly_and_writes_nothing(tmp_path, catalog, tiny_embedder_dir):
    idx = tmp_path / "index"
    assert run("index", catalog, "--index", idx, "--embedder", tiny_embedder_dir).returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "n1", "title": "new product"}\n{"id": "n2", "price": 3}\n', encoding="utf-8"
    )
    r = run("index", bad, "--index", idx, "--embedder", tiny_embedder_dir)
    assert r.returncode == 2
    assert "bad.jsonl:2" in r.stderr and "no title" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(
        "search",
        "new product",
        "--index",
        idx,
        "--embedder",
        tiny_embedder_dir,
        "--no-rerank",
        "--json",
        "--top-n",
        "10",
    )
    assert "n1" not in {x["id"] for x in json.loads(r.stdout)["results"]}  # nothing half-written


def test_missing_model_and_missing_index_errors(tmp_path, catalog):
    r = run("index", catalog, "--index", tmp_path / "i", "--embedder", tmp_path / "no-such-model")
    assert r.returncode == 2 and "no-such-model" in r.stderr and "Traceback" not in r.stderr
    r = run("search", "x", "--index", tmp_path / "nothing-here", "--no-rerank")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_rerank_reads_stdin(tiny_reranker_dir):
    r = run(
        "rerank",
        "running shoes",
        "--reranker",
        tiny_reranker_dir,
        "--json",
        stdin="leather shoes\nrunning shoes\n\napples\n",
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(x["index"] for x in rows) == [0, 1, 2]
    assert [x["rank"] for x in rows] == [1, 2, 3]
    assert rows == sorted(rows, key=lambda x: -x["score"])


def _in_process(capsys, *args):
    """The CLI's entry point in this process (a model load per call, no interpreter start)."""
    from rankwise.cli import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def test_rerank_chunking_finds_a_late_decisive_attribute(tmp_path, tiny_reranker_dir, capsys):
    """`rankwise rerank --max-chunks-per-doc`: a document whose deciding words sit past the
    model's max length wins only when it is scored window by window; without chunking the
    model sees the same first tokens in both documents and scores them alike."""
    from server_helpers import build_sharp_reranker
    from tiny_models import TOKENIZER_CORPUS

    from rankwise.models import Reranker
    from rankwise.models.chunking import ChunkPolicy, score_chunked

    model_dir = build_sharp_reranker(tiny_reranker_dir, tmp_path / "sharp")
    rr = Reranker(str(model_dir))

    query = "cordless drill lithium battery"

    def repeat(phrase, times):
        return " ".join(f"{phrase} {i}" for i in range(times))

    # random weights: let the model say which phrase it rates low (the filler, long past its
    # max length) and which high (the late attribute, about a window of it at the end)
    phrases = sorted(TOKENIZER_CORPUS, key=lambda p: float(rr.score(query, [repeat(p, 8)])[0]))
    policy = ChunkPolicy(8)
    filler, attr = next(
        (repeat(low, 100), repeat(high, 8))
        for low in phrases[:4]
        for high in phrases[::-1][:6]
        if (s := score_chunked(rr, query, [repeat(low, 100), f"{repeat(low, 100)} {repeat(high, 8)}"],
                               policy).scores)[1] > s[0] + 1e-3
    )  # fmt: skip
    assert len(rr.tokens.content_ids([filler])[0]) > 2 * rr.max_length
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": t}) for t in [filler, f"{filler} {attr}"]))

    def ranked(*extra):
        code, out, err = _in_process(
            capsys, "rerank", query, "--reranker", model_dir, "-d", docs, "--json", *extra
        )
        assert code == 0, err
        return json.loads(out)

    plain, chunked = ranked(), ranked("--max-chunks-per-doc", "8")
    # truncated, the model sees the same tokens of both: a tie (up to float noise)
    assert plain[0]["score"] == pytest.approx(plain[1]["score"], abs=1e-4)
    assert chunked[0]["index"] == 1 and chunked[0]["score"] > chunked[1]["score"] + 1e-3
    # cut before windowing, the attribute is gone again; mean-top2 is accepted
    cut = ranked("--max-chunks-per-doc", "8", "--max-tokens-per-doc", "100")
    assert cut[0]["score"] == pytest.approx(cut[1]["score"], abs=1e-4)
    assert len(ranked("--max-chunks", "8", "--chunk-aggregate", "mean-top2")) == 2
    code, out, err = _in_process(
        capsys, "rerank", query, "--reranker", model_dir, "-d", docs, "--max-chunks-per-doc", "0"
    )
    assert code == 2 and "max_chunks_per_doc" in err and "Traceback" not in err
