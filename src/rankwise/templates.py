"""Document templates: which product fields the cross-encoder reads, in what order, how long.

A product is title, brand, category, attributes, price, description; the default rerank text
is ``"{title}\\n{text}"`` (what ``data.document_text`` builds). A :class:`DocumentTemplate`
maps a record to its rerank text with ``str.format``-style fields and per-field token caps,
separately from the embedding text (ingest is unchanged):

>>> t = DocumentTemplate("{title} | {brand} | {category} | {text}", caps={"text": 200})
>>> t.render({"title": "drill", "brand": "Bosch", "text": "..."}).text
'drill | Bosch | ...'

- A missing or empty field drops the separator before it (no ``" |  | "`` runs).
- ``caps`` are token counts in the reranker's tokenizer (cut at token boundaries); without
  a tokenizer (remote rerankers) they count whitespace-separated words.
- ``body`` (default ``"text"``) names the field that chunked rerank windows; everything the
  template puts before it is the head kept in every window, everything after it the tail.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rankwise.data import document_text
from rankwise.errors import ConfigError
from rankwise.models.chunking import ChunkPolicy, LongDocument, score_chunked

DEFAULT_FORMAT = "{title}\n{text}"


def _pieces(fmt: str) -> list[tuple[str, str | None]]:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise ConfigError(f"bad document template {fmt!r}: {e}") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conv in parsed:
        if name is not None and (not name.isidentifier() or spec or conv):
            raise ConfigError(
                f"bad document template field {{{name}}} in {fmt!r}: use plain field names "
                "such as {title} (no format specs, indexes or conversions)."
            )
        out.append((literal, name))
    return out


@dataclass(frozen=True)
class DocumentTemplate:
    """Record → rerank text. ``format`` names fields as ``{field}``; ``caps`` maps a field
    to its token cap; ``body`` is the field windowed by chunked rerank (``None``: none)."""

    format: str = DEFAULT_FORMAT
    caps: Mapping[str, int] = field(default_factory=dict)
    body: str | None = "text"

    def __post_init__(self) -> None:
        names = self.fields
        if not names:
            raise ConfigError(f"document template {self.format!r} names no field.")
        for name, cap in self.caps.items():
            if name not in names:
                raise ConfigError(f"template cap for '{name}', which the template does not use.")
            if not isinstance(cap, int) or cap < 1:
                raise ConfigError(f"template cap for '{name}' must be a positive integer.")

    @property
    def fields(self) -> list[str]:
        return [name for _, name in _pieces(self.format) if name is not None]

    @classmethod
    def parse(cls, fmt: str, caps: str | None = None) -> DocumentTemplate:
        """From CLI text: ``fmt`` as above, ``caps`` as ``"text=256,attributes=64"``."""
        parsed: dict[str, int] = {}
        for item in (caps or "").split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(f"bad template cap {item!r}: use field=tokens, e.g. text=256.")
            parsed[name.strip()] = int(value)
        return cls(fmt.replace("\\n", "\n"), parsed)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "caps": dict(self.caps), "body": self.body}

    def render(self, record: Mapping[str, Any], tokens: Any = None) -> LongDocument:
        """The record's rerank text split around the body field (see :class:`LongDocument`).

        ``tokens``: the reranker's ``TokenEncoder`` for token caps (``None``: word caps).
        """
        values = {name: _value(record.get(name)) for name in self.fields}
        for name, cap in self.caps.items():
            values[name] = _cut(values[name], cap, tokens)
        parts: list[list[str]] = [[]]  # head, body, tail
        written = False
        for i, (literal, name) in enumerate(_pieces(self.format)):
            value = values.get(name, "") if name is not None else ""
            # a separator joins a field to what came before: dropped with an empty field
            if name is None or i == 0 or (value and written):
                parts[-1].append(literal)
            if name is None or not value:
                if name is not None and name == self.body:
                    parts.extend([[], []])
                continue
            if name == self.body:
                parts.extend([[value], []])
            else:
                parts[-1].append(value)
            written = True
        if len(parts) == 1:
            return LongDocument("".join(parts[0]).strip())
        head, body, tail = ("".join(p) for p in parts[:3])
        if not body:
            return LongDocument(f"{head}{tail}".strip())
        return LongDocument(head.lstrip(), body, tail.rstrip())

    def text(self, record: Mapping[str, Any], tokens: Any = None) -> str:
        """The whole rerank text of ``record`` (head + body + tail)."""
        return self.render(record, tokens).text


def _value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def _cut(text: str, cap: int, tokens: Any) -> str:
    """``text`` cut after ``cap`` tokens (a token boundary), or ``cap`` words without a tokenizer."""
    if not text:
        return text
    if tokens is None or not hasattr(tokens, "spans"):
        words = text.split()
        return text if len(words) <= cap else " ".join(words[:cap])
    spans = tokens.spans([text])[0]
    return text if len(spans) <= cap else text[: spans[cap - 1][1]]


def rerank_logits(
    reranker: Any,
    query: str,
    records: Sequence[Mapping[str, Any]],
    *,
    template: DocumentTemplate | None = None,
    chunking: ChunkPolicy | None = None,
    max_chars: int | None = None,
) -> np.ndarray:
    """float32 (len(records),): each record's rerank text (``template``, else title +
    description cut at ``max_chars``) scored whole, or window by window with ``chunking``
    (title, or the template's head, kept in every window; no character cut then)."""
    if not records:
        return np.zeros(0, np.float32)
    tok = getattr(reranker, "tokens", None)
    if chunking is not None:
        docs = [
            template.render(r, tok) if template is not None else _title_and_text(r) for r in records
        ]
        return score_chunked(reranker, query, docs, chunking).scores
    if template is not None:
        texts = [template.text(r, tok) for r in records]
    else:
        texts = [document_text(r, max_chars) for r in records]
    return np.asarray(reranker.score(query, texts), dtype=np.float32)


def _title_and_text(record: Mapping[str, Any]) -> LongDocument:
    """The default rerank text (``data.document_text``) as head = title, body = description."""
    title, text = str(record.get("title") or ""), str(record.get("text") or "")
    return LongDocument(f"{title}\n", text) if text else LongDocument(title)
