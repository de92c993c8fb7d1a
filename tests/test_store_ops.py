"""Store operations: migrate (library + CLI), store info CLI, killed-and-resumed ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from store_backends import unit

from rankwise.store import migrate, open_store

RANKWISE = str(Path(sys.executable).parent / "rankwise")


def _fill(uri: str, n: int = 300, dim: int = 8):
    s = open_store(uri)
    recs = [
        {"id": f"p{i}", "title": f"product {i} shoes", "text": "", "price": float(i), "tag": None if i % 7 else "x"}
        for i in range(n)
    ]  # fmt: skip
    vecs = unit(n, dim, seed=3)
    s.upsert(recs, vecs)
    return s, recs, vecs


@pytest.mark.parametrize("dst_name", ["copy", "copy.db"])
def test_migrate_copies_everything_and_is_idempotent(tmp_path, dst_name):
    src, recs, vecs = _fill(str(tmp_path / "index"))
    dst = open_store(str(tmp_path / dst_name))
    assert migrate(src, dst, batch_size=64, show_progress=False) == len(recs)
    assert migrate(src, dst, batch_size=100, show_progress=False) == len(recs)  # rerun
    assert dst.count() == len(recs) and dst.dim == 8
    assert dst.get(["p7", "p8"]) == src.get(["p7", "p8"])  # None preserved too
    assert dst.count({"price": {"gte": 100}}) == src.count({"price": {"gte": 100}})
    assert dst.dense_search(vecs[42], 1)[0].id == "p42"
    assert [h.id for h in dst.lexical_search("product 42", 1)] == ["p42"]
    src.close()
    dst.close()


def test_cli_store_info_and_migrate(tmp_path):
    src, recs, _ = _fill(str(tmp_path / "index"))
    src.close()
    out = subprocess.run(
        [RANKWISE, "store", "info", str(tmp_path / "index"), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert info["backend"] == "lance" and info["count"] == len(recs) and info["dim"] == 8
    out = subprocess.run(
        [RANKWISE, "store", "migrate", "--from", str(tmp_path / "index"), "--to", str(tmp_path / "m.db")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"migrated {len(recs)} records" in out.stdout
    info = json.loads(
        subprocess.run(
            [RANKWISE, "store", "info", str(tmp_path / "m.db"), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    )
    assert info["backend"] == "milvus-lite" and info["count"] == len(recs)
    assert "BM25" in info["lexical"]["engine"]


def test_cli_store_info_missing_index_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [RANKWISE, "store", "info", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "no rankwise index" in out.stderr and "Traceback" not in out.stderr


INGEST = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    from store_backends import unit
    from rankwise.store import open_store
    N, BATCH, ckpt = {n}, {batch}, {ckpt!r}
    s = open_store({uri!r})
    start = json.load(open(ckpt))["next"] if os.path.exists(ckpt) else 0
    for b in range(start, N // BATCH):
        recs = [{{"id": f"p{{i}}", "title": f"item {{i}}"}} for i in range(b * BATCH, (b + 1) * BATCH)]
        s.upsert(recs, unit(BATCH, 16, seed=b))
        with open(ckpt + ".tmp", "w") as f:
            json.dump({{"next": b + 1}}, f)
        os.replace(ckpt + ".tmp", ckpt)  # a kill leaves the old or the new checkpoint
        print(b, flush=True)
    s.close()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("uri_name", ["index", "catalog.db"])
def test_killed_ingest_resumes_without_duplicates_or_losses(tmp_path, uri_name):
    n, batch = 6000, 500
    script = INGEST.format(
        tests=str(Path(__file__).parent), n=n, batch=batch,
        ckpt=str(tmp_path / "ckpt.json"), uri=str(tmp_path / uri_name),
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(3):
        assert proc.stdout.readline().strip().isdigit(), "ingest died early"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    rerun = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.strip().endswith("done")
    s = open_store(str(tmp_path / uri_name), create=False)
    assert s.count() == n
    ids = [r["id"] for b in s.iter_records(1000) for r in b]
    assert len(ids) == n and len(set(ids)) == n
    v = unit(batch, 16, seed=5)
    assert s.dense_search(v[3], 1)[0].id == f"p{5 * batch + 3}"
    assert len(s.lexical_search("item", n + 1)) == n
    s.close()


def test_embedded_store_optimize_drops_old_versions_keeps_data(tmp_path):
    """optimize() prunes table versions older than ``keep_versions_s`` (LanceDB keeps a
    week of them by default: disk grows with every batch) and keeps every row."""
    path = str(tmp_path / "index")
    s = open_store(path, keep_versions_s=0)
    for b in range(6):
        recs = [{"id": f"p{b}-{i}", "title": f"item {i}"} for i in range(50)]
        s.upsert(recs, unit(50, 8, seed=b))
    before = len(s._table.list_versions())
    s.optimize()
    after = len(s._table.list_versions())
    assert before >= 6 and after < before
    s.close()
    s = open_store(path)
    assert s.count() == 300 and s.get(["p5-49"])[0]["title"] == "item 49"
