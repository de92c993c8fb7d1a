"""Tokenisation: once per text, thread-safe, with the model's own special-token template.

We call the Rust ``tokenizers`` backend directly rather than ``transformers``' wrapper:
- the wrapper mutates the Rust tokenizer's truncation/padding state on calls, which is what
  makes concurrent server threads fail with "Already borrowed"; our copy has truncation and
  padding switched off once at load and is never mutated again, so one instance serves all
  threads;
- pair truncation here is query-first (the query gets at most a share of ``max_length``, the
  document fills the rest), which the wrapper's strategies do not express;
- transformers 5 dropped ``build_inputs_with_special_tokens``, so the special-token layout is
  learnt from the tokenizer's own post-processor (:class:`SpecialTemplate`).
Catalog documents reranked again and again hit an LRU of token ids instead of the tokenizer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rankwise.errors import ModelLoadError

Encoded = tuple[np.ndarray, np.ndarray]  # (input_ids, token_type_ids), int64, same length


@dataclass(frozen=True)
class SpecialTemplate:
    """Where a tokenizer puts special tokens around one or two sequences.

    ``parts`` is a tuple of ``(sequence index or None, special ids, type ids)``: ``None`` parts
    are literal special tokens; numbered parts stand for that sequence's content, whose
    type id is ``type_ids[0]``.
    """

    parts: tuple[tuple[int | None, np.ndarray, np.ndarray], ...]

    @property
    def num_special(self) -> int:
        return sum(len(ids) for seq, ids, _ in self.parts if seq is None)

    @classmethod
    def learn(cls, tokenizer, pair: bool) -> SpecialTemplate:
        """Read the layout off ``tokenizer.post_process`` applied to probe encodings.

        Positions are attributed with ``special_tokens_mask`` and the probes' lengths (the
        ``sequence_ids`` of a post-processed pair lose the first sequence in tokenizers 0.23).
        """
        first = tokenizer.encode("rankwise probe query", add_special_tokens=False)
        second = tokenizer.encode("another sample document", add_special_tokens=False)
        if not first.ids or not second.ids:
            raise ValueError("the tokenizer produces no tokens for plain text")
        out = tokenizer.post_process(first, second if pair else None, add_special_tokens=True)
        seq_ids: list[int | None] = []
        seen = 0
        for special in out.special_tokens_mask:
            seq_ids.append(None if special else int(seen >= len(first.ids)))
            seen += not special
        parts: list[tuple[int | None, np.ndarray, np.ndarray]] = []
        ids, types = out.ids, out.type_ids
        i = 0
        while i < len(ids):
            j = i
            while j < len(ids) and seq_ids[j] == seq_ids[i]:
                j += 1
            parts.append(
                (
                    seq_ids[i],
                    np.array(ids[i:j], dtype=np.int64),
                    np.array(types[i:j], dtype=np.int64),
                )
            )
            i = j
        return cls(tuple(parts))

    def build(self, *seqs: np.ndarray) -> Encoded:
        """Content id arrays (one per sequence) → ``(input_ids, token_type_ids)`` with specials."""
        id_parts, type_parts = [], []
        for seq, ids, types in self.parts:
            if seq is None:
                id_parts.append(ids)
                type_parts.append(types)
            else:
                id_parts.append(seqs[seq])
                type_parts.append(np.full(len(seqs[seq]), types[0], dtype=np.int64))
        return np.concatenate(id_parts), np.concatenate(type_parts)


class LRU:
    """A small thread-safe LRU (functools.lru_cache cannot be sized per instance or batch-filled)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def _load_backend(path: Path, model_id: str):
    from tokenizers import Tokenizer

    try:
        if (path / "tokenizer.json").is_file():
            backend = Tokenizer.from_file(str(path / "tokenizer.json"))
        else:  # slow-only folders: let transformers convert them to a fast tokenizer once
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
    except Exception as e:  # tokenizers/transformers raise many types for broken folders
        raise ModelLoadError(
            f"Cannot load the tokenizer of '{model_id}' from {path} ({type(e).__name__}: {e}). "
            "Fix: make sure the folder has tokenizer.json (or the tokenizer files of a fast tokenizer)."
        ) from None
    backend = Tokenizer.from_str(backend.to_str())  # a private copy we never mutate again
    backend.no_truncation()
    backend.no_padding()
    return backend


