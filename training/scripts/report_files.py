"""Write a script's report as the pair of files every benchmark script leaves: STEM.json and STEM.md; read one
back, also when committed gzipped (STEM.json.gz)."""

from __future__ import annotations

import gzip
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


def read_report(path: Path) -> dict:
    """A report `write_report` wrote, as .json or gzipped (.json.gz, as committed under training/docs/adaptation).

    Args:
        path: the report file.

    Returns:
        The report's data.
    """
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
