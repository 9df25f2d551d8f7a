"""The one exception type of data_prep: bad input of one patient, naming the file and the value."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be prepared (corrupt file, missing phase, ROI outside the volume, ...).

    The message names the file and the offending value; `prepare_cohort` prefixes the patient and modality,
    skips that patient and reports the reason.
    """
