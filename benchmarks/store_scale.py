"""Store scale: N synthetic products (dim 384) into the embedded store and Milvus Lite.

Per backend (each in its own subprocess, so memory peaks are separate): ingest wall time
and rate (``upsert`` in batches, as ``Catalog.ingest`` does), peak RSS of the process
tree, on-disk size, and search p50/p95 latency and recall@10 against exact search
(numpy), unfiltered and with prefilters keeping 10% and 1% of the products.

Vectors are clustered (1,000 centres + noise, L2-normalised), closer to real embeddings
than uniform noise, on which every ANN index degrades. Queries come from the same
distribution. Results are written after each backend (partial runs keep what finished).

    .venv/bin/python benchmarks/store_scale.py --n 1000000            # full run
    .venv/bin/python benchmarks/store_scale.py --n 50000 --queries 20 # quick

Writes ``benchmarks/results/store_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from tqdm.auto import tqdm

DIM = 384
BATCH = 10_000
OUT = Path(__file__).parent / "results"
FILTERS = {"none": None, "10%": {"cat": {"lt": 10}}, "1%": {"cat": 7}}


def _centres() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(1000, DIM)).astype(np.float32)


def make_batch(b: int, n: int, centres: np.ndarray) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Batch ``b`` (deterministic): records, float32 (n, DIM) unit vectors, cat (n,)."""
    rng = np.random.default_rng(1000 + b)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cat = rng.integers(0, 100, n)
    start = b * BATCH
    recs = [
        {"id": f"p{start + i}", "title": f"product {start + i}", "cat": int(cat[i]), "price": float(i % 997)}
        for i in range(n)
    ]  # fmt: skip
    return recs, x, cat


