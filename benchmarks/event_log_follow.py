"""The served blend's followed event log: picking up appended events incrementally vs reading
the whole log again (what a restart, or a reload without offsets, costs).

Synthetic events (random queries / products / users; the content does not matter for the
cost), one JSONL log of ``--events`` lines; then ``--rounds`` times ``--append`` lines are
appended and picked up by :meth:`FollowedLog.refresh` (incremental), against
:class:`FollowedLog` built from scratch on the same file (full read). Both end with the same
features (checked). Writes ``benchmarks/results/event_log_follow.{json,md}``.

    PYTHONPATH=src python benchmarks/event_log_follow.py --events 200000 --append 100
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from rankwise.blend import BlendSpec, spec_behaviour
from rankwise.event_log import FollowedLog

OUT = Path(__file__).parent / "results"
EVENTS = ("click", "click", "click", "add_to_cart", "purchase")


def _lines(rng: random.Random, n: int, start: int) -> str:
    rows = []
    for i in range(start, start + n):
        rows.append(json.dumps({
            "query": f"query {rng.randrange(5000)}", "product_id": f"p{rng.randrange(20000)}",
            "event": rng.choice(EVENTS), "user_id": f"u{rng.randrange(3000)}", "ts": i,
            "position": rng.randrange(1, 21),
        }))  # fmt: skip
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--append", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    rng = random.Random(0)
    records = {f"p{i}": {"category": f"c{i % 40}", "brand": f"b{i % 300}"} for i in range(20000)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_text(_lines(rng, a.events, 0))
        spec = BlendSpec(behaviour=True, events=str(path), eta=1.0)

        def build(ev):
            return spec_behaviour(spec, ev, records)

        t = time.perf_counter()
        log = FollowedLog(path, build, lambda ids: {i: records[i] for i in ids}, check_s=0)
        load_s = time.perf_counter() - t
        inc, full = [], []
        n = a.events
        for _ in range(a.rounds):
            with path.open("a") as fh:
                fh.write(_lines(rng, a.append, n))
            n += a.append
            t = time.perf_counter()
            assert log.refresh(force=True)
            inc.append(time.perf_counter() - t)
            t = time.perf_counter()
            fresh = FollowedLog(path, build, check_s=0)
            full.append(time.perf_counter() - t)
        ids = [f"p{i}" for i in range(50)]
        recs = [records[i] for i in ids]
        same = np.allclose(
            log.features("query 7", ids, recs, "u3"), fresh.features("query 7", ids, recs, "u3")
        )
    body = {
        "events": a.events, "append": a.append, "rounds": a.rounds, "load_s": load_s,
        "incremental_s_median": float(np.median(inc)), "full_read_s_median": float(np.median(full)),
        "ratio_full_over_incremental": float(np.median(full) / np.median(inc)),
        "same_features": bool(same), "final_events": log.behaviour.n_events,
    }  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "event_log_follow.json").write_text(json.dumps(body, indent=2))
    md = (
        "# Followed event log: appended events picked up incrementally vs a full re-read\n\n"
        f"Synthetic log of {a.events:,} events; {a.rounds} rounds of {a.append} appended lines.\n\n"
        "| pick-up | median seconds |\n|---|---|\n"
        f"| rankwise FollowedLog.refresh (appended lines only) | {body['incremental_s_median']:.4f} |\n"
        f"| full re-read of the log (restart / no offsets) | {body['full_read_s_median']:.3f} |\n\n"
        f"Ratio full / incremental: {body['ratio_full_over_incremental']:.0f}x; same features: "
        f"{same}. Initial load {load_s:.2f} s. Shared 2-core machine: compare within the run.\n\n"
        f"Command: `PYTHONPATH=src python benchmarks/event_log_follow.py --events {a.events} "
        f"--append {a.append} --rounds {a.rounds}`\n"
    )
    (OUT / "event_log_follow.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
