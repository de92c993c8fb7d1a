"""Training data: FlagEmbedding JSONL round trip, validation messages, BEIR conversion, split."""

from __future__ import annotations

import json

import pytest

from rankwise.data import load_beir
from rankwise.errors import DataError
from rankwise.tune.data import (
    TrainExample,
    from_beir,
    parse_example,
    read_examples,
    split_by_query,
    write_examples,
)
from rankwise.tune.training import group_rows


def write_beir(root, corpus, queries, qrels):
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as fh:
        for doc_id, title in corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": ""}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, rows in qrels.items():
        with (root / "qrels" / f"{split}.tsv").open("w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q, d, g in rows:
                fh.write(f"{q}\t{d}\t{g}\n")
    return root


def test_round_trip_keeps_every_field(tmp_path):
    ex = [
        TrainExample(
            "红 苹果", ["新鲜红富士苹果"], ["苹果手机"], [2.5], [-1.0], "查询：", ["苹果汁"]
        ),
        TrainExample("drill", ["cordless drill"], []),
    ]
    path = write_examples(ex, tmp_path / "train.jsonl")
    assert read_examples(path) == ex
    assert "新鲜" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query": "q", "pos": []}', "at least one positive"),
        ('{"query": "", "pos": ["a"]}', "'query' must be a non-empty string"),
        ('{"query": "q", "pos": "a"}', "'pos' must be a list of strings"),
        ('{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1], "neg_scores": [1, 2]}',
         "'neg_scores' has 2 scores but 'neg' has 1 texts"),
        ('{"query": "q", "pos": ["a"], "negs": ["b"]}', "unknown field 'negs'"),
        ('{"query": "q", "pos": ["a"], "neg": ["b"], "pos_scores": [1]}', "both 'pos_scores'"),
        ('{"query": "q", "pos": ["a"], "pos_scores": ["high"]}', "list of numbers"),
        ("[1, 2]", "expected a JSON object"),
        ('{"query": "q", "pos": ["a"]', "invalid JSON"),
    ],
)  # fmt: skip
def test_validation_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "ok", "pos": ["fine"]}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_examples(path)
    assert f"{path}:2:" in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_examples(tmp_path / "empty.jsonl")


def test_from_beir_grades_become_pos_neg_related(tmp_path):
    root = write_beir(
        tmp_path / "beir",
        {"d1": "red apple", "d2": "green apple", "d3": "apple phone", "d4": "banana"},
        {"q1": "apple fruit", "q2": "banana", "q3": "nothing relevant"},
        {"train": [("q1", "d1", 2), ("q1", "d2", 1), ("q1", "d3", 0), ("q2", "d4", 1), ("q3", "d3", 0)]},
    )  # fmt: skip
    ds = load_beir(root, "train")
    ex = from_beir(ds, threshold=2)
    assert len(ex) == 1  # q2 (grade 1) and q3 (grade 0) have no positive at threshold 2
    assert (ex[0].query, ex[0].pos, ex[0].neg, ex[0].related) == (
        "apple fruit", ["red apple"], ["apple phone"], ["green apple"]
    )  # fmt: skip
    ex1 = from_beir(ds, threshold=1, judged_negatives=False)
    assert [e.query for e in ex1] == ["apple fruit", "banana"]
    assert ex1[0].pos == ["red apple", "green apple"] and ex1[0].neg == []
    with pytest.raises(DataError, match="no query"):
        from_beir(ds, threshold=3)


def test_split_by_query_is_stable_and_disjoint():
    ex = [TrainExample(f"query {i}", [f"doc {i}"]) for i in range(400)]
    train, dev = split_by_query(ex, 0.2)
    assert len(train) + len(dev) == 400 and 40 < len(dev) < 120
    assert not {e.query for e in train} & {e.query for e in dev}
    train2, dev2 = split_by_query(ex[::-1] + [TrainExample("new", ["x"])], 0.2)
    assert {e.query for e in dev} <= {e.query for e in dev2}  # adding data moves nothing
    with pytest.raises(DataError):
        split_by_query(ex, 1.0)


def test_group_rows_takes_distinct_negatives_and_scores():
    ex = [
        TrainExample("q", ["p1", "p2"], ["n1", "n2", "n2", "n3"], [5.0, 4.0], [1.0, 2.0, 2.0, 3.0]),
        TrainExample("short", ["p"], ["n1"], [1.0], [0.0]),
    ]
    rows, dropped = group_rows(ex, 4, with_scores=True)
    assert dropped == 1 and len(rows) == 1
    row = rows[0]
    negs = [row[f"negative_{i}"] for i in (1, 2, 3)]
    assert sorted(negs) == ["n1", "n2", "n3"]
    score = {"p1": 5.0, "p2": 4.0, "n1": 1.0, "n2": 2.0, "n3": 3.0}
    assert row["label"] == [score[row["positive"]], *(score[n] for n in negs)]
    assert parse_example({"query": "q", "pos": ["a"]}).neg == []
