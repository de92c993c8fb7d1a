"""Copy a store into another (e.g. an embedded index into Milvus)."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from rankwise.errors import StoreError
from rankwise.store.base import Store


def migrate(src: Store, dst: Store, batch_size: int = 1000, *, show_progress: bool = True) -> int:
    """Stream ``src`` into ``dst`` in batches of ``batch_size``; returns records copied.

    Upserts are idempotent by id, so an interrupted migration is finished by running it
    again. Raises :class:`StoreError` when the vector dimensions differ.
    """
    if src.dim is not None and dst.dim is not None and src.dim != dst.dim:
        raise StoreError(
            f"cannot migrate: {src.uri} holds dimension {src.dim}, {dst.uri} holds {dst.dim}"
        )
    total = src.count()
    copied = 0
    with tqdm(total=total, unit="rec", desc="migrate", disable=not show_progress) as bar:
        for batch in src.iter_records(batch_size=batch_size, with_vectors=True):
            vectors = np.stack([r.pop("vector") for r in batch]).astype(np.float32)
            copied += dst.upsert(batch, vectors)
            bar.update(len(batch))
    return copied
