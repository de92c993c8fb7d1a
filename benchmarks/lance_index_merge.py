"""Recall of a LanceDB IVF_HNSW_SQ index when rows arrive after it was built.

Builds the index over 800k of the store_scale vectors, adds 200k more, then measures
recall@10 against exact search: with the new rows unindexed (flat-scanned), after
`optimize_indices()` (LanceDB's incremental merge), and after compaction. This is why the
embedded store rebuilds instead of merging. Prints one JSON line per state and writes
benchmarks/results/lance_index_merge.json.

    .venv/bin/python benchmarks/lance_index_merge.py
"""

import json
import shutil
import sys
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import IvfHnswSq

sys.path.insert(0, str(Path(__file__).parent))
import store_scale as ss  # noqa: E402

RESULTS: list[dict] = []
N0, N = 800_000, 1_000_000
c = ss._centres()
path = "/tmp/rankwise-lance-index-merge"
shutil.rmtree(path, ignore_errors=True)
db = lancedb.connect(path)
tbl = None


def batch(b):
    recs, x, cat = ss.make_batch(b, ss.BATCH, c)
    return pa.table(
        {
            "id": [r["id"] for r in recs],
            "cat": cat.astype(np.int64),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 384),
        }
    )


for b in range(N0 // ss.BATCH):
    tbl = db.create_table("t", batch(b)) if tbl is None else tbl
    if b:
        tbl.add(batch(b))
t = time.perf_counter()
tbl.create_index(
    "vector", config=IvfHnswSq(distance_type="cosine", num_partitions=24, m=16, ef_construction=100)
)
print("build at 800k", round(time.perf_counter() - t, 1), flush=True)
for b in range(N0 // ss.BATCH, N // ss.BATCH):
    tbl.add(batch(b))
q = ss._queries(100, c)
exact = ss.exact_top10(N, q, c)["none"]


def measure(name):
    got, lat = [], []
    for v in q:
        t = time.perf_counter()
        r = (
            tbl.search(v)
            .distance_type("cosine")
            .limit(10)
            .nprobes(20)
            .ef(800)
            .refine_factor(5)
            .select(["id"])
            .to_arrow()
        )
        lat.append(time.perf_counter() - t)
        got.append(set(r.column("id").to_pylist()))
    RESULTS.append(
        {
            "state": name,
            "recall": round(
                float(np.mean([len(a & b) / 10 for a, b in zip(exact, got, strict=True)])), 3
            ),
            "p50_ms": round(1000 * float(np.median(lat)), 1),
            "unindexed": tbl.index_stats("vector_idx").num_unindexed_rows
            if tbl.index_stats("vector_idx")
            else None,
        }
    )
    print(json.dumps(RESULTS[-1]), flush=True)


print(tbl.list_indices(), flush=True)
measure("200k rows unindexed")
t = time.perf_counter()
tbl.to_lance().optimize.optimize_indices()
tbl.checkout_latest()
print("optimize_indices", round(time.perf_counter() - t, 1), flush=True)
measure("after optimize_indices (delta)")
t = time.perf_counter()
tbl.optimize()
print("table.optimize", round(time.perf_counter() - t, 1), flush=True)
measure("after table.optimize (compaction)")
(Path(__file__).parent / "results" / "lance_index_merge.json").write_text(
    json.dumps({"n_indexed": N0, "n": N, "states": RESULTS}, indent=2)
)