class TokenEncoder:
    """Tokenise single texts or (query, document) pairs into unpadded id arrays.

    Args:
        path: folder with the tokenizer files.
        model_id: the model name, for error messages.
        pad_id: padding id (``None``: the tokenizer's pad token, else 0).
        cache_size: documents whose token ids are kept (LRU, keyed by text); 0 disables.
        cache_cap: ids kept per cached document (longer documents are cut to this).
    """

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        pad_id: int | None = None,
        cache_size: int = 0,
        cache_cap: int = 512,
    ):
        self.model_id = model_id
        self._tk = _load_backend(Path(path), model_id)
        try:
            self.single = SpecialTemplate.learn(self._tk, pair=False)
            self.pair = SpecialTemplate.learn(self._tk, pair=True)
        except Exception as e:  # a post-processor that cannot handle pairs, or an empty vocab
            raise ModelLoadError(
                f"Cannot use the tokenizer of '{model_id}': its special-token template could not be read ({e})."
            ) from None
        self.pad_id = pad_id if pad_id is not None else self._tokenizer_pad_id()
        self._cache = LRU(cache_size)
        self._cache_cap = cache_cap

    def _tokenizer_pad_id(self) -> int:
        padding = self._tk.padding
        if padding and padding.get("pad_id") is not None:
            return int(padding["pad_id"])
        for tok in ("[PAD]", "<pad>", "<|pad|>"):
            if (tid := self._tk.token_to_id(tok)) is not None:
                return tid
        return 0

    @property
    def cache_info(self) -> dict[str, int]:
        return {"hits": self._cache.hits, "misses": self._cache.misses, "size": len(self._cache)}

    def content_ids(self, texts: Sequence[str], *, cap: int | None = None) -> list[np.ndarray]:
        """Token ids without special tokens, cut to ``cap`` (int64 arrays, one per text)."""
        encs = self._tk.encode_batch(list(texts), add_special_tokens=False) if texts else []
        return [np.asarray(e.ids[:cap] if cap is not None else e.ids, dtype=np.int64) for e in encs]

    def spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character (start, end) of each content token of each text (no special tokens):
        where a text can be cut at a token boundary (chunking, per-field token caps)."""
        encs = self._tk.encode_batch(list(texts), add_special_tokens=False) if texts else []
        return [list(e.offsets) for e in encs]

    def cached_content_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Like :meth:`content_ids` (cut to ``cache_cap``) but served from the LRU when possible."""
        out: list[np.ndarray | None] = [self._cache.get(t) for t in texts]
        missing = list(dict.fromkeys(t for t, ids in zip(texts, out, strict=True) if ids is None))
        if missing:
            fresh = dict(zip(missing, self.content_ids(missing, cap=self._cache_cap), strict=True))
            for t, ids in fresh.items():
                self._cache.put(t, ids)
            out = [ids if ids is not None else fresh[t] for t, ids in zip(texts, out, strict=True)]
        return out  # type: ignore[return-value]

    def encode_single(self, texts: Sequence[str], max_length: int) -> list[Encoded]:
        """Each text truncated so that it fits ``max_length`` with its special tokens."""
        cap = max_length - self.single.num_special
        return [self.single.build(ids) for ids in self.content_ids(texts, cap=cap)]

    def encode_pairs(
        self, pairs: Sequence[tuple[str, str]], max_length: int, query_max_share: float
    ) -> list[Encoded]:
        """(query, document) pairs: query cut to ``int(max_length*query_max_share)`` tokens,
        the document fills what is left of ``max_length``. Documents go through the LRU."""
        room = max_length - self.pair.num_special
        q_cap = max(1, min(int(max_length * query_max_share), room - 1))
        queries = list(dict.fromkeys(q for q, _ in pairs))
        q_ids = dict(zip(queries, self.content_ids(queries, cap=q_cap), strict=True))
        d_ids = self.cached_content_ids([d for _, d in pairs])
        return [
            self.pair.build(q_ids[q], d[: room - len(q_ids[q])])
            for (q, _), d in zip(pairs, d_ids, strict=True)
        ]

    def count(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts including the single-sequence special tokens."""
        return [len(ids) + self.single.num_special for ids in self.content_ids(texts)]
