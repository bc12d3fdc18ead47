"""Rule titles for Slack messages: findings are stored by rule id (a UUID for Sigma rules), people read titles.

The producer runs every minute, so the rules are not compiled (pySigma, the engine's imports): only the YAML files
that mention a wanted id are parsed, the shipped pack first, then `audit.rule_folders`. The exposure pseudo-rules
(`elevation-exposure-*`) live in code and are imported only when one is wanted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PACK = Path(__file__).resolve().parent.parent / "audit" / "rulepack"
SUFFIXES = (".yml", ".yaml")


def rule_titles(audit: Any, wanted: Iterable[str]) -> dict[str, str]:
    """Rule id -> title for the wanted ids that can be found; the others are left out (the caller shows the id)."""
    missing = {str(rule_id) for rule_id in wanted if rule_id}
    found: dict[str, str] = {}
    folders = ([PACK] if getattr(audit, "include_pack", True) else []) + [
        Path(folder) for folder in getattr(audit, "rule_folders", None) or ()]
    for folder in folders:
        for path in _files(folder):
            if not missing:
                return found
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if not any(rule_id in text for rule_id in missing) and path.stem not in missing:
                continue
            for rule_id, title in _titles_in(text, path):
                if rule_id in missing:
                    found[rule_id] = title
                    missing.discard(rule_id)
    if any(rule_id.startswith("elevation-exposure") for rule_id in missing):
        try:
            from elevation.audit.exposure import EXPOSURE_RULES

            found.update({rule_id: EXPOSURE_RULES[rule_id].title for rule_id in missing if rule_id in EXPOSURE_RULES})
        except Exception as error:  # a message with the id is still a message
            log.warning("exposure rule titles unavailable: %s", error)
    return found


def _files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix.lower() in SUFFIXES
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def _titles_in(text: str, path: Path) -> list[tuple[str, str]]:
    """(id, title) of each rule document in a file, the id as the audit derives it (`id`, else `name`, else the
    file's name)."""
    import yaml

    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []
    pairs = []
    for document in documents:
        if isinstance(document, dict) and document.get("title"):
            rule_id = document.get("id") or document.get("name") or path.stem
            pairs.append((str(rule_id), str(document["title"])))
    return pairs
