"""Write a script's report as the pair of files every benchmark script leaves: STEM.json and STEM.md."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(folder: Path, stem: str, data: dict, markdown: str) -> None:
    """Write `data` as `folder/stem.json` (indented, newline-terminated) and `markdown` as `folder/stem.md`.

    Args:
        folder: output folder; created with its parents when missing.
        stem: file name without extension.
        data: the report, JSON-serialisable.
        markdown: the report's Markdown text, written as given.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(markdown)
