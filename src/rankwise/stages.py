"""The optional stages after recall, built from settings: chunked rerank, the rerank
template, the blend stage (issue 17). One place for the CLI and the server."""

from __future__ import annotations

from typing import Any


def configure_stages(searcher: Any, s: Any) -> None:
    """Set ``searcher``'s chunking / template / blend from settings ``s``
    (``max_chunks_per_doc`` > 1 or ``max_tokens_per_doc``, ``rerank_template``, ``blend``);
    unset settings leave the searcher's own stages as they are."""
    from rankwise.blend import BlendStage
    from rankwise.templates import DocumentTemplate

    policy = chunk_policy(s)
    if policy is not None:
        searcher.chunking = policy
    if s.rerank_template:
        searcher.template = DocumentTemplate.parse(s.rerank_template)
    if s.blend:
        searcher.blend = BlendStage.load(
            s.blend, records=searcher.catalog.store.get, reload_s=s.blend_reload_s or None
        )


def chunk_policy(s: Any, max_chunks: int | None = None, max_tokens: int | None = None) -> Any:
    """The chunked-rerank policy of settings ``s`` (``max_chunks`` / ``max_tokens``, e.g. a
    request's, override theirs); ``None`` (plain truncation) when neither windows nor a
    token cut is asked for."""
    from rankwise.models.chunking import ChunkPolicy

    chunks = max_chunks or s.max_chunks_per_doc
    tokens = max_tokens or s.max_tokens_per_doc
    if chunks <= 1 and tokens is None:
        return None
    return ChunkPolicy(chunks, aggregate=s.chunk_aggregate, max_tokens_per_doc=tokens)
