"""Product records and the files they come from.

* Catalogs: JSONL, CSV or Parquet, mapped to rankwise records by a :class:`FieldMapping`
  (which field is the id, which make the title and the text, which are metadata), and
  validated with messages that name the file, line and field.
* Evaluation sets in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

A rankwise record is a flat dict: ``id`` (str), ``title`` (str), ``text`` (str, may be
empty) and scalar metadata (str, int, float, bool). This module knows nothing of models
or stores.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.errors import CatalogError, DataError
from rankwise.textfiles import jsonl_rows, open_text, text_lines

Record = dict[str, Any]
SCALARS = (str, int, float, bool)
RESERVED = ("id", "title", "text", "vector")

_ID_CANDIDATES = ("id", "_id", "product_id", "sku", "doc_id")
_TITLE_CANDIDATES = ("title", "name", "product_title", "product_name")
_TEXT_CANDIDATES = ("text", "description", "desc", "body", "content")


@dataclass(frozen=True)
class FieldMapping:
    """How a catalog's fields become a rankwise record.

    Defaults guess common names: id from ``id|_id|product_id|sku|doc_id``, title from
    ``title|name|...``, text from ``text|description|...``. ``metadata=None`` keeps every
    other scalar field as metadata; a list keeps only those.
    """

    id: str | None = None
    title: str | None = None
    text: tuple[str, ...] | None = None
    metadata: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, spec: str | None) -> FieldMapping:
        """Parse the CLI form ``id=sku,title=name,text=desc+bullets,metadata=brand+price``."""
        if not spec:
            return cls()
        parts: dict[str, Any] = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in ("id", "title", "text", "metadata"):
                raise CatalogError(
                    f"bad field mapping {item!r}; use id=FIELD,title=FIELD,text=F1+F2,metadata=F1+F2"
                )
            values = tuple(v.strip() for v in value.split("+") if v.strip())
            parts[key] = values if key in ("text", "metadata") else value.strip()
        return cls(**parts)


def _pick(row: Mapping[str, Any], explicit: str | None, candidates: Sequence[str]) -> str | None:
    if explicit is not None:
        return explicit
    return next((c for c in candidates if c in row), None)


def _clean_scalar(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def to_record(
    row: Mapping[str, Any], mapping: FieldMapping, where: str, *, coerce_metadata: bool = False
) -> Record:
    """Map and validate one catalog row. ``where`` ("file:line") prefixes every error.

    ``coerce_metadata`` (CSV): metadata cells that read as numbers become int/float so
    range filters work; id, title and text always stay strings (SKU "00123" stays "00123").
    """
    if not isinstance(row, Mapping):
        raise CatalogError(f"{where}: expected a JSON object, got {type(row).__name__}")
    id_field = _pick(row, mapping.id, _ID_CANDIDATES)
    if id_field is None or row.get(id_field) in (None, ""):
        raise CatalogError(
            f"{where}: missing product id (field '{id_field or mapping.id or 'id'}'); "
            "set the id field with --fields id=FIELD"
        )
    raw_id = row[id_field]
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool):
        raise CatalogError(f"{where}: field '{id_field}': id must be a string or integer")
    title_field = _pick(row, mapping.title, _TITLE_CANDIDATES)
    title = row.get(title_field) if title_field else None
    if title is None or (isinstance(title, str) and not title.strip()):
        raise CatalogError(
            f"{where}: product {raw_id!r} has no title (field '{title_field or 'title'}')"
        )
    if not isinstance(title, str):
        raise CatalogError(f"{where}: field '{title_field}': title must be a string")
    text_fields = mapping.text
    if text_fields is None:
        found = next((c for c in _TEXT_CANDIDATES if c in row), None)
        text_fields = (found,) if found else ()
    texts = []
    for f in text_fields:
        v = row.get(f)
        if v is None:
            continue
        if not isinstance(v, str):
            raise CatalogError(f"{where}: field '{f}': text must be a string")
        texts.append(v.strip())
    record: Record = {
        "id": str(raw_id),
        "title": title.strip(),
        "text": "\n".join(t for t in texts if t),
    }
    used = {id_field, title_field, *text_fields}
    meta_fields = (
        mapping.metadata if mapping.metadata is not None else [k for k in row if k not in used]
    )
    for f in meta_fields:
        if f in RESERVED:
            continue
        if mapping.metadata is not None and f not in row:
            raise CatalogError(f"{where}: metadata field '{f}' is missing")
        v = row.get(f)
        if coerce_metadata and isinstance(v, str):
            v = _coerce_csv(v)
        v = _clean_scalar(v)
        if v is None:
            record[f] = None
            continue
        if not isinstance(v, SCALARS):
            if mapping.metadata is None:
                continue  # nested values are not filterable; keep only explicit ones strict
            raise CatalogError(
                f"{where}: field '{f}': metadata must be a string, number or boolean, got {type(v).__name__}"
            )
        record[f] = v
    return record


def _coerce_csv(value: str) -> Any:
    """CSV cells are strings; numbers become int/float so range filters work."""
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
        return f if math.isfinite(f) else value
    except ValueError:
        return value


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, raw_row)`` from a JSONL, CSV or Parquet file."""
    p = Path(path)
    if not p.exists():
        raise CatalogError(f"catalog file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        yield from jsonl_rows(p, CatalogError)
    elif suffix in (".csv", ".tsv"):
        with open_text(p, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            n = 1
            try:
                for n, row in enumerate(reader, 2):
                    if None in row:
                        raise CatalogError(f"{p}:{n}: more cells than header columns")
                    yield n, row  # strings; metadata cells are coerced in to_record
            except UnicodeDecodeError:
                raise CatalogError(
                    f"{p}: near line {n + 1}: not UTF-8 text; re-encode the file as UTF-8"
                ) from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
        n = 0
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    else:
        raise CatalogError(f"{p}: unknown catalog format '{suffix}'; use .jsonl, .csv or .parquet")


def read_catalog(
    source: str | Path | Iterable[Mapping[str, Any]],
    mapping: FieldMapping | None = None,
    *,
    skip_invalid: bool = False,
    errors: list[str] | None = None,
) -> Iterator[tuple[int, Record]]:
    """Yield ``(position, record)`` validated. Duplicate ids in one catalog are an error.

    With ``skip_invalid`` bad rows are skipped and their messages appended to ``errors``.
    """
    mapping = mapping or FieldMapping()
    coerce = False
    if isinstance(source, str | Path):
        rows: Iterable[tuple[int, Any]] = iter_rows(source)
        name = str(source)
        coerce = Path(source).suffix.lower() in (".csv", ".tsv")
    else:
        rows = enumerate(source, 1)
        name = "<records>"
    seen: dict[str, int] = {}
    for n, row in rows:
        try:
            rec = to_record(row, mapping, f"{name}:{n}", coerce_metadata=coerce)
            if rec["id"] in seen:
                raise CatalogError(
                    f"{name}:{n}: duplicate product id {rec['id']!r} (first at line {seen[rec['id']]})"
                )
        except CatalogError as e:
            if not skip_invalid:
                raise
            if errors is not None:
                errors.append(str(e))
            continue
        seen[rec["id"]] = n
        yield n, rec


def document_text(record: Mapping[str, Any], max_chars: int | None = None) -> str:
    """The text a model sees for a product: title, then the description."""
    title = str(record.get("title") or "")
    text = str(record.get("text") or "")
    out = f"{title}\n{text}" if text else title
    return out[:max_chars] if max_chars else out


# ---------------------------------------------------------------- BEIR evaluation sets


@dataclass
class BeirDataset:
    """A BEIR folder: corpus ``{id: {"title", "text"}}``, queries ``{qid: text}``,
    qrels ``{qid: {doc_id: grade}}`` (only queries of the split). ``split`` may name
    several qrels files (``"train,test"``); ``query_splits`` gives each query's file."""

    path: Path
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    query_splits: dict[str, str] = field(default_factory=dict)

    def split_counts(self, qids: Iterable[str] | None = None) -> dict[str, int]:
        """Judged queries (all, or ``qids``) per qrels file, e.g. ``{"train": 120, "test": 40}``."""
        counts: dict[str, int] = {}
        for q in self.qrels if qids is None else qids:
            name = self.query_splits.get(q, self.split)
            counts[name] = counts.get(name, 0) + 1
        return counts

    def records(self) -> Iterator[Record]:
        for doc_id, doc in self.corpus.items():
            yield {"id": doc_id, "title": doc.get("title") or "", "text": doc.get("text") or ""}


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Qrels as BEIR TSV (``query-id corpus-id score``, header optional) or TREC
    (``qid 0 docid grade``, space- or tab-separated)."""
    if not path.exists():
        raise DataError(f"qrels file not found: {path}")
    qrels: dict[str, dict[str, int]] = {}
    for n, line in text_lines(path):
        # BEIR tsv (tabs) and TREC qrels (spaces) both: ids never contain whitespace.
        parts = line.split()
        if n == 1 and parts[0] == "query-id":
            continue
        if len(parts) == 4:  # TREC qrels: qid 0 docid grade
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(
                f"{path}:{n}: expected 'query-id corpus-id grade' (or TREC 'qid 0 docid grade'), got {len(parts)} columns"
            )
        try:
            grade = int(float(parts[2]))
        except ValueError:
            raise DataError(f"{path}:{n}: grade {parts[2]!r} is not a number") from None
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def split_names(root: Path, split: str) -> list[str]:
    """``"test"`` → ``["test"]``; ``"train,test"`` → both; ``"all"`` → every
    ``qrels/*.tsv`` of the folder (sorted)."""
    if split.strip().lower() == "all":
        names = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        if not names:
            raise DataError(f"{root}: no qrels/*.tsv files for split 'all'")
        return names
    names = list(dict.fromkeys(s.strip() for s in split.split(",") if s.strip()))
    if not names:
        raise DataError(f"no split given (got {split!r}); e.g. test, train,test or all")
    return names


def _read_splits(root: Path, names: Sequence[str]) -> tuple[dict, dict[str, str]]:
    """Qrels of several files merged, and which file each query came from. A query judged
    in two files keeps both judgments (the higher grade where they disagree)."""
    qrels: dict[str, dict[str, int]] = {}
    origin: dict[str, str] = {}
    for name in names:
        for q, docs in read_qrels(root / "qrels" / f"{name}.tsv").items():
            merged = qrels.setdefault(q, {})
            for d, g in docs.items():
                merged[d] = max(g, merged.get(d, g))
            origin[q] = f"{origin[q]}+{name}" if q in origin else name
    return qrels, origin


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder, keeping only the queries judged in ``split``.

    ``split`` is a qrels file name (``test`` → ``qrels/test.tsv``), a comma list
    (``train,test``: the union of their queries) or ``all`` (every ``qrels/*.tsv``).

    Raises :class:`DataError` for a missing file, an empty corpus, or qrels that name
    unknown documents or queries.
    """
    root = Path(path)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).exists():
            raise DataError(f"{root}: missing {name} (expected BEIR layout)")
    names = split_names(root, split)
    qrels, origin = _read_splits(root, names)
    split = ",".join(names)
    files = ", ".join(f"qrels/{n}.tsv" for n in names)
    corpus: dict[str, dict[str, str]] = {}
    for n, row in jsonl_rows(root / "corpus.jsonl"):
        if "_id" not in row:
            raise DataError(f"{root / 'corpus.jsonl'}:{n}: missing '_id'")
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        # metadata fields (brand, category, ...) are what rerank templates can read
        corpus[str(row["_id"])] = {
            **meta,
            "title": row.get("title") or "",
            "text": row.get("text") or "",
        }
    if not corpus:
        raise DataError(f"{root / 'corpus.jsonl'}: the corpus is empty")
    queries = {}
    for n, row in jsonl_rows(root / "queries.jsonl"):
        if "_id" not in row or "text" not in row:
            raise DataError(f"{root / 'queries.jsonl'}:{n}: need '_id' and 'text'")
        if str(row["_id"]) in qrels:
            queries[str(row["_id"])] = row["text"]
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise DataError(
            f"{root}: {files} names {len(missing_q)} unknown queries (e.g. {missing_q[0]!r})"
        )
    unknown = [(q, d) for q, docs in qrels.items() for d in docs if d not in corpus]
    if unknown:
        raise DataError(
            f"{root}: {files} names {len(unknown)} documents not in corpus.jsonl "
            f"(e.g. query {unknown[0][0]!r} → doc {unknown[0][1]!r})"
        )
    return BeirDataset(root, split, corpus, queries, qrels, origin)
