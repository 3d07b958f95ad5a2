"""Languages: English is the source text; each other language is a gettext catalogue.

Every feature keeps its own ``locale/<lang>/LC_MESSAGES/messages.po`` (one feature, one
room); at start the catalogues of a language are merged into one
:class:`babel.support.Translations`. The ``.po`` files are compiled in memory, so no
build step and no compiled ``.mo`` file in the repository.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "Catalogues",
    "catalogue_files",
    "load_catalogues",
    "negotiate",
]

DEFAULT_LANGUAGE = "en"
LANGUAGES: Mapping[str, str] = {"en": "English", "nl": "Nederlands"}
"""Language code → its own name, as the language switch shows it."""

Catalogues = Mapping[str, NullTranslations]


def catalogue_files(cloud_dir: Path, lang: str) -> list[Path]:
    """Every feature's (and the plumbing's) ``messages.po`` for ``lang``."""
    return sorted(cloud_dir.glob(f"*/locale/{lang}/LC_MESSAGES/messages.po"))


def _merged(files: Iterable[Path], lang: str) -> Catalog:
    merged = Catalog(locale=lang)
    for path in files:
        with path.open("rb") as handle:
            catalogue = read_po(handle, locale=lang)
        for message in catalogue:
            if message.id and message.string and not message.fuzzy:
                merged.add(message.id, message.string)
    return merged


def load_catalogues(cloud_dir: Path) -> dict[str, NullTranslations]:
    """One translations object per language of :data:`LANGUAGES` (English: the source)."""
    out: dict[str, NullTranslations] = {DEFAULT_LANGUAGE: NullTranslations()}
    for lang in LANGUAGES:
        if lang == DEFAULT_LANGUAGE:
            continue
        buffer = io.BytesIO()
        write_mo(buffer, _merged(catalogue_files(cloud_dir, lang), lang))
        buffer.seek(0)
        out[lang] = Translations(buffer)
    return out


def negotiate(preferred: str | None, accept_language: str | None) -> str:
    """The user's stored language, else the browser's best match, else English."""
    if preferred in LANGUAGES:
        return str(preferred)
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE
