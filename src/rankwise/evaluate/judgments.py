"""Judgments made in the workbench page: a BEIR qrels TSV plus a queries file beside it.

Layout (what ``rankwise serve --judgments FILE`` writes, what ``rankwise eval`` and
``rankwise tune run --judgments FILE`` read)::

    FILE                      query-id <TAB> corpus-id <TAB> score   (BEIR qrels, header line)
    <FILE's folder>/queries.jsonl   {"_id": query-id, "text": query}     (BEIR queries)

* Query ids are stable: ``q`` + the first 16 hex digits of sha1(query text with its
  whitespace collapsed), so the same query typed again, in another session or on another
  replica, gets the same id.
* The file is append-only; judging a (query, product) again appends a line and the later
  line wins (``read_qrels`` keeps the last grade), so the history stays in the file.
* Concurrent writers (threads of one server, several servers on one shared file) are
  safe: each append takes an exclusive ``fcntl.flock`` on the qrels file and writes one
  whole line with one ``write`` on an ``O_APPEND`` descriptor, so lines never interleave
  and a query line is written once.
* Train/test split (for ``tune run`` and the compare view): a query is held out for
  testing when a stable hash of its id falls below ``test_fraction`` (default 0.2), so a
  query keeps its split as more judgments arrive.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankwise.data import read_catalog, read_qrels
from rankwise.errors import DataError
from rankwise.textfiles import text_lines

HEADER = "query-id\tcorpus-id\tscore\n"
MIN_GRADE, MAX_GRADE = 0, 3
TEST_FRACTION = 0.2


def normalise_query(text: str) -> str:
    """The query as judged: surrounding and repeated whitespace removed."""
    return " ".join(text.split())


def query_id(text: str) -> str:
    """Stable id of a query: ``q`` + 16 hex digits of sha1 of the normalised text."""
    return "q" + hashlib.sha1(normalise_query(text).encode("utf-8")).hexdigest()[:16]


def split_of(qid: str, test_fraction: float = TEST_FRACTION) -> str:
    """``"test"`` (held out) or ``"train"``, fixed by a hash of the query id."""
    h = int.from_bytes(hashlib.md5(f"split:{qid}".encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def queries_path(qrels_file: str | Path) -> Path:
    """The queries file beside a judgments file: ``queries.jsonl`` in the same folder."""
    return Path(qrels_file).parent / "queries.jsonl"


@dataclass(frozen=True)
class Judgments:
    """What a judgments file holds: ``queries {qid: text}``, ``qrels {qid: {doc: grade}}``."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


