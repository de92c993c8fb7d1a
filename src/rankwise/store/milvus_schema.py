"""The Milvus backend's layout, by server version: field names, the collection schema and its
indexes, row building, and the expression/token helpers (``store/milvus.py`` holds the client).

What a server can hold is decided from its version, once, in :func:`server_features`:

=====================  ===========  ==========================================================
feature                since        used for
=====================  ===========  ==========================================================
``sparse``             2.4          learned sparse weights (bge-m3) in ``m3_sparse``,
                                    SPARSE_FLOAT_VECTOR, SPARSE_INVERTED_INDEX, inner product
``bm25``               2.5          native BM25 (``lexical`` VARCHAR → ``sparse`` by a function)
=====================  ===========  ==========================================================

milvus-lite reports its own version (``milvus_lite-3.2.2``), which compares above both.
Multi-vectors (ColBERT) stay in rankwise's side index on every version: Milvus stores
embedding lists (an ARRAY of STRUCT with a vector, EMB_LIST_HNSW / MAX_SIM) only from 2.6,
and milvus-lite 3.2.2 rejects an index on such a field ("unknown field"), so no Milvus that
installs here could be tested with them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rankwise.errors import StoreError
from rankwise.lexical import tokenize
from rankwise.store.filters import Filter
from rankwise.store.schema import MetaSchema

MAX_VARCHAR = 65535
MAX_ID = 512
PRESENT = "__set"
#: The learned sparse field (bge-m3's lexical weights); ``sparse`` is BM25's output field.
LEARNED_SPARSE = "m3_sparse"
INTERNAL = ("vector", "lexical", "sparse", LEARNED_SPARSE)

#: Server feature → the first Milvus version that has it.
FEATURES_SINCE: dict[str, tuple[int, int, int]] = {"sparse": (2, 4, 0), "bm25": (2, 5, 0)}


def version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x) for x in m.groups(default="0")) if m else (0, 0, 0)


def server_features(version: str) -> frozenset[str]:
    """The :data:`FEATURES_SINCE` features a server of ``version`` has."""
    v = version_tuple(version)
    return frozenset(f for f, since in FEATURES_SINCE.items() if v >= since)


def needs_version(feature: str) -> str:
    """``"Milvus >= 2.4"`` for ``"sparse"``: for error messages."""
    return "Milvus >= " + ".".join(map(str, FEATURES_SINCE[feature][:2]))


def quote_expr(value: str | int | float | bool) -> str:
    """A Milvus expression literal. Strings are double-quoted with backslashes and double
    quotes escaped, so ``a" or id != "`` stays one string; bools are ``true``/``false``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def to_expr(flt: Filter | None) -> str:
    """Translate a checked :class:`Filter` to a Milvus boolean expression ("" = none).

    Every condition on a metadata field also requires ``<field>__set == true`` so a
    missing value never matches (the same semantics as SQL NULL in the embedded store).
    """
    if not flt:
        return ""
    sym = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    parts = []
    for c in flt.conditions:
        if c.op == "in":
            expr = f"{c.field} in [{', '.join(quote_expr(v) for v in c.value)}]"  # type: ignore[union-attr]
        else:
            expr = f"{c.field} {sym[c.op]} {quote_expr(c.value)}"  # type: ignore[arg-type]
        if c.field not in ("id", "title", "text"):
            expr = f"({c.field}{PRESENT} == true and {expr})"
        parts.append(expr)
    return " and ".join(parts)


def hash_tokens(text: str) -> str:
    """rankwise tokens → space-separated 16-hex-char hashes (a bag of words Milvus'
    ``standard`` analyser cannot re-segment), truncated to fit a VARCHAR."""
    out = " ".join(hashlib.blake2b(t.encode(), digest_size=8).hexdigest() for t in tokenize(text))
    return out[: MAX_VARCHAR - 17].rsplit(" ", 1)[0] if len(out) >= MAX_VARCHAR else out


#: Where a document with no positive weight keeps its one required nonzero: a token id past
#: any vocabulary (Milvus takes ids below 2**32 - 1), so it scores 0 against every query.
EMPTY_SPARSE_TOKEN = 2**32 - 2


