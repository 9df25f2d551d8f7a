"""REST JSON and gRPC PredictRequest builders: round trips back to the arrays and through the SavedModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_support import CT_PHASES, random_inputs


def test_rest_row_and_columnar_round_trip():
    from mvi_tf.export.serving import build_rest_request, rest_request_to_arrays

    inputs = random_inputs(n=2, image_size=8)
    row = json.loads(json.dumps(build_rest_request(inputs)))
    assert row["signature_name"] == "serving_default" and len(row["instances"]) == 2
    assert sorted(row["instances"][0]) == sorted([*CT_PHASES, "tabular"])
    assert np.asarray(row["instances"][1]["arterial"]).shape == (8, 8, 3)
    columnar = json.loads(json.dumps(build_rest_request(inputs, columnar=True)))
    assert np.asarray(columnar["inputs"]["tabular"]).shape == (2, 3)
    for body in (row, columnar):
        back = rest_request_to_arrays(body)
        for name, value in inputs.items():
            np.testing.assert_array_equal(back[name], value)
    with pytest.raises(ValueError, match="same leading batch"):
        build_rest_request(dict(inputs, tabular=inputs["tabular"][:1]))


def test_grpc_request_round_trips_through_the_wire_format():
    from tensorflow_serving.apis import predict_pb2

    from mvi_tf.export.serving import build_grpc_request, grpc_request_to_arrays

    inputs = random_inputs(n=2, image_size=8)
    request = build_grpc_request(inputs, "mvi-cdlm-ct", version=3)
    parsed = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert parsed.model_spec.name == "mvi-cdlm-ct"
    assert parsed.model_spec.signature_name == "serving_default"
    assert parsed.model_spec.version.value == 3
    back = grpc_request_to_arrays(parsed)
    assert sorted(back) == sorted(inputs)
    for name, value in inputs.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], value)
    assert not build_grpc_request(inputs, "m").model_spec.HasField("version")
    with pytest.raises(ValueError, match="model_name"):
        build_grpc_request(inputs, "")
    with pytest.raises(ValueError, match="version must be >= 1"):
        build_grpc_request(inputs, "m", version=0)


def test_grpc_tensors_feed_the_serving_signature(exported):
    from mvi_tf.export.saved_model import load_serving_function, run_saved_model
    from mvi_tf.export.serving import build_grpc_request, grpc_request_to_arrays

    inputs = random_inputs(n=2)
    served = run_saved_model(load_serving_function(exported.saved_model_dir),
                             grpc_request_to_arrays(build_grpc_request(inputs, exported.name)))
    direct = run_saved_model(load_serving_function(exported.saved_model_dir), inputs)
    for key in direct:
        np.testing.assert_array_equal(served[key], direct[key])
