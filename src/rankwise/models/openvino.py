"""OpenVINO backend: convert the torch head once, optionally quantise with NNCF, cache, run on the CPU.

Pipeline (each stage cached on disk like the ONNX backend's, keyed by a hash of model + revision
+ options + tool versions; built in a temporary folder and renamed into place):

1. ``openvino.convert_model`` (PyTorch frontend, dynamic batch and sequence) of the very head
   module the torch runner uses (:func:`rankwise.models.runners.load_torch_head`), saved as
   fp32 IR (``model.xml`` + ``model.bin``; ``compress_to_fp16=False``);
2. ``quantize="int8"`` / ``"int8-full"``: NNCF post-training *static* quantisation
   (``nncf.quantize``, ``ModelType.TRANSFORMER``) calibrated on tokenised examples (see
   :func:`calibration_examples`); ``int8`` keeps the feed-forward matmuls of the first
   ``INT8_FP32_FFN_LAYERS`` layers fp32 as the ONNX backend does, ``int8-full`` quantises all;
   ``quantize="int8-weights"``: weight-only int8 (``nncf.compress_weights``), no calibration;
3. compiled for the CPU with a latency hint, one stream and the thread count rankwise uses
   (``RANKWISE_ONNX_THREADS`` or the physical cores). ``quantize="bf16"`` runs the fp32 IR with
   bf16 inference precision (what OpenVINO picks by itself on CPUs with native bf16);
   ``None`` and ``int8-weights`` pin fp32, so "fp32" means fp32 on every CPU; static int8
   runs what it leaves in float in bf16 where the CPU has native bf16 (as sentence-transformers'
   int8 export does there), else fp32 (:func:`float_precision`).

Batch widths are padded to a multiple of :data:`PAD_MULTIPLE` tokens (fewer distinct shapes for
OpenVINO's dynamic-shape kernels). ``backend="auto"`` with no ``quantize`` runs
:func:`auto_quantize`: static ``int8-full`` on CPUs with native bf16 (its float ops in bf16),
fp32 elsewhere (on an AVX2 EPYC without VNNI its static int8 was slower than fp32, 19.4 vs
26.2 pairs/s; ``auto`` prefers ONNX Runtime there: benchmarks/results/rerank_speed_avx2.md).

Calibration data for static int8: the JSONL/text file named by ``$RANKWISE_CALIBRATION`` (one
``{"query": ..., "document": ...}`` or ``{"text": ...}`` object, or one plain text, per line),
else the sample catalog shipped with rankwise (``rankwise/sample``: 120+ zh/en products and their
demo queries). Why: static int8 needs activations that look like the served traffic, the library
must work offline with no dataset, and the environment variable reaches the CLI, the server and
Python alike without another constructor argument. The file's hash is part of the cache key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankwise.errors import ModelLoadError
from rankwise.models.device import cpu_threads
from rankwise.models.loading import ResolvedModel, short_hash
from rankwise.models.onnx import INT8_FP32_FFN_LAYERS, cache_root, export_dir
from rankwise.models.onnx import _cached as cached_build
from rankwise.models.specs import Kind, Pooling

log = logging.getLogger(__name__)

IR_FORMAT = 1  # bump when the converted graph or the quantisation recipe changes
QUANTIZE = (None, "bf16", "int8", "int8-full", "int8-weights")
CALIBRATION_ENV = "RANKWISE_CALIBRATION"
CALIBRATION_SIZE = 300  # examples; what sentence-transformers' static OpenVINO export uses
CALIBRATION_BATCH = 8
_IR_FILE = "model.xml"
# Compile settings (module constants so that benchmarks/rerank_speed.py can vary them per worker):
PERFORMANCE_HINT = "LATENCY"  # one request at a time, as rankwise calls the model
NUM_STREAMS = "1"
# Inference precision of what static int8 leaves in float: "auto" (bf16 where the CPU has
# native bf16, as OpenVINO and sentence-transformers' int8 export run it; f32 elsewhere), "f32"
# or "bf16". $RANKWISE_OPENVINO_PRECISION overrides it.
INT8_FLOAT_PRECISION = "auto"
PRECISION_ENV = "RANKWISE_OPENVINO_PRECISION"
# Batch widths are padded up to a multiple of this many tokens (1: to the longest row): each
# new input shape costs OpenVINO's dynamic-shape kernels extra (int8 MiniLM, 8 rows x 161-170
# tokens: 98 ms per pass vs 74 ms for a shape seen before), and width steps of 16 cut the
# shapes a Top-50 call meets (rerank_speed_peers.md: int8-full 100.9 -> 128.8 pairs/s).
PAD_MULTIPLE = 16
# NNCF preset for static int8: "performance" (symmetric activations) ran faster than NNCF's
# default for transformers, "mixed" (asymmetric activations, which also sentence-transformers'
# export uses), at equal rankings (rerank_speed_peers.md); None: NNCF's default.
NNCF_PRESET: str | None = "performance"
# Feed-forward linear layers of BERT-family encoders in the converted graph's node names
# (``...encoder.layer.N.intermediate.dense/aten::linear/MatMul``, DistilBERT ``layer.N.ffn.lin1``).
_FFN_PATTERN = r".*layer\.{layer}\.(?:intermediate\.dense|output\.dense|ffn\.lin1|ffn\.lin2)/.*"


def missing_openvino(quantize: str | None) -> str | None:
    """Why the backend cannot run here (a sentence with the fix), or None when it can."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "the 'openvino' package is not installed. Fix: pip install 'rankwise[openvino]'"
    if quantize in ("int8", "int8-full", "int8-weights"):
        try:
            import nncf  # noqa: F401
        except ImportError:
            return (
                f"quantize='{quantize}' needs the 'nncf' package. "
                "Fix: pip install 'rankwise[openvino]'"
            )
    return None


