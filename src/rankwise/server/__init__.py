"""rankwise over HTTP: ``rankwise serve`` or :func:`create_app`.

Settings (``rankwise.toml`` keys or ``RANKWISE_*`` environment variables, see
:class:`rankwise.config.Settings`): ``host``, ``port``, ``api_keys`` ("k1,k2"; empty = no
auth), ``cache_url`` (``memory`` default, ``redis://host:6379/0``, ``off``), ``cache_ttl``,
``cache_size``, ``max_documents`` (per rerank call), ``max_inputs`` (per embeddings call),
``max_chars`` (per text), ``max_payload_bytes``, ``truncate`` (False: inputs over the
model's max tokens are a 413), ``max_queue`` (429 beyond), ``batching``, ``batch_wait_ms``,
``batch_tokens``.
"""

from rankwise.server.app import create_app
from rankwise.server.run import BackgroundServer, serve
from rankwise.server.state import Components, ServerState

__all__ = ["BackgroundServer", "Components", "ServerState", "create_app", "serve"]
