"""Catalog.ingest: resumable after SIGKILL, no duplicates, nothing lost; per-batch reporting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankwise.catalog import Catalog
from rankwise.store import open_store

RANKWISE = str(Path(sys.executable).parent / "rankwise")


def _catalog(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(
                json.dumps(
                    {
                        "id": f"p{i:05d}",
                        "title": f"product {i} drill shoes apple",
                        "text": "x" * (i % 50),
                        "price": i,
                    }
                )
                + "\n"
            )
    return path


def _ids(uri: str) -> list[str]:
    store = open_store(uri, create=False)
    ids = [r["id"] for batch in store.iter_records(batch_size=1000) for r in batch]
    store.close()
    return ids


def test_sigkill_mid_ingest_then_rerun_gives_every_product_once(tmp_path, tiny_embedder_dir):
    n = 4000
    cat = _catalog(tmp_path / "big.jsonl", n)
    idx = tmp_path / "index"
    args = [
        RANKWISE,
        "index",
        str(cat),
        "--index",
        str(idx),
        "--embedder",
        str(tiny_embedder_dir),
        "--batch-size",
        "200",
    ]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.time() + 240
    ckpts: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(idx.glob("ingest-*.json")) if idx.exists() else []
        if ckpts:
            try:
                done = json.loads(ckpts[0].read_text())["done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 600:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make the catalog bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _ids(str(idx))
    assert 0 < len(partial) < n

    r = subprocess.run(
        args + ["--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["skipped_done"] >= 600  # resumed from the checkpoint, not from zero
    ids = _ids(str(idx))
    assert len(ids) == n and len(set(ids)) == n
    assert not list(idx.glob("ingest-*.json"))  # a finished run clears its checkpoint


def test_skip_invalid_and_in_memory_records(tmp_path, tiny_embedder_dir):
    from rankwise.models import Embedder

    catalog = Catalog.open(str(tmp_path / "i"), Embedder(str(tiny_embedder_dir)))
    src = tmp_path / "c.jsonl"
    src.write_text('{"id": "a", "title": "ok"}\n{"id": "b"}\n{"id": "c", "title": "fine"}\n')
    report = catalog.ingest(src, skip_invalid=True, show_progress=False)
    assert report.count == 2 and len(report.invalid) == 1 and report.total_in_store == 2
    assert catalog.add([{"id": "d", "title": "more"}]) == 1
    assert catalog.store.count() == 3
    assert catalog.delete(["a", "zzz"]) == 1


def test_embedder_dim_mismatch_is_a_clear_error(tmp_path, tiny_embedder_dir, minilm_dir):
    from rankwise.errors import StoreError
    from rankwise.models import Embedder

    uri = str(tmp_path / "i")
    Catalog.open(uri, Embedder(str(tiny_embedder_dir))).add([{"id": "a", "title": "x"}])
    with pytest.raises(StoreError, match="dim"):
        Catalog.open(uri, Embedder(str(minilm_dir)))
