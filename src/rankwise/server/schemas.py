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

These models are the OpenAPI schema (FastAPI generates it from them), so every rule the
server applies to one field is written here: strings carry the no-NUL ``pattern`` that
``routing.check_strings`` enforces, product fields are scalars, empty lists are refused.
Limits that depend on the deployment (``max_documents``, ``max_chars``, the token cost)
are not in the schema: they answer 413 naming the limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema


def _no_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("contains a NUL character (\\u0000); send text without it")
    return v


#: Any text without a NUL character (lone surrogates are refused for the whole body before
#: parsing, in ``routing``: they cannot be written in UTF-8 JSON at all).
Text = Annotated[
    str, AfterValidator(_no_nul), WithJsonSchema({"type": "string", "pattern": "^[^\\x00]*$"})
]

#: A text with at least one non-space character (and no NUL).
NonBlank = Annotated[
    str,
    StringConstraints(min_length=1, pattern=r"\S"),
    AfterValidator(_no_nul),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$"}
    ),
]


def _integral(v: Any) -> Any:
    """JSON Schema's ``integer`` includes 2.0: accept integral floats as ints."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


#: A JSON integer (2 or 2.0; never "2" or true: the request models are strict).
JsonInt = Annotated[int, BeforeValidator(_integral)]
#: A JSON integer ≥ 1 (constraints inside the type: on a union they reach the schema
#: as "ge" instead of "minimum").
PositiveInt = Annotated[
    int,
    BeforeValidator(_integral),
    Field(ge=1),
    WithJsonSchema({"type": "integer", "minimum": 1}),
]
Upto10k = Annotated[
    int,
    BeforeValidator(_integral),
    Field(ge=1, le=10_000),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 10_000}),
]


def _scalar(v: Any) -> Any:
    if isinstance(v, dict | list):
        kind = "an object" if isinstance(v, dict) else "a list"
        raise ValueError(
            f"must be a string, number, boolean or null, not {kind} (nested values are not stored)"
        )
    return v


#: A product or document field value: text, number, boolean or null (nothing nested).
Scalar = Annotated[Text | StrictInt | float | bool | None, BeforeValidator(_scalar)]


class _Request(BaseModel):
    # python-re: the same regex dialect as the schema's consumers (``\s`` means what
    # Python's str.isspace means), so the documented pattern and the check agree.
    # strict: JSON's types as they are (0 is not false, false is not 0.0), as the schema says
    model_config = ConfigDict(
        extra="ignore", allow_inf_nan=False, regex_engine="python-re", strict=True
    )


# ----------------------------------------------------------------------------- embeddings
class EmbeddingRequest(_Request):
    input: NonBlank | Annotated[list[NonBlank], Field(min_length=1)] = Field(
        description="A text or a non-empty list of texts (token-id arrays are not supported)."
    )
    model: Text | None = Field(None, description="Echoed as sent; the server runs one model.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 bytes, as OpenAI sends them."
    )
    dimensions: PositiveInt | None = Field(
        None, description="Keep the first N dimensions and re-normalise (Matryoshka)."
    )
    user: Text | None = None
    input_type: Literal["query", "document"] = Field(
        "document",
        description="rankwise extension: 'query' applies the model's query instruction.",
    )
    truncate: bool | None = Field(
        None, description="Truncate inputs over the model's max tokens (default: server setting)."
    )
    return_sparse: bool = Field(
        False, description="rankwise extension (bge-m3): also return lexical weights, `sparse`."
    )
    return_colbert: bool = Field(
        False, description="rankwise extension (bge-m3): also return ColBERT vectors, `colbert`."
    )


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int
    sparse: dict[str, float] | None = Field(
        None, description="With return_sparse: token id → weight (bge-m3 lexical weights)."
    )
    colbert: list[list[float]] | None = Field(
        None, description="With return_colbert: one unit vector per token after CLS."
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


# ----------------------------------------------------------------------------- rerank
class RerankDocument(BaseModel):
    """A document object (Cohere v1 / Jina): a 'text' and any other scalar fields."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)
    text: Text
    __pydantic_extra__: dict[str, Scalar]


