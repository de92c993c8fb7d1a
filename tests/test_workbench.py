"""The workbench's HTTP side: judgments (file format, validation, concurrent writers, auth),
the compare view, and `rankwise eval` / `rankwise tune run` reading the judgments file.

A real uvicorn server on 127.0.0.1 with tiny models built in the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import PRODUCTS, build_sharp_reranker, running_server, settings
from tiny_models import build_tiny_reranker

import rankwise
from rankwise.cache import MemoryCache
from rankwise.catalog import Catalog
from rankwise.cli import main as cli_main
from rankwise.data import load_beir, read_qrels
from rankwise.evaluate import compute_metrics
from rankwise.evaluate import judgments as judgments_module
from rankwise.evaluate.judgments import (
    HEADER,
    JudgmentsFile,
    query_id,
    read_queries,
    split_of,
    to_beir,
)
from rankwise.models import Embedder, Reranker
from rankwise.search import Searcher, SkipRule
from rankwise.server import Components

KEY = "wb-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir) -> Embedder:
    return Embedder(str(tiny_embedder_dir))


@pytest.fixture(scope="module")
def catalog(embedder, tmp_path_factory) -> Catalog:
    cat = Catalog.open(str(tmp_path_factory.mktemp("wb") / "index"), embedder)
    cat.add(PRODUCTS)
    return cat


@pytest.fixture(scope="module")
def server(embedder, catalog, tiny_reranker_dir, tmp_path_factory):
    qrels = tmp_path_factory.mktemp("judged") / "qrels.tsv"
    sharp = build_sharp_reranker(tiny_reranker_dir, tmp_path_factory.mktemp("sharp"))
    other = build_tiny_reranker(tmp_path_factory.mktemp("other-reranker"), seed=1)
    s = settings(judgments=str(qrels), compare_reranker=str(other), api_keys=[KEY])
    comps = Components(
        embedder=embedder, reranker=Reranker(str(sharp)), catalog=catalog, cache=MemoryCache()
    )
    with running_server(s, comps) as srv:
        srv.qrels = qrels
        srv.other_reranker = other
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
        yield c


def judge(http, query, pid, grade):
    return http.post("/v1/judgments", json={"query": query, "id": pid, "grade": grade})


# ----------------------------------------------------------------------------- judgments
def test_judgments_append_beir_qrels_and_queries_beside(http, server):
    r = judge(http, "  leather   shoes ", "p4", 3)
    assert r.status_code == 200, r.text
    qid = query_id("leather shoes")
    assert r.json() == {"query_id": qid, "id": "p4", "grade": 3, "judgments": {"p4": 3}}
    assert judge(http, "leather shoes", "p3", 1).status_code == 200
    assert judge(http, "leather shoes", "p4", 2).status_code == 200  # re-judged: later wins
    lines = server.qrels.read_text().splitlines()
    assert lines[0] + "\n" == HEADER
    assert [ln for ln in lines if ln.startswith(qid)] == [
        f"{qid}\tp4\t3",
        f"{qid}\tp3\t1",
        f"{qid}\tp4\t2",
    ]
    assert read_qrels(server.qrels)[qid] == {"p4": 2, "p3": 1}
    queries = read_queries(server.qrels.parent / "queries.jsonl")
    assert queries[qid] == "leather shoes"
    got = http.get("/v1/judgments", params={"query": "leather shoes"}).json()
    assert got == {"query_id": qid, "judgments": {"p4": 2, "p3": 1}}
    listed = {q["query_id"]: q for q in http.get("/v1/judgments").json()["queries"]}
    assert listed[qid]["judged"] == 2 and listed[qid]["split"] == split_of(qid)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": "shoes", "id": "nope", "grade": 2}, 404, "unknown product id 'nope'"),
        ({"query": "shoes", "id": "p3", "grade": 4}, 422, "between 0 and 3, got 4"),
        ({"query": "shoes", "id": "p3", "grade": -1}, 422, "between 0 and 3, got -1"),
        ({"query": "   ", "id": "p3", "grade": 2}, 422, "the query is empty"),
        ({"query": "shoes", "id": "p3", "grade": "high"}, 422, "grade"),
        ({"query": "shoes", "id": "p3"}, 422, "grade"),
    ],
)
def test_bad_judgments_get_a_clear_4xx(http, server, body, status, needle):
    before = server.qrels.read_text() if server.qrels.exists() else ""
    r = http.post("/v1/judgments", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert (server.qrels.read_text() if server.qrels.exists() else "") == before


def test_workbench_follows_api_keys_but_the_page_itself_is_open(server):
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        page = anon.get("/")
        assert page.status_code == 200 and "relevance workbench" in page.text
        assert anon.get("/workbench/app.js").status_code == 200
        for method, path in [
            ("GET", "/v1/workbench"),
            ("GET", "/v1/judgments"),
            ("POST", "/v1/judgments"),
            ("POST", "/v1/compare"),
        ]:
            r = anon.request(method, path, json={} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
        bad = anon.post("/v1/judgments", headers={"Authorization": "Bearer wrong"}, json={})
        assert bad.status_code == 401


def test_info_lists_filter_fields_and_models(http, server):
    info = http.get("/v1/workbench").json()
    assert info["fields"] == {"brand": "str", "price": "float"}
    assert info["judgments"] == str(server.qrels)
    # no mode set: the index's calibrated pipeline (none here: the default RRF recipe)
    assert info["compare_reranker"] and info["defaults"]["mode"] is None
    assert info["defaults"]["recipe"] == "hybrid rrf k=60 w=0.50/0.50"
    assert info["count"] == len(PRODUCTS)


def test_concurrent_http_writers_lose_no_line(http, server):
    """16 client threads judging through the server at once (its thread pool writes)."""
    n_threads, per_thread = 16, 10
    errors: list[str] = []

    def worker(t: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as c:
            for i in range(per_thread):
                r = judge(c, f"concurrent query {t % 4}", PRODUCTS[i % len(PRODUCTS)]["id"], i % 4)
                if r.status_code != 200:
                    errors.append(r.text)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    lines = server.qrels.read_text().splitlines()
    assert lines.count(HEADER.strip()) == 1 and lines[0] == HEADER.strip()
    ids = {query_id(f"concurrent query {i}") for i in range(4)}
    mine = [ln.split("\t") for ln in lines if ln.split("\t")[0] in ids]
    assert len(mine) == n_threads * per_thread
    assert all(len(parts) == 3 and parts[2] in "0123" for parts in mine)
    qids = [json.loads(ln)["_id"] for ln in (server.qrels.parent / "queries.jsonl").open()]
    assert len(qids) == len(set(qids)) and ids <= set(qids)


def test_concurrent_processes_on_a_fresh_file(tmp_path):
    """Processes released at the same instant on a new file, all judging the same new
    queries: one header, every line whole, each query written once to queries.jsonl.
    (With the flock removed it failed in 4 of 5 runs: duplicated query lines.)"""
    n_procs, n_queries = 4, 400
    qrels = tmp_path / "shared" / "qrels.tsv"
    go = tmp_path / "go"
    # the children load judgments.py alone: rankwise.evaluate's __init__ imports the whole
    # evaluation stack (seconds per process on a busy machine), which this test does not need
    script = (
        "import sys, time, pathlib, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('judgments', {str(Path(judgments_module.__file__))!r})\n"
        "mod = sys.modules['judgments'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "jf = mod.JudgmentsFile(sys.argv[1])\n"
        "pathlib.Path(sys.argv[3]).touch()\n"
        "while not pathlib.Path(sys.argv[2]).exists(): time.sleep(0.001)\n"
        f"for i in range({n_queries}):\n"
        "    jf.append(f'shared query {i}', f'p{i % 8 + 1}', i % 4)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(rankwise.__file__).parents[1])}
    ready = [tmp_path / f"ready{i}" for i in range(n_procs)]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(qrels), str(go), str(r)], env=env)
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    assert all(p.wait(120) == 0 for p in procs)
    lines = qrels.read_text().splitlines()
    assert lines[0] == HEADER.strip() and lines.count(HEADER.strip()) == 1
    assert len(lines) == 1 + n_procs * n_queries
    assert all(len(ln.split("\t")) == 3 for ln in lines)
    qids = [json.loads(ln)["_id"] for ln in (qrels.parent / "queries.jsonl").open()]
    assert sorted(qids) == sorted(query_id(f"shared query {i}") for i in range(n_queries))
    assert len(JudgmentsFile(qrels).read().qrels) == n_queries


def test_server_without_judgments_or_second_reranker_says_how_to_start(embedder, catalog):
    with running_server(settings(), Components(embedder=embedder, catalog=catalog)) as srv:
        r = httpx.post(f"{srv.url}/v1/judgments", json={"query": "q", "id": "p1", "grade": 1})
        assert r.status_code == 501 and "--judgments FILE" in r.json()["error"]
        r = httpx.get(f"{srv.url}/v1/workbench")
        assert r.status_code == 200 and r.json()["judgments"] is None
        r = httpx.post(f"{srv.url}/v1/compare", json={"a": {}, "b": {}})
        assert r.status_code == 501 and "--judgments FILE" in r.json()["error"]


def test_serve_rejects_a_folder_as_judgments_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["serve", "--judgments", str(tmp_path), "--index", "none", "--embedder", "none"])
    assert e.value.code == 2
    assert "is a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- compare
def _search_run(http, queries, **body) -> dict[str, dict[str, float]]:
    run = {}
    for qid, text in queries.items():
        res = http.post("/v1/search", json={"query": text, "top_n": 10, **body}).json()
        n = len(res["results"])
        run[qid] = {r["id"]: float(n - i) for i, r in enumerate(res["results"])}
    return run


def test_compare_scores_each_judged_query_like_compute_metrics(http, server, catalog):
    for q, judged in {
        "apple phone": {"p1": 3, "p8": 2, "p2": 0},
        "running shoes": {"p3": 3, "p4": 1},
        "drill": {"p5": 2, "p7": 0},
        "only irrelevant": {"p6": 0},
    }.items():
        for pid, g in judged.items():
            assert judge(http, q, pid, g).status_code == 200
    body = {"a": {"rerank": False, "mode": "lexical"}, "b": {"rerank": True, "reranker": "compare"}}
    r = http.post("/v1/compare", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    j = JudgmentsFile(server.qrels).read()
    assert out["n_queries"] == len(j.qrels)
    run_a = _search_run(http, j.queries, rerank=False, mode="lexical")
    want_a = compute_metrics(run_a, j.qrels, (10,), ("ndcg",)).per_query("ndcg@10")
    rows = {row["query_id"]: row for row in out["queries"]}
    for qid, row in rows.items():
        assert row["split"] == split_of(qid)
        if qid in want_a:
            assert row["a"] == pytest.approx(want_a[qid])
            assert row["delta"] == pytest.approx(row["b"] - row["a"])
        else:  # nothing judged relevant: nDCG undefined, shown as such and not averaged
            assert row["a"] is None and row["delta"] is None
    assert rows[query_id("only irrelevant")]["a"] is None
    scored = [row for row in rows.values() if row["delta"] is not None]
    assert out["n_scored"] == len(scored)
    assert out["mean"]["a"] == pytest.approx(sum(r["a"] for r in scored) / len(scored))
    assert out["better"] + out["worse"] + out["same"] == len(scored)
    assert "lexical" in out["pipelines"]["a"] and "rerank" in out["pipelines"]["b"]
    # B reranked with the second cross-encoder: the same as the library searching with it
    lib = Searcher(catalog, Reranker(str(server.other_reranker)), skip_rule=SkipRule())
    run_b = {}
    for qid, text in j.queries.items():
        res = lib.search(text, top_n=10).results
        run_b[qid] = {r.id: float(len(res) - i) for i, r in enumerate(res)}
    want_b = compute_metrics(run_b, j.qrels, (10,), ("ndcg",)).per_query("ndcg@10")
    assert {q: rows[q]["b"] for q in want_b} == pytest.approx(want_b)
    served = http.post("/v1/compare", json={**body, "b": {"rerank": True}}).json()
    assert [r["b"] for r in served["queries"]] != [r["b"] for r in out["queries"]]
    test_only = http.post("/v1/compare", json={**body, "split": "test"})
    if any(split_of(q) == "test" for q in j.qrels):
        assert {r["split"] for r in test_only.json()["queries"]} == {"test"}
    else:
        assert test_only.status_code == 409 and "test split" in test_only.json()["error"]


def test_compare_rejects_bad_pipelines(http):
    r = http.post("/v1/compare", json={"a": {"mode": "fuzzy"}, "b": {}})
    assert r.status_code == 422 and "a.mode" in r.json()["error"]
    r = http.post("/v1/compare", json={"a": {}, "b": {"top_k": 5000}})
    assert r.status_code == 413
    r = http.post("/v1/compare", json={"a": {}, "b": {}, "k": 0})
    assert r.status_code == 422 and "k" in r.json()["error"]


# ----------------------------------------------------------------------------- eval and tune
def _judged_file(tmp_path: Path, queries: dict[str, dict[str, int]]) -> Path:
    jf = JudgmentsFile(tmp_path / "judged" / "qrels.tsv")
    for q, judged in queries.items():
        for pid, g in judged.items():
            jf.append(q, pid, g)
    return jf.path


def test_to_beir_over_catalog_file_and_index(tmp_path, catalog):
    path = _judged_file(tmp_path, {"apple phone": {"p1": 3, "p2": 0}, "drill": {"p5": 2}})
    cat_file = tmp_path / "products.jsonl"
    cat_file.write_text("\n".join(json.dumps(p) for p in PRODUCTS), encoding="utf-8")
    for source in (cat_file, catalog.store.uri):
        out = to_beir(path, source, tmp_path / f"beir-{Path(str(source)).name}")
        ds = load_beir(out, "judged")
        assert ds.qrels == {
            query_id("apple phone"): {"p1": 3, "p2": 0},
            query_id("drill"): {"p5": 2},
        }
        assert set(ds.corpus) == {p["id"] for p in PRODUCTS}
        splits = {s: set(read_qrels(out / "qrels" / f"{s}.tsv")) for s in ("train", "test")}
        assert splits["train"] | splits["test"] == set(ds.qrels)
        assert not splits["train"] & splits["test"]
    with pytest.raises(rankwise.errors.DataError, match="not in the corpus"):
        to_beir(path, [{"id": "p1", "title": "x"}], tmp_path / "missing")


def test_eval_reads_the_judgments_file(tmp_path, tiny_embedder_dir, capsys):
    judged = {"apple phone": {"p1": 3, "p8": 2, "p2": 0}, "drill": {"p5": 2}, "shoes": {"p3": 1}}
    path = _judged_file(tmp_path, judged)
    cat_file = tmp_path / "products.jsonl"
    cat_file.write_text("\n".join(json.dumps(p) for p in PRODUCTS), encoding="utf-8")
    argv = ["eval", "--judgments", str(path), "--data", str(cat_file), "--systems", "lexical"]
    argv += ["--embedder", str(tiny_embedder_dir), "--pools", "test", "--k", "10", "--json"]
    argv += ["--index-dir", str(tmp_path / "cache")]
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "judged"  # every judged query, not only the held-out ones
    (lexical,) = [r for r in report["results"] if r["system"] == "lexical"]
    assert lexical["metrics"]["n_queries"] == 3
    assert 0.0 < lexical["metrics"]["mean"]["ndcg@10"] <= 1.0


def test_tune_run_needs_judged_queries_on_both_sides(tmp_path, tiny_embedder_dir, capsys):
    text = next(f"q{i}" for i in range(100) if split_of(query_id(f"q{i}")) == "train")
    path = _judged_file(tmp_path, {text: {"p1": 2}})
    cat_file = tmp_path / "products.jsonl"
    cat_file.write_text("\n".join(json.dumps(p) for p in PRODUCTS), encoding="utf-8")
    argv = ["tune", "run", "--judgments", str(path), "--data", str(cat_file)]
    argv += ["--base", str(tiny_embedder_dir), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code == 2
    assert "falls in the test split" in capsys.readouterr().err


def test_tune_run_reads_the_judgments_file(tmp_path, tiny_embedder_dir, capsys):
    # enough judged queries that the stable hash puts some in each split
    texts = [f"{w} product" for w in ("apple", "phone", "shoes", "drill", "sink", "fruit")]
    texts += [f"{w} {v}" for w in ("red", "black", "new") for v in ("shoes", "phone", "kit")]
    queries = {
        t: {PRODUCTS[i % 8]["id"]: 2, PRODUCTS[(i + 3) % 8]["id"]: 0} for i, t in enumerate(texts)
    }
    splits = {split_of(query_id(t)) for t in texts}
    assert splits == {"train", "test"}, "pick query texts that fall in both splits"
    path = _judged_file(tmp_path, queries)
    cat_file = tmp_path / "products.jsonl"
    cat_file.write_text("\n".join(json.dumps(p) for p in PRODUCTS), encoding="utf-8")
    out = tmp_path / "run"
    argv = ["tune", "run", "--judgments", str(path), "--data", str(cat_file)]
    argv += ["--base", str(tiny_embedder_dir), "--out", str(out), "--max-steps", "2"]
    argv += ["--batch-size", "4", "--group-size", "2", "--negative-number", "2", "--margin", "-1"]
    argv += ["--top-k", "5", "--pools", "test", "--pos-threshold", "1"]
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code in (0, None), capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    n_test = sum(split_of(query_id(t)) == "test" for t in texts)
    assert json.dumps(report).count("ndcg@10") >= 2
    beir = path.parent / f"{path.name}.beir"
    assert len(read_qrels(beir / "qrels" / "test.tsv")) == n_test
    assert len(read_qrels(beir / "qrels" / "train.tsv")) == len(texts) - n_test
    assert (out / "embedder" / "config.json").exists()
