"""The served blend follows its event log: appended events without a restart, a half-written
last line never served, bad appended lines skipped with line and field, a replaced file read
again. Unit checks on :class:`FollowedLog` and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import httpx
import numpy as np
import pytest
from server_helpers import PRODUCTS, running_server, settings

from rankwise.blend import BlendModel, BlendSpec, spec_behaviour
from rankwise.cache import MemoryCache
from rankwise.catalog import Catalog
from rankwise.errors import DataError
from rankwise.event_log import FollowedLog
from rankwise.search import Searcher
from rankwise.server import Components

RECORDS = {p["id"]: {**p, "category": p["brand"]} for p in PRODUCTS}


def _line(pid, event="click", user="u1", query="shoes", ts=1):
    return json.dumps(
        {"query": query, "product_id": pid, "event": event, "ts": ts, "user_id": user}
    )


def _append(path, text):
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def _follow(path, check_s=0.0):
    spec = BlendSpec(behaviour=True, events=str(path))
    looked_up: list[list[str]] = []

    def lookup(ids):
        looked_up.append(ids)
        return {i: RECORDS[i] for i in ids if i in RECORDS}

    log = FollowedLog(path, lambda ev: spec_behaviour(spec, ev, RECORDS), lookup, check_s=check_s)
    return log, looked_up


def _clicks(log, pid, query="shoes"):
    return float(log.features(query, [pid], [RECORDS[pid]], None)[0, 0])


def test_appended_events_are_counted_incrementally(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(_line("p3") + "\n")
    log, looked_up = _follow(path)
    assert _clicks(log, "p3") == pytest.approx(np.log1p(1)) and _clicks(log, "p4") == 0.0
    before = log.state
    assert log.refresh() is False and log.state == before  # nothing appended
    _append(path, _line("p3", ts=2) + "\n" + _line("p4", ts=3) + "\n")
    assert log.refresh() is True and log.state != before
    assert _clicks(log, "p3") == pytest.approx(np.log1p(2))
    assert _clicks(log, "p4") == pytest.approx(np.log1p(1))
    assert looked_up == [["p4"]]  # only the product first seen in the appended lines
    assert log.behaviour.n_events == 3


def test_a_half_written_last_line_waits_until_it_is_complete(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(_line("p3") + "\n")
    log, _ = _follow(path)
    whole = _line("p4", event="purchase", ts=2)
    _append(path, whole[:25])  # a writer mid-line
    assert log.refresh() is False and _clicks(log, "p4") == 0.0 and log.skipped == 0
    _append(path, whole[25:])  # complete JSON, newline still to come: a whole event
    assert log.refresh() is True
    buys = log.features("shoes", ["p4"], [RECORDS["p4"]], None)[0, 2]
    assert buys == pytest.approx(np.log1p(1))
    _append(path, "\n" + _line("p4", ts=3)[:10])  # its newline, then the next line begins
    assert log.refresh() is False and log.behaviour.n_events == 2
    _append(path, _line("p4", ts=3)[10:] + "\n")
    assert log.refresh() is True and log.behaviour.n_events == 3 and log.skipped == 0
    # at load too: a log whose last line is mid-write starts without it, and no error
    _append(path, _line("p5")[:12])
    fresh, _ = _follow(path)
    assert fresh.behaviour.n_events == 3 and fresh.skipped == 0


def test_bad_appended_lines_are_skipped_with_line_and_field(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    path.write_text(_line("p3") + "\n" + _line("p3", ts=2) + "\n")
    log, _ = _follow(path)
    bad = json.dumps({"query": "shoes", "product_id": "p4", "event": "view", "ts": 3})
    with caplog.at_level(logging.ERROR, logger="rankwise.blend"):
        _append(path, bad + "\n{oops\n" + _line("p4", ts=4) + "\n")
        assert log.refresh() is True
    assert log.skipped == 2 and log.behaviour.n_events == 3  # the good line still counts
    assert f"{path}:3: field 'event': 'view' is not one of" in caplog.text
    assert f"{path}:4: not JSON" in caplog.text
    # at load the same lines are an error, as in read_events
    with pytest.raises(DataError, match=r"events.jsonl:3: field 'event'"):
        _follow(path)


def test_a_replaced_or_truncated_log_is_read_again(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(_line("p3") + "\n" + _line("p3", ts=2) + "\n")
    log, _ = _follow(path)
    fresh = tmp_path / "rotated.jsonl"
    fresh.write_text(_line("p4") + "\n")
    os.replace(fresh, path)  # log rotation: another file under the same name
    assert log.refresh(wait=True) is True
    assert _clicks(log, "p3") == 0.0 and _clicks(log, "p4") == pytest.approx(np.log1p(1))
    path.write_text("")  # truncated
    assert log.refresh(wait=True) is True and log.behaviour.n_events == 0
    path.unlink()  # gone for a moment: the features stay as they were, no error
    assert log.refresh() is False and log.behaviour.n_events == 0
    # while serving, a replaced file is read in the background: the old features meanwhile
    path.write_text("")
    assert log.refresh(wait=True) is False  # back, still empty
    fresh.write_text(_line("p5") + "\n" + _line("p5", ts=2) + "\n")
    os.replace(fresh, path)  # both files existed at once: another inode for sure
    # hold the background reader at its start, so that "meanwhile" is a moment the test owns
    # (unheld, a fast reader finished before the check and the assertion raced it)
    go, load = threading.Event(), log._load
    log._load = lambda **kw: (go.wait(10), load(**kw))[1]
    assert log.refresh() is False and log.behaviour.n_events == 0
    assert log.refresh(force=True) is False  # the reader is busy: searches use what there is
    go.set()
    for _ in range(200):
        if log.behaviour.n_events == 2:
            break
        time.sleep(0.05)
    assert log.behaviour.n_events == 2 and _clicks(log, "p5") == pytest.approx(np.log1p(2))


def test_checks_are_rate_limited(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(_line("p3") + "\n")
    log, _ = _follow(path, check_s=3600)
    _append(path, _line("p4") + "\n")
    assert log.refresh() is False and _clicks(log, "p4") == 0.0  # checked less often
    assert log.refresh(force=True) is True and _clicks(log, "p4") > 0
    never, _ = _follow(path, check_s=None)
    _append(path, _line("p5") + "\n")
    assert never.refresh() is False and never.behaviour.n_events == 2


# ----------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def served(tiny_embedder_dir, tiny_reranker_dir, tmp_path_factory):
    from rankwise.models import Embedder, Reranker

    tmp = tmp_path_factory.mktemp("blend-follow")
    embedder, reranker = Embedder(str(tiny_embedder_dir)), Reranker(str(tiny_reranker_dir))
    catalog = Catalog.open(str(tmp / "index"), embedder)
    catalog.add([{**p, "category": p["brand"]} for p in PRODUCTS])
    events = tmp / "events.jsonl"
    events.write_text(_line("p1", user="u0", query="phone") + "\n")
    spec = BlendSpec(behaviour=True, events=str(events), max_move=None)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(spec.feature_names))).astype(np.float32)
    y = (X[:, 2] + X[:, 7] > 0).astype(int)
    folder = BlendModel.fit(X, y, [20] * 20, spec, num_rounds=10).save(tmp / "blend")
    searcher = Searcher(catalog, reranker, top_k=8, top_n=8, mode="hybrid")
    # the blend comes from the settings, as `rankwise serve --blend DIR` loads it
    s = settings(blend=str(folder), blend_reload_s=0.001)  # every search, near enough
    with running_server(s, Components(searcher=searcher, cache=MemoryCache())) as srv:
        yield srv, events


def test_served_blend_picks_up_appended_events_without_a_restart(served):
    srv, events = served
    body = {"query": "running shoes", "user_id": "u1"}

    def features():
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post("/v1/search", params={"explain": "true"}, json=body)
        assert r.status_code == 200, r.text
        return {x["id"]: x["explain"]["features"] for x in r.json()["results"]}

    before = features()
    assert before["p3"]["q_clicks"] == 0.0 and before["p3"]["user_events"] == 0.0
    _append(events, _line("p3", query="Running Shoes", ts=2) + "\n")
    _append(events, _line("p3", event="purchase", query="running shoes", ts=3) + "\n")
    _append(events, _line("p6", query="running shoes", ts=4)[:30])  # still being written
    after = features()  # same request: the cache must not answer with the old features
    assert after["p3"]["q_clicks"] == pytest.approx(np.log1p(1))
    assert after["p3"]["q_purchases"] == pytest.approx(np.log1p(1))
    assert after["p3"]["user_events"] == pytest.approx(np.log1p(2))  # the half line not yet
    assert after["p3"]["user_category_affinity"] > before["p3"]["user_category_affinity"]
    assert after["p6"]["q_clicks"] == 0.0
