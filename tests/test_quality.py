"""One real-model quality check: all-MiniLM-L6-v2 on the bundled sample catalog.

A paraphrased query shares no words with its product: dense recall finds it in the Top-5,
BM25 does not. This is the reason rankwise fuses both.
"""

from __future__ import annotations

import pytest

from rankwise.catalog import Catalog
from rankwise.demo import sample_catalog_path
from rankwise.search import Searcher


@pytest.fixture(scope="module")
def searcher(tmp_path_factory, minilm_dir):
    from rankwise.models import Embedder

    catalog = Catalog.open(str(tmp_path_factory.mktemp("sample")), Embedder(str(minilm_dir)))
    catalog.ingest(sample_catalog_path(), show_progress=False)
    return Searcher(catalog)


@pytest.mark.parametrize(
    "query, wanted",
    [
        ("battery powered tool for making holes", "Drill"),
        ("phone that takes good photos in the dark", "Pixel 8 Pro"),
    ],
)
def test_paraphrase_found_by_dense_not_by_bm25(searcher, query, wanted):
    dense = [
        r.record["title"]
        for r in searcher.search(query, mode="dense", rerank=False, top_n=5).results
    ]
    lexical = [
        r.record["title"]
        for r in searcher.search(query, mode="lexical", rerank=False, top_n=5).results
    ]
    assert any(wanted in t for t in dense), dense
    assert not any(wanted in t for t in lexical), lexical
    hybrid = [
        r.record["title"]
        for r in searcher.search(query, mode="hybrid", rerank=False, top_n=10).results
    ]
    assert any(wanted in t for t in hybrid), hybrid  # fusion keeps what dense found
