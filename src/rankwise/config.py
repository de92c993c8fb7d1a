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
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"
#: Model names that switch a model off (``--reranker none``), everywhere.
OFF = ("", "none", "off")


def model_or_none(name: str | None) -> str | None:
    """``name``, or None when it is None or switches the model off ("", "none", "off")."""
    return None if name is None or name.strip().lower() in OFF else name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKWISE_", extra="forbid")

    # models
    embedder: str = DEFAULT_EMBEDDER
    embedder_revision: str | None = None
    reranker: str | None = DEFAULT_RERANKER
    reranker_revision: str | None = None
    device: str | None = None
    backend: Literal["torch", "onnx"] = "torch"
    quantize: Literal["int8", "int8-full"] | None = None
    # remote models (an embedder/reranker given as an http(s) URL; see models/remote.py)
    embedder_api_key: SecretStr | None = None
    reranker_api_key: SecretStr | None = None
    remote_timeout: float = Field(60.0, gt=0)  # seconds per request
    remote_concurrency: int = Field(4, ge=1)  # requests in flight per remote model
    remote_max_retries: int = Field(5, ge=0)  # on connection errors, 408/409/429/5xx
    # store
    index: str = "./index"
    # search
    # None: the pipeline calibrated for the index (`rankwise tune fusion`), else hybrid RRF
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    top_k: int = Field(50, ge=1, le=1000)
    top_n: int = Field(10, ge=1, le=1000)
    fusion: Literal["rrf", "weighted"] = "rrf"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    skip_margin: float | None = Field(None, ge=0.0)
    # issue 17: chunked rerank, rerank text template, blend stage (rankwise.blend)
    max_chunks_per_doc: int = Field(1, ge=1, le=64)  # windows per long document (1: truncate)
    chunk_aggregate: Literal["max", "mean-top2"] = "max"
    rerank_template: str | None = None  # e.g. "{title} | {brand} | {text}" (None: title + text)
    blend: str | None = None  # a `rankwise tune blend` folder: the final ranking stage
    # cache (server)
    cache_url: str | None = None
    cache_ttl: int = Field(300, ge=0)
    cache_size: int = Field(10_000, ge=0)
    score_cache_size: int = Field(100_000, ge=0)  # reranker (query, document) scores; 0 = off
    # server (`rankwise serve`; see server/settings docs in server/__init__.py)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # "k1,k2"
    max_documents: int = Field(1000, ge=1)  # per rerank call (more → 413)
    max_inputs: int = Field(2048, ge=1)  # per embeddings call (more → 413)
    max_chars: int = Field(100_000, ge=1)  # per document / input text (longer → 413)
    max_payload_bytes: int = Field(4_000_000, ge=1024)  # request body (larger → 413)
    truncate: bool = True  # inputs over the model's max tokens: truncate, or 413 when False
    max_queue: int = Field(256, ge=1)  # requests waiting per model (more → 429)
    batching: bool = True  # cross-request batching (False: one request per model call)
    batch_wait_ms: float = Field(5.0, ge=0.0)  # wait for more requests once one is queued
    batch_tokens: int = Field(32_768, ge=1)  # token budget of one model call (big requests split)
    max_request_tokens: int = Field(524_288, ge=1)  # cost of one request in tokens (more → 413)
    max_queue_tokens: int = Field(2_097_152, ge=1)  # tokens waiting per model (more → 429)
    body_timeout: float = Field(30.0, gt=0)  # seconds between body chunks (slower → 408)
    header_timeout: float = Field(10.0, gt=0)  # seconds to send request headers (then closed)
    weaviate_auth: bool = True  # /weaviate/* need an API key when api_keys are set
    # workbench page (`rankwise serve --judgments FILE --compare-reranker MODEL`)
    judgments: str | None = None  # BEIR qrels TSV that POST /v1/judgments appends to
    compare_reranker: str | None = None  # second cross-encoder for the compare view

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


def _toml_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})") from None
    return data.get("rankwise", data)


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` (e.g. CLI options) win, ``None`` values are ignored."""
    file_values: dict[str, Any] = {}
    cfg = os.environ.get("RANKWISE_CONFIG")
    path = Path(cfg) if cfg else Path("rankwise.toml")
    if cfg and not path.exists():
        raise ConfigError(f"RANKWISE_CONFIG points to {path}, which does not exist")
    if path.exists():
        file_values = _toml_values(path)
    try:
        from_env = Settings()  # reads RANKWISE_* only
        env_set = {k: getattr(from_env, k) for k in from_env.model_fields_set}
        cli_set = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**{**file_values, **env_set, **cli_set})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid setting '{loc}': {first['msg']}") from None