class JudgmentsFile:
    """Appends judgments to ``path`` (and new queries to ``queries.jsonl`` beside it).

    >>> jf = JudgmentsFile("work/qrels.tsv")
    >>> jf.append("running shoes", "p3", 3)   # -> ("q…", "p3", 3)
    >>> jf.read().qrels
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.queries_path = queries_path(self.path)
        if self.path.is_dir():
            raise DataError(f"--judgments {self.path} is a folder; give a file such as qrels.tsv")
        self._lock = threading.Lock()  # flock is per open file; this orders our own threads
        self._known: set[str] = set()
        self._known_size = -1

    def append(self, query: str, doc_id: str, grade: int) -> tuple[str, str, int]:
        """Record one judgment; returns ``(query_id, doc_id, grade)``.

        Raises :class:`DataError` for an empty query, a grade outside 0..3 or an id with
        whitespace (the TSV could not hold it).
        """
        text = normalise_query(query)
        if not text:
            raise DataError("the query is empty: type a query before judging")
        if isinstance(grade, bool) or not isinstance(grade, int):
            raise DataError(f"grade must be an integer {MIN_GRADE}-{MAX_GRADE}, got {grade!r}")
        if not MIN_GRADE <= grade <= MAX_GRADE:
            raise DataError(f"grade must be between {MIN_GRADE} and {MAX_GRADE}, got {grade}")
        if not doc_id or any(c.isspace() for c in doc_id):
            raise DataError(f"product id {doc_id!r} is empty or contains whitespace")
        qid = query_id(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, _locked_append(self.path) as fd:
            if os.fstat(fd).st_size == 0:
                os.write(fd, HEADER.encode())
            if qid not in self._queries_on_disk():
                line = json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n"
                qfd = os.open(self.queries_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(qfd, line.encode("utf-8"))
                finally:
                    os.close(qfd)
                self._known.add(qid)
                self._known_size = self.queries_path.stat().st_size
            os.write(fd, f"{qid}\t{doc_id}\t{grade}\n".encode())
        return qid, doc_id, grade

    def _queries_on_disk(self) -> set[str]:
        """Query ids in the queries file (re-read only when another writer grew it)."""
        size = self.queries_path.stat().st_size if self.queries_path.exists() else 0
        if size != self._known_size:
            self._known = set(read_queries(self.queries_path)) if size else set()
            self._known_size = size
        return self._known

    def read(self) -> Judgments:
        """Every judged query and its latest grades (empty when nothing is judged yet)."""
        if not self.path.exists():
            return Judgments({}, {})
        with self._lock, _locked_read(self.path):
            qrels = read_qrels(self.path)
            queries = read_queries(self.queries_path) if self.queries_path.exists() else {}
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise DataError(
                f"{self.path}: {len(missing)} judged queries are not in {self.queries_path} "
                f"(e.g. {missing[0]!r})"
            )
        return Judgments({q: queries[q] for q in qrels}, qrels)

    def for_query(self, query: str) -> dict[str, int]:
        """``{doc_id: grade}`` judged for ``query`` so far."""
        return self.read().qrels.get(query_id(query), {})


class _FileLock:
    def __init__(self, path: Path, flags: int, mode: int):
        self.path, self.flags, self.mode = path, flags, mode

    def __enter__(self) -> int:
        self.fd = os.open(self.path, self.flags, 0o644)
        fcntl.flock(self.fd, self.mode)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _locked_append(path: Path) -> _FileLock:
    return _FileLock(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX)


def _locked_read(path: Path) -> _FileLock:
    return _FileLock(path, os.O_RDONLY, fcntl.LOCK_SH)


def read_queries(path: Path) -> dict[str, str]:
    """``{_id: text}`` from a BEIR ``queries.jsonl``."""
    out: dict[str, str] = {}
    for n, line in text_lines(path):
        try:
            row = json.loads(line)
            out[str(row["_id"])] = str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{n}: expected {{'_id': ..., 'text': ...}}") from None
    return out


# ----------------------------------------------------------------------------- BEIR view
def corpus_records(source: str | Path) -> Iterator[dict[str, Any]]:
    """Products to evaluate over: a BEIR folder (its ``corpus.jsonl``), a catalog file
    (JSONL / CSV / Parquet) or an index (a store URI such as the served ``./index``)."""
    p = Path(source)
    if p.is_dir() and (p / "corpus.jsonl").exists():
        with (p / "corpus.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    yield {"id": str(row["_id"]), "title": row.get("title") or "", "text": row.get("text") or ""}  # fmt: skip
        return
    if p.is_file():
        for _, rec in read_catalog(p):
            yield rec
        return
    from rankwise.store import open_store

    store = open_store(str(source), create=False)
    try:
        for batch in store.iter_records():
            yield from batch
    finally:
        store.close()


def to_beir(
    judgments: str | Path | Judgments,
    corpus: str | Path | Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    test_fraction: float = TEST_FRACTION,
) -> Path:
    """Write a BEIR folder that ``load_beir``, ``evaluate`` and ``tune_run`` read.

    ``OUT/corpus.jsonl`` (every product of ``corpus``), ``OUT/queries.jsonl`` (judged
    queries), ``OUT/qrels/judged.tsv`` (every judged query), ``qrels/train.tsv`` and
    ``qrels/test.tsv`` (split by :func:`split_of`). Raises :class:`DataError` when nothing
    is judged or a judged id is not in the corpus.
    """
    j = judgments if isinstance(judgments, Judgments) else JudgmentsFile(judgments).read()
    if not j.qrels:
        raise DataError(f"{judgments}: no judgments yet (judge results in the workbench page)")
    records = corpus_records(corpus) if isinstance(corpus, str | Path) else corpus
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    ids: set[str] = set()
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            ids.add(str(r["id"]))
            row = {"_id": str(r["id"]), "title": r.get("title") or "", "text": r.get("text") or ""}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    unknown = sorted({d for docs in j.qrels.values() for d in docs if d not in ids})
    if unknown:
        raise DataError(
            f"{len(unknown)} judged products are not in the corpus {corpus} (e.g. {unknown[0]!r}); "
            "evaluate over the catalog the judgments were made on"
        )
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in j.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    splits: dict[str, list[str]] = {"judged": [], "train": [], "test": []}
    for qid in sorted(j.qrels):
        splits["judged"].append(qid)
        splits[split_of(qid, test_fraction)].append(qid)
    for name, qids in splits.items():
        with (out / "qrels" / f"{name}.tsv").open("w", encoding="utf-8") as fh:
            fh.write(HEADER)
            for q in qids:
                for d, g in j.qrels[q].items():
                    fh.write(f"{q}\t{d}\t{g}\n")
    return out


def beir_folder_for(judgments: str | Path) -> Path:
    """Where the CLI writes the BEIR view of a judgments file: ``<FILE>.beir/`` beside it."""
    p = Path(judgments)
    return p.parent / f"{p.name}.beir"


def check_splits(beir: Path, splits: Iterable[str]) -> Path:
    """``beir`` unchanged when each of ``splits`` has a judged query; else a DataError."""
    for name in splits:
        if not read_qrels(beir / "qrels" / f"{name}.tsv"):
            n = len(read_qrels(beir / "qrels" / "judged.tsv"))
            raise DataError(
                f"none of the {n} judged queries falls in the {name} split "
                f"(test = a stable {TEST_FRACTION:.0%} of queries by hash): judge more queries"
            )
    return beir
