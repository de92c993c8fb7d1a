"""GPU check (see gpu_check.sh for targets and the command): rankwise's reranker and embedder on an
NVIDIA GPU with random weights in bge-reranker-v2-m3's / bge-m3's shape (XLM-R large: 24 layers,
hidden 1024, 16 heads, FFN 4096, vocab 250,002), no network.

Measures, on 20 queries x Top-100 synthetic product pairs of mixed length (30-400 tokens):
- rerank fp16 vs fp32 (rankwise ``Reranker`` on cuda: fp16 is its GPU default; fp32 is the same
  module cast to float32), p50/p99 per Top-100 call and pairs/s;
- padded vs unpadded: "padded" is the whole Top-100 in one batch padded to its longest pair
  (what transformers / sentence-transformers do), rankwise's length-sorted token-budget batches
  in between, and "unpadded" a packed forward (:class:`PackedXlmr`): every dense matmul,
  LayerNorm and FFN runs on the (total_tokens, hidden) matrix with no padding at all, and
  attention runs per sequence through SDPA over a length-sorted padded view (attention is ~3%
  of the FLOPs at these lengths); ``--attention njt`` tries PyTorch's jagged nested tensors
  (true varlen SDPA) instead;
- embeddings docs/s (rankwise ``Embedder``, fp16, 2,000 documents);
- OOM backoff on the real GPU: the process is capped to a small memory fraction, a batch far
  too big is asked for, and rankwise must halve until it fits, with scores equal to a run in
  small batches.
Writes ``$OUT/gpu_check.json`` (or ``--out``). ``--tiny`` runs the same code with a 2-layer model
(a CPU smoke test of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "cordless drill driver lithium battery charger brushless impact wrench kit stainless steel "
    "kitchen sink faucet pull down sprayer chrome finish ceramic tile floor wall glossy white "
    "outdoor patio chair aluminum frame weather resistant cushion led light bulb dimmable warm "
    "daylight garden hose expandable nozzle brass fitting vinyl plank waterproof click lock "
    "interior paint primer satin semi gloss exterior wood stain deck sealer copper pipe fitting "
    "pvc elbow tee coupling ceiling fan remote control reversible motor bathroom vanity cabinet "
    "quartz countertop undermount basin wireless doorbell camera motion sensor smart thermostat"
).split()


def synthetic_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def workload(n_queries: int, top: int, seed: int = 0) -> list[dict]:
    """Queries of 2-6 words, each with ``top`` documents of 20-300 words (mixed lengths)."""
    rng = random.Random(seed)
    return [
        {
            "query": synthetic_text(rng, rng.randint(2, 6)),
            "docs": [
                synthetic_text(rng, rng.choice([rng.randint(20, 60), rng.randint(60, 300)]))
                for _ in range(top)
            ],
        }
        for _ in range(n_queries)
    ]


def build_models(out: Path, tiny: bool) -> tuple[Path, Path]:
    """Random-weight XLM-R-large reranker (1 logit) and encoder folders with a tokenizer trained
    on :data:`WORDS` (fp16 weights on disk; the tokenizer only has to produce ids)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
        XLMRobertaModel,
    )

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        [" ".join(WORDS)] * 10, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    )
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        model_max_length=8192,
    )
    shape = (
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
        if tiny
        else dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        )
    )
    cfg = XLMRobertaConfig(
        vocab_size=250002,
        max_position_embeddings=8194,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
        num_labels=1,
        **shape,
    )
    folders = []
    torch.manual_seed(0)
    for name, cls in (
        ("reranker", XLMRobertaForSequenceClassification),
        ("embedder", XLMRobertaModel),
    ):
        folder = out / name
        model = cls(cfg).to(torch.float16)
        model.save_pretrained(str(folder))
        fast.save_pretrained(str(folder))
        folders.append(folder)
        del model
    return folders[0], folders[1]


