"""One settings object for the CLI and the server: defaults < TOML file < environment < arguments.

Environment variables use the prefix ``RANKWISE_`` (``RANKWISE_EMBEDDER``,
``RANKWISE_RERANKER``, ``RANKWISE_INDEX``, ``RANKWISE_CACHE_URL`` ...). A TOML file is read
from ``RANKWISE_CONFIG`` or ``./rankwise.toml`` when present (flat keys, same names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from rankwise.errors import ConfigError

DEFAULT_EMBEDDER = "BAAI/bge-m3"
DEFAULT_RERANKER = "BAAI/bge-reranker-v2-m3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKWISE_", extra="forbid")

    # models
    embedder: str = DEFAULT_EMBEDDER
    embedder_revision: str | None = None
    reranker: str | None = DEFAULT_RERANKER
    reranker_revision: str | None = None
    device: str | None = None
    backend: Literal["torch", "onnx"] = "torch"
    quantize: Literal["int8"] | None = None
    # store
    index: str = "./index"
    # search
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    top_k: int = Field(50, ge=1, le=1000)
    top_n: int = Field(10, ge=1, le=1000)
    fusion: Literal["rrf", "weighted"] = "rrf"
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    skip_margin: float | None = Field(None, ge=0.0)
    # cache (server)
    cache_url: str | None = None
    cache_ttl: int = Field(300, ge=0)
    cache_size: int = Field(10_000, ge=0)


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
