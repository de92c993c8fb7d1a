"""What remote embedders and rerankers share: the URL reference, API keys, error messages,
retry timing and the concurrency cap.

A remote model is named by its URL: ``http://host:30000/v1#bge-large-zh-v1.5`` (the part after
``#`` is the model name sent to the server). Every failure becomes a
:class:`~rankwise.errors.RemoteModelError` that names the URL, the status (or the connection
failure) and a fix; what each status means is one table (:data:`STATUS_ADVICE`).
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rankwise.errors import ConfigError, RemoteModelError
from rankwise.models.specs import Kind

T = TypeVar("T")
R = TypeVar("R")

#: Statuses worth retrying (the openai client retries the same set).
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: Backoff: 0.5 s doubling to at most 8 s, minus up to 25% jitter; a server's Retry-After
#: (seconds or an HTTP date) wins when it asks for at most 60 s. Same policy as the openai
#: client, so the embedder (openai) and the reranker (httpx) back off alike.
INITIAL_DELAY, MAX_DELAY, MAX_RETRY_AFTER = 0.5, 8.0, 60.0

#: status -> (what it means, the fix). ``{key_env}`` is the API-key variable for the model.
STATUS_ADVICE: dict[int, tuple[str, str]] = {
    400: ("the server rejected the request", "check the model name after '#' in the URL"),
    401: (
        "the server refused the API key",
        "set {key_env} (or api_key=) to a key this server accepts",
    ),
    403: ("the API key may not use this model", "use a key with access, or another model"),
    404: (
        "no such endpoint or model",
        "check the URL path ({paths}) and the model name after '#'",
    ),
    413: (
        "the request is too large even split to one input",
        "shorten the text or raise the server's limits",
    ),
    422: ("the server rejected the request", "check the model name after '#' in the URL"),
    429: (
        "the server is still rate-limiting after every retry",
        "lower RANKWISE_REMOTE_CONCURRENCY or raise the server's rate limit",
    ),
}
_SERVER_FAULT = ("the server failed", "check the server's log, then retry")
_PATHS = {"embedder": "the base URL ends in /v1", "reranker": "/v2/rerank, /v1/rerank or /rerank"}


def key_env(kind: Kind) -> str:
    """The environment variable holding the API key for ``kind``."""
    return f"RANKWISE_{kind.upper()}_API_KEY"


@dataclass(frozen=True)
class RemoteRef:
    """A parsed remote model reference.

    Attributes:
        url: the endpoint without the ``#name`` fragment (and without user:password).
        name: the model name after ``#`` (``None`` when absent).
    """

    url: str
    name: str | None

    @classmethod
    def parse(cls, ref: str, kind: Kind) -> RemoteRef:
        parts = urlsplit(ref.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"remote {kind} '{ref}' is not an http(s) URL with a host; write it as "
                f"http://host:port/{'v1' if kind == 'embedder' else 'v2/rerank'}#model-name"
            )
        if parts.username or parts.password:
            raise ConfigError(
                f"remote {kind} URL must not carry credentials; pass the API key in {key_env(kind)}"
            )
        url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))
        return cls(url, parts.fragment or None)

    @property
    def ref(self) -> str:
        """The reference as rankwise records it (``url#name``)."""
        return f"{self.url}#{self.name}" if self.name else self.url


def remote_error(
    kind: Kind, url: str, status: int | None, detail: str, *, api_key_set: bool
) -> RemoteModelError:
    """A :class:`RemoteModelError` naming the URL, the status and a fix."""
    detail = " ".join(str(detail).split())[:300]
    if status is None:  # connection refused, DNS, timeout
        return RemoteModelError(
            f"remote {kind} {url} could not be reached ({detail}). Fix: start the server or "
            "check the host and port; RANKWISE_REMOTE_TIMEOUT sets the per-request timeout."
        )
    what, fix = STATUS_ADVICE.get(
        status,
        _SERVER_FAULT
        if status >= 500
        else ("the server refused the request", "check the URL and the model name"),
    )
    if status == 401 and not api_key_set:
        what = "the server wants an API key and none was set"
    fix = fix.format(key_env=key_env(kind), paths=_PATHS[kind])
    return RemoteModelError(
        f"remote {kind} {url} answered HTTP {status}: {what}"
        + (f" ({detail})" if detail else "")
        + f". Fix: {fix}.",
        status=status,
    )


def retry_delay(attempt: int, headers: Mapping[str, str] | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): the server's
    ``Retry-After`` when it asks for at most 60 s, else exponential backoff with jitter."""
    value = (headers or {}).get("retry-after")
    if value is not None:
        try:
            delay = float(value)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            delay = (email.utils.mktime_tz(parsed) - time.time()) if parsed else math.nan
        if math.isfinite(delay) and 0 <= delay <= MAX_RETRY_AFTER:
            return delay
    return min(INITIAL_DELAY * 2.0**attempt, MAX_DELAY) * (1 - 0.25 * random.random())


def estimate_tokens(texts: Sequence[str]) -> list[int]:
    """A token count estimate for remote models, whose tokenizer is on the server: one
    token per 3 UTF-8 bytes plus 2 special tokens (about one per CJK character, a little
    over for English). Only batch budgets and server limits use it."""
    return [len(t.encode("utf-8")) // 3 + 2 for t in texts]


class ConcurrentCalls:
    """Runs one call per batch with at most ``concurrency`` in flight; results in order.

    A plain thread pool: each call blocks on the network, not on the GIL.
    """

    def __init__(self, concurrency: int):
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}.")
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], on_done: Callable[[T], Any] | None = None
    ) -> list[R]:
        if len(items) <= 1 or self.concurrency == 1:
            out = []
            for item in items:
                out.append(fn(item))
                if on_done:
                    on_done(item)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="rankwise-remote")
        futures = [self._pool.submit(fn, item) for item in items]
        out = []
        try:
            for item, fut in zip(items, futures, strict=True):
                out.append(fut.result())
                if on_done:
                    on_done(item)
        finally:
            for fut in futures:
                fut.cancel()  # the first error stops the batches not yet started
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def reject_local_options(kind: Kind, ref: str, options: Mapping[str, Any]) -> None:
    """ConfigError for options that only mean something for a model run here."""
    defaults = {
        "revision": None,
        "device": None,
        "backend": "torch",
        "quantize": None,
        "local_files_only": None,
        "token_budget": None,
        "batch_overhead": None,
    }
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"remote {kind} {ref}: unknown option(s) {', '.join(unknown)}.")
    bad = [k for k, v in options.items() if v != defaults[k]]
    if bad:
        raise ConfigError(
            f"remote {kind} {ref}: {', '.join(bad)} only apply to models run by rankwise; the "
            "server decides weights, revision, device and precision. Drop the option(s)."
        )


def secret(value: Any) -> str | None:
    """A SecretStr, str or None as str | None."""
    if value is None:
        return None
    get = getattr(value, "get_secret_value", None)
    return get() if get else str(value)


def remote_settings(settings: Any, kind: Kind, **extra: Any) -> dict[str, Any]:
    """Constructor arguments of a remote ``kind`` from :class:`rankwise.config.Settings`:
    API key, timeout, concurrency and retries (then ``extra``). A pinned revision is an
    error: the server serves whatever it runs."""
    if getattr(settings, f"{kind}_revision"):
        raise ConfigError(
            f"{kind}_revision pins a hub model; remote {kind} {getattr(settings, kind)} "
            "serves whatever its server runs. Unset it."
        )
    return {
        "api_key": secret(getattr(settings, f"{kind}_api_key")),
        "timeout": settings.remote_timeout,
        "concurrency": settings.remote_concurrency,
        "max_retries": settings.remote_max_retries,
        **extra,
    }
