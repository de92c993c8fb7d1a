"""rankwise over HTTP: ``rankwise serve`` or :func:`create_app`.

Start::

    rankwise serve --index ./index --embedder BAAI/bge-m3 --reranker BAAI/bge-reranker-v2-m3
    rankwise serve --reranker ./my-cross-encoder --embedder none --index none   # rerank only

Endpoints (OpenAPI at ``/openapi.json``, try them at ``/docs``):

=================================  =========================================================
``POST /v1/embeddings``            OpenAI shape; ``encoding_format`` float|base64,
                                   ``dimensions``, plus ``input_type`` query|document
``POST /v1/rerank``, ``/v2/rerank``  Cohere / Jina shape; ``top_n``, ``return_documents``,
                                   ``raw_scores``, ``truncate``; original ``index`` kept
``POST /rerank``                   text-embeddings-inference shape (bare array)
``POST /weaviate/rerank``          Weaviate ``reranker-transformers`` module contract
``POST /v1/search``                recall + rerank over the index, both scores per product
``PUT|DELETE /v1/products``        upsert / delete by id (invalidates the cache)
``GET /health`` ``/ready``         liveness; models loaded and a probe inference passed
``GET /metrics``                   Prometheus
``GET /``                          the relevance workbench page (``routes/workbench.py``)
``POST|GET /v1/judgments``         record / list judgments (``--judgments FILE``)
``POST /v1/compare``               judged queries through two pipelines, nDCG per query
=================================  =========================================================

Existing clients work unchanged::

    OpenAI(base_url="http://host:8080/v1", api_key=KEY).embeddings.create(model="m", input=[...])
    cohere.ClientV2(api_key=KEY, base_url="http://host:8080").rerank(model="m", query=q, documents=docs)

Weaviate: set ``RERANKER_INFERENCE_API=http://host:8080/weaviate`` (the module calls
``/rerank``, ``/.well-known/ready`` and ``/meta`` under that prefix; it sends no API key,
so with ``api_keys`` set, open those routes with ``weaviate_auth=false``).

Settings (``rankwise.toml`` keys or ``RANKWISE_*`` environment variables, see
:class:`rankwise.config.Settings`): ``host``, ``port``, ``api_keys`` ("k1,k2"; empty = no
auth), ``cache_url`` (``memory`` default, ``redis://host:6379/0``, ``off``), ``cache_ttl``,
``cache_size``, ``max_documents`` (per rerank call), ``max_inputs`` (per embeddings call),
``max_chars`` (per text), ``max_payload_bytes``, ``truncate`` (False: inputs over the
model's max tokens are a 413), ``max_queue`` and ``max_queue_tokens`` (429 beyond),
``max_request_tokens`` (413 beyond), ``batching``, ``batch_wait_ms``, ``batch_tokens``,
``batch_ms`` (time bound of one batched call),
``body_timeout`` (408), ``weaviate_auth``, ``judgments`` (qrels TSV the workbench appends
to), ``compare_reranker`` (a second cross-encoder for the compare view, loaded on first use).

Errors are in each API's shape (``server/errors.py``): 400 invalid JSON (not UTF-8,
NaN/Infinity), 401 API key, 408 stalled body, 413 too many / too long / too costly inputs
or body, 422 invalid fields (lone surrogates and NUL included), 429 queue full (with
``Retry-After``), 501 feature not configured, 503 models not ready.
"""

from rankwise.server.app import create_app
from rankwise.server.run import BackgroundServer, serve
from rankwise.server.state import Components, ServerState

__all__ = ["BackgroundServer", "Components", "ServerState", "create_app", "serve"]
