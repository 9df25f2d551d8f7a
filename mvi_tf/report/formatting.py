"""Numbers as a paper prints them: p-values to 3 significant digits (< 0.001), AUCs with their CI, 'n/a' with a reason."""

from __future__ import annotations

import math
from typing import Any

NA = "n/a"


def missing(value: Any) -> bool:
    """True for None, NaN, pandas NA and the empty string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(math.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def na(reason: Any = None) -> str:
    """``n/a`` or ``n/a (reason)``."""
    return NA if missing(reason) else f"{NA} ({reason})"


def fmt_p(p: Any, reason: Any = None) -> str:
    """A p-value: ``< 0.001`` below one in a thousand, else 3 significant digits (``0.00211``, ``0.167``, ``1``)."""
    if missing(p):
        return na(reason)
    p = float(p)
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3g}"


def fmt_num(value: Any, digits: int = 3, reason: Any = None) -> str:
    """A number to ``digits`` decimals, or n/a."""
    return na(reason) if missing(value) else f"{float(value):.{digits}f}"


def fmt_pct(value: Any, digits: int = 1, reason: Any = None) -> str:
    """A proportion in [0, 1] as a percentage without the sign (``72.0``)."""
    return na(reason) if missing(value) else f"{100 * float(value):.{digits}f}"


def fmt_ci(value: Any, low: Any, high: Any, digits: int = 3, reason: Any = None) -> str:
    """``0.812 (0.701–0.905)``; the estimate alone when the interval is undefined."""
    if missing(value):
        return na(reason)
    if missing(low) or missing(high):
        return fmt_num(value, digits)
    return f"{float(value):.{digits}f} ({float(low):.{digits}f}–{float(high):.{digits}f})"


def p_equals(p: Any, reason: Any = None) -> str:
    """``p = 0.0123``, ``p < 0.001`` or ``p n/a`` for running text."""
    text = fmt_p(p, reason)
    if text.startswith("<"):
        return f"p {text}"
    return f"p {text}" if text.startswith("n/a") else f"p = {text}"
