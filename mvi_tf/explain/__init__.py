"""Attention maps of the MVI models: Grad-CAM / Grad-CAM++ per phase through tf-keras-vis, placed on the DICOM
slices, scored against known invasion sites, with a centre-of-tumour and a randomised-weight baseline.

Entry point: :func:`explain_run` (``mvi-tf explain``).
"""

from mvi_tf.explain.gradcam import compute_gradcam, last_conv_layer_name, score_view, target_layer_name
from mvi_tf.explain.localisation import (
    centre_baseline_map,
    energy_fraction,
    pointing_hit,
    randomise_weights,
    rank_correlation,
    target_region,
)
from mvi_tf.explain.placement import (
    RoiFrame,
    SliceGeometry,
    roi_to_slice,
    slice_to_roi,
    volume_to_roi,
)
from mvi_tf.explain.run import explain_run

__all__ = [
    "RoiFrame",
    "SliceGeometry",
    "centre_baseline_map",
    "compute_gradcam",
    "energy_fraction",
    "explain_run",
    "last_conv_layer_name",
    "pointing_hit",
    "randomise_weights",
    "rank_correlation",
    "roi_to_slice",
    "score_view",
    "slice_to_roi",
    "target_layer_name",
    "target_region",
    "volume_to_roi",
]
