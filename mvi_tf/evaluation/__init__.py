"""Evaluation as in Wei et al. 2021: Table 3, ROC and decision curves, stratified analysis
(:func:`evaluate_runs`) and the CT vs MRI head-to-head comparison (:func:`compare_runs`).

Both work from run directories written by ``mvi-tf train`` (docs/architecture.md, "Run directory").
"""

from mvi_tf.evaluation.evaluate import evaluate_runs
from mvi_tf.evaluation.head_to_head import compare_runs
from mvi_tf.evaluation.rundir import RunData, load_run

__all__ = ["RunData", "compare_runs", "evaluate_runs", "load_run"]