class RerankRequest(_Request):
    """Cohere v1/v2 and Jina rerank request."""

    model: Text | None = Field(None, description="Echoed as sent; the server runs one model.")
    query: NonBlank
    documents: list[Text | RerankDocument] = Field(
        min_length=1,
        description="Texts, or objects with a 'text' field (and the fields named in rank_fields).",
    )
    top_n: PositiveInt | None = Field(None, description="Return only the N best (default: all).")
    return_documents: bool = Field(False, description="Include each document in its result.")
    rank_fields: list[Text] | None = Field(
        None,
        description="For object documents: the fields present are joined as 'name: value' "
        "lines (a document with none of them is ranked by its 'text').",
    )
    raw_scores: bool = Field(
        False, description="relevance_score = raw logit instead of sigmoid(logit) in 0..1."
    )
    truncate: bool | None = Field(
        None, description="Truncate pairs over the model's max tokens (default: server setting)."
    )
    max_tokens_per_doc: PositiveInt | None = Field(
        None,
        description="Cohere v2 field: each document is truncated to this many tokens "
        "(then windowed when max_chunks_per_doc > 1).",
    )
    max_chunks_per_doc: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None,
        description="rankwise extension: score a long document as up to N overlapping windows "
        "and keep the best window's score (default: server setting; 1 = truncate).",
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
    texts: list[Text] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class WeaviateRerankRequest(_Request):
    """What Weaviate's ``reranker-transformers`` module POSTs to its inference container."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["documents"], "properties": {"documents": {"type": "array"}}},
                {"required": ["property"], "properties": {"property": {"type": "string"}}},
            ]
        }
    )
    query: NonBlank
    documents: list[Text] | None = None
    property: Text | None = Field(None, description="Legacy single-document form.")

    @model_validator(mode="after")
    def _one_form(self) -> WeaviateRerankRequest:
        if self.documents is None and self.property is None:
            raise ValueError("send 'documents' (a list of texts) or 'property' (one text)")
        return self


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
    top_k: Upto10k | None = Field(None, description="Recall candidates.")
    top_n: Upto10k | None = Field(None, description="Results returned.")
    mode: Literal["dense", "lexical", "hybrid"] | None = None
    filters: dict[Text, Any] | list[Text] | Text | None = Field(
        None,
        description='{"price": {"lt": 100}, "brand": {"in": ["a", "b"]}} or ["price<100"].',
    )
    rerank: bool = True
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Minimum relevance.")
    cascade: Text | None = Field(
        None,
        description="Stages instead of top_k/top_n, e.g. 'hybrid:200,colbert:50,rerank:10'.",
    )
    user_id: Text | None = Field(
        None, description="The shopper, for the blend stage's personal features (optional)."
    )


class SearchHit(BaseModel):
    id: str
    rank: int
    recall_score: float
    recall_rank: int
    rerank_score: float | None = Field(None, description="Raw cross-encoder logit.")
    relevance: float | None = Field(None, description="sigmoid(rerank_score), 0..1.")
    record: dict[str, Any]
    colbert_score: float | None = Field(None, description="MaxSim, when a cascade used ColBERT.")
    blend_score: float | None = Field(None, description="The blend stage's score, when it ran.")
    explain: dict[str, Any] | None = Field(
        None, description="With ?explain=true: blend features, contributions, bias, base_rank."
    )


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
    stages: list[dict[str, Any]] | None = Field(
        None, description="A cascade's stages: stage, depth, scored (candidates in), seconds."
    )


class Product(BaseModel):
    """One product: id, title, optional text, and scalar metadata fields (text, number,
    boolean or null). Nested objects and lists are refused (422 naming the field): the
    store keeps scalar columns only, and dropping or nulling a value silently is worse."""

    model_config = ConfigDict(
        extra="allow", allow_inf_nan=False, regex_engine="python-re", strict=True
    )
    id: NonBlank | StrictInt
    title: NonBlank
    text: Text | None = None
    __pydantic_extra__: dict[str, Scalar]


class ProductsUpsert(_Request):
    products: list[Product] = Field(min_length=1, description="Products to insert or replace.")


class ProductsDelete(_Request):
    ids: list[Text] = Field(min_length=1)


class ProductsChanged(BaseModel):
    upserted: int = 0
    deleted: int = 0
