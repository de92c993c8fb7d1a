"""Shared pieces of the HTTP tests: a real server on 127.0.0.1, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rankwise.config import Settings
from rankwise.server import BackgroundServer, Components, create_app

PRODUCTS = [
    {
        "id": "p1",
        "title": "apple iphone 15 pro smartphone",
        "text": "256gb black",
        "brand": "apple",
        "price": 999.0,
    },
    {
        "id": "p2",
        "title": "fresh red apples fruit",
        "text": "1kg bag",
        "brand": "farm",
        "price": 3.5,
    },
    {
        "id": "p3",
        "title": "summer breathable running shoes",
        "text": "mesh lightweight",
        "brand": "run",
        "price": 59.0,
    },
    {
        "id": "p4",
        "title": "leather dress shoes for men",
        "text": "brown oxford",
        "brand": "lux",
        "price": 120.0,
    },
    {
        "id": "p5",
        "title": "cordless drill 18v lithium battery kit",
        "text": "",
        "brand": "tool",
        "price": 89.0,
    },
    {
        "id": "p6",
        "title": "wireless bluetooth headphones",
        "text": "noise cancelling",
        "brand": "sound",
        "price": 199.0,
    },
    {
        "id": "p7",
        "title": "stainless steel kitchen sink faucet",
        "text": "",
        "brand": "home",
        "price": 45.0,
    },
    {
        "id": "p8",
        "title": "苹果手机 iPhone 15 黑色 256G",
        "text": "全网通",
        "brand": "apple",
        "price": 899.0,
    },
]


def build_sharp_reranker(
    tiny_dir: Path, out: Path, scale: float = 1000.0, center_on: list[tuple[str, str]] | None = None
) -> Path:
    """The tiny random cross-encoder with its one-logit head scaled up.

    Random tiny BERTs give nearly equal logits (spread ~1e-5), which makes order and
    equality checks toothless; scaling the head spreads them (~1e-2) without changing
    anything else about the model or the code path. Scaling also scales their common
    offset (to |logit| ~ 20 for some random draws); ``center_on`` pairs move the head's
    bias so their mean logit is 0 (APIs that answer 0..1 probabilities keep the order).
    """
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    if (out / "config.json").exists():
        return out
    model = BertForSequenceClassification.from_pretrained(tiny_dir)
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
        if center_on:
            tok = AutoTokenizer.from_pretrained(tiny_dir)
            enc = tok([q for q, _ in center_on], [d for _, d in center_on], padding=True,
                      truncation=True, return_tensors="pt")  # fmt: skip
            model.eval()
            model.classifier.bias.sub_(model(**enc).logits.mean())
    model.save_pretrained(out)
    for f in tiny_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(f, out / f.name)
    return out


def settings(**overrides: Any) -> Settings:
    """Server settings for tests: no models loaded from names, memory cache."""
    base: dict[str, Any] = {"embedder": "unused", "reranker": None, "index": "unused"}
    return Settings(**{**base, **overrides})


@contextmanager
def running_server(s: Settings, components: Components) -> Iterator[BackgroundServer]:
    """A real uvicorn server on a free 127.0.0.1 port, models loaded and probed."""
    app = create_app(s, components)
    with BackgroundServer(app) as srv:
        assert srv.wait_ready(120), app.state.rankwise.error
        yield srv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port (no persistence); yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is not installed (scripts/system-deps.sh installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
