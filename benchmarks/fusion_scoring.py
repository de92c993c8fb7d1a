"""Speed of fusion calibration's recipe scoring: the vectorised RecipeScorer against the dict
path it replaced (``fuse()`` then ``compute_metrics`` per recipe), in the same run, on
synthetic lists (1,000 queries x 200 dense + 200 lexical hits, 3 relevant documents each, the
default grid of 122 recipes). The lists are synthetic because only the arithmetic is timed;
both paths are checked to give the same scores.

    python benchmarks/fusion_scoring.py [--queries 1000] [--reference-recipes 12]

Writes benchmarks/results/fusion_scoring.{json,md}. The dict path is timed on the first
``--reference-recipes`` recipes and extrapolated to the grid (it is ~linear in recipes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from rankwise.evaluate.metrics import compute_metrics
from rankwise.search import fuse
from rankwise.store import Hit
from rankwise.tune.fusion import FusionConfig
from rankwise.tune.recipe_scores import RecipeScorer

OUT = Path(__file__).parent / "results"


def dict_path(recipe, lists, qrels, top_k):
    run = {}
    for q, (dense, lexical) in lists.items():
        depth = recipe.depth or top_k
        parts = {"dense": [dense], "lexical": [lexical], "hybrid": [dense[:depth], lexical[:depth]]}
        hits = fuse(parts[recipe.mode], recipe)[:top_k]
        run[q] = {h.id: float(len(hits) - r) for r, h in enumerate(hits)}
    m = compute_metrics(run, qrels, ks=(10,), metrics=("ndcg",), no_relevant="zero")
    return m.values["ndcg@10"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--reference-recipes", type=int, default=12)
    args = ap.parse_args()
    rng = random.Random(1)
    docs = [f"d{i}" for i in range(5000)]
    lists, qrels = {}, {}
    for q in range(args.queries):
        d, lx = rng.sample(docs, 200), rng.sample(docs, 200)
        lists[f"q{q}"] = (
            [Hit(x, 1 - i / 300, {}) for i, x in enumerate(d)],
            [Hit(x, 20 - i / 20, {}) for i, x in enumerate(lx)],
        )
        qrels[f"q{q}"] = {x: 1 for x in rng.sample(d[:50] + lx[:50], 3)}
    cfg = FusionConfig()
    recipes = cfg.candidates()
    t = time.perf_counter()
    scorer = RecipeScorer(lists, qrels, top_k=cfg.top_k)
    vec = [scorer.score(r) for r in recipes]
    vec_s = time.perf_counter() - t
    ref_n = min(args.reference_recipes, len(recipes))
    t = time.perf_counter()
    ref = [dict_path(r, lists, qrels, cfg.top_k) for r in recipes[:ref_n]]
    ref_s = (time.perf_counter() - t) / ref_n * len(recipes)
    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(vec, ref, strict=False))
    result = {
        "queries": args.queries,
        "recipes": len(recipes),
        "vectorised_seconds": round(vec_s, 2),
        "dict_path_seconds_extrapolated": round(ref_s, 2),
        "dict_path_recipes_timed": ref_n,
        "speedup": round(ref_s / vec_s, 2),
        "max_abs_difference": max_diff,
        "load_average": os.getloadavg(),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "fusion_scoring.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "fusion_scoring.md").write_text(
        "# Fusion calibration: recipe scoring speed\n\n"
        f"{args.queries} synthetic queries x {len(recipes)} recipes (200 + 200 hits per query); "
        f"load average {result['load_average'][0]:.1f}.\n\n"
        "| path | seconds | x dict path |\n|---|---|---|\n"
        f"| dict path (fuse + compute_metrics; {ref_n} recipes timed, extrapolated) "
        f"| {ref_s:.1f} | 1.00 |\n"
        f"| RecipeScorer (vectorised, build included) | {vec_s:.1f} | {ref_s / vec_s:.2f} |\n\n"
        f"Largest per-query difference between the paths: {max_diff:.2e}.\n"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
