"""`mvi_tf.na`: the one convention for figures a small cohort cannot define (null + reason)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mvi_tf import na


def test_mark_and_get_round_trip_through_json():
    row = na.mark({"n": 3, "auc": 0.7}, "auc", "one class")
    assert row == {"n": 3, "auc": None, "not_available": {"auc": "one class"}}
    again = json.loads(json.dumps(row))
    missing = na.get(again, "auc")
    assert isinstance(missing, na.NotAvailable) and missing.reason == "one class"
    assert na.get(again, "n") == 3
    assert na.fmt(again, "auc", ".3f") == "n/a" and na.fmt(again, "n", "d") == "3"
    assert f"{missing:.2f}" == "n/a" and str(missing) == "not available (one class)"


def test_explain_only_annotates_missing_values():
    row = {"a": 0.5, "b": float("nan"), "c": None, "d": np.float32("nan"), "e": True}
    na.explain(row, a="x", b="no events", c="no patients", d="flat", e="never", z="absent key")
    assert row["not_available"] == {"b": "no events", "c": "no patients", "d": "flat"}
    assert np.isnan(row["b"])  # the value itself is kept for table columns
    assert na.get(row, "e") is True


def test_missing_without_reason_reads_as_not_computed_and_reason_is_required():
    assert na.get({"auc": None}, "auc") == na.NotAvailable(na.UNKNOWN_REASON)
    assert na.get(None, "auc").reason == na.UNKNOWN_REASON
    with pytest.raises(ValueError, match="Received: key='auc'"):
        na.mark({}, "auc", "")


def test_reasons_walk_nested_results_and_group_by_reason():
    result = {
        "per_phase": {p: na.mark({"n": 0}, "hit_rate", "no scorable patient") for p in ("t2", "arterial")},
        "rows": [na.mark({}, "p_value", "no events")],
    }
    assert list(na.reasons(result)) == [
        ("per_phase.t2.hit_rate", "no scorable patient"),
        ("per_phase.arterial.hit_rate", "no scorable patient"),
        ("rows[0].p_value", "no events"),
    ]
    assert na.reason_lines(result, max_paths=1) == [
        "no scorable patient: per_phase.t2.hit_rate and 1 more",
        "no events: rows[0].p_value",
    ]
    assert na.reason_lines({"auc": 0.8}) == []
