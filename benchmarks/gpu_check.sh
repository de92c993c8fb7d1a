#!/usr/bin/env bash
# GPU check for rankwise, prepared to run on a lent NVIDIA GPU with no network, in < 8 minutes.
#
# Targets (stated before any run):
#   - bge-reranker-v2-m3 shape (XLM-R large, random weights), Top-100 product pairs per call:
#     p50 <= 30 ms in fp16 on an H100-class GPU (rankwise's default GPU path);
#   - unpadded (packed dense layers + varlen/masked SDPA attention) >= 1.5x padded pairs/s on
#     mixed lengths (20-300 words per product);
#   - OOM backoff: with the process capped to ~6 GB of GPU memory, a batch of all 2,000 pairs
#     completes by halving, with scores equal (fp16 noise) to small batches.
# Also reported: fp32 vs fp16, p99, pairs/s, embeddings docs/s (bge-m3 shape).
#
# Exact command (repository root; needs torch with CUDA, transformers, tokenizers, numpy, tqdm,
# all in the GPU image; rankwise is taken from ./src):
#   OUT=/some/dir bash benchmarks/gpu_check.sh
# Writes $OUT/gpu_check.json and $OUT/gpu_check.log. CPU smoke test of the script itself:
#   python benchmarks/gpu_check.py --tiny --queries 3 --top 20 --repeats 1 --embed-docs 50 --out /tmp/g.json
set -euo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_check.log" || true
timeout 470 "${PYTHON:-python3}" benchmarks/gpu_check.py --queries 20 --top 100 --repeats 3 \
  --embed-docs 2000 --out "$OUT/gpu_check.json" 2>&1 | tee -a "$OUT/gpu_check.log"
