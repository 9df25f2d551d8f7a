"""SavedModel export for TensorFlow Serving.

The CDLM is written with a ``serving_default`` signature whose inputs are named after the phases plus
``tabular`` and whose outputs are ``mvi_probability`` and ``<phase>_signature``. ImageNet normalisation is a
layer of the model, so the preprocessing travels inside the graph. Versions follow the layout
``tensorflow_model_server --model_base_path`` expects: ``<base>/<name>/<version>/saved_model.pb``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SERVING_SIGNATURE = "serving_default"


def model_input_specs(model) -> dict[str, tuple[tuple[int | None, ...], str]]:
    """Return ``{input_name: (shape, dtype)}`` of a Keras functional model (batch dimension ``None``).

    Parameters
    ----------
    model : keras.Model
        Functional model whose inputs carry names (one per phase plus ``tabular``).

    Returns
    -------
    dict
        Input name to ``(shape, dtype)``, in the model's input order.
    """
    specs = {}
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        specs[name] = (tuple(tensor.shape), str(tensor.dtype))
    return specs


def versions(model_base: str | Path) -> list[int]:
    """Return the integer version folders present under ``model_base``, sorted ascending."""
    base = Path(model_base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_base: str | Path) -> int:
    """Return the next free version number under ``model_base`` (max existing + 1, starting at 1)."""
    existing = versions(model_base)
    return existing[-1] + 1 if existing else 1


def latest_version_dir(model_base: str | Path) -> Path:
    """Return the highest version folder under ``model_base``.

    Raises
    ------
    FileNotFoundError
        When ``model_base`` holds no numeric version folder.
    """
    existing = versions(model_base)
    if not existing:
        raise FileNotFoundError(f"No version folder (1, 2, ...) under model base path {model_base}")
    return Path(model_base) / str(existing[-1])


def export_saved_model(model, export_dir: str | Path):
    """Write ``model`` as a SavedModel with a named ``serving_default`` signature.

    Parameters
    ----------
    model : keras.Model
        CDLM-like model with named inputs and a dict of outputs.
    export_dir : str or Path
        Destination; must not exist yet (versions are never overwritten).

    Returns
    -------
    Path
        ``export_dir``.
    """
    import tensorflow as tf

    export_dir = Path(export_dir)
    if export_dir.exists():
        raise FileExistsError(f"Refusing to overwrite an existing SavedModel version: {export_dir}")
    specs = model_input_specs(model)
    if not specs:
        raise ValueError(f"Model {model.name!r} has no inputs to export.")
    input_signature = {
        name: tf.TensorSpec(shape=shape, dtype=tf.dtypes.as_dtype(dtype), name=name)
        for name, (shape, dtype) in specs.items()
    }

    @tf.function(input_signature=[input_signature])
    def serve(inputs):
        outputs = model(inputs, training=False)
        if not isinstance(outputs, dict):
            raise TypeError(
                f"Model {model.name!r} must return a dict of named outputs. Received: {type(outputs)}"
            )
        return {key: tf.identity(value, name=key) for key, value in outputs.items()}

    # A plain tf.Module that tracks each weight's tf.Variable once. keras.export.ExportArchive (and
    # Model.export) on Keras 3.15 checkpoint every weight twice, doubling the SavedModel on disk.
    module = tf.Module(name="mvi_serving")
    module.weights_tf = [getattr(v, "value", v) for v in model.variables]
    module.serve = serve
    concrete = serve.get_concrete_function()
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(export_dir), signatures={SERVING_SIGNATURE: concrete})
    logger.info("SavedModel written to %s", export_dir)
    return export_dir


def load_serving_function(export_dir: str | Path):
    """Load the ``serving_default`` concrete function the way TF Serving does (``tf.saved_model.load``)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    if SERVING_SIGNATURE not in loaded.signatures:
        raise ValueError(
            f"SavedModel {export_dir} has no {SERVING_SIGNATURE!r} signature. "
            f"Received: signatures={list(loaded.signatures)}"
        )
    return loaded.signatures[SERVING_SIGNATURE]


def describe_signature(export_dir: str | Path) -> dict:
    """Return names, dtypes and shapes of the serving signature's inputs and outputs.

    Returns
    -------
    dict
        ``{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}`` with ``-1`` for unknown dimensions.
    """
    fn = load_serving_function(export_dir)

    def _spec(spec) -> dict:
        return {"dtype": spec.dtype.name, "shape": [-1 if d is None else int(d) for d in spec.shape]}

    _, kwargs = fn.structured_input_signature
    return {
        "inputs": {name: _spec(spec) for name, spec in sorted(kwargs.items())},
        "outputs": {name: _spec(spec) for name, spec in sorted(fn.structured_outputs.items())},
    }


def run_saved_model(serving_fn, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call a loaded serving signature on NumPy inputs bound by name; returns NumPy outputs."""
    import tensorflow as tf

    _, kwargs = serving_fn.structured_input_signature
    missing = sorted(set(kwargs) - set(inputs))
    if missing:
        raise ValueError(f"Missing SavedModel inputs {missing}. Received: inputs={sorted(inputs)}")
    feed = {name: tf.convert_to_tensor(np.asarray(inputs[name], dtype=np.float32)) for name in kwargs}
    return {key: value.numpy() for key, value in serving_fn(**feed).items()}


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over the outputs both dicts share (raises if they share none)."""
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError(f"No common outputs to compare. Received: {sorted(a)} and {sorted(b)}")
    return float(max(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64))) for k in keys))


def write_models_config(out_base: str | Path, base_path_prefix: str | None = None) -> Path:
    """Write ``out_base/models.config`` listing every model folder that holds a version.

    Parameters
    ----------
    out_base : str or Path
        Folder holding ``<name>/<version>/`` model directories.
    base_path_prefix : str, optional
        Path under which the server sees ``out_base`` (e.g. ``/models`` inside a container). Defaults to the
        absolute path of ``out_base`` on this machine.

    Returns
    -------
    Path
        The written ``models.config`` (TF Serving ``ModelServerConfig`` text proto).
    """
    out_base = Path(out_base)
    prefix = base_path_prefix.rstrip("/") if base_path_prefix else str(out_base.resolve())
    names = sorted(p.name for p in out_base.iterdir() if p.is_dir() and versions(p))
    lines = ["model_config_list {"]
    for name in names:
        lines += [
            "  config {",
            f'    name: "{name}"',
            f'    base_path: "{prefix}/{name}"',
            '    model_platform: "tensorflow"',
            "    model_version_policy { latest { num_versions: 1 } }",
            "  }",
        ]
    lines.append("}")
    path = out_base / "models.config"
    path.write_text("\n".join(lines) + "\n")
    return path