def sparse_row(weights: Mapping[int, float], *, document: bool = True) -> dict[int, float]:
    """A ``{token_id: weight}`` as Milvus takes it: positive weights only. Milvus rejects a
    document row without a nonzero weight ("at least one nonzero"), so an empty document row
    holds 1.0 at :data:`EMPTY_SPARSE_TOKEN` (it scores 0, as the side index's empty row)."""
    row = {int(t): float(w) for t, w in weights.items() if w > 0 and 0 <= t < EMPTY_SPARSE_TOKEN}
    return row or ({EMPTY_SPARSE_TOKEN: 1.0} if document else {})


def build_schema(
    client: Any,
    schema: MetaSchema,
    dim: int,
    options: Mapping[str, Any],
    *,
    bm25: bool,
    learned_sparse: bool,
) -> tuple[Any, Any]:
    """The collection schema and index params: id/title/text, metadata (+ ``__set``), the
    dense vector (COSINE, ``options["index_type"]``), native BM25 where ``bm25``, and the
    learned sparse field where ``learned_sparse``."""
    from pymilvus import DataType, Function, FunctionType

    types = {
        "str": DataType.VARCHAR,
        "int": DataType.INT64,
        "float": DataType.DOUBLE,
        "bool": DataType.BOOL,
    }
    for name in schema:
        if name.endswith(PRESENT) or name in INTERNAL:
            raise StoreError(f"metadata field name '{name}' is reserved by the Milvus backend")
    s = client.create_schema(auto_id=False, enable_dynamic_field=False)
    s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
    s.add_field("title", DataType.VARCHAR, max_length=MAX_VARCHAR)
    s.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
    for name, t in schema.items():
        extra = {"max_length": MAX_VARCHAR} if t == "str" else {}
        s.add_field(name, types[t], **extra)
        s.add_field(name + PRESENT, DataType.BOOL)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    o = options
    params = {
        "HNSW": {"M": o["M"], "efConstruction": o["efConstruction"]},
        "IVF_FLAT": {"nlist": o["nlist"]},
    }.get(o["index_type"], {})
    index.add_index("vector", index_type=o["index_type"], metric_type="COSINE", params=params)
    if bm25:
        s.add_field(
            "lexical", DataType.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
            analyzer_params={"tokenizer": "standard"},
        )  # fmt: skip
        s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["lexical"],
                output_field_names=["sparse"],
            )  # fmt: skip
        )
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    if learned_sparse:
        s.add_field(LEARNED_SPARSE, DataType.SPARSE_FLOAT_VECTOR)
        index.add_index(LEARNED_SPARSE, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    return s, index


def build_rows(
    recs: list[dict[str, Any]],
    vecs: np.ndarray,
    schema: MetaSchema,
    *,
    bm25: bool,
    sparse: list[Mapping[int, float]] | None,
) -> list[dict[str, Any]]:
    """Validated records → Milvus rows (``__set`` flags, hashed BM25 tokens, learned sparse)."""
    default = {"str": "", "int": 0, "float": 0.0, "bool": False}
    rows = []
    for n, (rec, vec) in enumerate(zip(recs, vecs, strict=True)):
        if len(rec["id"].encode()) > MAX_ID:
            raise StoreError(f"record id {rec['id'][:40]!r}... is longer than {MAX_ID} bytes")
        row = {"id": rec["id"], "title": rec["title"], "text": rec["text"], "vector": vec}
        for name, t in schema.items():
            value = rec.get(name)
            row[name] = default[t] if value is None else value
            row[name + PRESENT] = value is not None
        for name, value in row.items():
            if isinstance(value, str) and len(value.encode()) > MAX_VARCHAR:
                raise StoreError(
                    f"record {rec['id']!r}: field '{name}' is longer than Milvus' "
                    f"{MAX_VARCHAR}-byte VARCHAR limit; shorten it before indexing"
                )
        if bm25:
            row["lexical"] = hash_tokens(f"{rec['title']} {rec['text']}")
        if sparse is not None:
            row[LEARNED_SPARSE] = sparse_row(sparse[n])
        rows.append(row)
    return rows
