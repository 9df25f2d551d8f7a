"""Synthetic multi-centre HCC cohort in genuine DICOM with known truth (``mvi-tf synth``).

``phenotype`` draws each patient (MVI, tumour, peritumoral signs, clinical table, outcome) and computes the
Bayes-optimal posterior; ``phantom`` renders the abdomen on each phase's grid; ``dicom_writer`` writes CT/MR
series, DICOM-SEG and NIfTI masks; ``cohort`` runs it all in parallel and writes the cohort directory.
"""

from data_prep.synthetic.cohort import (
    CohortSummary,
    bayes_auc,
    cohort_tables,
    draw_cohort_table,
    generate_cohort,
)
from data_prep.synthetic.phenotype import CENTRES, MASK_PHASE, MODALITY_PHASES, SIGN_PHASES, visible_signs

__all__ = [
    "CENTRES",
    "MASK_PHASE",
    "MODALITY_PHASES",
    "SIGN_PHASES",
    "CohortSummary",
    "bayes_auc",
    "cohort_tables",
    "draw_cohort_table",
    "generate_cohort",
    "visible_signs",
]
