"""The optional stages after recall, built from settings: chunked rerank, the rerank
template, the blend stage (issue 17). One place for the CLI and the server."""

from __future__ import annotations

from typing import Any


def configure_stages(searcher: Any, s: Any) -> None:
    """Set ``searcher``'s chunking / template / blend from settings ``s``
    (``max_chunks_per_doc`` > 1, ``rerank_template``, ``blend``); unset settings leave the
    searcher's own stages as they are."""
    from rankwise.blend import BlendStage
    from rankwise.models.chunking import ChunkPolicy
    from rankwise.templates import DocumentTemplate

    if s.max_chunks_per_doc > 1:
        searcher.chunking = ChunkPolicy(s.max_chunks_per_doc, aggregate=s.chunk_aggregate)
    if s.rerank_template:
        searcher.template = DocumentTemplate.parse(s.rerank_template)
    if s.blend:
        searcher.blend = BlendStage.load(s.blend, records=searcher.catalog.store.get)
