"""The `mvi-tf` command: a thin click group over library calls.

Every command parses its options, makes one library call and prints the result; the same call works from
Python. Heavy libraries (TensorFlow) are imported inside the commands so that `mvi-tf --help` is instant.
"""

from __future__ import annotations

import click

from mvi_tf import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mvi-tf")
def main() -> None:
    """Predict microvascular invasion (MVI) of hepatocellular carcinoma from multiphase CT and
    gadoxetic-acid MRI.

    The study pipeline, one command per stage:

    \b
      synth    -> a synthetic multi-centre cohort in genuine DICOM (or bring your own cohort)
      prepare  -> DICOM series + tumour masks + clinical table -> ROI stacks -> TFRecords
      train    -> single-phase signatures, fusion and combined (CDLM) models
      evaluate -> the paper's Table 3, ROC and decision curves, subgroups
      compare  -> CT vs MRI head-to-head (DeLong, McNemar, decision curves)
      explain  -> Grad-CAM attention maps scored against known invasion sites
      survival -> Cox, Kaplan-Meier and log-rank on predicted risk groups
      export   -> SavedModel for TensorFlow Serving and TFLite models
      predict  -> MVI probability for one new patient
      demo     -> all of the above on the bundled synthetic cohort
    """


# ---------------------------------------------------------------------------------------------------------
# Commands are added below, one block per pipeline stage, each a single library call.
# ---------------------------------------------------------------------------------------------------------
