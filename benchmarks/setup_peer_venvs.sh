#!/usr/bin/env bash
# Benchmark set-up step (never run by `make test`): the venvs for sentence-transformers' own
# ONNX and OpenVINO backends, which cannot be installed beside rankwise's stack
# (see /work/shared/PEERS.md for why each pin is needed):
#   $VENVS/st-onnx      transformers 4.57 + sentence-transformers 5.x + optimum-onnx 0.1.0
#   $VENVS/st-openvino  transformers 5.5.x + sentence-transformers 6.x + optimum-intel 2.2.0
# torch is the same CPU build rankwise uses (the Makefile's pin), so the model math is the same.
# Usage: bash benchmarks/setup_peer_venvs.sh   (VENVS defaults to /work/venvs; idempotent)
set -euo pipefail
VENVS=${VENVS:-/work/venvs}
PY=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
mkdir -p "$VENVS"

make_venv() {  # name, packages...
  local dir="$VENVS/$1"; shift
  if [ -f "$dir/.ready" ]; then echo "$dir ready"; return; fi
  test -x "$dir/bin/python" || "$PY" -m venv "$dir"
  "$dir/bin/pip" install -q "$TORCH"
  # keep the CPU torch: a dependency asking for a newer torch would pull the CUDA build
  "$dir/bin/pip" install -q "$TORCH" "$@" "numpy<2.5" pandas
  # a torchvision pulled in by a dependency may not match this torch ("torchvision::nms does not
  # exist" breaks transformers' imports); no peer path needs it
  "$dir/bin/pip" uninstall -y -q torchvision 2>/dev/null || true
  touch "$dir/.ready"
  echo "$dir ready"
}

make_venv st-onnx "transformers>=4.57,<4.58" "sentence-transformers>=5.1,<6" \
  "optimum-onnx[onnxruntime]==0.1.0" "optimum>=2.1,<2.2"
make_venv st-openvino "transformers>=5.5,<5.6" "sentence-transformers>=6,<7" \
  "optimum-intel[openvino]==2.2.0" "optimum>=2.3,<2.4" nncf datasets
