"""Rerank speed on CPU: rankwise (torch, ONNX fp32, ONNX int8 mixed and full) vs sentence-transformers and
FlagEmbedding, same cross-encoder, same pairs, same thread count, one run.

    .venv/bin/python benchmarks/rerank_speed.py [--model DIR] [--queries 20] [--docs 50] [--threads 2]

Model: a MiniLM-L6-sized cross-encoder (all-MiniLM-L6-v2 weights + a one-logit head). No
trained cross-encoder of that size is available offline, so unless ``--model`` names one, the
benchmark fine-tunes one briefly on Home Depot *train* pairs (cached in benchmarks/.cache).

Workload: ``--queries`` Home Depot *test* queries, each with a Top-``--docs`` candidate list
(its judged products + random products), texts "title + pseudo description" of mixed length
(see speed_common). Each path reranks one query per call (the serving pattern); we report
pairs/s over all calls, p50 latency of one Top-50 call, useful GFLOP/s (unpadded FLOPs) against
the fp32 matmul peak measured in the same run, peak RSS, and agreement with plain torch fp32
(Spearman per query, Top-10 overlap). All paths are loaded at once, each in its own process,
and measured round-robin (one query per path per round, order rotating) so that they share
whatever load other processes put on the machine. Quality: nDCG@10 on ``--ndcg-queries`` test queries,
reranking each query's judged products (titles, the real Home Depot text), by pytrec_eval.

Writes benchmarks/results/rerank_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_common as sc  # noqa: E402
import st_backends as st  # noqa: E402

PATHS = [
    "hf-torch-unsorted",
    "rankwise-default",
    "sentence-transformers",
    *st.ST_PATHS,
    "flagembedding",
    "rankwise-torch",
    "rankwise-onnx",
    "rankwise-onnx-int8",
    "rankwise-onnx-int8-full",
    "rankwise-openvino",
    "rankwise-openvino-bf16",
    "rankwise-openvino-int8",
    "rankwise-openvino-int8-full",
    "rankwise-openvino-int8-weights",
]
REFERENCE = "hf-torch-unsorted"
MAX_LENGTH = 512
BATCH = 32


# -- model --------------------------------------------------------------------------------------
def train_cross_encoder(out: Path, steps: int, seed: int = 0) -> Path:
    """Fine-tune MiniLM + a fresh one-logit head on Home Depot train pairs (soft labels = grade/2,
    plus one random negative per judged pair), BCE, AdamW 1e-4 with warm-up, batch 8 + 8
    negatives, 64 tokens. A plain loop: a couple of hundred steps do not need a Trainer.
    Runs on one thread: on this shared 2-core machine two OMP threads were ~3x slower per step."""
    import torch
    from tqdm import tqdm
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        get_linear_schedule_with_warmup,
    )

    corpus, queries, qrels = sc.load_beir("homedepot")
    judged = [
        (queries[q], corpus[d], g / 2)
        for q, docs in qrels["train"].items()
        for d, g in docs.items()
    ]
    rng = random.Random(seed)
    rng.shuffle(judged)
    ids = list(corpus)
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(sc.minilm_path()))
    model = BertForSequenceClassification.from_pretrained(str(sc.minilm_path()), num_labels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, steps // 10, steps)
    model.train()
    losses = []
    for step in tqdm(range(steps), desc="train cross-encoder"):
        batch = judged[(step * 8) % len(judged) :][:8]
        rows = [(q, d, y) for q, d, y in batch] + [
            (q, corpus[rng.choice(ids)], 0.0) for q, _, _ in batch
        ]
        enc = tok(
            [r[0] for r in rows],
            [r[1] for r in rows],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        logits = model(**enc).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.tensor([r[2] for r in rows])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "train_info.json").write_text(
        json.dumps(
            {
                "steps": steps,
                "first_loss": float(np.mean(losses[:20])),
                "last_loss": float(np.mean(losses[-20:])),
            }
        )
    )
    return out


# -- workload -----------------------------------------------------------------------------------
def build_workload(n_queries: int, n_docs: int, n_ndcg: int, model: Path, seed: int = 0) -> dict:

    corpus, queries, qrels = sc.load_beir("homedepot")
    test = sorted(q for q, d in qrels["test"].items() if len(d) >= 3)
    rng = random.Random(seed)
    rng.shuffle(test)
    ids = list(corpus)
    speed_q, ndcg_q = test[:n_queries], test[n_queries : n_queries + n_ndcg]
    cand_ids = []
    for q in speed_q:
        judged = list(qrels["test"][q])[:n_docs]
        fill = [d for d in rng.sample(ids, n_docs * 2) if d not in qrels["test"][q]]
        cand_ids.append(judged + fill[: n_docs - len(judged)])
    flat = [d for c in cand_ids for d in c]
    tok = sc.tokenizer(model)
    texts = sc.pseudo_descriptions([corpus[d] for d in flat], tok, seed=seed)
    it = iter(texts)
    return {
        "speed": [
            {"query": queries[q], "docs": [next(it) for _ in c]}
            for q, c in zip(speed_q, cand_ids, strict=True)
        ],
        "ndcg": [
            {
                "qid": q,
                "query": queries[q],
                "ids": list(qrels["test"][q]),
                "docs": [corpus[d] for d in qrels["test"][q]],
            }
            for q in ndcg_q
        ],
        "qrels": {q: qrels["test"][q] for q in ndcg_q},
    }


OPTIONS = {
    "f32": "static int8 with the remaining ops in fp32",
    "bf16": "static int8 with the remaining ops in bf16",
    "padN": "batch widths padded to a multiple of N tokens",
    "tput": "PERFORMANCE_HINT=THROUGHPUT, NUM_STREAMS=AUTO (one request at a time still)",
    "perf": "NNCF preset PERFORMANCE (symmetric activations; rankwise's default now)",
    "mixed": "NNCF preset MIXED (asymmetric activations; NNCF's and sentence-transformers' default)",
    "sample": "static int8 calibrated on the bundled sample catalog (no RANKWISE_CALIBRATION)",
    "ovN": "batch_overhead=N tokens in the batching cost model (default: the table's)",
}


def apply_options(options: list[str], rw_ov) -> float | None:
    """Set the OpenVINO module constants a path's ``+option`` suffixes ask for (this worker
    process only); returns the batch_overhead asked for, or None."""
    overhead = None
    for opt in options:
        if opt in ("f32", "bf16"):
            rw_ov.INT8_FLOAT_PRECISION = opt
        elif opt.startswith("pad"):
            rw_ov.PAD_MULTIPLE = int(opt[3:])
        elif opt == "tput":
            rw_ov.PERFORMANCE_HINT, rw_ov.NUM_STREAMS = "THROUGHPUT", "AUTO"
        elif opt in ("perf", "mixed"):
            rw_ov.NNCF_PRESET = {"perf": "performance", "mixed": "mixed"}[opt]
        elif opt == "sample":
            os.environ.pop("RANKWISE_CALIBRATION", None)
        elif opt.startswith("ov"):
            overhead = float(opt[2:])
        else:
            raise SystemExit(f"unknown path option +{opt} (known: {', '.join(OPTIONS)})")
    return overhead


# -- worker (one path per process) --------------------------------------------------------------
def make_scorer(path: str, model: str, threads: int):
    """A function (query, docs) -> float32 scores for ``path``."""
    os.environ["RANKWISE_ONNX_THREADS"] = str(threads)
    if not path.startswith("rankwise-onnx"):  # the ONNX paths never load torch
        sc.set_threads(threads)
    if path == "hf-torch-unsorted":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        net = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch.float32).eval()

        def score(q, docs):
            out = []
            with torch.inference_mode():
                for i in range(0, len(docs), BATCH):
                    chunk = docs[i : i + BATCH]
                    enc = tok(
                        [q] * len(chunk),
                        chunk,
                        padding=True,
                        truncation=True,
                        max_length=MAX_LENGTH,
                        return_tensors="pt",
                    )
                    out.append(net(**enc).logits[:, 0].float().numpy())
            return np.concatenate(out)

        return score
    if path == "sentence-transformers":
        import torch
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(model, device="cpu", max_length=MAX_LENGTH)
        ident = torch.nn.Identity()
        return lambda q, docs: np.asarray(
            ce.predict(
                [(q, d) for d in docs],
                batch_size=BATCH,
                activation_fn=ident,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
    if path in st.ST_PATHS:
        return st.reranker_scorer(
            path, st.peer_copy(Path(model), "reranker"), threads, MAX_LENGTH, BATCH
        )
    if path == "flagembedding":
        from FlagEmbedding import FlagReranker

        fr = FlagReranker(
            model, use_fp16=False, devices="cpu", max_length=MAX_LENGTH, batch_size=BATCH
        )
        return lambda q, docs: np.asarray(
            fr.compute_score([(q, d) for d in docs], batch_size=BATCH), dtype=np.float32
        )
    if path.startswith("rankwise"):
        import rankwise.models.onnx as rw_onnx
        import rankwise.models.openvino as rw_ov
        from rankwise.models import Reranker

        # "+option" suffixes vary one OpenVINO setting (see OPTIONS)
        base, *options = path.split("+")
        overhead = apply_options(options, rw_ov)
        rw_onnx.INT8_PER_CHANNEL = not base.endswith("pertensor")
        backend = base.split("-")[1] if base != "rankwise" else "torch"
        quantize = next(
            (q for q in ("int8-full", "int8-weights", "int8", "bf16") if base.endswith(q)), None
        )
        if base == "rankwise-default":  # Reranker(model): backend="auto", its calibration
            backend, quantize = "auto", None
            os.environ.pop("RANKWISE_CALIBRATION", None)
            os.environ.pop("RANKWISE_AUTO_BACKEND", None)
        rr = Reranker(
            model,
            backend=backend,
            quantize=quantize,
            max_length=MAX_LENGTH,
            batch_size=BATCH,
            batch_overhead=overhead,
            score_cache_size=0,  # the warm-up call must not answer part of the timed ones
        )
        return rr.score
    raise SystemExit(f"unknown path {path}")


def worker(path: str, data_file: str, model: str, threads: int) -> None:
    """Load ``path`` and answer ``speed i`` (time one Top-N call for query i) and ``ndcg``."""
    data = json.loads(Path(data_file).read_text())
    t0 = time.perf_counter()
    score = make_scorer(path, model, threads)
    load_s = time.perf_counter() - t0
    first = data["speed"][0]
    score(first["query"], first["docs"][:8])  # warm-up (lazy init, allocator)

    def speed(arg: str) -> dict:
        item = data["speed"][int(arg)]
        c, t = time.process_time(), time.perf_counter()
        s = score(item["query"], item["docs"])
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        return {"time": wall, "cpu": cpu, "scores": np.asarray(s, np.float32).tolist()}

    def ndcg(_arg: str) -> dict:
        return {
            "scores": [
                np.asarray(score(i["query"], i["docs"]), np.float32).tolist() for i in data["ndcg"]
            ]
        }

    sc.serve({"speed": speed, "ndcg": ndcg}, {"load_s": load_s})


# -- report -------------------------------------------------------------------------------------
def ndcg10(data: dict, scores: list[list[float]]) -> float:
    import pytrec_eval

    run = {
        i["qid"]: {d: float(s) for d, s in zip(i["ids"], sc_, strict=True)}
        for i, sc_ in zip(data["ndcg"], scores, strict=True)
    }
    ev = pytrec_eval.RelevanceEvaluator(data["qrels"], {"ndcg_cut.10"})
    return float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))


def summarise(
    data: dict,
    raw: dict[str, dict],
    peak: float,
    peak_cpu: float,
    cfg: dict,
    tok_lengths: list[list[int]],
    threads: int,
) -> dict:
    """Wall-clock rates, and CPU-time rates (work per CPU-second x threads: what ``threads``
    dedicated cores would deliver at the same efficiency; robust to other processes' load)."""
    groups, start = [], 0
    for item in data["speed"]:
        groups.append(np.arange(start, start + len(item["docs"])))
        start += len(item["docs"])
    n_pairs = start
    useful = sum(sc.encoder_flops(min(n, MAX_LENGTH), cfg) for lens in tok_lengths for n in lens)
    # plain transformers fp32 when measured, else CrossEncoder.predict (the same fp32 torch model)
    ref_path = REFERENCE if "scores" in raw.get(REFERENCE, {}) else "sentence-transformers"
    ref = (
        np.concatenate([np.array(s) for s in raw[ref_path]["scores"]])
        if "scores" in raw.get(ref_path, {})
        else None
    )
    base, base_wall, rows = {}, {}, {}
    for path, r in raw.items():
        if "error" in r:
            rows[path] = {"error": r["error"]}
            continue
        total = float(sum(r["times"]))
        cpu = float(sum(r["cpu"])) / threads
        s = np.concatenate([np.array(x) for x in r["scores"]])
        row = {
            "pairs_per_s": n_pairs / cpu,
            "pairs_per_s_wall": n_pairs / total,
            "p50_top50_ms": 1000 * float(np.median(r["times"])),
            "p50_top50_ms_cpu": 1000 * float(np.median(r["cpu"])) / threads,
            "useful_gflops": useful / cpu / 1e9,
            "pct_of_fp32_peak": 100 * useful / cpu / 1e9 / peak_cpu,
            "pct_of_fp32_peak_wall": 100 * useful / total / 1e9 / peak,
            "peak_rss_mb": r["peak_rss_mb"],
            "load_s": r["load_s"],
            "ndcg10": ndcg10(data, r["ndcg_scores"]),
        }
        if ref is not None:
            rho = sc.spearman_per_query(ref, s, groups)
            row |= {
                "spearman_mean": float(np.mean(rho)),
                "spearman_min": float(np.min(rho)),
                "top10_overlap": float(np.mean(sc.topk_overlap(ref, s, groups))),
                "max_abs_diff": float(np.abs(ref - s).max()),
            }
        rows[path] = row
        base[path] = row["pairs_per_s"]
        base_wall[path] = row["pairs_per_s_wall"]
    st_rates = {p: base[p] for p in ("sentence-transformers", *st.ST_PATHS) if p in base}
    best_st = max(st_rates, key=st_rates.get) if st_rates else None
    st_ndcg = rows.get("sentence-transformers", {}).get("ndcg10")
    for row in rows.values():
        if "error" not in row:
            if best_st:
                row["x_vs_best_st"] = row["pairs_per_s"] / base[best_st]
                row["x_vs_best_st_wall"] = row["pairs_per_s_wall"] / base_wall[best_st]
            if st_ndcg is not None:
                row["ndcg10_delta_vs_st_points"] = 100 * (row["ndcg10"] - st_ndcg)
            for peer in ("sentence-transformers", "flagembedding"):
                if peer in base:
                    row[f"x_vs_{peer}"] = row["pairs_per_s"] / base[peer]
                    row[f"x_vs_{peer}_wall"] = row["pairs_per_s_wall"] / base_wall[peer]
    return {
        "n_pairs": n_pairs,
        "mean_pair_tokens": float(np.mean([n for lens in tok_lengths for n in lens])),
        "useful_gflop_total": useful / 1e9,
        "best_st_path": best_st,
        "paths": rows,
    }


def markdown(result: dict) -> str:
    m, s = result["machine"], result["summary"]
    lines = [
        "# Rerank speed (CPU)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} CPUs, {m['threads']} threads per path; load average at start {m['loadavg_at_start']}, at end {result['loadavg_at_end']} (other agents share this machine: numbers are noisy, ratios taken in one run).  ",
        f"Model: {result['model']} ({result['model_note']}).  ",
        f"Workload: {result['workload']['queries']} Home Depot test queries x Top-{result['workload']['docs']} = {s['n_pairs']} pairs, "
        f"mean {s['mean_pair_tokens']:.0f} tokens per pair (max_length {MAX_LENGTH}), {s['useful_gflop_total'] / s['n_pairs']:.2f} useful GFLOP per pair; one call per query.  ",
        f"fp32 matmul rate measured in this run: {result['peak_gflops_cpu']:.0f} GFLOP/s CPU-time based, {result['peak_gflops']:.0f} wall ({result['peak_detail']}); '% fp32 peak' is against the CPU-time-based median.  ",
        f"nDCG@10: {result['workload']['ndcg_queries']} other test queries, reranking their judged products (titles), pytrec_eval.",
        "",
        "Rates are CPU-time based (work per CPU-second x threads: what the threads would deliver on "
        "dedicated cores at the efficiency measured; other processes' load moves them much less than "
        "wall-clock rates, given in brackets).",
        "",
        f"'x best ST' is against the fastest sentence-transformers path in this run ({s.get('best_st_path')}); "
        "'Δ nDCG' is in points against `CrossEncoder.predict` default.",
        "",
        "| path | pairs/s [wall] | x ST [wall] | x best ST [wall] | x Flag | p50 Top-50 ms [wall] | useful GFLOP/s | % fp32 peak | peak RSS (MB) | Spearman mean / min vs torch fp32 | Top-10 overlap | nDCG@10 | Δ nDCG |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for path, r in s["paths"].items():
        if "error" in r:
            lines.append(f"| {path} | failed: {r['error'][:160]} |" + " |" * 12)
            continue
        lines.append(
            f"| {path} | {r['pairs_per_s']:.1f} [{r['pairs_per_s_wall']:.1f}] | "
            f"{r.get('x_vs_sentence-transformers', nan):.2f} [{r.get('x_vs_sentence-transformers_wall', nan):.2f}] | "
            f"{r.get('x_vs_best_st', nan):.2f} [{r.get('x_vs_best_st_wall', nan):.2f}] | "
            f"{r.get('x_vs_flagembedding', nan):.2f} | {r['p50_top50_ms_cpu']:.0f} [{r['p50_top50_ms']:.0f}] | "
            f"{r['useful_gflops']:.1f} | {r['pct_of_fp32_peak']:.0f}% | {r['peak_rss_mb']:.0f} | "
            f"{r.get('spearman_mean', nan):.4f} / {r.get('spearman_min', nan):.4f} | "
            f"{r.get('top10_overlap', nan):.3f} | {r['ndcg10']:.4f} | {r.get('ndcg10_delta_vs_st_points', nan):+.2f} |"
        )
    lines += ["", *result.get("notes", [])]
    return "\n".join(lines) + "\n"


def prepare_peers(script: Path, paths: list[str], model: Path, tmp: Path, threads: int) -> dict:
    """Export sentence-transformers' ONNX/OpenVINO files in the peers' venvs (static int8
    calibrated on 300 Home Depot train (query, title) pairs). Returns {path: why} for the
    ``st-*`` paths that cannot run."""
    failed: dict[str, str] = {}
    wanted = [p for p in paths if p in st.ST_PATHS]
    for p in wanted:
        if why := st.available(p):
            failed[p] = why
    corpus, queries, qrels = sc.load_beir("homedepot")
    pairs = [(queries[q], corpus[d]) for q, docs in qrels["train"].items() for d in docs]
    random.Random(1).shuffle(pairs)
    calib = tmp / "calibration.json"
    calib.write_text(json.dumps(pairs[:300]))
    # rankwise's static int8 (OpenVINO) calibrates on the very same 300 pairs
    os.environ["RANKWISE_CALIBRATION"] = str(tmp / "calibration.jsonl")
    (tmp / "calibration.jsonl").write_text(
        "".join(json.dumps({"query": q, "document": d}) + "\n" for q, d in pairs[:300])
    )
    for family in ("st-onnx", "st-openvino"):
        members = [p for p in wanted if p.startswith(family + "-") or p == family]
        members = [
            p for p in members if p not in failed and (family != "st-onnx" or "openvino" not in p)
        ]
        if not members:
            continue
        w = sc.Worker(
            script,
            ["prepare-st", family, str(model), str(calib)],
            threads,
            python=str(st.venv_python(members[0])),
        )
        ready = w.ready
        w.close()
        if "error" in ready:
            failed |= {p: f"export failed: {ready['error']}" for p in members}
    return failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", type=Path, default=None, help="a trained MiniLM-size cross-encoder folder"
    )
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--docs", type=int, default=50)
    ap.add_argument("--ndcg-queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--out", type=Path, default=sc.OUT / "rerank_speed")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        if args.worker[0] == "peak":
            return sc.serve(sc.peak_handlers(args.threads), {})
        if args.worker[0] == "prepare-st":  # in a peer venv: family, model, calibration file
            try:
                folder = st.peer_copy(Path(args.worker[2]), "reranker")
                calib = json.loads(Path(args.worker[3]).read_text())
                info = st.prepare(args.worker[1], folder, "reranker", calib, sc.isa_level())
            except Exception as e:  # report why the peer could not be prepared
                info = {"error": f"{type(e).__name__}: {e}"}
            return sc.serve({}, info)
        if args.worker[0] == "prepare":  # export once so that timed workers only load
            for path in args.worker[2].split(","):
                if path.startswith(("rankwise-onnx", "rankwise-openvino")) and "+" not in path:
                    make_scorer(path, args.worker[1], args.threads)
            return sc.serve({}, {})
        return worker(args.worker[0], args.worker[1], args.worker[2], args.threads)

    if args.model is None:
        args.model = sc.CACHE / f"minilm-ce-homedepot-{args.train_steps}"
        note = f"all-MiniLM-L6-v2 + one-logit head, fine-tuned {args.train_steps} steps on Home Depot train pairs by this script"
        if not (args.model / "config.json").is_file():
            sc.set_threads(1)
            train_cross_encoder(args.model, args.train_steps)
        info = args.model / "train_info.json"
        if info.is_file():
            note += f" (BCE loss {json.loads(info.read_text())['first_loss']:.3f} -> {json.loads(info.read_text())['last_loss']:.3f})"
    else:
        note = "given with --model"
    machine = sc.machine_info(args.threads)
    os.environ["RANKWISE_BENCH_ISA"] = machine["isa"]  # which int8 preset the ST peer exports
    data = build_workload(args.queries, args.docs, args.ndcg_queries, args.model)

    tok = sc.tokenizer(args.model)
    tok_lengths = [
        [len(e.ids) for e in tok.encode_batch([(i["query"], d) for d in i["docs"]])]
        for i in data["speed"]
    ]
    cfg = json.loads((args.model / "config.json").read_text())
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps(data))
        paths = args.paths.split(",")
        prepared = prepare_peers(script, paths, args.model, Path(tmp), args.threads)
        sc.Worker(script, ["prepare", str(args.model), args.paths], args.threads).close()
        workers = {
            p: sc.Worker(
                script,
                [p, str(data_file), str(args.model)],
                args.threads,
                python=str(st.venv_python(p)) if p in st.ST_PATHS else None,
            )
            for p in paths
            if p not in prepared
        }
        workers["peak"] = sc.Worker(script, ["peak"], args.threads)
        answers = sc.rounds(
            workers, [f"speed {i}" for i in range(len(data["speed"]))], "rerank rounds"
        )
        ndcg = sc.rounds(workers, ["ndcg"], "ndcg")
        closing = {p: w.close() for p, w in workers.items()}
    peak_answers = answers.pop("peak")
    peak_samples = [a["gflops"] for a in peak_answers]
    peak = float(np.median(peak_samples))
    peak_cpu = float(np.median([a["gflops_cpu"] for a in peak_answers]))
    raw = {p: {"error": why} for p, why in prepared.items()}
    for p in workers:
        if p == "peak":
            continue
        errors = [a["error"] for a in [workers[p].ready, *answers[p], *ndcg[p]] if "error" in a]
        raw[p] = (
            {"error": errors[0]}
            if errors
            else {
                "load_s": workers[p].ready["load_s"],
                "times": [a["time"] for a in answers[p]],
                "cpu": [a["cpu"] for a in answers[p]],
                "scores": [a["scores"] for a in answers[p]],
                "ndcg_scores": ndcg[p][0]["scores"],
                "peak_rss_mb": closing[p].get("peak_rss_mb", float("nan")),
            }
        )
    raw = {p: raw[p] for p in paths if p in raw}
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "model": str(
            args.model.relative_to(sc.ROOT) if args.model.is_relative_to(sc.ROOT) else args.model
        ),
        "model_note": note,
        "workload": {"queries": args.queries, "docs": args.docs, "ndcg_queries": args.ndcg_queries},
        "peak_gflops": peak,
        "peak_detail": f"torch sgemm 2048^3 sampled once per round in the same rounds: median {peak:.0f}, "
        f"min {min(peak_samples):.0f}, max {max(peak_samples):.0f}",
        "peak_gflops_cpu": peak_cpu,
        "summary": summarise(data, raw, peak, peak_cpu, cfg, tok_lengths, args.threads),
        "notes": [
            (
                "- Agreement reference: plain transformers fp32 (`hf-torch-unsorted`: batches of 32 in input order, padded to the longest pair)."
                if REFERENCE in paths
                else "- Agreement reference: `CrossEncoder.predict` (the same fp32 torch model; `hf-torch-unsorted` was not in this run)."
            ),
            *[
                f"- `+{o}`: {OPTIONS[o if o in OPTIONS else o.rstrip('0123456789') + 'N']}."
                for o in sorted({o for p in paths for o in p.split("+")[1:]})
            ],
            "- Home Depot products have titles only; the speed workload appends a pseudo description (other products' titles) to 75% of them, 40-320 tokens, to get realistic mixed lengths. nDCG uses the real titles.",
            "- FlagEmbedding runs `FlagReranker.compute_score` (fp32, CPU); sentence-transformers runs `CrossEncoder.predict` with raw logits.",
            '- `rankwise-onnx-int8` is `quantize="int8"`: dynamic per-channel int8 with the feed-forward matmuls of the first two layers kept fp32 (mixed precision); `rankwise-onnx-int8-full` (`quantize="int8-full"`) quantises every matmul.',
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