def ir_dir(resolved: ResolvedModel) -> Path:
    """``<model folder>/openvino`` for writable local folders, else the rankwise cache."""
    base = export_dir(resolved)
    if base.name == "onnx" and base.parent == resolved.root:
        return resolved.root / "openvino"
    return cache_root().parent / "openvino" / base.name


# -- calibration --------------------------------------------------------------------------------
def _sample_examples(kind: Kind) -> list[str | tuple[str, str]]:
    folder = Path(__file__).resolve().parent.parent / "sample"
    products = [
        json.loads(line) for line in (folder / "products.jsonl").read_text("utf-8").splitlines()
    ]
    docs = [f"{p.get('title', '')} {p.get('text', '')}".strip() for p in products]
    if kind == "embedder":
        return docs
    queries = [q["query"] for q in json.loads((folder / "queries.json").read_text("utf-8"))]
    return [(queries[i % len(queries)], d) for i, d in enumerate(docs)] + [
        (queries[(i + 3) % len(queries)], d) for i, d in enumerate(docs)
    ]


def calibration_examples(kind: Kind) -> tuple[list[str | tuple[str, str]], str]:
    """Texts (embedder) or (query, document) pairs (reranker) to calibrate static int8 on, and
    a digest of their source for the cache key. ``$RANKWISE_CALIBRATION`` wins over the sample."""
    path = os.environ.get(CALIBRATION_ENV)
    if not path:
        examples = _sample_examples(kind)
        return examples[:CALIBRATION_SIZE], "rankwise-sample"
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ModelLoadError(f"Cannot read {CALIBRATION_ENV}={path}: {e.strerror}.") from None
    examples: list[str | tuple[str, str]] = []
    for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line) if line.lstrip().startswith("{") else line
        except json.JSONDecodeError:
            raise ModelLoadError(f"{CALIBRATION_ENV}={path}: line {n} is not valid JSON.") from None
        if isinstance(item, str):
            examples.append(("", item) if kind == "reranker" else item)
        elif kind == "reranker" and {"query", "document"} <= item.keys():
            examples.append((str(item["query"]), str(item["document"])))
        elif "text" in item or "document" in item:
            text = str(item.get("text", item.get("document")))
            examples.append(text if kind == "embedder" else (str(item.get("query", "")), text))
        else:
            raise ModelLoadError(
                f"{CALIBRATION_ENV}={path}: line {n} needs 'query' and 'document' (or 'text')."
            )
    if not examples:
        raise ModelLoadError(f"{CALIBRATION_ENV}={path} holds no examples.")
    return examples[:CALIBRATION_SIZE], hashlib.sha256(raw).hexdigest()[:16]


