"""Blend stage vs the unblended pipeline on Home Depot, with SIMULATED clicks.

No real click log is available here, so clicks are simulated from the judged Home Depot data
with a position-based click model (PBM, Craswell et al. 2008 / Joachims et al. 2017):

* each session shows a query's unblended Top-10 (BM25 over titles; no cross-encoder is
  available offline, so the pipeline's stage score is BM25's);
* the product at rank r is examined with probability ``(1/r)^ETA`` (ETA = 1.0);
* an examined product is clicked with its attractiveness by judged grade: unjudged 0.05,
  grade 0 0.10, grade 1 0.40, grade 2 0.80; a click becomes an add-to-cart with probability
  0.15 x grade and a cart a purchase with 0.5;
* SESSIONS sessions per query, the first half "past" (behaviour features), the second half
  "future" (training labels, train queries only). Users are drawn uniformly from 200 ids, so
  the personal-affinity features carry no signal here by construction.

The blend (LightGBM lambdarank, :mod:`rankwise.blend`) trains on train-query logs (labels:
future events, IPW-weighted by ``1/P(examined)``) and is evaluated by nDCG@10 on **test
queries' judgments** (the judgments, not clicks, are the truth). Rows:

* ``base``: the unblended pipeline (BM25 order);
* ``blend IPW`` / ``blend no-IPW``: with / without inverse propensity weighting;
* ``blend no-cap``: IPW, no movement cap;
* ``control: no-signal clicks``: clicks drawn with one attractiveness (0.3) whatever the
  grade; the blend must not beat the base;
* ``cold test queries``: test queries have no log of their own (product-level counts from
  the train queries' logs only).

A random ``stock`` field (no signal) is a monotone (+1) feature throughout.

    PYTHONPATH=src python benchmarks/behaviour.py --train-queries 3000 --test-queries 1500
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rankwise.blend import BlendSpec, Candidate
from rankwise.data import load_beir
from rankwise.evaluate.significance import randomization_test
from rankwise.lexical import LexicalIndex
from rankwise.signals import Behaviour, read_events
from rankwise.tune.blend import QueryCandidates, evaluate_orders, labels_from_events, train_blend

DATA = Path("/work/shared/data/homedepot")
OUT = Path(__file__).parent / "results"
ETA = 1.0
ATTRACT = {None: 0.05, 0: 0.10, 1: 0.40, 2: 0.80}
SESSIONS = 20
SHOWN = 10
TOP_K = 50


def candidates(index, corpus, queries, qids, rng) -> list[QueryCandidates]:
    out = []
    for q in qids:
        hits = index.search(queries[q], TOP_K)
        cands = [
            Candidate(pid, {"stock": float(rng.integers(0, 100)), "title": corpus[pid]["title"]},
                      score, rank)
            for rank, (pid, score) in enumerate(hits, 1)
        ]  # fmt: skip
        out.append(QueryCandidates(q, queries[q], cands))
    return out


def simulate(groups, qrels, rng, signal: bool) -> list[dict]:
    """PBM sessions over each query's shown Top-10 (see the module docstring)."""
    events = []
    for g in groups:
        judged = qrels.get(g.qid, {})
        shown = g.candidates[:SHOWN]
        attract = np.array(
            [ATTRACT[judged.get(c.id)] if signal else 0.3 for c in shown], dtype=np.float64
        )
        grades = np.array([judged.get(c.id, 0) if signal else 1 for c in shown])
        examine = (1.0 / np.arange(1, len(shown) + 1)) ** ETA
        for s in range(SESSIONS):
            user = f"u{rng.integers(0, 200)}"
            clicks = rng.random(len(shown)) < examine * attract
            for r in np.flatnonzero(clicks):
                base = {"query": g.query, "product_id": shown[r].id, "ts": s,
                        "position": int(r + 1), "user_id": user}  # fmt: skip
                events.append({**base, "event": "click"})
                if rng.random() < 0.15 * grades[r]:
                    events.append({**base, "event": "add_to_cart"})
                    if rng.random() < 0.5:
                        events.append({**base, "event": "purchase"})
    return events


