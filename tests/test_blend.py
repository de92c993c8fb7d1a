"""Signals, the event log, and the LightGBM blend stage (monotone constraints, movement cap,
per-feature contributions)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rankwise.blend import (
    BlendModel,
    BlendSpec,
    BlendStage,
    Candidate,
    build_features,
    capped_order,
)
from rankwise.errors import ConfigError, DataError
from rankwise.signals import Behaviour, event_labels, read_events


def _write(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_event_log_errors_name_line_and_field(tmp_path):
    ok = {"query": "drill", "product_id": "p1", "event": "click", "ts": 1}
    log = _write(
        tmp_path / "events.jsonl",
        [
            ok,
            {**ok, "event": "add_to_cart", "ts": "2026-12-01T10:00:00Z", "user_id": "u1"},
            {**ok, "event": "view"},
            "",
            "{not json",
            {**ok, "position": 0},
            {k: v for k, v in ok.items() if k != "product_id"},
            {**ok, "ts": "yesterday"},
            ["a", "list"],
        ],
    )
    with pytest.raises(DataError) as err:
        read_events(log)
    msg = str(err.value)
    assert "6 invalid line(s)" in msg
    assert f"{log}:3: field 'event': 'view' is not one of click, add_to_cart, purchase" in msg
    assert f"{log}:5: not JSON" in msg
    assert f"{log}:6: field 'position'" in msg
    assert f"{log}:7: field 'product_id': missing" in msg
    assert f"{log}:8: field 'ts'" in msg
    assert f"{log}:9: must be a JSON object" in msg
    assert ":1:" not in msg and ":2:" not in msg
    good = read_events(_write(tmp_path / "good.jsonl", [ok, {**ok, "product_id": 7}]))
    assert [e.product_id for e in good] == ["p1", "7"]
    with pytest.raises(DataError, match="does not exist"):
        read_events(tmp_path / "missing.jsonl")


def test_behaviour_ipw_popularity_and_cold_start_affinity(tmp_path):
    records = {"a": {"category": "tools", "brand": "x"}, "b": {"category": "garden", "brand": "y"}}
    ev = read_events(
        _write(
            tmp_path / "e.jsonl",
            [
                {"query": "Drill ", "product_id": "a", "event": "click", "ts": 1, "position": 4, "user_id": "u"},
                {"query": "drill", "product_id": "a", "event": "purchase", "ts": 2, "user_id": "u"},
                {"query": "hose", "product_id": "b", "event": "click", "ts": 3, "position": 1, "user_id": "v"},
                {"query": "hose", "product_id": "b", "event": "click", "ts": 4, "position": 1, "user_id": "v"},
            ],
        )
    )  # fmt: skip
    beh = Behaviour(ev, records, eta=1.0, prior_events=0.0)
    f = beh.features("DRILL", ["a", "b"], [records["a"], records["b"]], "u")
    assert f[0, 0] == pytest.approx(math.log1p(4.0))  # a click at rank 4 counts 1 / (1/4)
    assert f[0, 2] == pytest.approx(math.log1p(1.0)) and f[1, 0] == 0.0  # other query's clicks
    assert f[1, 3] == pytest.approx(math.log1p(2.0))  # popularity from other queries
    assert f[0, 3] == 0.0  # a's events all come from this query (they are q_* features)
    assert f[0, 4] == pytest.approx(1.0) and f[1, 4] == pytest.approx(0.0)  # u likes tools
    cold = beh.features("drill", ["a", "b"], [records["a"], records["b"]], "new-user")
    assert cold[0, 4] == pytest.approx(0.5) and cold[1, 4] == pytest.approx(0.5)  # population
    assert (
        f[:, 7].tolist() == [1.0, 1.0]
        and beh.features("new query", ["a"], [records["a"]], None)[0, 7] == 0.0
    )
    labels = event_labels(ev, eta=1.0)
    assert labels["drill"]["a"] == (3, 4.0)  # strongest event, IPW of the first click


def _synthetic(n_queries=60, per=20, seed=0):
    """Rows whose label follows rerank_logit and popularity, while *stock* is anti-correlated
    with the label: an unconstrained model learns that more stock hurts."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for _ in range(n_queries):
        logit = rng.normal(size=per)
        pop = rng.uniform(0, 10, size=per)
        rel = logit + 0.3 * pop + rng.normal(scale=0.3, size=per)
        stock = np.clip(20 - 3 * rel + rng.normal(size=per), 0, None)
        label = np.digitize(rel, np.quantile(rel, [0.5, 0.8, 0.95]))
        rank = np.argsort(np.argsort(-logit)) + 1
        X.append(np.column_stack([logit * 2, rank, logit, pop, stock]))
        y.append(label)
    return np.vstack(X).astype(np.float32), np.concatenate(y), [per] * n_queries


