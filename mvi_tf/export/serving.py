"""Request builders for TensorFlow Serving (REST JSON and gRPC ``PredictRequest``).

TF Serving's REST predict API takes two encodings for a multi-input signature:

* row format, ``{"signature_name": ..., "instances": [{"arterial": [[...]], "tabular": [...]}, ...]}`` — one
  object per patient, every named input present in each; the response holds ``"predictions"`` (one object per
  patient). All inputs must share the batch dimension, which holds for the CDLM.
* columnar format, ``{"signature_name": ..., "inputs": {"arterial": [...batch...], "tabular": [...]}}`` — one
  entry per named input carrying the whole batch; the response holds ``"outputs"`` (one entry per output).

Both are accepted for this model; :func:`build_rest_request` writes the row format by default and the columnar
one with ``columnar=True``. POST the JSON to ``http://HOST:8501/v1/models/<name>[/versions/<v>]:predict``.
"""

from __future__ import annotations

import numpy as np

from mvi_tf.export.saved_model import SERVING_SIGNATURE


def _as_batch(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not inputs:
        raise ValueError("inputs must name at least one tensor. Received: inputs={}")
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    sizes = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"Every input needs the same leading batch dimension. Received: batch sizes {sizes}")
    return arrays


def build_rest_request(
    inputs: dict[str, np.ndarray],
    signature_name: str = SERVING_SIGNATURE,
    columnar: bool = False,
) -> dict:
    """Build the JSON body of a TF Serving REST ``:predict`` call.

    Parameters
    ----------
    inputs : dict of str to np.ndarray
        Batched inputs named as in the signature (phases and ``tabular``).
    signature_name : str
        Signature to call.
    columnar : bool
        ``False`` for the row (``"instances"``) format, ``True`` for the columnar (``"inputs"``) format.

    Returns
    -------
    dict
        JSON-serialisable request body.
    """
    arrays = _as_batch(inputs)
    if columnar:
        return {"signature_name": signature_name, "inputs": {k: v.tolist() for k, v in arrays.items()}}
    n = next(iter(arrays.values())).shape[0]
    instances = [{name: array[i].tolist() for name, array in arrays.items()} for i in range(n)]
    return {"signature_name": signature_name, "instances": instances}


def rest_request_to_arrays(body: dict) -> dict[str, np.ndarray]:
    """Decode a REST request body (either format) back to batched float32 arrays."""
    if "inputs" in body:
        return {name: np.asarray(value, dtype=np.float32) for name, value in body["inputs"].items()}
    if "instances" in body:
        instances = body["instances"]
        if not instances:
            raise ValueError("REST body has an empty 'instances' list.")
        return {name: np.asarray([row[name] for row in instances], dtype=np.float32) for name in instances[0]}
    raise ValueError(f"REST body needs 'instances' or 'inputs'. Received keys: {sorted(body)}")


def build_grpc_request(
    inputs: dict[str, np.ndarray],
    model_name: str,
    signature_name: str = SERVING_SIGNATURE,
    version: int | None = None,
):
    """Build a ``tensorflow_serving.apis.predict_pb2.PredictRequest``.

    Parameters
    ----------
    inputs : dict of str to np.ndarray
        Batched inputs named as in the signature.
    model_name : str
        Name the server knows the model by (``models.config``).
    signature_name : str
        Signature to call.
    version : int, optional
        Pin a model version; the server's latest when omitted.

    Returns
    -------
    PredictRequest
        Ready for ``PredictionServiceStub.Predict``.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if not model_name:
        raise ValueError(f"model_name must be a non-empty string. Received: model_name={model_name!r}")
    arrays = _as_batch(inputs)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        if int(version) < 1:
            raise ValueError(f"version must be >= 1. Received: version={version}")
        request.model_spec.version.value = int(version)
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=tf.float32))
    return request


def grpc_request_to_arrays(request) -> dict[str, np.ndarray]:
    """Decode the tensors of a ``PredictRequest`` (or ``PredictResponse`` outputs) back to NumPy arrays."""
    import tensorflow as tf

    tensors = request.inputs if hasattr(request, "inputs") else request.outputs
    return {name: tf.make_ndarray(proto) for name, proto in tensors.items()}
