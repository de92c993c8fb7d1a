"""Where the fp32 rerank time goes: ONNX Runtime per-operator profile against the matmul peak.

    .venv/bin/python benchmarks/fp32_ceiling.py [--model DIR] [--queries 10] [--threads 2]

Runs rankwise's ONNX fp32 cross-encoder (the one benchmarks/rerank_speed.py trains) on
rerank_speed's Top-50 workload with ORT profiling on, sums kernel time per operator type,
and puts it beside the FLOPs each type does (dense matmuls in MatMul, QKV projection + the
attention core in Attention; LayerNorm, GELU and embeddings do no matmul FLOPs). The torch
sgemm 2048^3 rate is sampled before and after (median of 8). It answers: how close to the
peak do the matmul kernels run, and what is the best fraction of the peak reachable if they
ran *at* the peak while the rest took the time it takes now.

Writes benchmarks/results/fp32_ceiling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_speed as rs  # noqa: E402
import speed_common as sc  # noqa: E402


def sgemm_gflops(threads: int, reps: int = 8) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * 2048**3 / (time.perf_counter() - t) / 1e9)
    return float(np.median(rates))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=sc.TRAINED_CE)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=sc.OUT / "fp32_ceiling")
    args = ap.parse_args()
    sc.require_model(args.model)
    import onnxruntime as ort

    import rankwise.models.onnx as rw_onnx
    from rankwise.models import Reranker

    os.environ["RANKWISE_ONNX_THREADS"] = str(args.threads)
    sc.set_threads(args.threads)
    cfg = json.loads((args.model / "config.json").read_text())
    data = rs.build_workload(args.queries, 50, 0, args.model)["speed"]
    rr = Reranker(str(args.model), backend="onnx", max_length=512, score_cache_size=0)
    rr.score(data[0]["query"], data[0]["docs"][:4])  # warm-up (unprofiled session)
    peak_before = sgemm_gflops(args.threads)

    # FLOPs per operator type, from the padded batches rankwise actually runs
    flops = {"MatMul": 0.0, "Attention": 0.0}

    class Counting:  # wraps the profiled session: counts what each batch computes, then runs it
        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            b, n = feed["input_ids"].shape
            for op, f in sc.encoder_flops_by_op(n, cfg).items():
                flops[op] += b * f
            return self.session.run(names, feed)

    with tempfile.TemporaryDirectory() as tmp:
        so = rw_onnx.session_options(args.threads)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        prof = ort.InferenceSession(str(rr.runner.path), so, providers=["CPUExecutionProvider"])
        rr.runner.session = Counting(prof)
        t = time.perf_counter()
        for item in data:
            rr.score(item["query"], item["docs"])
        wall = time.perf_counter() - t
        events = json.loads(Path(prof.end_profiling()).read_text())
    peak_after = sgemm_gflops(args.threads)
    peak = float(np.median([peak_before, peak_after]))
    kernel: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            kernel[op] = kernel.get(op, 0.0) + e["dur"] / 1e6
    total = sum(kernel.values())
    ops = {
        op: {
            "seconds": s,
            "share": s / total,
            "gflops": flops[op] / s / 1e9 if op in flops else None,
            "pct_of_peak": 100 * flops[op] / s / 1e9 / peak if op in flops else None,
        }
        for op, s in sorted(kernel.items(), key=lambda x: -x[1])
    }
    matmul_flops = sum(flops.values())
    other = total - sum(kernel.get(op, 0.0) for op in flops)
    tok = sc.tokenizer(args.model)
    useful = sum(
        sc.encoder_flops(min(len(e.ids), 512), cfg)
        for item in data
        for e in tok.encode_batch([(item["query"], d) for d in item["docs"]])
    )
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": sc.machine_info(args.threads),
        "model": str(args.model.relative_to(sc.ROOT)),
        "pairs": sum(len(i["docs"]) for i in data),
        "sgemm_peak_gflops": {"before": peak_before, "after": peak_after, "median": peak},
        "wall_s": wall,
        "kernel_s": total,
        "useful_gflops_wall": useful / wall / 1e9,
        "pct_of_peak_wall": 100 * useful / wall / 1e9 / peak,
        "padding_share_of_matmul_flops": 1 - useful / matmul_flops,
        "ops": ops,
        "non_matmul_share": other / total,
        "ceiling_pct_if_matmuls_at_peak": 100
        * (useful / 1e9)
        / (matmul_flops / 1e9 / peak + other * wall / total)
        / peak,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    md = [
        "# fp32 rerank: where the time goes (ONNX Runtime profile)",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: {result['model']}, {result['pairs']} pairs of rerank_speed's Top-50 workload, "
        f"{args.threads} threads.  ",
        f"torch sgemm 2048^3: {peak_before:.0f} GFLOP/s before, {peak_after:.0f} after (median of 8 each).  ",
        f"Whole run: {result['useful_gflops_wall']:.0f} useful GFLOP/s = {result['pct_of_peak_wall']:.0f}% of the peak "
        f"(padding adds {100 * result['padding_share_of_matmul_flops']:.1f}% FLOPs).",
        "",
        "| operator | share of kernel time | GFLOP/s | % of sgemm peak |",
        "|---|---|---|---|",
        *[
            f"| {op} | {100 * r['share']:.1f}% | "
            + (f"{r['gflops']:.0f} | {r['pct_of_peak']:.0f}% |" if r["gflops"] else "- | - |")
            for op, r in ops.items()
        ],
        "",
        f"Operators without matmul FLOPs take {100 * result['non_matmul_share']:.0f}% of the kernel time. "
        f"Were every matmul at the sgemm peak, the run would reach {result['ceiling_pct_if_matmuls_at_peak']:.0f}% of it.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