def _stock_curve(model, X, idx):
    grid = np.linspace(0, 40, 41)
    rows = np.repeat(X[:40], len(grid), axis=0)
    rows[:, idx] = np.tile(grid, 40)
    return model.predict(rows).reshape(40, len(grid))


def test_monotone_constraint_holds_where_the_data_says_otherwise():
    X, y, groups = _synthetic()
    free = BlendModel.fit(
        X, y, groups, BlendSpec(numeric_fields=("popularity", "stock")), num_rounds=40
    )
    spec = BlendSpec(numeric_fields=("popularity", "stock"), monotone={"stock": 1})
    tied = BlendModel.fit(X, y, groups, spec, num_rounds=40)
    idx = spec.feature_names.index("stock")
    free_curve, tied_curve = _stock_curve(free, X, idx), _stock_curve(tied, X, idx)
    assert (np.diff(free_curve, axis=1) < -1e-9).any()  # the data pulls stock down...
    assert (np.diff(tied_curve, axis=1) >= -1e-9).all()  # ...the constraint never lets it hurt
    with pytest.raises(ConfigError, match="not a blend feature"):
        BlendSpec(monotone={"margin": 1})


@pytest.mark.parametrize("max_move", [0, 1, 3])
def test_capped_order_never_moves_a_product_further_than_the_cap(max_move):
    rng = np.random.default_rng(max_move)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        base, blend = rng.normal(size=n), rng.normal(size=n)
        order = capped_order(base, blend, max_move)
        assert sorted(order) == list(range(n))
        base_place = {i: p for p, i in enumerate(sorted(range(n), key=lambda i: (-base[i], i)))}
        assert all(abs(p - base_place[i]) <= max_move for p, i in enumerate(order))
    # no cap: pure blend order; cap 0: the base order
    base, blend = np.array([3.0, 2.0, 1.0]), np.array([0.0, 1.0, 2.0])
    assert capped_order(base, blend, None) == [2, 1, 0]
    assert capped_order(base, blend, 0) == [0, 1, 2]
    assert capped_order(base, blend, 1) == [1, 0, 2]


def test_stage_explains_with_contributions_that_sum_to_the_score(tmp_path):
    from rankwise.search import SearchResult

    X, y, groups = _synthetic(seed=1)
    spec = BlendSpec(numeric_fields=("popularity", "stock"), monotone={"stock": 1}, max_move=2)
    model = BlendModel.fit(X, y, groups, spec, num_rounds=30)
    stage = BlendStage(BlendModel.load(model.save(tmp_path / "blend")))
    assert stage.version == model.version
    rng = np.random.default_rng(5)
    results = [
        SearchResult(
            id=f"p{i}", rank=i + 1, recall_score=float(10 - i), recall_rank=i + 1,
            rerank_score=float(-i * 0.1), record={"popularity": float(rng.uniform(0, 10)), "stock": 3},
        )
        for i in range(12)
    ]  # fmt: skip
    out = stage.apply("q", results, explain=True)
    assert [r.rank for r in out] == list(range(1, 13))
    assert sorted(r.id for r in out) == sorted(r.id for r in results)
    for r in out:
        e = r.explain
        assert abs(r.rank - e["base_rank"]) <= 2  # the movement cap
        total = sum(e["contributions"].values()) + e["bias"]
        assert total == pytest.approx(r.blend_score, abs=1e-6)
        assert set(e["contributions"]) == set(spec.feature_names)
        assert e["features"]["stock"] == 3.0
    cands = [Candidate("x", {"stock": None}, 1.0, 1)]
    assert np.isnan(build_features(spec, "q", cands)[0, 2:]).all()  # missing → NaN
    with pytest.raises(ConfigError, match="not a blend folder"):
        BlendModel.load(tmp_path)


def test_cold_copies_teach_the_blend_queries_the_log_has_not_seen(tmp_path):
    from rankwise.signals import QUERY_FEATURES
    from rankwise.tune.blend import QueryCandidates, matrices

    log = _write(
        tmp_path / "e.jsonl", [{"query": "drill", "product_id": "a", "event": "click", "ts": 1}]
    )
    beh = Behaviour(read_events(log))
    spec = BlendSpec(behaviour=True, events=str(log))
    g = QueryCandidates("q1", "drill", [Candidate("a", {}, 2.0, 1), Candidate("b", {}, 1.0, 2)])
    X, y, sizes, _ = matrices(spec, [g], {"q1": {"a": 1}}, beh, cold_copies=True)
    assert sizes == [2, 2] and y.tolist() == [1, 0, 1, 0]
    cols = [spec.feature_names.index(n) for n in QUERY_FEATURES]
    assert X[0, cols].any() and not X[2:, cols].any()  # the copy looks like a new query
    assert np.array_equal(X[2:, :3], X[:2, :3], equal_nan=True)  # stage scores unchanged
