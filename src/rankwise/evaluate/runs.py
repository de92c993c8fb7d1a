"""TREC run files: read an external system's run, write ours (``--save-run``).

Format, one line per retrieved document, whitespace separated::

    query_id Q0 doc_id rank score tag

Scores decide the order when a run is evaluated (``trec_eval`` ignores the rank column);
see :func:`rankwise.evaluate.metrics.rank_documents` for how ties are broken.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rankwise.errors import DataError
from rankwise.evaluate.metrics import Run, rank_documents
from rankwise.textfiles import text_lines


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{query_id: {doc_id: score}}``.

    Raises :class:`DataError` naming the file and line for a missing file, a line that
    does not have 6 columns, a score that is not a number, or a document listed twice for
    one query.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"run file not found: {p}")
    run: dict[str, dict[str, float]] = {}
    for n, line in text_lines(p):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(
                f"{p}:{n}: expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}"
            )
        qid, _, doc_id, _, score, _ = parts
        try:
            value = float(score)
        except ValueError:
            raise DataError(f"{p}:{n}: score {score!r} is not a number") from None
        docs = run.setdefault(qid, {})
        if doc_id in docs:
            raise DataError(f"{p}:{n}: document {doc_id!r} listed twice for query {qid!r}")
        docs[doc_id] = value
    if not run:
        raise DataError(f"{p}: the run file is empty")
    return run


def write_run(run: Run, path: str | Path, tag: str = "rankwise") -> Path:
    """Write ``run`` as a TREC run file, queries sorted, documents in evaluation order."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tag = "_".join(tag.split()) or "rankwise"
    with p.open("w", encoding="utf-8") as fh:
        for qid in sorted(run):
            scores = run[qid]
            for rank, doc_id in enumerate(rank_documents(scores), 1):
                fh.write(f"{qid} Q0 {doc_id} {rank} {float(scores[doc_id])!r} {tag}\n")
    return p


def check_run_ids(run: Run, corpus: Mapping[str, object], source: str = "run") -> None:
    """Raise :class:`DataError` if ``run`` names documents missing from ``corpus``."""
    unknown = [(q, d) for q, docs in run.items() for d in docs if d not in corpus]
    if unknown:
        q, d = unknown[0]
        raise DataError(
            f"{source} names {len(unknown)} documents not in the corpus (e.g. query {q!r} → doc {d!r})"
        )
