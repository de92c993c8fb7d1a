"""`rankwise store info|migrate`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from rankwise.cli.app import app
from rankwise.cli.common import (
    console,
)

# ----------------------------------------------------------------------------- store (issue 7)
store_app = typer.Typer(
    help="Store operations: inspect an index, move it between backends (LanceDB, Milvus).",
    no_args_is_help=True,
)
app.add_typer(store_app, name="store")

CollectionOpt = Annotated[
    str | None,
    typer.Option("--collection", help="Milvus collection name (default: products)."),
]


SideDirOpt = Annotated[
    str | None,
    typer.Option(
        "--side-dir",
        envvar="RANKWISE_SIDE_DIR",
        help="Milvus server: the local folder of its bge-m3 side index (ColBERT vectors).",
    ),
]


def _store_options(uri: str, collection: str | None, side_dir: str | None = None) -> dict[str, Any]:
    from rankwise.store import store_options

    return store_options(uri, collection=collection, side_dir=side_dir)


@store_app.command("info")
def store_info(
    uri: Annotated[
        str, typer.Argument(help="Index directory, Milvus Lite *.db or http://host:port.")
    ],
    collection: CollectionOpt = None,
    side_dir: SideDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Backend, count, dimension, fields, index parameters and lexical engine of a store.

    Milvus server token: RANKWISE_MILVUS_TOKEN.
    """
    from rankwise.store import open_store

    store = open_store(uri, create=False, **_store_options(uri, collection, side_dir))
    info = store.info()
    store.close()
    from rankwise.store.side import SideIndex, side_path  # bge-m3's sparse/ColBERT side index

    folder = side_path(uri, getattr(store, "side_dir", None))
    if SideIndex.exists(folder):
        info["side_index"] = SideIndex(folder).info()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    for key, value in info.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        console.print(f"[bold]{key}[/]: {shown}", highlight=False)


@store_app.command("migrate")
def store_migrate(
    src: Annotated[str, typer.Option("--from", help="Source store URI (e.g. ./index).")],
    dst: Annotated[
        str, typer.Option("--to", help="Destination URI (milvus://host:19530, x.db, ./dir).")
    ],
    collection: CollectionOpt = None,
    batch_size: Annotated[
        int, typer.Option("--record-batch-size", "--batch-size", help="Records copied per batch.")
    ] = 1000,
) -> None:
    """Copy every product and vector from one store to another (upsert by id).

    Rerunning after an interruption completes the copy without duplicates.
    """
    from rankwise.store import migrate, open_store

    source = open_store(src, create=False)
    target = open_store(dst, create=True, **_store_options(dst, collection))
    n = migrate(source, target, batch_size)
    console.print(f"migrated {n} records: {src} -> {dst} (now {target.count()} there)")
    source.close()
    target.close()
