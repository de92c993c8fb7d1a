"""Chunked rerank and document templates, on the tiny real cross-encoder."""

from __future__ import annotations

import numpy as np
import pytest

from rankwise.errors import ConfigError, InvalidRequest
from rankwise.models.chunking import ChunkPolicy, LongDocument, score_chunked, split_windows
from rankwise.templates import DocumentTemplate, rerank_logits

WORDS = (
    "apple iphone smartphone black fresh red apples fruit bag summer breathable running "
    "shoes mesh lightweight leather dress brown oxford cordless drill lithium battery kit "
    "wireless bluetooth headphones noise cancelling stainless steel kitchen sink faucet"
).split()
# ~150 tokens, no repeated stretch (a window's text occurs once): several windows at 32 tokens
BODY = " ".join(f"{WORDS[i % len(WORDS)]} {i}" for i in range(60))


@pytest.fixture(scope="module")
def reranker(tiny_reranker_dir):
    from rankwise.models import Reranker

    return Reranker(str(tiny_reranker_dir), max_length=32)


def _body_positions(reranker, window: str, head: str) -> list[int]:
    """Where each window's body text starts and ends inside BODY (characters)."""
    text = window[len(head) :]
    start = BODY.index(text)
    return [start, start + len(text)]


def test_windows_keep_the_title_preserve_order_overlap_and_fit(reranker):
    head = "cordless drill kit\n"
    policy = ChunkPolicy(max_chunks_per_doc=10, overlap_tokens=4)
    (windows,) = split_windows(reranker, "drill", [LongDocument(head, BODY)], policy)
    assert len(windows) > 2
    assert all(w.startswith(head) for w in windows)  # the title is in every window
    spans = [_body_positions(reranker, w, head) for w in windows]
    starts = [s for s, _ in spans]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # document order
    for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False):
        assert nxt < end  # consecutive windows overlap
    assert spans[-1][1] == len(BODY)  # the whole body is covered when the cap allows
    counts = reranker.count_tokens(["drill", *windows])
    for c in counts[1:]:  # every (query, window) pair fits the model without truncation
        assert counts[0] + c - 2 <= reranker.max_length


def test_max_chunks_caps_the_windows_and_the_rest_is_not_scored(reranker):
    head = "drill\n"
    all_windows = split_windows(
        reranker, "drill", [LongDocument(head, BODY)], ChunkPolicy(max_chunks_per_doc=50)
    )[0]
    capped = split_windows(
        reranker, "drill", [LongDocument(head, BODY)], ChunkPolicy(max_chunks_per_doc=2)
    )[0]
    assert len(capped) == 2 and capped == all_windows[:2]  # the first two, in order
    before = reranker.score_cache_info()["size"]
    res = score_chunked(reranker, "drill", [LongDocument(head, BODY)], ChunkPolicy(2))
    assert res.chunks.tolist() == [2]
    assert reranker.score_cache_info()["size"] - before <= 2  # only two pairs ran


def test_max_tokens_per_doc_truncates_before_windowing(reranker):
    policy = ChunkPolicy(max_chunks_per_doc=50, max_tokens_per_doc=30, overlap_tokens=0)
    windows = split_windows(reranker, "q", [BODY], policy)[0]
    end = reranker.tokens.spans([BODY])[0][29][1]  # where the 30th body token ends
    assert len(windows) >= 2
    assert BODY.index(windows[0]) == 0
    assert BODY.index(windows[-1]) + len(windows[-1]) == end  # nothing after token 30


@pytest.mark.parametrize("how", ["max", "mean-top2"])
def test_score_is_the_aggregate_of_the_window_scores(reranker, how):
    docs = [LongDocument("drill\n", BODY), LongDocument("short title", ""), "plain " + BODY]
    policy = ChunkPolicy(max_chunks_per_doc=5, overlap_tokens=4, aggregate=how)
    res = score_chunked(reranker, "cordless drill", docs, policy)
    windows = split_windows(reranker, "cordless drill", docs, policy)
    for i, ws in enumerate(windows):
        each = np.sort(reranker.score("cordless drill", ws))
        want = each[-1] if how == "max" else each[-2:].mean()
        assert res.scores[i] == pytest.approx(float(want), abs=1e-6)
        assert res.chunks[i] == len(ws)
    assert res.chunks[1] == 1  # a short document is one window: itself
    short = reranker.score("cordless drill", ["short title"])[0]
    assert res.scores[1] == pytest.approx(float(short), abs=1e-6)


def test_policy_and_remote_errors():
    with pytest.raises(ConfigError, match="max_chunks_per_doc"):
        ChunkPolicy(max_chunks_per_doc=0)
    with pytest.raises(ConfigError, match="aggregate"):
        ChunkPolicy(aggregate="sum")  # type: ignore[arg-type]

    class NoTokenizer:
        max_length, query_max_share = 32, 0.5

    with pytest.raises(InvalidRequest, match="tokenizer"):
        split_windows(NoTokenizer(), "q", ["text"], ChunkPolicy())


def test_template_fields_separators_caps_and_body(reranker):
    t = DocumentTemplate("{title} | {brand} | {category} | {text}", caps={"text": 3})
    rec = {"title": "drill", "category": "tools", "text": "fresh red apples fruit bag"}
    doc = t.render(rec, reranker.tokens)
    assert doc.text == "drill | tools | fresh red apples"  # no brand: its separator goes too
    assert doc.head == "drill | tools | " and doc.body == "fresh red apples"
    words = DocumentTemplate("{title}: {text}", caps={"text": 2}).text(rec)  # word caps
    assert words == "drill: fresh red"
    assert DocumentTemplate.parse("{title}\\n{brand}", "brand=1").format == "{title}\n{brand}"
    with pytest.raises(ConfigError, match="does not use"):
        DocumentTemplate("{title}", caps={"text": 5})
    with pytest.raises(ConfigError, match="field=tokens"):
        DocumentTemplate.parse("{title}", "title:5")


def test_rerank_logits_with_template_and_chunking(reranker):
    recs = [{"title": "drill", "brand": "bosch", "text": BODY}, {"title": "sink", "text": ""}]
    t = DocumentTemplate("{title} | {brand} | {text}")
    chunked = rerank_logits(reranker, "drill", recs, template=t, chunking=ChunkPolicy(3))
    want = score_chunked(
        reranker, "drill", [t.render(r, reranker.tokens) for r in recs], ChunkPolicy(3)
    )
    assert np.allclose(chunked, want.scores)
    whole = rerank_logits(reranker, "drill", recs, template=t)
    assert np.allclose(whole, reranker.score("drill", [t.text(r) for r in recs]))
