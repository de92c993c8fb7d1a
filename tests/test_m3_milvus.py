"""bge-m3's sparse output stored natively in Milvus (SPARSE_FLOAT_VECTOR) where the server has
it, against the side index of the embedded store, on the same tiny M3 (tests/tiny_m3.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_cascade import _records
from tiny_m3 import build_tiny_m3

from rankwise.catalog import Catalog, side_index
from rankwise.errors import StoreError
from rankwise.models import Embedder
from rankwise.search import Searcher

QUERIES = ["cordless drill battery", "apple iphone", "fresh red apples", "running shoes mesh"]


@pytest.fixture(scope="module")
def m3(tmp_path_factory):
    return Embedder(str(build_tiny_m3(tmp_path_factory.mktemp("m3"))), device="cpu")


@pytest.fixture(scope="module")
def lance_side(tmp_path_factory, m3):
    cat = Catalog.open(str(tmp_path_factory.mktemp("idx")), m3, outputs=("dense", "sparse"))
    cat.add(_records())
    yield cat
    cat.close()


@pytest.fixture(scope="module")
def lite_native(tmp_path_factory, m3):
    uri = str(tmp_path_factory.mktemp("lite") / "catalog.db")
    cat = Catalog.open(uri, m3, outputs=("dense", "sparse", "colbert"))
    cat.add(_records())
    cat.store.optimize()
    # a catalog over the existing collection finds the sparse field by itself (closing and
    # reopening the file here races milvus-lite's background index writer: "read error")
    again = Catalog(cat.store, m3, side_index(cat.store))
    yield again
    cat.close()


def _sparse(cat: Catalog, query: str, k: int, filters=None) -> dict[str, float]:
    resp = Searcher(cat, None).search(query, cascade=f"sparse:{k}", filters=filters)
    return {r.id: r.recall_score for r in resp.results}


def test_milvus_lite_keeps_sparse_natively_and_colbert_beside(lite_native):
    assert lite_native.native_outputs == ("sparse",)
    assert "sparse" in lite_native.store.capabilities
    assert lite_native.side is not None and lite_native.side.outputs == ("colbert",)
    # beside the milvus-lite directory, not inside what it owns
    assert str(lite_native.side.folder) == lite_native.store.uri + ".m3"
    info = lite_native.store.info()["sparse"]
    assert info["engine"].startswith("native Milvus m3_sparse")
    assert info["nonzeros_per_product"] > 1 and info["memory_bytes_per_product"] > 8
    assert info["disk_bytes_per_product"] > 0


@pytest.mark.parametrize("query", QUERIES)
def test_sparse_recall_from_milvus_equals_the_side_index(lance_side, lite_native, query):
    # k past the corpus: every document with a positive score, with its score
    want, got = _sparse(lance_side, query, 100), _sparse(lite_native, query, 100)
    assert want and set(got) == set(want)
    np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-5)
    # the cascade's sparse stage read Milvus' own field: the store answers the same directly
    qw = lite_native.embedder.encode_multi([query], "query", ("sparse",)).sparse[0]
    direct = {h.id: h.score for h in lite_native.store.sparse_search(qw, 100)}
    assert direct == got
    # the top-10 cut and a prefilter give the same scores (ties may order differently)
    top = _sparse(lite_native, query, 10)
    np.testing.assert_allclose(list(top.values()), list(want.values())[:10], rtol=1e-5)
    f = {"category": "tools"}
    want_f, got_f = _sparse(lance_side, query, 100, f), _sparse(lite_native, query, 100, f)
    assert set(got_f) == set(want_f) <= {r["id"] for r in _records() if r["category"] == "tools"}


def test_cascade_reads_native_sparse_and_side_colbert(lite_native):
    resp = Searcher(lite_native, None).search(QUERIES[0], cascade="sparse:30,colbert:5")
    assert [s["stage"] for s in resp.stages] == ["sparse", "colbert"]
    assert len(resp.results) == 5 and all(r.colbert_score is not None for r in resp.results)


def test_a_collection_with_sparse_refuses_a_write_without_it(lite_native):
    rec = _records(1)
    with pytest.raises(StoreError, match="holds learned sparse weights"):
        lite_native.store.upsert(rec, np.ones((1, lite_native.store.dim), np.float32))


@pytest.mark.milvus_server
def test_milvus_2_3_server_names_the_version_sparse_needs(milvus_server, m3):
    """The test suite's Milvus 2.3.5 has no SPARSE_FLOAT_VECTOR: no native sparse, and a
    server URI has no folder for a side index, so the refusal says what version is needed."""
    with pytest.raises(StoreError, match=r"Milvus >= 2\.4 .*runs v?2\.3"):
        Catalog.open(milvus_server, m3, outputs=("dense", "sparse"), collection="m3_sparse_t")
    with Catalog.open(milvus_server, m3, collection="m3_dense_t") as cat:
        assert "sparse" not in cat.store.capabilities and cat.native_outputs == ()
        cat.add(_records(5))
        assert "needs Milvus >= 2.4" in cat.store.info()["sparse"]["engine"]


@pytest.mark.milvus_server
def test_milvus_server_keeps_colbert_in_its_side_dir(milvus_server, m3, tmp_path):
    """A server cannot hold ColBERT vectors (Milvus 2.3; rankwise writes no embedding lists):
    without ``side_dir`` the refusal names the fix; with it the vectors live in that local
    folder, claimed by one collection, and rescore exactly as beside an embedded store."""
    side = tmp_path / "side"
    opts = {"collection": "m3_colbert_t"}
    with pytest.raises(StoreError, match=r"side_dir \(--side-dir, RANKWISE_SIDE_DIR\)"):
        Catalog.open(milvus_server, m3, outputs=("dense", "colbert"), **opts)
    cascade = "dense:30,colbert:5"
    with Catalog.open(str(tmp_path / "lance"), m3, outputs=("dense", "colbert")) as local:
        local.add(_records())
        want = {
            r.id: r.colbert_score
            for r in Searcher(local, None).search(QUERIES[0], cascade=cascade).results
        }
    with Catalog.open(
        milvus_server, m3, outputs=("dense", "colbert"), side_dir=str(side), **opts
    ) as cat:
        cat.add(_records())
        assert cat.side is not None and cat.side.folder == side
        assert cat.side.outputs == ("colbert",)
    # reopened over the existing collection: the side index is found without ``outputs``
    with Catalog.open(milvus_server, m3, create=False, side_dir=str(side), **opts) as again:
        resp = Searcher(again, None).search(QUERIES[0], cascade=cascade)
        assert [s["stage"] for s in resp.stages] == ["dense", "colbert"]
        got = {r.id: r.colbert_score for r in resp.results}
    assert list(got) == list(want)
    assert np.allclose(list(got.values()), list(want.values()), atol=1e-4)
    with pytest.raises(StoreError, match="give each collection its own side_dir"):
        Catalog.open(
            milvus_server, m3, outputs=("dense", "colbert"), side_dir=str(side),
            collection="m3_other_t",
        )  # fmt: skip
