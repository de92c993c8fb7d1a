"""Record validation and metadata typing shared by every backend.

A store's metadata schema is fixed by its first write: each non-reserved field gets one of
``str``, ``int``, ``float`` or ``bool`` (a field mixing ints and floats is ``float``; a field
that is None everywhere in the first write is ``str``). Later writes must use the same
fields (None = missing is always allowed) and compatible types (an int is accepted for a
``float`` field); anything else is rejected *before* writing, so nothing is half-written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rankwise.errors import FilterError, SchemaMismatch
from rankwise.store.base import RESERVED_FIELDS
from rankwise.store.filters import _FIELD_RE, Condition, Filter

MetaSchema = dict[str, str]  # field -> "str" | "int" | "float" | "bool"

_TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "str"}


def _type_of(value: Any) -> str | None:
    if value is None:
        return None
    t = _TYPE_NAMES.get(type(value))
    if t is None:
        if isinstance(value, np.generic):
            return _type_of(value.item())
        return "unsupported"
    return t


def scan_types(
    records: Iterable[Mapping[str, Any]], into: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """Accumulate the value types seen per metadata field (reserved fields excluded).

    Streaming-friendly: call it per batch with the same ``into`` to type a whole catalog
    before its first write, then :func:`resolve_schema`.
    """
    schema: dict[str, set[str]] = {} if into is None else into
    for rec in records:
        for key, value in rec.items():
            if key in RESERVED_FIELDS:
                continue
            t = _type_of(value)
            seen = schema.setdefault(key, set())
            if t is not None:
                seen.add(t)
    return schema


def infer_schema(records: Sequence[Mapping[str, Any]]) -> MetaSchema:
    """Metadata field types from a first batch of records (reserved fields excluded)."""
    return resolve_schema(scan_types(records))


def resolve_schema(schema: Mapping[str, set[str]]) -> MetaSchema:
    """One type per field: ints and floats → float; None-only → str; else an error."""
    out: MetaSchema = {}
    for key, types in schema.items():
        if not _FIELD_RE.match(key):
            raise SchemaMismatch(
                f"metadata field name {key!r} is not allowed: use letters, digits and "
                "underscores, not starting with a digit"
            )
        if "unsupported" in types:
            raise SchemaMismatch(
                f"metadata field '{key}' must hold str, int, float or bool values (or None)"
            )
        if types == {"int", "float"}:
            out[key] = "float"
        elif len(types) > 1:
            raise SchemaMismatch(
                f"metadata field '{key}' mixes types {sorted(types)} in one batch; "
                "use one type per field"
            )
        else:
            out[key] = types.pop() if types else "str"
    return out


def validate_batch(
    records: Sequence[Mapping[str, Any]],
    vectors: np.ndarray,
    schema: MetaSchema,
    dim: int | None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Check a write against the store's schema and dimension.

    Returns the records normalised (all schema fields present, numpy scalars unwrapped,
    ints widened to float where the field is float, duplicate ids collapsed to the last
    occurrence) and the matching float32 (n, dim) vectors. Raises :class:`SchemaMismatch` (a :class:`StoreError`)
    naming the record and field on the first problem.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(records):
        raise SchemaMismatch(
            f"vectors must have shape (n_records, dim) = ({len(records)}, dim); got {vectors.shape}"
        )
    if dim is not None and vectors.shape[1] != dim:
        raise SchemaMismatch(
            f"vectors have dimension {vectors.shape[1]} but this store holds dimension {dim}; "
            "use the embedder the index was built with, or a new index"
        )
    if not np.isfinite(vectors).all():
        raise SchemaMismatch("vectors contain NaN or infinite values")
    cleaned: dict[str, tuple[int, dict[str, Any]]] = {}  # id -> (row, record); last wins
    for n, rec in enumerate(records):
        rid = rec.get("id")
        if not isinstance(rid, str) or not rid:
            raise SchemaMismatch(f"record {n}: 'id' must be a non-empty string, got {rid!r}")
        clean: dict[str, Any] = {"id": rid}
        for key in ("title", "text"):
            v = rec.get(key)
            if v is not None and not isinstance(v, str):
                raise SchemaMismatch(
                    f"record {rid!r}: '{key}' must be a string, got {type(v).__name__}"
                )
            clean[key] = v or ""
        for key in rec:
            if key in RESERVED_FIELDS:
                continue
            if key not in schema:
                raise SchemaMismatch(
                    f"record {rid!r}: unknown metadata field '{key}'; this store's fields are "
                    f"{sorted(schema) or 'none'} (fixed by the first write; rebuild the index "
                    "to change them)"
                )
        for key, ftype in schema.items():
            value = rec.get(key)
            if isinstance(value, np.generic):
                value = value.item()
            t = _type_of(value)
            if t is not None and t != ftype:
                if t == "int" and ftype == "float":
                    value = float(value)
                else:
                    raise SchemaMismatch(
                        f"record {rid!r}: field '{key}' is {ftype} in this store, got {t} {value!r}"
                    )
            clean[key] = value
        cleaned.pop(rid, None)
        cleaned[rid] = (n, clean)
    if len(cleaned) == len(records):
        return [c for _, c in cleaned.values()], vectors
    rows = [n for n, _ in cleaned.values()]
    return [c for _, c in cleaned.values()], vectors[rows]


def check_filter(flt: Filter | None, schema: MetaSchema) -> Filter | None:
    """Validate a filter against the schema; coerce values to the field types.

    ``id``, ``title`` and ``text`` are filterable as strings. Unknown fields raise
    :class:`FilterError` naming the field and the available ones; a value that cannot be
    the field's type (``price=cheap``) raises too. Numbers for a ``str`` field become
    strings (the CLI parses ``sku=123`` as an int).
    """
    if not flt:
        return None
    fields = {"id": "str", "title": "str", "text": "str", **schema}
    conds = []
    for c in flt.conditions:
        ftype = fields.get(c.field)
        if ftype is None:
            raise FilterError(
                f"unknown filter field '{c.field}'; available fields: {', '.join(sorted(fields))}"
            )
        values = c.value if c.op == "in" else (c.value,)
        coerced = tuple(_coerce(c.field, ftype, v) for v in values)  # type: ignore[union-attr]
        if ftype == "bool" and c.op not in ("eq", "ne", "in"):
            raise FilterError(f"filter on '{c.field}': booleans support only =, != and in")
        conds.append(Condition(c.field, c.op, coerced if c.op == "in" else coerced[0]))
    return Filter(tuple(conds))


def _coerce(field: str, ftype: str, value: Any) -> Any:
    t = _type_of(value)
    if t == ftype or (t in ("int", "float") and ftype in ("int", "float")):
        return value
    if ftype == "str" and t in ("int", "float", "bool"):
        return str(value).lower() if t == "bool" else str(value)
    raise FilterError(f"filter on '{field}': {value!r} is not a valid {ftype} value")