def _queries(q: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = centres[rng.integers(0, len(centres), q)] + 0.35 * rng.normal(size=(q, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top10(n: int, queries: np.ndarray, centres: np.ndarray) -> dict[str, list[set[str]]]:
    """Exact top-10 ids per query and filter, streaming over regenerated batches."""
    best = {
        f: (np.full((len(queries), 10), -np.inf), np.zeros((len(queries), 10), int))
        for f in FILTERS
    }
    for b in range((n + BATCH - 1) // BATCH):
        _, x, cat = make_batch(b, min(BATCH, n - b * BATCH), centres)
        sims = queries @ x.T  # (q, batch)
        ids = np.arange(b * BATCH, b * BATCH + len(x))
        for f, mask in (("none", None), ("10%", cat < 10), ("1%", cat == 7)):
            s = sims if mask is None else np.where(mask[None, :], sims, -np.inf)
            cs = np.concatenate([best[f][0], s], axis=1)
            ci = np.concatenate([best[f][1], np.broadcast_to(ids, s.shape)], axis=1)
            top = np.argsort(-cs, axis=1)[:, :10]
            best[f] = (np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1))
    return {f: [{f"p{i}" for i in row} for row in best[f][1]] for f in FILTERS}


class PeakRSS:
    """Samples the RSS of this process and its children every 0.2 s; ``peak`` in bytes."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(
                    c.memory_info().rss for c in me.children(recursive=True)
                )
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _start_milvus(base: Path):
    """A Milvus 2.3 standalone from the PyPI ``milvus`` package, data under ``base``."""
    import socket

    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server.listen_port = s.getsockname()[1]
    server.start()
    return server


def _stop_milvus(server) -> None:
    """``MilvusServer.stop`` gives the process 1 s to exit; a loaded machine needs more (10 s, then SIGKILL: the data dir is temporary)."""
    proc = server.server_proc
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    server.server_proc = None
    server.stop()  # closes its log files


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker(backend: str, n: int, q: int, workdir: Path) -> dict:
    """Ingest and measure one backend; returns its result dict."""
    from rankwise.store import open_store

    centres = _centres()
    target = workdir / ("catalog.db" if backend == "milvus-lite" else "index")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    res: dict = {"backend": backend, "n": n, "dim": DIM, "batch": BATCH}
    server = None
    with PeakRSS() as mem:  # the Milvus server is a child process: its RSS counts too
        if backend == "milvus-server":
            server = _start_milvus(target)
            store = open_store(f"http://127.0.0.1:{server.listen_port}")
        else:
            store = open_store(str(target))
        t0 = time.perf_counter()
        with tqdm(total=n, unit="vec", desc=f"ingest {backend}", mininterval=5) as bar:
            for b in range((n + BATCH - 1) // BATCH):
                recs, x, _ = make_batch(b, min(BATCH, n - b * BATCH), centres)
                store.upsert(recs, x)
                bar.update(len(recs))
            store.optimize()  # what close() does after writes: index every row
        res["ingest_s"] = round(time.perf_counter() - t0, 1)
        res["insert_per_s"] = round(n / res["ingest_s"], 1)
        res["count"] = store.count()
        res["peak_rss_ingest_mb"] = round(mem.peak / 2**20)
        queries = _queries(q, centres)
        store.dense_search(queries[0], 10)  # warm-up (opens index files)
        search: dict = {}
        timings: dict = {f: [] for f in FILTERS}
        results: dict = {f: [] for f in FILTERS}
        for f, flt in FILTERS.items():
            for v in queries:
                t = time.perf_counter()
                hits = store.dense_search(v, 10, flt)
                timings[f].append(time.perf_counter() - t)
                results[f].append({h.id for h in hits})
        res["peak_rss_mb"] = round(mem.peak / 2**20)
        info = store.info()
        res["index"] = info.get("index")
        store.close()
        if server is not None:
            _stop_milvus(server)
    res["disk_mb"] = round(_du(target) / 2**20, 1)
    exact = exact_top10(n, queries, centres)
    for f in FILTERS:
        lat = np.array(timings[f]) * 1000
        recall = np.mean([len(e & g) / 10 for e, g in zip(exact[f], results[f], strict=True)])
        search[f] = {
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "recall@10": round(float(recall), 4),
        }
    res["search"] = search
    res["queries"] = q
    shutil.rmtree(workdir, ignore_errors=True)
    return res


def write_reports(results: dict, args) -> None:
    OUT.mkdir(exist_ok=True)
    meta = {
        "command": " ".join(sys.argv),
        "cpu_count": psutil.cpu_count(),
        "note": "2 shared cores (other jobs running): compare backends within this run only",
    }
    path = OUT / "store_scale.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    for r in results.values():  # keep runs of other backends / sizes from earlier calls
        runs[f"{r['backend']}@{args.n}"] = {**r, "command": meta["command"]}
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    results = runs
    lines = [
        f"# Store scale: synthetic products, dim {DIM}",
        "",
        f"Commands: see `command` per run in store_scale.json ({meta['note']}).",
        "",
        "| backend | N | ingest s | inserts/s | peak RSS MB | disk MB | filter | p50 ms | p95 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        if "error" in r:
            lines.append(
                f"| {r['backend']} | {r.get('n')} | failed: {r['error'][:100]} | | | | | | | |"
            )
            continue
        for i, (f, s) in enumerate(r["search"].items()):
            head = (
                f"| {r['backend']} | {r['n']:,} | {r['ingest_s']} | {r['insert_per_s']} | {r['peak_rss_mb']} | {r['disk_mb']} "
                if i == 0
                else "| | | | | | "
            )
            lines.append(head + f"| {f} | {s['p50_ms']} | {s['p95_ms']} | {s['recall@10']} |")
    (OUT / "store_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="products (default 1,000,000)")
    ap.add_argument("--queries", type=int, default=100, help="queries per filter setting")
    ap.add_argument(
        "--backends", default="lance,milvus-lite", help="lance, milvus-lite, milvus-server"
    )
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rankwise-store-scale"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.queries, args.workdir / args.worker)))
        return 0
    results: dict = {}
    for backend in args.backends.split(","):
        cmd = [sys.executable, __file__, "--worker", backend, "--n", str(args.n),
               "--queries", str(args.queries), "--workdir", str(args.workdir)]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode == 0:
            results[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
        else:
            results[backend] = {
                "backend": backend,
                "n": args.n,
                "error": f"exit code {proc.returncode}",
            }
        write_reports(results, args)  # partial results survive a later failure
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