def run_variant(name, train, test, qrels_test, events_path, *, eta, max_move, cold_test=False):
    events = read_events(events_path)  # the real validated JSONL path
    half = SESSIONS / 2
    test_texts = {g.query.lower() for g in test}
    past = [e for e in events if e.ts < half]
    future = [e for e in events if e.ts >= half]
    if cold_test:  # test queries have no log of their own
        past = [e for e in past if e.query.lower() not in test_texts]
    records = {c.id: c.record for g in train + test for c in g.candidates}
    behaviour = Behaviour(past, records, eta=eta)
    labels, weights = labels_from_events(future, train, eta)
    spec = BlendSpec(
        numeric_fields=("stock",), behaviour=True, events=str(events_path), eta=eta,
        monotone={"stock": 1, "recall_score": 1}, max_move=max_move,
    )  # fmt: skip
    t = time.perf_counter()
    model, report = train_blend(
        train, labels, spec, behaviour=behaviour, weights=weights if eta else None,
        dev_fraction=0.0, num_rounds=200,
    )  # fmt: skip
    fit_s = time.perf_counter() - t
    res = evaluate_orders(model, test, qrels_test, behaviour)
    base, blend = res["base"], res["blend"]
    return {
        "name": name,
        "test_queries": int(len(base)),
        "ndcg@10_base": float(base.mean()),
        "ndcg@10_blend": float(blend.mean()),
        "delta": float((blend - base).mean()),
        "p_value": randomization_test(blend, base),
        "wins": int((blend > base + 1e-12).sum()),
        "losses": int((blend < base - 1e-12).sum()),
        "train_rows": report["train_rows"],
        "fit_s": round(fit_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-queries", type=int, default=3000)
    ap.add_argument("--test-queries", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    tr, te = load_beir(DATA, "train"), load_beir(DATA, "test")
    corpus = tr.corpus
    ids = list(corpus)
    index = LexicalIndex.build(ids, [corpus[i]["title"] for i in ids])

    def pick(ds, n):
        qids = sorted(q for q, rel in ds.qrels.items() if any(g > 0 for g in rel.values()))
        return list(rng.permutation(qids)[:n])

    train = candidates(index, corpus, tr.queries, pick(tr, args.train_queries), rng)
    test = candidates(index, corpus, te.queries, pick(te, args.test_queries), rng)
    qrels = {**tr.qrels, **te.qrels}
    work = Path("/tmp/rankwise-behaviour")
    work.mkdir(exist_ok=True)
    logs = {}
    for signal in (True, False):
        ev = simulate(train + test, qrels, rng, signal)
        path = work / f"events-{'signal' if signal else 'nosignal'}.jsonl"
        path.write_text("\n".join(json.dumps(e) for e in ev) + "\n")
        logs[signal] = (path, len(ev))
    rows = [
        run_variant("blend IPW (cap 3)", train, test, te.qrels, logs[True][0], eta=ETA, max_move=3),
        run_variant("blend no-IPW (cap 3)", train, test, te.qrels, logs[True][0], eta=None, max_move=3),
        run_variant("blend IPW (no cap)", train, test, te.qrels, logs[True][0], eta=ETA, max_move=None),
        run_variant("control: no-signal clicks (IPW, cap 3)", train, test, te.qrels,
                    logs[False][0], eta=ETA, max_move=3),
        run_variant("cold test queries (IPW, cap 3)", train, test, te.qrels, logs[True][0],
                    eta=ETA, max_move=3, cold_test=True),
    ]  # fmt: skip
    result = {
        "benchmark": "behaviour",
        "clicks": "SIMULATED (position-based click model from Home Depot judgments)",
        "click_model": {
            "examination": f"(1/rank)^{ETA}",
            "attractiveness": {str(k): v for k, v in ATTRACT.items()},
            "sessions_per_query": SESSIONS,
            "shown": SHOWN,
            "cart": "0.15 x grade per click",
            "purchase": "0.5 per cart",
            "no_signal_attractiveness": 0.3,
        },  # fmt: skip
        "pipeline": f"BM25 (rankwise.lexical) over titles, Top-{TOP_K}; no cross-encoder",
        "train_queries": len(train),
        "test_queries_sampled": len(test),
        "events": {"signal": logs[True][1], "no_signal": logs[False][1]},
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "behaviour.json").write_text(json.dumps(result, indent=2))
    md = [
        "# Blend stage with SIMULATED clicks (Home Depot)",
        "",
        "**The clicks are simulated**, from the judged Home Depot data with a position-based",
        f"click model: examination (1/rank)^{ETA}, attractiveness by grade {ATTRACT} (None = unjudged),",
        f"{SESSIONS} sessions per query over the unblended Top-{SHOWN}; first half of the sessions →",
        "features, second half → training labels (train queries only). Truth on test queries: the",
        f"judgments. Pipeline: {result['pipeline']}. {len(train)} train / {len(test)} test queries.",
        "",
        "| variant | test queries | nDCG@10 base | nDCG@10 blend | Δ | p | wins/losses |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['name']} | {r['test_queries']} | {r['ndcg@10_base']:.4f} | "
            f"{r['ndcg@10_blend']:.4f} | {r['delta']:+.4f} | {r['p_value']:.3g} | "
            f"{r['wins']}/{r['losses']} |"
        )
    md += ["", f"Command: `PYTHONPATH=src python benchmarks/behaviour.py --train-queries "
           f"{args.train_queries} --test-queries {args.test_queries}`; {result['seconds']} s."]  # fmt: skip
    (OUT / "behaviour.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
