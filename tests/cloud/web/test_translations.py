"""Every user-visible text of the dashboard has its Dutch translation (English is the source).

The texts are extracted as ``pybabel extract -F babel.cfg cloud`` would (gettext calls in
Python, ``_()``/``{% trans %}`` in templates) and looked up in the merged Dutch catalogue of
every feature's ``locale/nl/LC_MESSAGES/messages.po``.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg

from cloud.web.assets import CLOUD_DIR
from cloud.web.i18n import _merged, catalogue_files, load_catalogues

ROOT = CLOUD_DIR.parent


def _extracted() -> dict[str, str]:
    method_map, options_map = parse_mapping_cfg((ROOT / "babel.cfg").open())
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(CLOUD_DIR), method_map, options_map
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        if msgid:
            found.setdefault(msgid, f"cloud/{filename}:{lineno}")
    return found


def test_the_dashboard_has_text_to_translate() -> None:
    found = _extracted()
    assert "Sign in" in found and "Not found" in found


def test_every_text_has_a_dutch_translation() -> None:
    dutch = _merged(catalogue_files(CLOUD_DIR, "nl"), "nl")
    missing = [f"{where}: {msgid!r}" for msgid, where in _extracted().items() if msgid not in dutch]
    assert not missing, "no Dutch for:\n" + "\n".join(sorted(missing))


def test_dutch_keeps_every_placeholder() -> None:
    import re

    placeholder = re.compile(r"%\([a-z_]+\)[sd]")
    dutch = _merged(catalogue_files(CLOUD_DIR, "nl"), "nl")
    wrong = []
    for message in dutch:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(placeholder.findall(ids[-1]))
        for text in strings:
            if set(placeholder.findall(text)) != wanted:
                wrong.append(f"{ids[0]!r} → {text!r}")
    assert not wrong, "placeholders differ:\n" + "\n".join(wrong)


def test_catalogues_load_for_every_language(tmp_path: Path) -> None:
    catalogues = load_catalogues(CLOUD_DIR)
    assert catalogues["nl"].gettext("Sign in") == "Inloggen"
    assert catalogues["en"].gettext("Sign in") == "Sign in"
    assert load_catalogues(tmp_path)["nl"].gettext("Sign in") == "Sign in"  # none found: English


def test_ago_says_just_now_for_a_moment_not_in_0_seconds() -> None:
    from cloud.web.templates import Pages

    pages = Pages()
    template = pages.env.from_string("{{ when | ago }}")
    english, dutch = pages.catalogues["en"], pages.catalogues["nl"]
    assert template.render(when=100.4, now=100, lang="en", translations=english) == "just now"
    assert template.render(when=100.4, now=100, lang="nl", translations=dutch) == "zojuist"
    assert template.render(when=40, now=100, lang="en", translations=english) == "1 minute ago"
    assert template.render(when=190, now=100, lang="en", translations=english) == "in 2 minutes"
