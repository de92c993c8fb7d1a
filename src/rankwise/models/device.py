"""Device and dtype choice: cuda, then mps, then cpu; fp16 on GPUs, fp32 on CPU."""

from __future__ import annotations

import functools
import os

from rankwise.errors import ConfigError


def resolve_device(device: str | None = None) -> str:
    """``device`` checked for availability, or the best available one when ``None``.

    Returns a torch device string (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``).
    Raises ConfigError when the requested device is not usable here.
    """
    import torch

    if device is None:
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":", 1)[0]
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }
    if kind not in available:
        raise ConfigError(
            f"Unknown device '{device}'. Use cpu, cuda, cuda:N, mps, or leave it unset (auto)."
        )
    if not available[kind]:
        raise ConfigError(
            f"Device '{device}' is not available on this machine. Fix: leave device unset (auto) or use cpu."
        )
    return device


def torch_dtype(device: str):
    """fp16 on GPUs (cuda, mps), fp32 on CPU (CPU fp16 matmuls are slower, not faster)."""
    import torch

    return torch.float32 if device.startswith("cpu") else torch.float16


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not add matmul throughput)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:  # psutil is optional: fall back to logical CPUs
        cores = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or logical or 1, logical or 1))


def cpu_threads(threads: int | None = None) -> int:
    """Threads for a CPU inference engine (ONNX Runtime, OpenVINO): ``threads``, else
    ``$RANKWISE_ONNX_THREADS`` (e.g. a container's CPU quota), else the physical cores."""
    return threads or int(os.environ.get("RANKWISE_ONNX_THREADS") or 0) or physical_cores()


def _importable(module: str) -> bool:
    import importlib.util
    import sys

    if module in sys.modules:  # imported already, or blocked (None)
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): the ``avx512_bf16`` /
    ``amx_bf16`` flags of /proc/cpuinfo; elsewhere OpenVINO's view when it is installed
    (:func:`rankwise.models.openvino.native_bf16`), else False."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    if _importable("openvino"):
        from rankwise.models.openvino import native_bf16 as openvino_bf16

        return openvino_bf16()
    return False


def auto_cpu_backends(quantize: str | None) -> list[str]:
    """The CPU backends ``backend="auto"`` tries, fastest first, that can run ``quantize``.

    On CPUs with native bf16 OpenVINO first (static int8 with bf16 float ops: 1.51-1.62x
    sentence-transformers' fastest path on AVX-512 and AMX), then ONNX Runtime; elsewhere
    ONNX Runtime first (AVX2 without VNNI: its dynamic int8 reranks 42.9 pairs/s where
    OpenVINO manages 26.2 in fp32 and 19.4 in static int8), then OpenVINO; torch last (fp32
    only). Measured in benchmarks/results/rerank_speed_peers*.md. OpenVINO needs ``nncf``
    for int8."""
    int8 = quantize in ("int8", "int8-full", "int8-weights")
    runs = {
        "openvino": _importable("openvino") and (not int8 or _importable("nncf")),
        "onnx": quantize in (None, "int8", "int8-full") and _importable("onnxruntime"),
    }
    order = [
        b for b in (("openvino", "onnx") if native_bf16() else ("onnx", "openvino")) if runs[b]
    ]
    if quantize is None:
        order.append("torch")
    return order


# Pins what backend="auto" picks on a CPU (torch, onnx or openvino), e.g. to keep a test suite
# on torch instead of converting every model it builds.
AUTO_BACKEND_ENV = "RANKWISE_AUTO_BACKEND"


def auto_backends(on_cpu: bool, quantize: str | None) -> tuple[list[str], str]:
    """What ``backend="auto"`` tries, in order, and why: torch on an accelerator; on a CPU
    :func:`auto_cpu_backends`, or the one ``$RANKWISE_AUTO_BACKEND`` names."""
    if not on_cpu:
        return ["torch"], "auto: torch on an accelerator"
    pinned = os.environ.get(AUTO_BACKEND_ENV)
    if pinned:
        if pinned not in ("torch", "onnx", "openvino"):
            raise ConfigError(f"{AUTO_BACKEND_ENV}={pinned!r}: use torch, onnx or openvino.")
        return [pinned], f"auto: {pinned}, pinned by ${AUTO_BACKEND_ENV}"
    candidates = auto_cpu_backends(quantize)
    if not candidates:
        raise ConfigError(f"backend='auto': no installed backend runs quantize='{quantize}'.")
    return candidates, (
        f"auto: {candidates[0]}, the fastest CPU backend installed (of {', '.join(candidates)})"
    )
