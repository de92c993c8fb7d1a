"""Issue 14: rerank API shapes are rows of one table behind one route factory."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from pydantic import BaseModel
from server_helpers import settings

from rankwise.models import Reranker
from rankwise.server import BackgroundServer, create_app
from rankwise.server.routes.models import score_documents
from rankwise.server.routes.rerank import SHAPES, RerankShape, add_rerank_routes


class ListRequest(BaseModel):
    query: str
    texts: list[str]
    limit: int | None = None
    raw_scores: bool = False
    truncate: bool | None = None
    with_text: bool = False


def test_every_row_is_served_and_a_new_row_is_one_entry(tiny_reranker_dir):
    docs = ["cordless drill kit", "garden hose", "drill bits set", "kitchen sink"]
    s = settings(embedder="none", index="none", reranker=str(tiny_reranker_dir), cache_url="off")
    app = create_app(s)
    assert {p for shape in SHAPES for p, _ in shape.paths} <= set(app.openapi()["paths"])
    # a new API shape: its request model and one row, no new handler
    row = RerankShape(
        name="list-shape", paths=(("/x/rank", "Rank (a made-up shape)"),), request=ListRequest,
        response=dict, documents="texts", score="relevance", document="text", wrap_text=False,
        return_flag="with_text", top_n="limit",
        body=lambda results, billed, path: {"data": results, "tokens": billed},
        errors=None, envelope=False,
    )  # fmt: skip
    extra = APIRouter()
    add_rerank_routes(extra, score_documents, [row])
    app.include_router(extra)
    app.openapi_schema = None  # the schema was built above; the new route joins it
    want = Reranker(str(tiny_reranker_dir)).rank("drill", docs, top_n=2)
    with BackgroundServer(app) as srv:
        assert srv.wait_ready(60), app.state.rankwise.error
        r = httpx.post(
            f"{srv.url}/x/rank",
            json={"query": "drill", "texts": docs, "limit": 2, "with_text": True},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["index"] for d in body["data"]] == [w.index for w in want]
        assert [d["text"] for d in body["data"]] == [w.document for w in want]
        assert [d["relevance"] for d in body["data"]] == [pytest_approx(w.relevance) for w in want]
        assert body["tokens"] > 0
        # the table's own rows answer as before (Cohere envelope, TEI bare array)
        cohere = httpx.post(f"{srv.url}/v1/rerank", json={"query": "drill", "documents": docs})
        assert {"id", "model", "results", "usage", "meta"} <= set(cohere.json())
        tei = httpx.post(f"{srv.url}/rerank", json={"query": "drill", "texts": docs})
        assert isinstance(tei.json(), list) and set(tei.json()[0]) == {"index", "score"}


def pytest_approx(x: float):
    import pytest

    return pytest.approx(x, abs=1e-5)
