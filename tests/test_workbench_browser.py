"""The workbench page in a real browser: Debian's chromium driven by Playwright.

A real ``rankwise serve`` process (the CLI, on 127.0.0.1 and a free port, API keys on)
serves a small index built here with the tiny embedder and tiny cross-encoders. The page
is used the way a person uses it: key entered once, query typed, results judged with the
keyboard, the compare view run and sorted. On failure a screenshot is written to the
test's temp folder. ``RANKWISE_WORKBENCH_SCREENSHOT=path.png`` also saves the judged
page (that is how the README's screenshot is made).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_helpers import PRODUCTS, build_sharp_reranker, free_port
from tiny_models import build_tiny_reranker

import rankwise
from rankwise.catalog import Catalog
from rankwise.evaluate import compute_metrics
from rankwise.evaluate.judgments import JudgmentsFile, query_id
from rankwise.models import Embedder

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

KEY = "browser-key"
CHROMIUM = os.environ.get("RANKWISE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(tiny_embedder_dir, tiny_reranker_dir, tmp_path_factory) -> Iterator[dict]:
    """``rankwise serve`` as a subprocess over a fresh index; yields url and paths."""
    root = tmp_path_factory.mktemp("workbench")
    catalog = Catalog.open(str(root / "index"), Embedder(str(tiny_embedder_dir)))
    catalog.add(PRODUCTS)
    catalog.close()
    # scale 300: logits spread enough to reorder, relevance not saturated at 1.0
    served_rr = build_sharp_reranker(tiny_reranker_dir, root / "reranker", scale=300.0)
    other_rr = build_tiny_reranker(root / "other-reranker", seed=1)
    qrels = root / "judged" / "qrels.tsv"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(rankwise.__file__).parents[1]),
        "RANKWISE_API_KEYS": KEY,
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [sys.executable, "-m", "rankwise.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--index", str(root / "index")]
    cmd += ["--embedder", str(tiny_embedder_dir), "--reranker", str(served_rr)]
    cmd += ["--compare-reranker", str(other_rr), "--judgments", str(qrels)]
    cmd += ["--log-level", "warning"]
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"rankwise serve did not start: {(root / 'serve.log').read_text()}"
                )
            time.sleep(0.2)
        yield {"url": url, "qrels": qrels, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: scripts/system-deps.sh installs Debian's chromium")
    with playwright_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage"],
            )
        except Exception as e:  # noqa: BLE001 - report why the browser cannot run here
            pytest.skip(f"chromium cannot start in this environment: {e}")
        yield b
        b.close()


@contextmanager
def page_for(browser, tmp_path: Path, name: str):
    """A fresh page (own storage); a full-page screenshot under tmp_path if the test fails."""
    context = browser.new_context(viewport={"width": 1440, "height": 980})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(20_000)
    try:
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    except BaseException:
        shot = tmp_path / f"{name}-failure.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failing page: {shot}")
        raise
    finally:
        context.close()


def open_with_key(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("#key-form:not(.hidden)")  # the first call got a 401
    assert "API key" in page.inner_text("#message")
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    page.wait_for_selector("#server-info div")


def column_ids(page, column: str) -> list[str]:
    return page.eval_on_selector_all(f"#col-{column} .row", "rows => rows.map(r => r.dataset.id)")


def ndcg10(ids: list[str], judged: dict[str, int]) -> float:
    run = {"q": {d: float(len(ids) - i) for i, d in enumerate(ids)}}
    return compute_metrics(run, {"q": judged}, (10,), ("ndcg",)).per_query("ndcg@10")["q"]


def test_search_judge_by_keyboard_and_ndcg(browser, served, tmp_path):
    query = "running shoes"
    with page_for(browser, tmp_path, "judge") as page:
        open_with_key(page, served["url"])
        assert page.locator("#filters .filter").count() == 2  # brand (text), price (range)
        page.fill("#q", query)
        page.press("#q", "Enter")
        page.wait_for_selector("#col-rerank .row")
        # both columns, with their scores, ranks and movement markers
        recall, reranked = column_ids(page, "recall"), column_ids(page, "rerank")
        assert len(recall) == len(reranked) == len(PRODUCTS)
        assert sorted(recall) == sorted(reranked) and recall != reranked
        first = page.locator("#col-rerank .row").first
        text = first.inner_text()
        assert "recall" in text and "logit" in text and "relevance" in text
        assert page.locator("#col-recall .row").first.inner_text().count("logit") == 0
        assert page.locator("#col-rerank .move").count() == len(PRODUCTS)
        assert page.inner_text("#rerank-status") == "ran"
        timings = page.inner_text("#timings")
        assert all(stage in timings for stage in ("recall", "rerank", "total"))
        assert page.inner_text("#ndcg-recall b") == "–"  # nothing judged yet

        # judge the first three reranked results with the keyboard: 3, 2, 0
        page.keyboard.press("Escape")  # leave the query box
        page.keyboard.press("j")  # focus the first reranked result
        for grade in "320":
            page.keyboard.press(grade)  # grades and moves to the next result
            page.wait_for_function(
                "n => document.querySelectorAll('#col-rerank .row[data-grade]:not([data-grade=\"\"])').length >= n",
                arg="320".index(grade) + 1,
            )
        judged = dict(zip(reranked[:3], (3, 2, 0), strict=True))

        # the qrels file: BEIR TSV lines for the query's stable id, queries.jsonl beside it
        qid = query_id(query)
        lines = served["qrels"].read_text().splitlines()
        assert lines[0] == "query-id\tcorpus-id\tscore"
        assert [ln for ln in lines[1:] if ln.startswith(qid)] == [
            f"{qid}\t{d}\t{g}" for d, g in judged.items()
        ]
        assert JudgmentsFile(served["qrels"]).read().queries[qid] == query

        # the page's nDCG@10 for both columns equals rankwise.evaluate's
        for column, ids in (("recall", recall), ("rerank", reranked)):
            shown = float(page.get_attribute(f"#ndcg-{column}", "data-value"))
            assert shown == pytest.approx(ndcg10(ids, judged), abs=1e-6)
        assert page.inner_text("#ndcg-rerank b") == f"{ndcg10(reranked, judged):.3f}"
        assert page.inner_text("#judged-count").startswith("3 of 8 shown")
        assert (
            page.locator(f'#col-recall .row[data-id="{reranked[0]}"] .grade.on').inner_text() == "3"
        )
        if os.environ.get("RANKWISE_WORKBENCH_SCREENSHOT"):
            page.locator(f'#col-rerank .row[data-id="{reranked[3]}"]').focus()
            page.screenshot(path=os.environ["RANKWISE_WORKBENCH_SCREENSHOT"])

        # a reload keeps the key (localStorage) and shows the judgments already made
        page.reload()
        page.wait_for_selector("#server-info div")
        assert page.locator("#key-form.hidden").count() == 1
        page.fill("#q", query)
        page.press("#q", "Enter")
        page.wait_for_selector("#col-rerank .row.judged-3")

        # bad input gets the server's message in the page
        page.evaluate("judge('no-such-product', 2, null)")
        page.wait_for_selector("#message:not(.hidden)")
        assert "unknown product id 'no-such-product'" in page.inner_text("#message")
        page.evaluate("judge(app.reranked[0].id, 7, null)")
        page.wait_for_function("document.querySelector('#message').textContent.includes('got 7')")
        page.fill("#q", "   ")
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelector('#message').textContent.includes('empty')")

        # a filter from the index's metadata reaches the search
        page.fill("#q", "phone")
        page.fill('#filters input[data-field="brand"]', "apple")
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelectorAll('#col-rerank .row').length === 2")
        assert set(column_ids(page, "rerank")) == {"p1", "p8"}


def test_compare_view_sorts_and_opens_queries(browser, served, tmp_path):
    judgments = {
        "apple phone": {"p1": 3, "p8": 2, "p2": 0},
        "summer shoes": {"p3": 3, "p4": 1},
        "cordless drill": {"p5": 3, "p7": 0},
        "headphones": {"p6": 2},
        "fruit": {"p2": 3, "p1": 0},
    }
    with httpx.Client(base_url=served["url"], headers={"Authorization": f"Bearer {KEY}"}) as c:
        for q, grades in judgments.items():
            for pid, g in grades.items():
                r = c.post("/v1/judgments", json={"query": q, "id": pid, "grade": g})
                assert r.status_code == 200, r.text
        body = {
            "a": {"mode": "lexical", "rerank": False},
            "b": {"mode": "hybrid", "rerank": True, "reranker": "main"},
            "k": 10,
            "split": "all",
        }
        want = c.post("/v1/compare", json=body).json()
    n_judged = len(JudgmentsFile(served["qrels"]).read().qrels)

    with page_for(browser, tmp_path, "compare") as page:
        open_with_key(page, served["url"])
        page.click("#tab-compare")
        page.select_option("#a-mode", "lexical")
        page.uncheck("#a-rerank")
        page.select_option("#b-mode", "hybrid")
        page.check("#b-rerank")
        page.select_option("#b-reranker", "main")
        page.click("#cmp-run")
        page.wait_for_selector("#cmp-table tbody tr")
        rows = page.locator("#cmp-table tbody tr")
        assert rows.count() == n_judged == want["n_queries"]
        assert page.inner_text("#cmp-mean-a") == f"{want['mean']['a']:.3f}"
        assert page.inner_text("#cmp-mean-b") == f"{want['mean']['b']:.3f}"
        assert "lexical" in page.inner_text("#cmp-desc-a")
        assert "rerank" in page.inner_text("#cmp-desc-b")

        def deltas() -> list[float | None]:
            cells = page.eval_on_selector_all(
                "#cmp-table tbody tr td:last-child", "tds => tds.map(t => t.textContent)"
            )
            return [None if c.strip() == "–" else float(c) for c in cells]

        by_id = {r["query_id"]: r for r in want["queries"]}
        shown = page.eval_on_selector_all(
            "#cmp-table tbody tr", "trs => trs.map(t => t.dataset.queryId)"
        )
        assert deltas() == [
            None if by_id[q]["delta"] is None else pytest.approx(by_id[q]["delta"], abs=1e-3)
            for q in shown
        ]
        scored = [d for d in deltas() if d is not None]
        assert scored == sorted(scored)  # worst first by default
        page.click('#cmp-table th[data-sort="delta"]')  # same column again: descending
        scored = [d for d in deltas() if d is not None]
        assert scored == sorted(scored, reverse=True)
        page.click('#cmp-table th[data-sort="query"]')
        names = page.eval_on_selector_all(
            "#cmp-table tbody tr td:first-child", "tds => tds.map(t => t.textContent)"
        )
        assert names == sorted(names, key=str.lower) or names == sorted(names)

        # open a query from the table: the search view runs it with pipeline B's mode
        page.click("#cmp-table tbody tr >> text=cordless drill")
        page.wait_for_selector("#view-search:not(.hidden) #col-rerank .row")
        assert page.input_value("#q") == "cordless drill"
        assert page.input_value("#mode") == "hybrid"
        page.wait_for_function("document.querySelector('#ndcg-rerank').dataset.value !== ''")
        assert (
            json.loads(page.evaluate("JSON.stringify(app.judged)")) == judgments["cordless drill"]
        )
        if os.environ.get("RANKWISE_WORKBENCH_SCREENSHOT"):
            page.click("#tab-compare")
            page.set_viewport_size({"width": 1440, "height": 600})
            shot = Path(os.environ["RANKWISE_WORKBENCH_SCREENSHOT"])
            page.screenshot(path=str(shot.with_name(shot.stem + "-compare.png")))
