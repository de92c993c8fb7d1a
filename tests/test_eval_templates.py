"""`rankwise eval --rerank-template`: rerank texts compared as systems on the same candidates,
with a real tiny cross-encoder (its head scaled so that texts give different scores)."""

from __future__ import annotations

import json

import pytest
from server_helpers import build_sharp_reranker
from test_eval_runner import DOCS, QRELS, write_beir

from rankwise.errors import ConfigError
from rankwise.evaluate import evaluate
from rankwise.evaluate.templates import parse_templates, template_pairs
from rankwise.templates import DocumentTemplate

BRANDS = {d: ("acme" if i % 2 else "zenith") for i, d in enumerate(DOCS)}


def _with_metadata(root):
    """The tiny BEIR corpus with a BEIR ``metadata`` object (brand) per document."""
    rows = [json.loads(x) for x in (root / "corpus.jsonl").read_text().splitlines()]
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({**r, "metadata": {"brand": BRANDS[r["_id"]]}}) for r in rows)
    )
    return root


@pytest.fixture(scope="module")
def setup(tiny_embedder_dir, tiny_reranker_dir, tmp_path_factory):
    from rankwise.models import Embedder, Reranker

    tmp = tmp_path_factory.mktemp("eval-tpl")
    sharp = build_sharp_reranker(tiny_reranker_dir, tmp / "sharp")
    root = _with_metadata(write_beir(tmp / "tinyset"))
    return root, Embedder(str(tiny_embedder_dir)), Reranker(str(sharp)), sharp, tmp


def test_each_template_is_a_system_on_the_same_candidates(setup):
    root, emb, rr, _, tmp = setup
    rep = evaluate(
        root, systems="hybrid,hybrid+rerank", embedder=emb, reranker=rr, top_k=5, top_n=5,
        ks=(1, 5), pools=["test"], index_dir=tmp / "idx", show_progress=False,
        templates=["brand={brand} | {title}", "{title} ({brand})"],
    )  # fmt: skip
    runs = {r.system: r.run for r in rep.results}
    assert list(runs) == [
        "hybrid", "hybrid+rerank", "hybrid+rerank[template=brand]", "hybrid+rerank[template=t2]",
    ]  # fmt: skip
    queries = {q for q, _, _ in QRELS}
    for q in queries:  # the same recall candidates, reranked by different texts
        assert set(runs["hybrid+rerank[template=brand]"][q]) == set(runs["hybrid"][q])
        assert set(runs["hybrid+rerank[template=t2]"][q]) == set(runs["hybrid+rerank"][q])
    # the templated scores are the cross-encoder's on the template's text (metadata read)
    ds_queries = {json.loads(x)["_id"]: json.loads(x)["text"]
                  for x in (root / "queries.jsonl").read_text().splitlines()}  # fmt: skip
    q = "q3"
    ids = sorted(runs["hybrid+rerank[template=brand]"][q])
    want = rr.score(ds_queries[q], [f"{BRANDS[d]} | {DOCS[d]}" for d in ids])
    got = [runs["hybrid+rerank[template=brand]"][q][d] for d in ids]
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert got != pytest.approx([runs["hybrid+rerank"][q][d] for d in ids], abs=1e-6)
    pairs = {(c["system"], c["baseline"]) for c in rep.comparisons}
    assert ("hybrid+rerank[template=brand]", "hybrid+rerank") in pairs  # paired, per query
    assert ("hybrid+rerank[template=t2]", "hybrid+rerank") in pairs
    assert ("hybrid+rerank", "hybrid") in pairs
    assert rep.config["templates"]["brand"]["format"] == "{brand} | {title}"
    assert "hybrid+rerank[template=brand]" in rep.to_markdown()


def test_template_items_files_and_errors(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text('[short]\nformat = "{title}"\n[capped]\nformat = "{title} {text}"\n'
                    "caps = {text = 8}\n")  # fmt: skip
    got = parse_templates(["a={brand} | {title}", "{title}", str(toml)])
    assert list(got) == ["a", "t2", "short", "capped"]
    assert got["capped"] == DocumentTemplate("{title} {text}", {"text": 8})
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"j": "{text}"}))
    assert parse_templates([str(js)])["j"].format == "{text}"
    with pytest.raises(ConfigError, match="given twice"):
        parse_templates(["a={title}", "a={text}"])
    with pytest.raises(ConfigError, match="bad document template"):
        parse_templates(["{title"])
    with pytest.raises(ConfigError, match="t.toml"):
        toml.write_text("[x]\nformat = 3\n")
        parse_templates([str(toml)])
    # without the plain system, templates are tested against the first one
    assert template_pairs(["dense+rerank[template=a]", "dense+rerank[template=b]"]) == [
        ("dense+rerank[template=b]", "dense+rerank[template=a]")
    ]


def test_cli_eval_compares_templates(setup, tiny_embedder_dir, capsys):
    from rankwise.cli import main

    root, _, _, sharp, tmp = setup
    args = ["eval", "--data", str(root), "--systems", "dense+rerank", "--k", "1,5",
            "--top-k", "5", "--top-n", "5", "--pools", "test", "--embedder",
            str(tiny_embedder_dir), "--reranker", str(sharp), "--index-dir", str(tmp / "idx")]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main([*args, "--rerank-template", "brand={brand} | {title}", "--json"])
    assert done.value.code == 0
    body = json.loads(capsys.readouterr().out)
    systems = {r["system"] for r in body["results"]}
    assert systems == {"dense+rerank", "dense+rerank[template=brand]"}
    with pytest.raises(SystemExit) as done:
        main([*args, "--rerank-template", "x={title!r}"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "bad document template field" in err
    assert "Traceback" not in err
