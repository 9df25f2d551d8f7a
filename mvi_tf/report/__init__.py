"""One self-contained HTML study report that mirrors the paper (`mvi-tf report`)."""

from mvi_tf.report.cohort_table import cohort_characteristics
from mvi_tf.report.html import build_report

__all__ = ["build_report", "cohort_characteristics"]
