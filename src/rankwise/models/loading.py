"""Find a model on disk: a local folder, or a hub id resolved through the Hugging Face cache.

Every failure becomes a :class:`~rankwise.errors.ModelLoadError` whose message names the model,
the cause and a fix. This module also reads what a folder says about itself: its transformers
``config.json`` and, for sentence-transformers folders, ``modules.json`` (pooling, Normalize)
so that no model is run with the wrong head.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankwise.errors import ModelLoadError
from rankwise.models.specs import Kind

# Files a hub snapshot never needs for rankwise (other frameworks' weights, exports, extra heads).
_IGNORE = ["*.onnx", "onnx/*", "openvino/*", "*.h5", "*.msgpack", "*.ot", "*.pt", "*.tflite"]
_SUPPORTED_ST_MODULES = {"Transformer", "Pooling", "Normalize"}
_TRUTHY = {"1", "true", "yes", "on"}
#: What rankwise's trainers record about a saved model (max_length, pooling, instructions),
#: read back on load so a tuned model runs as it was trained unless arguments override it.
#: (sentence-transformers 6 no longer writes ``max_seq_length`` into sentence_bert_config.json,
#: and a CrossEncoder folder never said its length, so the folder's own files cannot carry it.)
SAVED_SETTINGS_FILE = "rankwise_model.json"
_SAVED_KEYS = ("max_length", "pooling", "query_instruction", "document_instruction")


@dataclass(frozen=True)
class SentenceTransformersLayout:
    """What a sentence-transformers folder declares (``modules.json`` and friends)."""

    transformer_dir: Path
    pooling: str | None = None
    normalize: bool = False
    max_seq_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    #: module class names in pipeline order (``("Transformer", "Pooling", "Dense", ...)``).
    modules: tuple[str, ...] = ()
    #: False when a module (Dense, Router, ...) or a pooling mode (lasttoken, ...) is beyond
    #: rankwise's own runner: the pipeline then runs through sentence-transformers itself.
    native: bool = True


@dataclass(frozen=True)
class ResolvedModel:
    """A model located on disk.

    Attributes:
        model_id: what the user passed.
        path: folder holding ``config.json``, the weights and the tokenizer.
        root: the folder that was resolved (differs from ``path`` for old ST layouts).
        revision: the revision asked for (``None`` for local folders or the default branch).
        commit: the hub commit hash of the snapshot, when it came from the hub cache.
        config: the parsed ``config.json``.
        st: the sentence-transformers layout, when the folder has one.
        saved: what rankwise recorded when it trained this model (``rankwise_model.json``:
            ``max_length``, ``pooling``, ``query_instruction``, ``document_instruction``).
    """

    model_id: str
    path: Path
    root: Path
    revision: str | None
    commit: str | None
    config: dict[str, Any]
    st: SentenceTransformersLayout | None = None
    saved: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """Identity of the weights: hub commit, or local path + weight file sizes/mtimes."""
        if self.commit:
            return f"{self.model_id}@{self.commit}"
        stats = []
        for f in sorted(self.path.glob("*")):
            if f.suffix in {".safetensors", ".bin", ".json"} and f.is_file():
                st = f.stat()
                stats.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        return f"{self.path.resolve()}|{'|'.join(stats)}"


def offline_mode(local_files_only: bool | None) -> bool:
    """``local_files_only`` if given, else ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` (read now)."""
    if local_files_only is not None:
        return local_files_only
    return any(
        os.environ.get(v, "").strip().lower() in _TRUTHY
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def short_hash(*parts: object, length: int = 12) -> str:
    """A stable hex digest of ``parts`` (used for model versions and cache keys)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:length]


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).exists()
    )


def _pull_hint(model: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return f"`hf download {model}{rev}` (or `huggingface-cli download {model}{rev}`)"


def resolve_model(
    model: str,
    *,
    kind: Kind,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> ResolvedModel:
    """Locate ``model`` (local folder or hub id) and validate it for ``kind``.

    Raises:
        ModelLoadError: missing folder, not a model folder, hub unreachable, not in the offline
            cache, unknown repo/revision, unsupported sentence-transformers modules, or (for
            ``kind="reranker"``) a model that is not a one-logit cross-encoder.
    """
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError(f"Cannot load {kind}: the model name {model!r} is empty.")
    if _looks_like_path(model):
        root = Path(model).expanduser()
        if not root.is_dir():
            raise ModelLoadError(
                f"Cannot load {kind} '{model}': folder not found ({root.resolve()}). "
                "Fix: check the path, or pass a hub id such as "
                f"{'BAAI/bge-m3' if kind == 'embedder' else 'BAAI/bge-reranker-v2-m3'} "
                "(online, or with HF_HUB_OFFLINE=1 and a warm cache)."
            )
        commit = None
    else:
        root, commit = _download(
            model, kind=kind, revision=revision, offline=offline_mode(local_files_only)
        )
    st = read_st_layout(root, model_id=model, kind=kind) if kind == "embedder" else None
    path = st.transformer_dir if st else root
    config = _read_config(path, model_id=model, kind=kind)
    if kind == "reranker":
        check_cross_encoder(config, model_id=model)
    saved = read_saved_settings(root, model_id=model, kind=kind)
    return ResolvedModel(model, path, root, revision, commit, config, st, saved)


def read_saved_settings(root: Path, *, model_id: str, kind: Kind) -> dict[str, Any]:
    """The settings rankwise saved beside a trained model (``{}`` when there are none)."""
    f = root / SAVED_SETTINGS_FILE
    if not f.is_file():
        return {}
    data = _read_json(f, model_id=model_id, kind=kind)
    return {k: data[k] for k in _SAVED_KEYS if k in data}


def save_model_settings(folder: str | Path, kind: Kind, **settings: Any) -> Path:
    """Write ``rankwise_model.json`` into ``folder``: what a loader needs to run the model
    as it was trained (``max_length``, ``pooling``, ``query_instruction``, ...)."""
    unknown = set(settings) - set(_SAVED_KEYS)
    if unknown:
        raise ValueError(f"unknown saved settings: {sorted(unknown)}")
    path = Path(folder) / SAVED_SETTINGS_FILE
    path.write_text(json.dumps({"kind": kind, **settings}, indent=2, ensure_ascii=False) + "\n")
    return path


def _download(
    model: str, *, kind: Kind, revision: str | None, offline: bool
) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{kind} '{model}'" + (f" at revision {revision}" if revision else "")
    try:
        folder = snapshot_download(
            model, revision=revision, local_files_only=offline, ignore_patterns=_IGNORE
        )
    except LocalEntryNotFoundError as e:
        if offline:
            cause = "it is not in the local Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True)"
        else:
            cause = (
                f"the Hugging Face Hub could not be reached and it is not cached ({_first_line(e)})"
            )
        raise ModelLoadError(
            f"Cannot load {what}: {cause}. Fix: pass a local folder path, or download it where "
            f"there is network with {_pull_hint(model, revision)} and reuse that cache (HF_HOME) "
            "with HF_HUB_OFFLINE=1."
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"Cannot load {what}: the hub has no such revision. Fix: pass an existing branch, tag or commit."
        ) from None
    except GatedRepoError:
        raise ModelLoadError(
            f"Cannot load {what}: the repository is gated. Fix: accept its terms on huggingface.co "
            "and log in (`hf auth login`), or pass a local folder."
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"Cannot load {what}: no such repository on the Hugging Face Hub (or it is private). "
            "Fix: check the id, or pass a local folder path."
        ) from None
    except Exception as e:  # network stacks raise many types (httpx, OSError, HfHubHTTPError)
        raise ModelLoadError(
            f"Cannot load {what}: the Hugging Face Hub could not be reached ({type(e).__name__}: "
            f"{_first_line(e)}). Fix: pass a local folder path, or set HF_HUB_OFFLINE=1 with a warm "
            f"cache, or download it first with {_pull_hint(model, revision)}."
        ) from None
    folder = Path(folder)
    commit = folder.name if folder.parent.name == "snapshots" else None
    return folder, commit


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _read_json(path: Path, *, model_id: str, kind: Kind) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"Cannot load {kind} '{model_id}': {path.name} is unreadable ({_first_line(e)}). "
            "Fix: re-download the model."
        ) from None


def _read_config(path: Path, *, model_id: str, kind: Kind) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise ModelLoadError(
            f"Cannot load {kind} '{model_id}': {path} is not a transformers model folder "
            "(no config.json). Fix: pass the folder that holds config.json, the weights and the tokenizer."
        )
    return _read_json(cfg, model_id=model_id, kind=kind)


def check_cross_encoder(config: dict[str, Any], *, model_id: str) -> None:
    """Raise unless ``config`` describes a ``*ForSequenceClassification`` model with one label."""
    archs = config.get("architectures") or []
    n_labels = config.get("num_labels") or len(config.get("id2label") or {}) or 2
    if not any(a.endswith("ForSequenceClassification") for a in archs) or n_labels != 1:
        raise ModelLoadError(
            f"Cannot load reranker '{model_id}': it is not a cross-encoder (architectures "
            f"{archs or 'unset'}, {n_labels} output labels; a reranker needs a "
            "*ForSequenceClassification model with num_labels=1). Fix: pass a cross-encoder such "
            "as BAAI/bge-reranker-v2-m3, or load this model as an Embedder."
        )


def read_st_layout(root: Path, *, model_id: str, kind: Kind) -> SentenceTransformersLayout | None:
    """Parse a sentence-transformers folder; ``None`` when ``root`` has no ``modules.json``.

    Modules rankwise's own runner covers are Transformer, Pooling (CLS or mean) and Normalize;
    any other module or pooling mode marks the layout ``native=False`` (see
    :mod:`rankwise.models.st_pipeline`) rather than returning vectors that differ from the model's.
    """
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file, model_id=model_id, kind=kind)
    transformer_dir, pooling, normalize, native = root, None, False, True
    names = []
    for m in modules:
        name = str(m.get("type", "")).rsplit(".", 1)[-1]
        names.append(name)
        mod_dir = root / m.get("path", "")
        if name not in _SUPPORTED_ST_MODULES:
            native = False
        elif name == "Transformer":
            transformer_dir = mod_dir
        elif name == "Pooling":
            try:
                pooling = _pooling_mode(mod_dir / "config.json", model_id=model_id)
            except (
                ModelLoadError
            ):  # weighted mean, last token, max, ...: sentence-transformers runs it
                native = False
        else:
            normalize = True
    max_seq = None
    for f in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (transformer_dir / f).is_file():
            max_seq = _read_json(transformer_dir / f, model_id=model_id, kind=kind).get(
                "max_seq_length"
            )
            break
    prompts = {}
    if (root / "config_sentence_transformers.json").is_file():
        st_cfg = _read_json(
            root / "config_sentence_transformers.json", model_id=model_id, kind=kind
        )
        prompts = {k: v for k, v in (st_cfg.get("prompts") or {}).items() if v}
    return SentenceTransformersLayout(
        transformer_dir, pooling, normalize, max_seq, prompts, tuple(names), native
    )


def _pooling_mode(config_file: Path, *, model_id: str) -> str | None:
    if not config_file.is_file():
        return None
    cfg = _read_json(config_file, model_id=model_id, kind="embedder")
    modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
    mode_map = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}
    new_style = cfg.get("pooling_mode")  # sentence-transformers >= 6: "cls" | "mean" | [...]
    if isinstance(new_style, list) and len(new_style) == 1:
        new_style = new_style[0]
    if isinstance(new_style, str):
        modes = [f"pooling_mode_{new_style}"]
        mode_map = {"pooling_mode_cls": "cls", "pooling_mode_mean": "mean"}
    if len(modes) != 1 or modes[0] not in mode_map:
        raise ModelLoadError(
            f"Cannot load embedder '{model_id}': its pooling ({', '.join(modes) or 'none'}) is not "
            "supported (rankwise runs CLS or mean pooling). Fix: use a CLS- or mean-pooled model."
        )
    return mode_map[modes[0]]