# -- conversion ---------------------------------------------------------------------------------
def _convert(resolved: ResolvedModel, kind: Kind, pooling: Pooling, out: Path) -> None:
    import openvino as ov
    import torch

    from rankwise.models.runners import load_torch_head

    head, names = load_torch_head(
        resolved, kind=kind, pooling=pooling, dtype=torch.float32, attn="sdpa"
    )
    example = {n: torch.ones(2, 8, dtype=torch.long) for n in names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        model = ov.convert_model(head, example_input=example)
    for port, name in zip(model.inputs, names, strict=True):  # dynamic (batch, sequence)
        port.get_tensor().set_names({name})
    model.reshape({name: ov.PartialShape([-1, -1]) for name in names})
    ov.save_model(model, str(out / _IR_FILE), compress_to_fp16=False)


def _quantize(
    src: Path, out: Path, mode: str, feeds: Callable[[], list[dict[str, np.ndarray]]]
) -> None:
    import openvino as ov

    # NNCF draws progress bars on stdout, which would corrupt a CLI's --json output
    with contextlib.redirect_stdout(sys.stderr):
        model = _nncf_run(ov.Core().read_model(str(src)), mode, feeds)
    ov.save_model(model, str(out / _IR_FILE), compress_to_fp16=False)


def _nncf_run(model, mode: str, feeds: Callable[[], list[dict[str, np.ndarray]]]):
    import nncf

    if mode == "int8-weights":
        model = nncf.compress_weights(model)  # INT8_ASYM per channel, activations stay float
    else:
        ignored = None
        if mode == "int8":
            ignored = nncf.IgnoredScope(patterns=_ffn_scope(), validate=False)
        names = {p.get_any_name() for p in model.inputs}
        data = [{k: v for k, v in batch.items() if k in names} for batch in feeds()]
        extra: dict = {"ignored_scope": ignored} if ignored else {}
        if NNCF_PRESET:
            extra["preset"] = nncf.QuantizationPreset(NNCF_PRESET)
        model = nncf.quantize(
            model,
            nncf.Dataset(data),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(data),
            **extra,
        )
    return model


def ir_model_file(
    resolved: ResolvedModel,
    *,
    kind: Kind,
    pooling: Pooling,
    quantize: str | None = None,
    revision: str | None = None,
    feeds: Callable[[list], list[dict[str, np.ndarray]]] | None = None,
) -> Path:
    """The cached OpenVINO IR for this model and options, built on first use.

    ``feeds(examples)`` turns calibration examples into padded int64 batches (static int8 only).
    """
    import openvino
    import torch

    base = ir_dir(resolved)
    key = (resolved.fingerprint(), revision, kind, pooling, IR_FORMAT)
    key += (torch.__version__, openvino.__version__)
    fp32_dir = base / f"rankwise-{kind}-{short_hash(*key)}"
    try:
        if not (fp32_dir / _IR_FILE).is_file():
            log.warning(
                "Converting %s to OpenVINO once (cached in %s)", resolved.model_id, fp32_dir
            )
        fp32 = cached_build(
            fp32_dir, lambda out: _convert(resolved, kind, pooling, out), filename=_IR_FILE
        )
        if quantize in (None, "bf16"):
            return fp32
        import nncf

        options: tuple = (quantize, nncf.__version__)
        examples, source = [], ""
        if quantize in ("int8", "int8-full"):
            examples, source = calibration_examples(kind)
            options += (source, INT8_FP32_FFN_LAYERS if quantize == "int8" else 0)
            options += (NNCF_PRESET,) if NNCF_PRESET else ()
        q_dir = base / f"rankwise-{kind}-{short_hash(*key, *options)}"
        if not (q_dir / _IR_FILE).is_file():
            log.warning("Quantising %s (%s) with NNCF once", resolved.model_id, quantize)
        return cached_build(
            q_dir,
            lambda out: _quantize(fp32, out, quantize, lambda: feeds(examples)),
            filename=_IR_FILE,
        )
    except ModelLoadError:
        raise
    except Exception as e:  # converter/quantizer failures come in many types
        raise ModelLoadError(
            f"Cannot convert '{resolved.model_id}' to OpenVINO ({type(e).__name__}: "
            f"{str(e).strip()[:300]}). Fix: use backend='onnx' or 'torch', or report the model "
            "architecture."
        ) from e


@functools.cache
def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX-512 BF16 or AMX): its
    ``OPTIMIZATION_CAPABILITIES`` list "BF16". False on AVX2-only CPUs, where bf16 is emulated."""
    import openvino as ov

    try:
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an old plugin without the property: assume no native bf16
        return False


# What backend="auto" runs when quantize is not given: on CPUs with native bf16 and on the
# others (measured in benchmarks/results/rerank_speed_peers.md)
AUTO_QUANTIZE_BF16_CPU: str | None = "int8-full"
AUTO_QUANTIZE_OTHER_CPU: str | None = None


def auto_quantize() -> tuple[str | None, str]:
    """``(quantize, reason)`` for ``backend="auto"`` with no ``quantize`` given."""
    if native_bf16():
        q = AUTO_QUANTIZE_BF16_CPU
        return q, f"quantize={q!r}: this CPU runs bf16 natively"
    q = AUTO_QUANTIZE_OTHER_CPU
    return q, f"quantize={q!r}: this CPU has no native bf16"


def float_precision(quantize: str | None) -> str:
    """Inference precision for the ops that are not int8: ``bf16`` for ``quantize="bf16"``;
    f32 for ``None`` and ``int8-weights`` ("fp32 means fp32"); for static int8,
    ``$RANKWISE_OPENVINO_PRECISION`` or :data:`INT8_FLOAT_PRECISION` (``auto``: bf16 where
    :func:`native_bf16`, else f32)."""
    if quantize == "bf16":
        return "bf16"
    if quantize not in ("int8", "int8-full"):
        return "f32"
    wanted = os.environ.get(PRECISION_ENV) or INT8_FLOAT_PRECISION
    if wanted not in ("auto", "f32", "bf16"):
        raise ModelLoadError(f"{PRECISION_ENV}={wanted!r}: use auto, f32 or bf16.")
    if wanted == "auto":
        return "bf16" if native_bf16() else "f32"
    return wanted


def compile_config(quantize: str | None, threads: int | None = None) -> dict[str, str]:
    """CPU plugin properties: latency hint (one request at a time, as rankwise calls), one
    stream, ``threads`` or ``$RANKWISE_ONNX_THREADS`` or the physical cores; the precision of
    :func:`float_precision`."""
    n = cpu_threads(threads)
    return {
        "PERFORMANCE_HINT": PERFORMANCE_HINT,
        "NUM_STREAMS": NUM_STREAMS,
        "INFERENCE_NUM_THREADS": str(n),
        "INFERENCE_PRECISION_HINT": float_precision(quantize),
    }


class OpenVinoRunner:
    """Runs the converted head with OpenVINO on the CPU. Thread-safe: each calling thread gets
    its own infer request (one compiled model, shared weights)."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        kind: Kind,
        pooling: Pooling,
        quantize: str | None = None,
        revision: str | None = None,
        threads: int | None = None,
        feeds: Callable[[list], list[dict[str, np.ndarray]]] | None = None,
    ):
        if quantize not in QUANTIZE:
            raise ModelLoadError(f"Unknown OpenVINO quantize '{quantize}'.")
        if why := missing_openvino(quantize):
            raise ModelLoadError(f"Cannot use backend='openvino': {why}.")
        import openvino as ov

        self.path = ir_model_file(
            resolved, kind=kind, pooling=pooling, quantize=quantize, revision=revision, feeds=feeds
        )
        self.config = compile_config(quantize, threads)
        try:
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", self.config)
        except Exception as e:  # a stale or foreign IR, or a plugin that refuses it
            raise ModelLoadError(
                f"Cannot compile {self.path} with OpenVINO ({type(e).__name__}: {e}). "
                "Fix: delete that folder to convert again, or use backend='onnx'."
            ) from e
        self.input_names = tuple(p.get_any_name() for p in self.compiled.inputs)
        # measured for reranking (pairs of ~170 tokens); short embedder texts keep exact widths
        self.pad_multiple = PAD_MULTIPLE if kind == "reranker" else 1
        # and rows in buckets (batching.bucket_rows): its runtime cache keeps every shape met
        self.row_buckets = kind == "reranker"
        self._local = threading.local()

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({k: inputs[k] for k in self.input_names}, share_inputs=True)
        return np.array(out[0], dtype=np.float32)  # a copy: the request reuses its buffers


def _ffn_scope() -> list[str]:
    """Node-name patterns of the feed-forward matmuls ``int8`` keeps fp32 (first layers)."""
    return [_FFN_PATTERN.format(layer=i) for i in range(INT8_FP32_FFN_LAYERS)]


def ffn_patterns() -> list[re.Pattern[str]]:
    """The node-name patterns ``int8`` keeps fp32, compiled (for tests and reports)."""
    return [re.compile(p) for p in _ffn_scope()]