class PackedXlmr:
    """An unpadded forward of an ``XLMRobertaForSequenceClassification`` (its own weights).

    Tokens of all rows are packed into one (total, hidden) matrix: embeddings, Q/K/V and output
    projections, LayerNorms and the FFN see no padding. Attention gathers each row's tokens into
    a padded (rows, heads, longest, head_dim) view for ``scaled_dot_product_attention`` (with the
    key padding masked) and scatters the result back; ``attention="njt"`` uses jagged nested
    tensors instead (varlen SDPA kernels, no padded view).
    """

    def __init__(self, model, attention: str = "padded-view"):
        self.m, self.attention = model, attention
        self.heads = model.config.num_attention_heads
        self.pad = model.config.pad_token_id

    def __call__(self, seqs: list[np.ndarray]):
        import torch

        m = self.m
        dev = next(m.parameters()).device
        lens = torch.tensor([len(s) for s in seqs], device=dev)
        ids = torch.from_numpy(np.concatenate(seqs)).to(dev)
        offsets = torch.zeros(len(seqs) + 1, dtype=torch.long, device=dev)
        offsets[1:] = torch.cumsum(lens, 0)
        row = torch.repeat_interleave(torch.arange(len(seqs), device=dev), lens)
        pos_in_row = torch.arange(len(ids), device=dev) - offsets[row]
        emb = m.roberta.embeddings
        h = emb.word_embeddings(ids) + emb.position_embeddings(pos_in_row + self.pad + 1)
        h = h + emb.token_type_embeddings(torch.zeros_like(ids))
        h = emb.LayerNorm(h)
        width = int(lens.max())
        mask = torch.arange(width, device=dev)[None, :] < lens[:, None]  # (rows, width)
        for layer in m.roberta.encoder.layer:
            att = layer.attention
            q, k, v = (lin(h) for lin in (att.self.query, att.self.key, att.self.value))
            ctx = self._attend(q, k, v, row, pos_in_row, mask, lens, offsets)
            h = att.output.LayerNorm(att.output.dense(ctx) + h)
            inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
            h = layer.output.LayerNorm(layer.output.dense(inter) + h)
        cls = h[offsets[:-1]]  # first token of each row
        head = m.classifier
        return head.out_proj(torch.tanh(head.dense(cls)))[:, 0].float()

    def _attend(self, q, k, v, row, pos, mask, lens, offsets):
        import torch
        import torch.nn.functional as F

        n_rows, width = mask.shape
        hd = q.shape[-1] // self.heads
        if self.attention == "njt":

            def nest(x):
                parts = list(torch.split(x, lens.tolist()))
                nt = torch.nested.nested_tensor(parts, layout=torch.jagged)
                return nt.unflatten(-1, (self.heads, hd)).transpose(1, 2)

            out = F.scaled_dot_product_attention(nest(q), nest(k), nest(v))
            return torch.cat(list(out.transpose(1, 2).flatten(-2).unbind()))

        def view(x):
            dense = x.new_zeros(n_rows, width, x.shape[-1])
            dense[row, pos] = x
            return dense.view(n_rows, width, self.heads, hd).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            view(q), view(k), view(v), attn_mask=mask[:, None, None, :]
        )
        return out.transpose(1, 2).reshape(n_rows, width, -1)[row, pos]


