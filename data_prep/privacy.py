"""Keep identifiers out of messages and reports: hashed UIDs, cohort-relative paths, inert CSV cells.

DICOM UIDs can embed a hospital's patient ID (some sites build SeriesInstanceUIDs from it), so a message never
shows one: `uid_tag` gives a short salted hash that still tells two series apart in one report. `relative_paths`
rewrites paths under the cohort directory (as given or resolved through symlinks) relative to it and cuts any
other absolute path down to its last component. `csv_cell` stops a spreadsheet from reading a cell as a formula.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SALT = b"mvi-tf/uid-tag/v1:"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_LIKE = re.compile(r"[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?(?:;[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)*")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"(),:;]+/)+(?=[^\s/'\"(),:;]*)")


def uid_tag(uid: object) -> str:
    """``uid#`` plus the first 8 hex digits of a salted SHA-256 of a DICOM UID ('uid#none' when empty).

    Examples
    --------
    >>> uid_tag("1.2.3") == uid_tag("1.2.3") != uid_tag("1.2.4")
    True
    """
    text = str(uid or "").strip()
    if not text:
        return "uid#none"
    return "uid#" + hashlib.sha256(_SALT + text.encode("utf-8")).hexdigest()[:8]


def relative_paths(message: str, root: str | os.PathLike | None) -> str:
    """``message`` with paths under ``root`` made relative and other absolute paths cut to their file name."""
    if root is not None:
        forms = {str(Path(root)).rstrip("/"), os.path.abspath(root).rstrip("/"), str(Path(root).resolve())}
        for form in sorted(forms, key=len, reverse=True):
            message = message.replace(form + "/", "").replace(form, ".")
    return _ABSOLUTE_PATH.sub("", message)


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: ``'`` before text starting with = + - @ (numbers kept)."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    if _NUMBER_LIKE.fullmatch(value):
        return value
    return "'" + value
