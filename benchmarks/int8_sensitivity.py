"""Which matmuls of a cross-encoder can be int8 without changing its rankings?

    .venv/bin/python benchmarks/int8_sensitivity.py [--model DIR] [--queries 30] [--skip 20]

The evidence behind ``rankwise.models.onnx.INT8_FP32_FFN_LAYERS``. On the MiniLM cross-encoder
that benchmarks/rerank_speed.py trains (cached in benchmarks/.cache), for Home Depot *test*
queries that rerank_speed does not time (the first ``--skip`` of its shuffled list are its own),
each with a Top-50 of judged + random products (title + pseudo description):

1. sensitivity: quantise ONE matmul node (dynamic, per-channel int8), keep the rest fp32, and
   measure per-query Spearman against torch fp32; mean(1 - rho) per node;
2. mixed-precision variants: every node int8, and every node but the feed-forward of the first
   k layers; per-query Spearman mean / min and CPU-time pairs/s (2 threads, one process, run
   in turn: the speed column is indicative, rerank_speed.py is the speed benchmark).

Writes benchmarks/results/int8_sensitivity.{json,md}.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=sc.TRAINED_CE)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--skip", type=int, default=20, help="rerank_speed's own timed queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=sc.OUT / "int8_sensitivity")
    args = ap.parse_args()
    sc.require_model(args.model)

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from scipy.stats import spearmanr
    from tqdm import tqdm

    import rankwise.models.onnx as rw_onnx
    from rankwise.models import Reranker

    sc.set_threads(args.threads)
    data = rs.build_workload(args.skip + args.queries, 50, 0, args.model)["speed"][args.skip :]
    n_pairs = sum(len(i["docs"]) for i in data)
    ref = Reranker(str(args.model), backend="torch", max_length=512)
    refs = [ref.score(i["query"], i["docs"]) for i in tqdm(data, desc="torch fp32 reference")]
    os.environ["RANKWISE_ONNX_THREADS"] = str(args.threads)
    # no score cache: the same pairs are scored again by each quantised session
    rr = Reranker(str(args.model), backend="onnx", max_length=512, score_cache_size=0)
    fp32 = Path(rr.runner.path)
    graph = onnx.load(str(fp32)).graph
    nodes = [n.name for n in graph.node if n.op_type in ("MatMul", "Attention")]

    def measure(path: Path) -> dict:
        rr.runner.session = ort.InferenceSession(
            str(path), rw_onnx.session_options(args.threads), providers=["CPUExecutionProvider"]
        )
        c, rhos = time.process_time(), []
        for item, r in zip(data, refs, strict=True):
            rhos.append(float(spearmanr(r, rr.score(item["query"], item["docs"])).statistic))
        cpu = time.process_time() - c
        return {
            "spearman_mean": float(np.mean(rhos)),
            "spearman_min": float(np.min(rhos)),
            "one_minus_rho_mean": float(np.mean(1 - np.array(rhos))),
            "pairs_per_s_cpu": n_pairs / (cpu / args.threads),
        }

    def quantised(tmp: Path, name: str, **kw) -> Path:
        out = tmp / f"{name}.onnx"
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
            **kw,
        )
        return out

    with tempfile.TemporaryDirectory() as tmp:
        sensitivity = {
            node: measure(quantised(Path(tmp), f"node{k}", nodes_to_quantize=[node]))
            for k, node in enumerate(tqdm(nodes, desc="one node int8"))
        }
        variants = {"fp32": measure(fp32)}
        for k in tqdm([0, 1, 2, 3], desc="first-k-layers FFN fp32"):
            keep = rw_onnx.fp32_ffn_nodes(graph, k)
            variants[f"ffn of layers <{k} fp32"] = measure(
                quantised(Path(tmp), f"keep{k}", nodes_to_exclude=keep)
            ) | {"fp32_nodes": keep}

    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": str(args.model.relative_to(sc.ROOT)),
        "queries": args.queries,
        "pairs": n_pairs,
        "sensitivity": sensitivity,
        "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# int8 sensitivity (which matmuls may be int8)",
        "",
        f"Command: `{result['command']}`  ",
        f"Model: {result['model']}; {args.queries} Home Depot test queries x Top-50 ({n_pairs} pairs) "
        "not timed by rerank_speed; Spearman per query against torch fp32.",
        "",
        "## One node int8, the rest fp32",
        "",
        "| node | mean(1 - rho) | min rho |",
        "|---|---|---|",
        *[
            f"| `{n}` | {r['one_minus_rho_mean']:.5f} | {r['spearman_min']:.4f} |"
            for n, r in sensitivity.items()
        ],
        "",
        "## Mixed precision",
        "",
        "| variant | Spearman mean | Spearman min | pairs/s (CPU-time, indicative) |",
        "|---|---|---|---|",
        *[
            f"| {v} | {r['spearman_mean']:.4f} | {r['spearman_min']:.4f} | {r['pairs_per_s_cpu']:.1f} |"
            for v, r in variants.items()
        ],
        "",
        '`ffn of layers <0 fp32` is every matmul int8 (`quantize="int8-full"`); rankwise\'s '
        f'`quantize="int8"` keeps layers < {rw_onnx.INT8_FP32_FFN_LAYERS}.',
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