def timed(fn, sync) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def stats(times: list[float], pairs: int) -> dict:
    return {
        "p50_ms": 1000 * float(np.percentile(times, 50)),
        "p99_ms": 1000 * float(np.percentile(times, 99)),
        "pairs_per_s": pairs * len(times) / float(sum(times)),
        "calls": len(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="passes over the queries per path")
    ap.add_argument("--embed-docs", type=int, default=2000)
    ap.add_argument("--attention", choices=["padded-view", "njt", "both"], default="both")
    ap.add_argument(
        "--tiny", action="store_true", help="2-layer model: a smoke test of this script"
    )
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    args = ap.parse_args()

    import torch

    from rankwise.models import Embedder, Reranker

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    result: dict = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if cuda else "cpu (smoke test only)",
        "torch": torch.__version__,
        "shape": "tiny (smoke test)"
        if args.tiny
        else "XLM-R large (bge-reranker-v2-m3 / bge-m3), random weights",
        "workload": f"{args.queries} queries x Top-{args.top} synthetic product pairs, 20-300 words",
        "targets": {"rerank_top100_p50_ms_fp16_h100": 30.0, "unpadded_over_padded": 1.5},
    }
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rr_dir, em_dir = build_models(Path(tmp), args.tiny)
        result["build_s"] = time.perf_counter() - t_start
        data = workload(args.queries, args.top)
        n = args.top

        # -- rerank: rankwise fp16 (its GPU default), then the same module in fp32 ------------
        rr = Reranker(
            str(rr_dir), device=device, max_length=512, batch_size=128, score_cache_size=0
        )
        rr.score(data[0]["query"], data[0]["docs"])  # warm-up
        paths = {}

        def run_path(name, score_fn):
            score_fn(data[0]["query"], data[0]["docs"])
            times = [
                timed(lambda i=i: score_fn(i["query"], i["docs"]), sync)
                for _ in range(args.repeats)
                for i in data
            ]
            paths[name] = stats(times, n)

        run_path(f"rankwise-{'fp16' if cuda else 'fp32'}-sorted-batches", rr.score)
        ref16 = np.concatenate([rr.score(i["query"], i["docs"]) for i in data])

        # padded: the whole Top-100 as one batch padded to its longest pair
        def padded(q, docs, model=rr):
            from rankwise.models.base import pad_batch

            enc = model.tokens.encode_pairs(
                [(q, d) for d in docs], model.max_length, model.query_max_share
            )
            feed = pad_batch(enc, model.runner.input_names, model.tokens.pad_id)
            return model.runner(feed)

        run_path(f"padded-one-batch-{'fp16' if cuda else 'fp32'}", padded)

        modes = ["padded-view", "njt"] if args.attention == "both" else [args.attention]
        for mode in modes:
            packed = PackedXlmr(rr.runner.module.model, mode)

            def unpadded(q, docs, model=rr, packed=packed):
                enc = model.tokens.encode_pairs(
                    [(q, d) for d in docs], model.max_length, model.query_max_share
                )
                with torch.inference_mode():
                    return packed([ids for ids, _ in enc]).cpu().numpy()

            try:
                run_path(f"unpadded-{mode}", unpadded)
                got = np.concatenate([unpadded(i["query"], i["docs"]) for i in data[:3]])
                diff = float(np.abs(got - ref16[: len(got)]).max())
                paths[f"unpadded-{mode}"]["max_abs_diff_vs_sorted_batches"] = diff
            except Exception as e:  # report, do not stop the other checks
                paths[f"unpadded-{mode}"] = {"error": f"{type(e).__name__}: {e}"}

        rr.runner.module.float()
        run_path("rankwise-fp32-sorted-batches", rr.score)
        ref32 = np.concatenate([rr.score(i["query"], i["docs"]) for i in data])
        result["fp16_vs_fp32_max_abs_logit_diff"] = float(np.abs(ref16 - ref32).max())
        result["rerank"] = paths
        del rr
        if cuda:
            torch.cuda.empty_cache()

        # -- embeddings ------------------------------------------------------------------------
        rng = random.Random(1)
        docs = [synthetic_text(rng, rng.randint(20, 300)) for _ in range(args.embed_docs)]
        em = Embedder(str(em_dir), device=device, max_length=512, batch_size=128)
        em.encode_documents(docs[:64])
        dt = timed(lambda: em.encode_documents(docs), sync)
        result["embed"] = {"docs": len(docs), "docs_per_s": len(docs) / dt, "seconds": dt}
        em = None  # free its GPU memory before the OOM check

        # -- OOM backoff on the real device ----------------------------------------------------
        result["oom_backoff"] = oom_check(rr_dir, device, data, cuda, sync)

    fp16 = next((v for k, v in result["rerank"].items() if k.startswith("rankwise-fp16")), None)
    pad = next((v for k, v in result["rerank"].items() if k.startswith("padded")), {})
    unp = max(
        (v for k, v in result["rerank"].items() if k.startswith("unpadded") and "pairs_per_s" in v),
        key=lambda v: v["pairs_per_s"],
        default={},
    )
    result["verdict"] = {
        "rerank_top100_p50_ms_fp16": fp16["p50_ms"] if fp16 else None,
        "p50_target_met": bool(fp16 and fp16["p50_ms"] <= 30.0),
        "unpadded_over_padded": (
            unp["pairs_per_s"] / pad["pairs_per_s"]
            if "pairs_per_s" in unp and "pairs_per_s" in pad
            else None
        ),
    }
    result["total_s"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def oom_check(rr_dir: Path, device: str, data: list[dict], cuda: bool, sync) -> dict:
    """Cap this process's GPU memory, ask for one huge batch, and check that rankwise backs off
    to a size that fits, scoring exactly what small batches score."""
    import torch

    from rankwise.models import Reranker

    pairs = [(i["query"], d) for i in data for d in i["docs"]]
    if not cuda:
        return {
            "skipped": "no GPU: the backoff is covered by tests/test_backoff.py (fault injection)"
        }
    small = Reranker(str(rr_dir), device=device, max_length=512, batch_size=16, score_cache_size=0)
    expected = small.score_pairs(pairs)
    del small
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = 6e9 / total  # ~6 GB: fp16 weights (1.1 GB) plus a few GB of activations
    torch.cuda.set_per_process_memory_fraction(fraction)
    big = Reranker(
        str(rr_dir), device=device, max_length=512, batch_size=len(pairs), score_cache_size=0
    )
    big.batch_overhead = None
    t = time.perf_counter()
    try:
        got = big.score_pairs(pairs)
        first = time.perf_counter() - t
        t = time.perf_counter()
        big.score_pairs(pairs)
        second = time.perf_counter() - t
        out = {
            "memory_cap_gb": fraction * total / 1e9,
            "pairs": len(pairs),
            "asked_batch_rows": len(pairs),
            "learnt_rows_per_bucket": {str(k): v for k, v in big.oom_backoff.limits.items()},
            "max_abs_diff_vs_small_batches": float(np.abs(got - expected).max()),
            "first_call_s": first,
            "second_call_s": second,
        }
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    return out


if __name__ == "__main__":
    main()
