"""Figures a small cohort cannot define, carried as "not available" with the reason instead of a crash.

A pilot of 20-40 patients leaves many figures undefined: an AUC when a cohort has one class, a hit rate without
a scorable patient, a log-rank test without events, a Youden threshold of a constant score. Such a figure is
never an error and never a silent blank. One convention carries it everywhere, in memory and in JSON:

- the figure's key holds ``None`` (``NaN`` in a float table column), and
- the dict holding it has a ``"not_available"`` entry mapping the key to a one-line reason::

      {"hit_rate": 0.5, "energy_fraction": None,
       "not_available": {"energy_fraction": "every Grad-CAM map is flat (nothing left after the ReLU)"}}

Producers call :func:`mark` (set the value and the reason) or :func:`explain` (add reasons only to the keys that
are missing). Readers call :func:`get` (the value, or a :class:`NotAvailable`), :func:`fmt` (text for the CLI and
reports) and :func:`reasons` / :func:`reason_lines` (every reason under a nested result, for listing).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterator
from typing import Any

KEY = "not_available"
UNKNOWN_REASON = "not computed"


@dataclasses.dataclass(frozen=True)
class NotAvailable:
    """A figure that could not be computed, and why. Formats as ``n/a`` whatever the format spec."""

    reason: str

    def __format__(self, spec: str) -> str:
        return "n/a"

    def __str__(self) -> str:
        return f"not available ({self.reason})"


def is_missing(value: Any) -> bool:
    """True for ``None``, a non-finite float and :class:`NotAvailable`."""
    if value is None or isinstance(value, NotAvailable):
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return not math.isfinite(float(value))
    return False


def mark(row: dict, key: str, reason: str) -> dict:
    """Set ``row[key]`` to None and record ``reason`` under ``row["not_available"][key]``; returns ``row``."""
    if not reason:
        raise ValueError(f"A not-available figure needs a reason. Received: key={key!r}, reason={reason!r}")
    row[key] = None
    row.setdefault(KEY, {})[key] = str(reason)
    return row


def explain(row: dict, **reasons: str) -> dict:
    """Record a reason for each named key whose value in ``row`` is missing (None/NaN); present keys are left.

    The value itself is kept (a NaN stays NaN for table columns; JSON writers turn it into null).
    """
    for key, reason in reasons.items():
        if key in row and is_missing(row[key]):
            row.setdefault(KEY, {})[key] = str(reason)
    return row


def get(row: dict | None, key: str) -> Any:
    """``row[key]``, or a :class:`NotAvailable` with the recorded reason when it is missing."""
    if row is None:
        return NotAvailable(UNKNOWN_REASON)
    value = row.get(key)
    if is_missing(value):
        return NotAvailable((row.get(KEY) or {}).get(key) or UNKNOWN_REASON)
    return value


def fmt(row: dict | None, key: str, spec: str = ".2f", missing: str = "n/a") -> str:
    """``row[key]`` formatted with ``spec``, or ``missing`` (default ``n/a``) when it is not available."""
    value = get(row, key)
    return missing if isinstance(value, NotAvailable) else format(value, spec)


def reasons(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(dotted path, reason)`` recorded anywhere under a nested dict/list result, in order."""
    if isinstance(obj, dict):
        for key, reason in (obj.get(KEY) or {}).items():
            yield (f"{path}.{key}" if path else str(key)), str(reason)
        for key, value in obj.items():
            if key != KEY:
                yield from reasons(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from reasons(value, f"{path}[{i}]")


def reason_lines(obj: Any, max_paths: int = 6) -> list[str]:
    """One line per distinct reason under ``obj``: ``"<reason>: <path>, <path>, ..."`` (long lists shortened)."""
    grouped: dict[str, list[str]] = {}
    for path, reason in reasons(obj):
        grouped.setdefault(reason, []).append(path)
    lines = []
    for reason, paths in grouped.items():
        shown = ", ".join(paths[:max_paths]) + (f" and {len(paths) - max_paths} more" if len(paths) > max_paths else "")
        lines.append(f"{reason}: {shown}")
    return lines
