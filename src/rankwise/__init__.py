"""rankwise: relevant product search. Recall with a bi-encoder + BM25, rerank with a cross-encoder.

Five lines to index and search::

    from rankwise import Catalog, Embedder, Reranker, Searcher
    catalog = Catalog.open("./index", Embedder("BAAI/bge-m3"))
    catalog.ingest("products.jsonl")
    searcher = Searcher(catalog, Reranker("BAAI/bge-reranker-v2-m3"))
    print(searcher.search("苹果手机").results[0].record["title"])

Names are imported lazily so that ``import rankwise`` stays cheap (no torch until needed).
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Embedder": "rankwise.models",
    "Reranker": "rankwise.models",
    "Catalog": "rankwise.catalog",
    "Store": "rankwise.store",
    "open_store": "rankwise.store",
    "Searcher": "rankwise.search",
    "SkipRule": "rankwise.skip",
    "evaluate": "rankwise.evaluate",
    "RankwiseError": "rankwise.errors",
}
__all__ = [
    "Catalog",
    "Embedder",
    "RankwiseError",
    "Reranker",
    "Searcher",
    "SkipRule",
    "Store",
    "__version__",
    "evaluate",
    "open_store",
]

if TYPE_CHECKING:
    from rankwise.catalog import Catalog
    from rankwise.errors import RankwiseError
    from rankwise.evaluate import evaluate
    from rankwise.models import Embedder, Reranker
    from rankwise.search import Searcher, SkipRule
    from rankwise.store import Store, open_store


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")


class _Rankwise(ModuleType):
    """``rankwise.evaluate`` is the function, whatever was imported before.

    Importing the subpackage ``rankwise.evaluate`` (``from rankwise.evaluate.metrics import
    ...``) makes the import system bind the subpackage as the attribute ``evaluate`` of this
    package, which then shadowed the function: ``from rankwise import evaluate`` returned a
    module. A property on the package's class wins over that binding (the subpackage stays
    importable through ``sys.modules``: ``from rankwise.evaluate import X`` is unchanged;
    only an attribute chain like ``rankwise.evaluate.metrics`` no longer reaches it).
    """

    @property
    def evaluate(self) -> Any:
        return import_module("rankwise.evaluate").evaluate

    @evaluate.setter
    def evaluate(self, value: Any) -> None:  # the import system binding the subpackage
        pass


sys.modules[__name__].__class__ = _Rankwise
