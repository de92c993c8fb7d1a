"""One exception hierarchy for rankwise.

Every error a user can cause or fix is a :class:`RankwiseError`. Each class carries the
HTTP status and the ``error_type`` string used in HTTP error bodies
(``{"error": str, "error_type": str}``) and the CLI maps any ``RankwiseError`` to a
one-line message and exit code 2. Those two mappings live in ``server/errors.py`` and
``cli.py`` respectively; nothing else should translate exceptions.
"""

from __future__ import annotations


class RankwiseError(Exception):
    """Base class. ``str(err)`` is a complete, user-facing sentence."""

    http_status: int = 400
    error_type: str = "invalid_request"


class ConfigError(RankwiseError):
    """Bad settings (file, environment or arguments)."""

    error_type = "config_error"


class ModelLoadError(RankwiseError):
    """A model cannot be loaded. The message names the model, the cause and a fix."""

    http_status = 503
    error_type = "model_unavailable"


class RemoteModelError(RankwiseError):
    """A remote model service (``--embedder http://...``) failed or answered wrongly. The
    message names the URL, the HTTP status (or the connection failure) and a fix. HTTP 502:
    the upstream is at fault, not the client of rankwise."""

    http_status = 502
    error_type = "remote_model_error"

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the upstream's HTTP status; None for connection failures


class DataError(RankwiseError):
    """Bad input data: a catalog line, an evaluation set, a training file."""

    http_status = 422
    error_type = "invalid_data"


class CatalogError(DataError):
    """A catalog record failed validation (message carries file, line and field)."""


class StoreError(RankwiseError):
    """The index cannot be opened, written or queried as asked."""

    http_status = 500
    error_type = "store_error"


class SchemaMismatch(StoreError):
    """Records do not fit the store's schema (unknown field, wrong type, bad id or vector
    shape). The client's data is at fault, so HTTP 422, not 500."""

    http_status = 422
    error_type = "invalid_data"


class FilterError(RankwiseError):
    """A metadata filter cannot be parsed or names an unknown field."""

    http_status = 422
    error_type = "invalid_filter"


class UnsupportedFeature(RankwiseError):
    """The backend in use lacks a feature (e.g. BM25 on Milvus 2.3)."""

    http_status = 501
    error_type = "unsupported"


class InvalidRequest(RankwiseError):
    http_status = 422
    error_type = "invalid_request"


class PayloadTooLarge(RankwiseError):
    http_status = 413
    error_type = "payload_too_large"


class Overloaded(RankwiseError):
    """Queue full. ``retry_after`` seconds is sent as the Retry-After header."""

    http_status = 429
    error_type = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class DeviceOutOfMemory(RankwiseError):
    """One input does not fit in the accelerator's memory even alone (batches that do not fit
    are split and retried first; see ``rankwise.models.backoff``)."""

    http_status = 503
    error_type = "out_of_memory"


class NotFound(RankwiseError):
    """A named thing (a product id, say) that does not exist."""

    http_status = 404
    error_type = "not_found"


class Conflict(RankwiseError):
    """A valid request the server's current state cannot answer (e.g. nothing judged yet)."""

    http_status = 409
    error_type = "conflict"


class Unauthorized(RankwiseError):
    http_status = 401
    error_type = "unauthorized"


class NotReady(RankwiseError):
    http_status = 503
    error_type = "not_ready"
