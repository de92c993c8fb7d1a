"""Rerank templates compared in one evaluation (``rankwise eval --rerank-template``).

Each template (:class:`~rankwise.templates.DocumentTemplate`) adds, for every
``<mode>+rerank`` system, one more system ``<mode>+rerank[template=NAME]``: the same
searcher and recall (so the same candidates), only the text the cross-encoder reads per
product differs. The report's paired significance then tests each templated system against
the plain ``<mode>+rerank`` (the default ``{title}\\n{text}``), or, without that system,
against the first template's.

Templates are given as ``NAME=FORMAT`` or ``FORMAT`` (named ``t1``, ``t2``, ... by
position), or as a ``.toml`` / ``.json`` file mapping names to a format or to
``{format, caps}`` (``caps``: field → token cap)::

    [brand_first]
    format = "{brand} | {title} | {text}"
    caps = {text = 256}

Fields come from the corpus records (BEIR ``title``, ``text`` and the fields of a
``metadata`` object); a field a record lacks is dropped with its separator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomllib

from rankwise.errors import ConfigError
from rankwise.templates import DocumentTemplate

#: The system name suffix of a template's system: ``hybrid+rerank[template=A]``.
SUFFIX = "[template={}]"


def _from_file(path: Path) -> dict[str, DocumentTemplate]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # TOML/JSON errors are ValueErrors
        raise ConfigError(f"template file {path}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"template file {path}: expected a table of name = template.")
    out = {}
    for name, spec in data.items():
        if isinstance(spec, str):
            spec = {"format": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("format"), str):
            raise ConfigError(f"template file {path}: '{name}' needs a format string.")
        caps = spec.get("caps") or {}
        if not isinstance(caps, dict) or set(spec) - {"format", "caps"}:
            raise ConfigError(f"template file {path}: '{name}' takes format and caps only.")
        out[str(name)] = DocumentTemplate(spec["format"].replace("\\n", "\n"), caps)
    return out


def parse_templates(
    items: Sequence[str] | Mapping[str, DocumentTemplate | str] | None,
) -> dict[str, DocumentTemplate]:
    """Named templates from CLI items (``NAME=FORMAT``, ``FORMAT`` or a file), or from a
    mapping name → template / format. Names must be unique."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {
            str(n): t if isinstance(t, DocumentTemplate) else DocumentTemplate.parse(t)
            for n, t in items.items()
        }
    out: dict[str, DocumentTemplate] = {}
    for i, item in enumerate(items, 1):
        name, sep, fmt = item.partition("=")
        if item.endswith((".toml", ".json")) and "{" not in item:
            found = _from_file(Path(item))
        elif sep and name.strip().isidentifier() and "{" not in name:
            found = {name.strip(): DocumentTemplate.parse(fmt)}
        else:
            found = {f"t{i}": DocumentTemplate.parse(item)}
        for n, t in found.items():
            if n in out:
                raise ConfigError(f"template name '{n}' is given twice.")
            out[n] = t
    return out


class CorpusTemplate:
    """A template rendered from the corpus record of each candidate (the evaluation's
    store keeps only id, title and text; the corpus has every field)."""

    def __init__(self, template: DocumentTemplate, corpus: Mapping[str, Mapping[str, Any]]):
        self.template, self.corpus = template, corpus

    def _full(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**record, **self.corpus.get(str(record.get("id")), {})}

    def render(self, record: Mapping[str, Any], tokens: Any = None) -> Any:
        return self.template.render(self._full(record), tokens)

    def text(self, record: Mapping[str, Any], tokens: Any = None) -> str:
        return self.template.text(self._full(record), tokens)

    def to_dict(self) -> dict[str, Any]:
        return self.template.to_dict()


def with_templates(
    searcher: Any,
    systems: Sequence[str],
    templates: Mapping[str, DocumentTemplate],
    corpus: Mapping[str, Mapping[str, Any]],
) -> Iterator[tuple[str, Any]]:
    """``(system, searcher)`` for each of ``systems`` as given, then for each rerank system
    and template ``(system[template=NAME], a copy of searcher reading that template)``."""
    for system in systems:
        yield system, searcher
    for system in systems:
        if not system.endswith("+rerank"):
            continue
        for name, template in templates.items():
            templated = copy.copy(searcher)
            templated.template = CorpusTemplate(template, corpus)
            yield system + SUFFIX.format(name), templated


def template_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Significance pairs: each templated system against its plain system, or, when that
    was not run, against the first template of the same system."""
    pairs = []
    for name in names:
        base, sep, _ = name.partition("[template=")
        if not sep:
            continue
        first = next(n for n in names if n.startswith(base + "[template="))
        against = base if base in names else first
        if against != name:
            pairs.append((name, against))
    return pairs
