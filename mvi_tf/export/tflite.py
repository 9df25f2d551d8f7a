"""TFLite conversion (float32, dynamic-range, full-integer) and a runner that binds inputs by name.

Conversion always starts from the exported SavedModel (``TFLiteConverter.from_saved_model``), so the TFLite
models keep the ``serving_default`` signature with the same input and output names.

The full-integer model quantises every weight and activation to int8 using a representative dataset, but keeps
a float32 input/output interface (the converter inserts quantise/dequantise ops at the edges). Callers therefore
feed the same float images in [0, 1] and the same scaled tabular vector to every backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from mvi_tf.export.saved_model import SERVING_SIGNATURE

MODES = ("float32", "dynamic", "int8")


def convert_saved_model(
    saved_model_dir: str | Path,
    mode: str = "float32",
    representative_data: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None,
) -> bytes:
    """Convert a SavedModel to a TFLite flatbuffer.

    Parameters
    ----------
    saved_model_dir : str or Path
        SavedModel version folder.
    mode : {"float32", "dynamic", "int8"}
        ``float32``: no quantisation. ``dynamic``: int8 weights, float activations. ``int8``: int8 weights and
        activations calibrated on ``representative_data`` (float32 input/output interface).
    representative_data : callable, optional
        Returns an iterable of ``{input_name: (1, ...) float32}`` dicts; required for ``int8``.

    Returns
    -------
    bytes
        The TFLite model.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
    if mode == "int8" and representative_data is None:
        raise ValueError("mode='int8' needs representative_data. Received: representative_data=None")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SERVING_SIGNATURE])
    if mode in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # int8 calibration runs TensorFlow's own (deprecated) interpreter internally; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return converter.convert()


class TFLiteRunner:
    """Run a TFLite model through its ``serving_default`` signature runner with inputs bound by name.

    Parameters
    ----------
    model_path : str or Path
        ``.tflite`` file.
    num_threads : int, optional
        Interpreter threads.
    """

    def __init__(self, model_path: str | Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"TFLite model not found: {self.model_path}")
        self._interpreter = Interpreter(model_path=str(self.model_path), num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        if SERVING_SIGNATURE not in signatures:
            raise ValueError(
                f"{self.model_path} has no {SERVING_SIGNATURE!r} signature. Received: {list(signatures)}"
            )
        self._runner = self._interpreter.get_signature_runner(SERVING_SIGNATURE)
        self.input_names: list[str] = list(signatures[SERVING_SIGNATURE]["inputs"])
        self.output_names: list[str] = list(signatures[SERVING_SIGNATURE]["outputs"])
        details = self._runner.get_input_details()
        self.input_shapes = {name: tuple(int(d) for d in details[name]["shape_signature"]) for name in details}

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch, one row at a time (the batch-1 path devices use); returns stacked outputs."""
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise ValueError(f"Missing TFLite inputs {missing}. Received: inputs={sorted(inputs)}")
        arrays = {name: np.asarray(inputs[name], dtype=np.float32) for name in self.input_names}
        batch = {a.shape[0] for a in arrays.values()}
        if len(batch) != 1:
            raise ValueError(f"Inputs disagree on batch size. Received: { {k: v.shape for k, v in arrays.items()} }")
        for name, array in arrays.items():
            expected = self.input_shapes[name][1:]
            if tuple(array.shape[1:]) != expected:
                raise ValueError(
                    f"TFLite input {name!r} expects shape (batch, {', '.join(map(str, expected))}). "
                    f"Received: {array.shape}"
                )
        rows = []
        for i in range(batch.pop()):
            rows.append(self._runner(**{name: array[i : i + 1] for name, array in arrays.items()}))
        return {name: np.concatenate([np.asarray(r[name]) for r in rows], axis=0) for name in self.output_names}
