"""Catalog files → validated records; BEIR loading errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankwise.data import FieldMapping, document_text, load_beir, read_catalog
from rankwise.errors import CatalogError, DataError


def _write_jsonl(path, rows):
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return path


def test_jsonl_csv_parquet_give_the_same_records(tmp_path):
    rows = [
        {"sku": "a1", "name": "苹果手机 iPhone 15", "desc": "5G", "price": 5999, "brand": "Apple"},
        {"sku": "b2", "name": "Red apples", "desc": "", "price": 3.5, "brand": "Orchard"},
    ]
    mapping = FieldMapping.parse("id=sku,title=name,text=desc")
    j = _write_jsonl(tmp_path / "c.jsonl", rows)
    c = tmp_path / "c.csv"
    c.write_text(
        "sku,name,desc,price,brand\na1,苹果手机 iPhone 15,5G,5999,Apple\nb2,Red apples,,3.5,Orchard\n",
        encoding="utf-8",
    )
    p = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    got = [[r for _, r in read_catalog(f, mapping)] for f in (j, c, p)]
    assert got[0] == got[1] == got[2]
    assert got[0][0] == {
        "id": "a1",
        "title": "苹果手机 iPhone 15",
        "text": "5G",
        "price": 5999,
        "brand": "Apple",
    }


def test_default_mapping_guesses_common_names(tmp_path):
    f = _write_jsonl(
        tmp_path / "c.jsonl", [{"_id": 7, "name": "Drill", "description": "20V", "tags": ["x"]}]
    )
    [(_, rec)] = list(read_catalog(f))
    assert rec == {
        "id": "7",
        "title": "Drill",
        "text": "20V",
    }  # nested 'tags' is not filterable metadata


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"title": "no id"}', "c.jsonl:2: missing product id"),
        ('{"id": "x"}', "c.jsonl:2: product 'x' has no title"),
        ('{"id": "x", "title": 5}', "c.jsonl:2: field 'title': title must be a string"),
        ('{"id": "a", "title": "dup"}', "c.jsonl:2: duplicate product id 'a' (first at line 1)"),
        ("{not json", "c.jsonl:2: invalid JSON"),
        ('["a list"]', "c.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "title": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CatalogError) as e:
        list(read_catalog(f))
    assert message in str(e.value)


def test_skip_invalid_collects_messages(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        '{"id": "a", "title": "ok"}\n{"id": "b"}\n{"id": "c", "title": "fine"}\n', encoding="utf-8"
    )
    errors: list[str] = []
    ids = [r["id"] for _, r in read_catalog(f, skip_invalid=True, errors=errors)]
    assert ids == ["a", "c"] and len(errors) == 1 and ":2:" in errors[0]


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="not found"):
        list(read_catalog(tmp_path / "nope.jsonl"))
    (tmp_path / "c.xml").write_text("<x/>")
    with pytest.raises(CatalogError, match="unknown catalog format"):
        list(read_catalog(tmp_path / "c.xml"))


def test_document_text():
    assert document_text({"title": "T", "text": "D"}) == "T\nD"
    assert document_text({"title": "T", "text": ""}) == "T"
    assert document_text({"title": "Title", "text": "x" * 100}, max_chars=8) == "Title\nxx"


def _beir(tmp_path, corpus, queries, qrels_lines):
    _write_jsonl(tmp_path / "corpus.jsonl", corpus)
    _write_jsonl(tmp_path / "queries.jsonl", queries)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels_lines)
    return tmp_path


def test_load_beir_and_its_errors(tmp_path):
    root = _beir(
        tmp_path,
        [{"_id": "d1", "title": "a", "text": ""}, {"_id": "d2", "title": "b", "text": ""}],
        [{"_id": "q1", "text": "a?"}, {"_id": "q2", "text": "unjudged"}],
        "q1\td1\t2\nq1\td2\t0\n",
    )
    ds = load_beir(root, "test")
    assert ds.queries == {"q1": "a?"} and ds.qrels == {"q1": {"d1": 2, "d2": 0}}
    with pytest.raises(DataError, match="qrels file not found"):
        load_beir(root, "train")
    (root / "qrels" / "test.tsv").write_text("q1\tzzz\t1\n")
    with pytest.raises(DataError, match="not in corpus.jsonl"):
        load_beir(root, "test")
    (root / "corpus.jsonl").write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        load_beir(root, "test")


def test_read_qrels_accepts_beir_tsv_and_trec_spaces(tmp_path):
    from rankwise.data import read_qrels

    beir = tmp_path / "a.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n")
    trec = tmp_path / "b.txt"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert read_qrels(beir) == read_qrels(trec) == {"q1": {"d1": 2, "d2": 0}}
    bad = tmp_path / "c.tsv"
    bad.write_text("q1 d1\n")
    with pytest.raises(DataError, match="c.tsv:1"):
        read_qrels(bad)
