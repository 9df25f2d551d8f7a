"""Keep identifiers out of messages and reports: hashed UIDs, cohort-relative paths, inert CSV cells.

DICOM UIDs can embed a hospital's patient ID (some sites build SeriesInstanceUIDs from it), so a message never
shows one: `uid_tag` gives a short keyed hash that still tells two series apart in one report. The key is the
site's own secret (`site_salt`: ``MVI_TF_UID_SALT``, or a random key kept in the user's config folder), so a tag
can be matched to its series only at the site that holds both; with a public key, structured UIDs (an
organisation root plus a date or a patient number) could be guessed back from their tags. `relative_paths`
rewrites paths under the cohort directory (as given or resolved through symlinks) relative to it and cuts any
other absolute path down to its last component. `csv_cell` stops a spreadsheet from reading a cell as a formula.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

SALT_ENV = "MVI_TF_UID_SALT"
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
    return "uid#" + hmac.new(site_salt(), text.encode("utf-8"), hashlib.sha256).hexdigest()[:8]


@functools.cache
def site_salt() -> bytes:
    """The key of `uid_tag`: ``$MVI_TF_UID_SALT``, else a random key in ``<config>/mvi-tf/uid-salt``.

    The key file (``$XDG_CONFIG_HOME`` or ``~/.config``) is created once, readable by its owner only, so tags stay
    the same across runs on one machine. Where it cannot be written, a random key is made for this process and
    put in the environment, so worker processes started afterwards tag alike.
    """
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV].encode("utf-8")
    folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "mvi-tf"
    path = folder / "uid-salt"
    try:
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".uid-salt.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_hex(32))
            try:  # a hard link never replaces: of two processes creating the key at once, the first one wins
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links
                if not path.exists():
                    os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key.encode("utf-8")
    except OSError:
        pass
    key = secrets.token_hex(32)
    os.environ[SALT_ENV] = key
    return key.encode("utf-8")


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
