"""ONNX Runtime backend: export once, fuse, optionally quantise to int8, cache, run.

Pipeline (each stage cached on disk, keyed by a hash of model + revision + options + tool
versions, so the second load only opens a session):

1. ``torch.onnx.export`` (TorchScript exporter, dynamic batch and sequence axes) of the very
   head module the torch runner uses (pooling + normalisation, or the single logit), with eager
   attention so that the graph has the plain MatMul/Softmax pattern;
2. ``onnxruntime.transformers.optimizer`` fuses it into ORT's Attention, EmbedLayerNormalization,
   SkipLayerNormalization and BiasGelu kernels;
3. for ``quantize="int8"``, ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, uint8
   activations quantised per batch; Attention becomes QAttention), except the feed-forward
   matmuls of the first ``INT8_FP32_FFN_LAYERS`` layers, which stay fp32 (mixed precision, see
   below); ``quantize="int8-full"`` quantises every matmul.

``backend="auto"`` with no ``quantize`` runs :func:`auto_quantize` (``int8-full``: on an AVX2
EPYC without VNNI 1.43x the fp32 session at Spearman 0.99 with it, 2.32x sentence-transformers'
fastest path; on AVX-512 1.66x fp32).

Models over ~2 GB (e.g. bge-m3 in fp32) are written with external data next to the graph.
The cache lives next to a local model folder (``<folder>/onnx/``) when it is writable, else
under ``$RANKWISE_CACHE_DIR`` (default ``~/.cache/rankwise``) — hub snapshots always go there.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rankwise.errors import ModelLoadError
from rankwise.models.device import cpu_threads
from rankwise.models.loading import ResolvedModel, short_hash
from rankwise.models.specs import Kind, Pooling

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph changes, to invalidate caches
OPSET = 17
# Graphs whose weights pass this size are saved with external data (protobuf's limit is 2 GB).
EXTERNAL_DATA_BYTES = 1_800_000_000
# Per-channel int8 weights: on all-MiniLM-L6-v2, per-tensor weights moved document vectors to a
# mean cosine of 0.958 with fp32 (min 0.940), per-channel to 0.992 (min 0.988) at the same speed
# (64 Home Depot titles; speed and rankings in benchmarks/results/{embed,rerank}_speed.md).
INT8_PER_CHANNEL = True
# Mixed precision: the feed-forward matmuls of the first layers stay fp32. Their inputs (GELU
# outputs of early layers) carry outliers that one uint8 scale per tensor cannot represent.
# benchmarks/int8_sensitivity.py (MiniLM cross-encoder, 30 Home Depot test queries x Top-50 that
# rerank_speed does not time): quantising one matmul at a time, the four FFN matmuls of layers
# 0-1 are the four that move rankings most, 63% of the summed damage of all 24. All int8 gave
# per-query Spearman vs torch fp32 mean 0.987 / min 0.935; these four kept fp32: 0.995 / 0.989,
# keeping ~60% of the int8 speed-up (fp32 52.6, mixed 75.2, all int8 88.9 pairs/s).
INT8_FP32_FFN_LAYERS = 2
# Feed-forward matmul names in the exported graph: BERT/RoBERTa/XLM-R/ELECTRA/MPNet
# (``encoder/layer.N/intermediate|output/dense``) and DistilBERT (``layer.N/ffn/lin1|lin2``).
_FFN_NODE = re.compile(
    r"/layer\.(\d+)/(?:intermediate/dense|output/dense|ffn/lin1|ffn/lin2)/MatMul$"
)
# ORT's fusion optimizer knows these encoder families as "bert" (RoBERTa/XLM-R included).
_FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}
_MODEL_FILE = "model.onnx"


def cache_root() -> Path:
    """Where exports of read-only or hub models go: ``$RANKWISE_CACHE_DIR`` or ``~/.cache/rankwise``."""
    base = (
        os.environ.get("RANKWISE_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rankwise"
    )
    return Path(base) / "onnx"


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def export_dir(resolved: ResolvedModel) -> Path:
    """``<model folder>/onnx`` for writable local folders, else the rankwise cache."""
    if resolved.commit is None and _writable(resolved.root):
        return resolved.root / "onnx"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", resolved.model_id.strip("/.~")) or "model"
    return cache_root() / slug


def _cached(folder: Path, build: Callable[[Path], None], filename: str = _MODEL_FILE) -> Path:
    """``folder/<filename>``, built by ``build(tmp_folder)`` when missing (also used by the
    OpenVINO backend for its IR).

    The build runs in a temporary sibling folder renamed into place at the end, so a crash or a
    concurrent process never leaves a half-written model behind.
    """
    target = folder / filename
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        build(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first: keep theirs
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _export(resolved: ResolvedModel, kind: Kind, pooling: Pooling, out: Path) -> None:
    """Export the torch head to ``out/model.onnx`` and fuse it with ORT's optimizer."""
    import torch

    from rankwise.models.runners import load_torch_head

    head, names = load_torch_head(
        resolved, kind=kind, pooling=pooling, dtype=torch.float32, attn="eager"
    )
    large = _param_bytes(head) > EXTERNAL_DATA_BYTES
    raw = out / "raw" / _MODEL_FILE
    raw.parent.mkdir()
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    output = "embeddings" if kind == "embedder" else "scores"
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {output: {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            head,
            dummy,
            str(raw),
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles dynamic axes
            input_names=list(names),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    cfg = resolved.config
    model_type = cfg.get("model_type", "")
    if model_type in _FUSABLE:
        from onnxruntime.transformers.optimizer import optimize_model

        fused = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(cfg.get("num_attention_heads", 0)),
            hidden_size=int(cfg.get("hidden_size", 0)),
            opt_level=1,
            use_gpu=False,
        )
        log.info("ONNX fusion for %s: %s", resolved.model_id, fused.get_fused_operator_statistics())
        fused.save_model_to_file(str(out / _MODEL_FILE), use_external_data_format=large)
    else:
        _save(raw, out / _MODEL_FILE, large)
    shutil.rmtree(raw.parent)


def _save(src: Path, dst: Path, large: bool) -> None:
    import onnx

    model = onnx.load(str(src))
    onnx.save_model(
        model,
        str(dst),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=dst.name + ".data",
    )


def fp32_ffn_nodes(graph, layers: int) -> list[str]:
    """Names of the feed-forward MatMul nodes of encoder layers ``0..layers-1`` in ``graph``."""
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and (m := _FFN_NODE.search(n.name)) and int(m.group(1)) < layers
    ]


