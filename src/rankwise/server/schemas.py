"""Request and response bodies, in the shapes existing clients already speak.

- OpenAI embeddings (``POST /v1/embeddings``) plus ``input_type`` and ``truncate``;
- Cohere / Jina rerank (``POST /v1/rerank``, ``/v2/rerank``) plus ``raw_scores`` and
  ``truncate``;
- TEI rerank (``POST /rerank``): bare array response;
- Weaviate ``reranker-transformers`` inference container (``POST /weaviate/rerank``);
- rankwise search and product updates.

Unknown fields are ignored (clients send things like ``user`` or ``priority``), but every
known field is type-checked: wrong types are a 422 naming the field. Request models reject
NaN and Infinity. Response models are for the OpenAPI schema; handlers build the JSON
directly (no response validation on the hot path).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: A string with at least one non-space character.
NonBlank = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# ----------------------------------------------------------------------------- embeddings
class EmbeddingRequest(_Request):
    input: NonBlank | list[NonBlank] = Field(
        description="A text or a list of texts (token-id arrays are not supported)."
    )
    model: str | None = Field(None, description="Accepted and echoed; the server runs one model.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, as OpenAI sends them."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first N dimensions and re-normalise (Matryoshka)."
    )
    user: str | None = None
    input_type: Literal["query", "document"] = Field(
        "document",
        description="rankwise extension: 'query' applies the model's query instruction.",
    )
    truncate: bool | None = Field(
        None, description="Truncate inputs over the model's max tokens (default: server setting)."
    )


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


# ----------------------------------------------------------------------------- rerank
class RerankRequest(_Request):
    """Cohere v1/v2 and Jina rerank request."""

    model: str | None = Field(None, description="Accepted and echoed; the server runs one model.")
    query: NonBlank
    documents: list[str | dict[str, Any]] = Field(
        min_length=1,
        description="Texts, or objects with a 'text' field (or the fields named in rank_fields).",
    )
    top_n: int | None = Field(None, ge=1, description="Return only the N best (default: all).")
    return_documents: bool = Field(False, description="Include each document in its result.")
    rank_fields: list[str] | None = Field(
        None, description="For object documents: fields joined as 'name: value' lines."
    )
    raw_scores: bool = Field(
        False, description="relevance_score = raw logit instead of sigmoid(logit) in 0..1."
    )
    truncate: bool | None = Field(
        None, description="Truncate pairs over the model's max tokens (default: server setting)."
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Cohere v2 field: accepted; the model's max length applies."
    )


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request.")
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    usage: RerankUsage


class TEIRerankRequest(_Request):
    """Hugging Face text-embeddings-inference ``/rerank`` request."""

    query: NonBlank
    texts: list[str] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class WeaviateRerankRequest(_Request):
    """What Weaviate's ``reranker-transformers`` module POSTs to its inference container."""

    query: NonBlank
    documents: list[str] | None = None
    property: str | None = Field(None, description="Legacy single-document form.")


class WeaviateDocumentScore(BaseModel):
    document: str
    score: float


class WeaviateRerankResponse(BaseModel):
    query: str
    scores: list[WeaviateDocumentScore] | None = None
    property: str | None = None
    score: float | None = None


# ----------------------------------------------------------------------------- search
class SearchRequest(_Request):
    query: NonBlank
    top_k: int | None = Field(None, ge=1, le=10_000, description="Recall candidates.")
    top_n: int | None = Field(None, ge=1, le=10_000, description="Results returned.")
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    filters: dict[str, Any] | list[str] | str | None = Field(
        None,
        description='{"price": {"lt": 100}, "brand": {"in": ["a", "b"]}} or ["price<100"].',
    )
    rerank: bool = True
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Minimum relevance.")


class SearchHit(BaseModel):
    id: str
    rank: int
    recall_score: float
    recall_rank: int
    rerank_score: float | None = Field(None, description="Raw cross-encoder logit.")
    relevance: float | None = Field(None, description="sigmoid(rerank_score), 0..1.")
    record: dict[str, Any]


class SearchResponseBody(BaseModel):
    query: str
    mode: str
    results: list[SearchHit]
    reranked: bool
    skipped_reason: str | None
    timings: dict[str, float]
    cached: bool
    language: str | None = Field(None, description="Detected query language (by script).")
    recipe: str | None = Field(None, description="Recall recipe used (calibrated or given).")


class ProductsUpsert(_Request):
    products: list[dict[str, Any]] = Field(
        min_length=1, description="Records: id, title, text and scalar metadata fields."
    )


class ProductsDelete(_Request):
    ids: list[str] = Field(min_length=1)


class ProductsChanged(BaseModel):
    upserted: int = 0
    deleted: int = 0
