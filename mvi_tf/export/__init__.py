"""Deployment: SavedModel for TensorFlow Serving, TFLite models, serving request builders, ``predict``.

Public entry points: :func:`export_run` (run directory -> versioned SavedModel + TFLite + model card) and
:func:`predict_patient` (one new patient -> MVI probability with any backend). TensorFlow is imported lazily,
so importing this package is cheap.
"""

from mvi_tf.export.pipeline import ExportResult, export_run
from mvi_tf.export.predict import PredictError, predict_patient, read_clinical
from mvi_tf.export.serving import build_grpc_request, build_rest_request

__all__ = [
    "ExportResult",
    "PredictError",
    "build_grpc_request",
    "build_rest_request",
    "export_run",
    "predict_patient",
    "read_clinical",
]
