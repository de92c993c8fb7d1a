"""sentence-transformers' own CPU backends as benchmark peers: ONNX (plain, O3, dynamic int8) and
OpenVINO (plain, static int8 calibrated on local Home Depot pairs).

They cannot run beside rankwise's stack (see /work/shared/PEERS.md): each family runs in its
own venv made by ``benchmarks/setup_peer_venvs.sh``, and the speed benchmarks start those paths'
workers with that venv's interpreter. This module is imported inside those venvs too, so it needs
only numpy, torch and sentence-transformers (never rankwise).

Exports are what a user would do, with the functions sentence-transformers documents:
``CrossEncoder(path, backend="onnx")`` (+ ``save_pretrained``), ``export_optimized_onnx_model(ce,
"O3", path)``, ``export_dynamic_quantized_onnx_model(ce, <this CPU's preset>, path)``,
``CrossEncoder(path, backend="openvino")`` and a static int8 OpenVINO export. The last one
calibrates on a hub dataset by default (glue/sst2), unreachable offline; we do the same steps as
``export_static_quantized_openvino_model`` (``OVQuantizer`` + ``OVQuantizationConfig``, 300
samples) on Home Depot *train* (query, title) pairs instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

VENVS = Path(os.environ.get("RANKWISE_PEER_VENVS", "/work/venvs"))
ONNX_PATHS = ("st-onnx", "st-onnx-O3", "st-onnx-qint8")
OPENVINO_PATHS = ("st-openvino", "st-openvino-qint8")
ST_PATHS = ONNX_PATHS + OPENVINO_PATHS
OV_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"


def venv_python(path: str) -> Path:
    """The interpreter of the venv that runs ``path``."""
    family = "st-openvino" if path.startswith("st-openvino") else "st-onnx"
    return VENVS / family / "bin" / "python"


def available(path: str) -> str | None:
    """None when ``path`` can run here, else why not."""
    py = venv_python(path)
    if not py.is_file():
        return f"{py} missing: run benchmarks/setup_peer_venvs.sh"
    return None


def peer_copy(model: Path, kind: str) -> Path:
    """A copy of the model folder for the peer's exports (keeps rankwise's own ``onnx/`` cache
    and the peers' files apart). ``kind``: reranker or embedder. One copy per
    sentence-transformers major version: each venv saves its own ``modules.json`` (6.x names
    modules ``sentence_transformers.base.modules...``, which 5.x cannot import)."""
    import sentence_transformers

    major = sentence_transformers.__version__.split(".")[0]
    out = model.parent / f"{model.name}-st{major}-{kind}"
    if not (out / "config.json").is_file():
        shutil.copytree(
            model,
            out,
            ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"),
            dirs_exist_ok=True,
        )
    return out


def _preset(isa: str) -> str:
    """sentence-transformers' dynamic int8 preset for this CPU."""
    return {"avx512_vnni": "avx512_vnni", "avx512": "avx512"}.get(isa, "avx2")


def onnx_int8_file(isa: str) -> str:
    """The file ``export_dynamic_quantized_onnx_model`` writes: named by the preset's weight
    type, ``qint8`` for the AVX-512 presets and ``quint8`` (unsigned) for AVX2's."""
    weights = "quint8" if _preset(isa) == "avx2" else "qint8"
    return f"onnx/model_{weights}_{_preset(isa)}.onnx"