def _quantize(src: Path, out: Path, mode: str) -> None:
    """Dynamic int8 quantisation of ``src`` into ``out/model.onnx`` (``mode``: int8, int8-full)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep: list[str] = []
    if mode == "int8":
        keep = fp32_ffn_nodes(
            onnx.load(str(src), load_external_data=False).graph, INT8_FP32_FFN_LAYERS
        )
        if not keep:
            log.warning("No feed-forward layers recognised in %s: every matmul is int8", src)
    quantize_dynamic(
        str(src),
        str(out / _MODEL_FILE),
        weight_type=QuantType.QInt8,
        per_channel=INT8_PER_CHANNEL,
        nodes_to_exclude=keep,
        # fused ORT ops (Attention, SkipLayerNorm) have no ONNX type inference: default to float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
        use_external_data_format=(src.parent / (src.name + ".data")).exists(),
    )


#: what backend="auto" runs when quantize is not given (benchmarks/results/rerank_speed*.md)
AUTO_QUANTIZE: str | None = "int8-full"


def auto_quantize() -> tuple[str | None, str]:
    """``(quantize, reason)`` for ``backend="auto"`` with no ``quantize`` given."""
    return AUTO_QUANTIZE, f"quantize={AUTO_QUANTIZE!r}: dynamic int8, the fastest ONNX path"


def onnx_model_file(
    resolved: ResolvedModel,
    *,
    kind: Kind,
    pooling: Pooling,
    quantize: str | None = None,
    revision: str | None = None,
) -> Path:
    """The cached ONNX graph for this model and options, exported (and quantised) on first use."""
    import onnxruntime
    import torch

    base = export_dir(resolved)
    key = (
        resolved.fingerprint(),
        revision,
        kind,
        pooling,
        EXPORT_FORMAT,
        OPSET,
        torch.__version__,
        onnxruntime.__version__,
    )
    fp32_dir = base / f"rankwise-{kind}-{short_hash(*key)}"
    try:
        if not (fp32_dir / _MODEL_FILE).is_file():
            log.warning("Exporting %s to ONNX once (cached in %s)", resolved.model_id, fp32_dir)
        fp32 = _cached(fp32_dir, lambda out: _export(resolved, kind, pooling, out))
        if quantize is None:
            return fp32
        options = (quantize, INT8_PER_CHANNEL, INT8_FP32_FFN_LAYERS if quantize == "int8" else 0)
        int8_dir = base / f"rankwise-{kind}-{short_hash(*key, *options)}"
        return _cached(int8_dir, lambda out: _quantize(fp32, out, quantize))
    except ModelLoadError:
        raise
    except Exception as e:  # exporter/optimizer/quantizer failures come in many types
        raise ModelLoadError(
            f"Cannot export '{resolved.model_id}' to ONNX ({type(e).__name__}: {str(e).strip()[:300]}). "
            "Fix: use backend='torch', or report the model architecture."
        ) from e


def session_options(threads: int | None = None):
    """ORT options for this machine: intra-op threads = ``threads``, else ``$RANKWISE_ONNX_THREADS``
    (e.g. a container's CPU quota), else the physical cores; full graph optimisation.

    ``$RANKWISE_ONNX_SPIN=0`` turns ORT's spin-waiting of idle intra-op threads off.
    Spinning makes one model's back-to-back calls faster (a single reranker on 2 cores:
    3.31x ``CrossEncoder.predict`` with it, 2.84x without, ``rerank_speed.py``), but where
    several sessions share the cores, as in a server running the embedder and the reranker
    at once, the spinning threads of one steal the cores of the other: a 32-client soak
    served 4.40 req/s with spinning and 5.02 without, with every p99 lower
    (``serve_pressure.py``, ``results/serve_pressure_c_s11soak_{free,nospin}.json``).
    ``rankwise serve`` sets it to 0 unless it is set."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = cpu_threads(threads)
    if os.environ.get("RANKWISE_ONNX_SPIN", "").strip() == "0":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


class OnnxRunner:
    """Runs the exported head with ONNX Runtime on the CPU; thread-safe (ORT sessions are)."""

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        kind: Kind,
        pooling: Pooling,
        quantize: str | None = None,
        revision: str | None = None,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        self.path = onnx_model_file(
            resolved, kind=kind, pooling=pooling, quantize=quantize, revision=revision
        )
        self.session = ort.InferenceSession(
            str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run(None, {k: inputs[k] for k in self.input_names})[0]
        return np.asarray(out, dtype=np.float32)
