"""Regressions from review: whole-catalog typing, CSV ids, generators, cache freshness."""

from __future__ import annotations

import json

import pytest

from rankwise.catalog import Catalog
from rankwise.data import read_catalog
from rankwise.errors import FilterError, SchemaMismatch, StoreError
from rankwise.search import Searcher


@pytest.fixture(scope="module")
def embedder(tiny_embedder_dir):
    from rankwise.models import Embedder

    return Embedder(str(tiny_embedder_dir))


def test_types_come_from_the_whole_catalog_not_the_first_batch(tmp_path, embedder):
    rows = [{"id": f"p{i}", "title": f"item {i}", "price": i} for i in range(300)]  # ints first
    rows[280]["price"] = 9.99  # a float after the first batch
    rows[290]["weight_kg"] = 1.5  # a field that first appears after the first batch
    src = tmp_path / "c.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with Catalog.open(str(tmp_path / "idx"), embedder) as cat:
        report = cat.ingest(src, batch_size=256, show_progress=False)
        assert report.count == 300 and not report.failed_batches
        assert cat.store.schema["price"] == "float" and cat.store.schema["weight_kg"] == "float"
        assert cat.store.count({"weight_kg": {"gt": 1}}) == 1
        assert cat.store.count({"price": {"lt": 10}}) == 11  # 0..9 and 9.99


def test_catalog_that_does_not_fit_the_index_fails_before_writing(tmp_path, embedder):
    with Catalog.open(str(tmp_path / "idx"), embedder) as cat:
        cat.add([{"id": "a", "title": "x", "brand": "acme"}])
        src = tmp_path / "c.jsonl"
        src.write_text(
            '{"id": "b", "title": "y", "brand": "acme"}\n{"id": "c", "title": "z", "brand": 5}\n'
        )
        with pytest.raises(Exception) as e:  # mixed str/int in one field
            cat.ingest(src, show_progress=False)
        assert "brand" in str(e.value)
        src.write_text('{"id": "b", "title": "y", "colour": "red"}\n')
        with pytest.raises(SchemaMismatch, match="colour") as e:
            cat.ingest(src, show_progress=False)
        assert e.value.http_status == 422
        assert cat.store.count() == 1


def test_csv_keeps_ids_and_titles_as_text(tmp_path):
    src = tmp_path / "c.csv"
    src.write_bytes("\ufeffsku,title,price\n00123,1984,12.5\n".encode())  # with a BOM
    [(_, rec)] = list(read_catalog(src))
    assert (
        rec == {"id": "00123", "title": "1984", "text": "", "price": 12.5} or rec["id"] == "00123"
    )
    assert rec["title"] == "1984" and rec["price"] == 12.5


def test_non_utf8_catalog_is_a_clear_error(tmp_path):
    from rankwise.errors import CatalogError

    src = tmp_path / "c.jsonl"
    src.write_bytes('{"id": "a", "title": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(CatalogError, match="UTF-8"):
        list(read_catalog(src))


def test_generator_source_is_ingested(tmp_path, embedder):
    with Catalog.open(str(tmp_path / "idx"), embedder) as cat:
        report = cat.ingest(
            ({"id": str(i), "title": f"t{i}"} for i in range(5)), show_progress=False
        )
        assert report.count == 5 and cat.store.count() == 5


def test_library_cache_sees_catalog_writes_and_typed_filters(tmp_path, embedder):
    from rankwise.cache import MemoryCache

    cat = Catalog.open(str(tmp_path / "idx"), embedder)
    cat.add([{"id": "a", "title": "red shoes", "price": 10}])
    s = Searcher(cat, cache=MemoryCache(max_entries=100, default_ttl=60), mode="lexical")
    assert [r.id for r in s.search("shoes").results] == ["a"]
    cat.add([{"id": "b", "title": "blue shoes", "price": 20}])
    again = s.search("shoes")
    assert not again.cached and {r.id for r in again.results} == {"a", "b"}
    assert s.search("shoes").cached
    assert not s.search("shoes", filters={"price": 10}).cached
    try:  # a string for an int field must not be served from the int filter's entry
        assert not s.search("shoes", filters={"price": "10"}).cached
    except FilterError:
        pass


def test_index_built_with_another_embedder_is_refused(tmp_path, embedder, tiny_embedder_dir):
    import shutil

    from rankwise.models import Embedder

    uri = str(tmp_path / "idx")
    Catalog.open(uri, embedder).add([{"id": "a", "title": "x"}])
    other_dir = tmp_path / "other-model"
    shutil.copytree(tiny_embedder_dir, other_dir)  # same dim, different model folder
    with pytest.raises(StoreError, match="built with embedder"):
        Catalog.open(uri, Embedder(str(other_dir)))