def _load(path: str, folder: Path, kind: str, threads: int, max_length: int | None):
    """The sentence-transformers model for ``path`` (exports must exist, see :func:`prepare`)."""
    from sentence_transformers import CrossEncoder, SentenceTransformer

    isa = os.environ.get("RANKWISE_BENCH_ISA", "avx2")
    kwargs: dict = {}
    if path.startswith("st-onnx"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        kwargs = {"session_options": so, "provider": "CPUExecutionProvider"}
        backend = "onnx"
        kwargs["file_name"] = {
            "st-onnx": "onnx/model.onnx",
            "st-onnx-O3": "onnx/model_O3.onnx",
            "st-onnx-qint8": onnx_int8_file(isa),
        }[path]
    else:
        backend = "openvino"
        kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": str(threads)}}
        if path == "st-openvino-qint8":
            kwargs["file_name"] = OV_INT8_FILE
    if kind == "reranker":
        return CrossEncoder(
            str(folder), device="cpu", backend=backend, max_length=max_length, model_kwargs=kwargs
        )
    model = SentenceTransformer(str(folder), device="cpu", backend=backend, model_kwargs=kwargs)
    if max_length:
        model.max_seq_length = max_length
    return model


def prepare(family: str, folder: Path, kind: str, calibration: list, isa: str) -> dict:
    """Export every file the ``family`` (st-onnx or st-openvino) paths load, once.

    ``calibration``: (query, title) pairs (reranker) or texts (embedder) for OpenVINO's static int8.
    """
    from sentence_transformers import CrossEncoder, SentenceTransformer

    cls = CrossEncoder if kind == "reranker" else SentenceTransformer
    if family == "st-onnx":
        from sentence_transformers import (
            export_dynamic_quantized_onnx_model,
            export_optimized_onnx_model,
        )

        if not (folder / "onnx" / "model.onnx").is_file():
            cls(str(folder), device="cpu", backend="onnx").save_pretrained(str(folder))
        model = cls(str(folder), device="cpu", backend="onnx")
        if not (folder / "onnx" / "model_O3.onnx").is_file():
            export_optimized_onnx_model(model, "O3", str(folder))
        if not (folder / onnx_int8_file(isa)).is_file():
            export_dynamic_quantized_onnx_model(model, _preset(isa), str(folder))
        return {"files": sorted(p.name for p in (folder / "onnx").glob("*.onnx"))}
    if not (folder / "openvino" / "openvino_model.xml").is_file():
        cls(str(folder), device="cpu", backend="openvino").save_pretrained(str(folder))
    if not (folder / OV_INT8_FILE).is_file():
        _static_int8_openvino(
            cls(str(folder), device="cpu", backend="openvino"), folder, calibration
        )
    return {"files": sorted(p.name for p in (folder / "openvino").glob("*.xml"))}


def _static_int8_openvino(model, folder: Path, calibration: list, n: int = 300) -> None:
    """``export_static_quantized_openvino_model`` with a local calibration set: its steps
    (OVQuantizer over the loaded OVModel, default OVQuantizationConfig, padded to 384 tokens as
    it does), with ``datasets.Dataset.from_dict`` in place of the hub download."""
    import tempfile

    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer

    cfg = OVQuantizationConfig(num_samples=n)
    quantizer = OVQuantizer.from_pretrained(
        model.transformers_model if hasattr(model, "transformers_model") else model[0].auto_model
    )
    rows = calibration[:n]
    if rows and isinstance(rows[0], (list, tuple)):
        enc = model.tokenizer(
            [r[0] for r in rows],
            [r[1] for r in rows],
            padding="max_length",
            max_length=384,
            truncation=True,
        )
    else:
        enc = model.tokenizer(rows, padding="max_length", max_length=384, truncation=True)
    dataset = Dataset.from_dict(dict(enc))
    with tempfile.TemporaryDirectory() as tmp:
        quantizer.quantize(dataset, save_directory=tmp, ov_config=OVConfig(quantization_config=cfg))
        dest = folder / "openvino"
        dest.mkdir(exist_ok=True)
        xml = sorted(Path(tmp).rglob("*.xml"))
        if not xml:
            raise RuntimeError(f"OVQuantizer wrote no .xml: {sorted(Path(tmp).rglob('*'))}")
        shutil.copy(xml[0], dest / Path(OV_INT8_FILE).name)
        shutil.copy(
            xml[0].with_suffix(".bin"), (dest / Path(OV_INT8_FILE).name).with_suffix(".bin")
        )


def reranker_scorer(path: str, folder: Path, threads: int, max_length: int, batch: int):
    """(query, docs) -> raw logits, float32, for an ``st-*`` path."""
    import torch

    ce = _load(path, folder, "reranker", threads, max_length)
    ident = torch.nn.Identity()
    return lambda q, docs: np.asarray(
        ce.predict(
            [(q, d) for d in docs], batch_size=batch, activation_fn=ident, show_progress_bar=False
        ),
        dtype=np.float32,
    )


def embedder_encoder(path: str, folder: Path, threads: int, max_length: int, batch: int):
    """texts -> unit vectors, float32, for an ``st-*`` path."""
    model = _load(path, folder, "embedder", threads, max_length)
    return lambda texts: np.asarray(
        model.encode(
            list(texts), batch_size=batch, normalize_embeddings=True, show_progress_bar=False
        ),
        dtype=np.float32,
    )
