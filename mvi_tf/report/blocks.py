"""The report's building blocks: tables, figures and notes as plain dicts that the Jinja2 template renders."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

NUMERIC_HINT = set("0123456789.–-<>±[]()% ")


def head_cell(text: str, colspan: int = 1, rowspan: int = 1, num: bool = False) -> dict[str, Any]:
    """One header cell."""
    return {"text": text, "colspan": colspan, "rowspan": rowspan, "num": num}


def cell(text: Any, cls: str = "") -> dict[str, Any]:
    """One body cell; numbers (and 'n/a') are right-aligned unless ``cls`` says otherwise."""
    text = "" if text is None else str(text)
    if not cls and text.startswith("n/a") and len(text) > 24:
        cls = "na-long"  # 'n/a (reason)': right-aligned but free to wrap
    elif not cls and text and (set(text) <= NUMERIC_HINT | set("n/a") or text.startswith("n/a")):
        cls = "num"
    return {"text": text, "cls": cls}


def table(caption: str, columns: Sequence[str], rows: Iterable[Sequence[Any] | dict[str, Any]], *,
          csv: str | None = None, note: str = "", head: list[list[dict]] | None = None,
          table_id: str | None = None) -> dict[str, Any]:
    """A table block.

    Parameters
    ----------
    caption : str
        The table's caption, in words.
    columns : sequence of str
        Column headers (ignored when ``head`` gives a multi-row header).
    rows : iterable
        Lists of cell texts (or `cell` dicts), or ``{"group": text}`` for a full-width group row.
    csv : str, optional
        Relative link to the full-precision CSV.
    """
    body = []
    for row in rows:
        if isinstance(row, dict):
            body.append(row)
        else:
            body.append({"cells": [c if isinstance(c, dict) else cell(c) for c in row]})
    width = len(columns) if head is None else sum(h["colspan"] for h in head[-1]) + sum(
        1 for h in head[0] if h["rowspan"] > 1)
    return {"kind": "table", "caption": caption, "head": head or [[head_cell(c) for c in columns]], "body": body,
            "csv": csv, "note": note, "width": width, "id": table_id}


def figure(path: Path, caption: str) -> dict[str, str]:
    """A PNG embedded as base64 with its caption in words."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return {"src": f"data:image/png;base64,{data}", "caption": caption, "alt": caption}


def figures(items: Iterable[tuple[Path, str]], cls: str = "", figure_cls: str = "") -> dict[str, Any]:
    """A row of figures."""
    return {"kind": "figures", "figures": [figure(p, c) for p, c in items], "cls": cls, "figure_cls": figure_cls}


def text(words: str) -> dict[str, str]:
    """A paragraph."""
    return {"kind": "text", "text": words}


def heading(words: str) -> dict[str, str]:
    """A sub-heading inside a section."""
    return {"kind": "heading", "text": words}


def missing(what: str) -> dict[str, str]:
    """A note that a stage's outputs are not there."""
    return {"kind": "missing", "text": f"{what} (stage not run or failed)."}


def links(words: str, hrefs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A sentence followed by links (href, text)."""
    return {"kind": "links", "text": words, "links": [{"href": h, "text": t} for h, t in hrefs]}


def preformatted(title: str, body: str) -> dict[str, str]:
    """Collapsible preformatted text (a model card)."""
    return {"kind": "pre", "title": title, "text": body}


def section(section_id: str, title: str, blocks: list[dict], intro: str = "") -> dict[str, Any]:
    """A report section; ``blocks`` falls back to nothing when empty."""
    return {"id": section_id, "title": title, "blocks": blocks, "intro": intro}


def relative(path: Path, report_dir: Path) -> str:
    """A link from the report's folder to ``path`` (forward slashes)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(report_dir).resolve())).as_posix()
