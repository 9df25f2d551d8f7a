"""``predict_patient``: errors that must never become a number, and agreement of the three backends on a real CT."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from export_support import CLINICAL, CT_PHASES, build_tiny_cdlm, write_run_dir


def _series(tmp_path: Path, phases=CT_PHASES) -> dict[str, str]:
    out = {}
    for phase in phases:
        (tmp_path / phase).mkdir(exist_ok=True)
        out[phase] = str(tmp_path / phase)
    return out


@pytest.fixture(scope="module")
def real_ct(data_files) -> Path:
    """The shipped dcmqi case (tests/data/real/dcmqi-ct3slice-liver): ct-3slice/ and its liver.dcm SEG."""
    return data_files.small_real("dcmqi-ct3slice-liver")


def _real_series(real_ct: Path) -> dict[str, str]:
    return {phase: str(real_ct / "ct-3slice") for phase in CT_PHASES}


@pytest.mark.parametrize(
    ("phases", "message"),
    [(("plain", "arterial"), r"Missing phase\(s\) \['portal'\]"),
     ((*CT_PHASES, "hepatobiliary"), r"Model/phase mismatch.*\['hepatobiliary'\]")],
)
def test_phase_errors(exported, tmp_path, phases, message):
    from mvi_tf.export import PredictError, predict_patient

    with pytest.raises(PredictError, match=message):
        predict_patient(exported.saved_model_dir, _series(tmp_path, phases), roi=(0, 0, 0, 30), clinical=CLINICAL)


def test_clinical_and_modality_errors(exported, tmp_path):
    from mvi_tf.export import PredictError, predict_patient

    series = _series(tmp_path)
    with pytest.raises(PredictError, match="tumour_size_cm"):
        predict_patient(exported.tflite_float32, series, roi=(0, 0, 0, 30), backend="tflite",
                        clinical={k: v for k, v in CLINICAL.items() if k != "tumour_size_cm"})
    with pytest.raises(PredictError, match="afp_ng_ml"):
        predict_patient(exported.saved_model_dir, series, roi=(0, 0, 0, 30), clinical=dict(CLINICAL, afp_ng_ml="NA"))
    with pytest.raises(PredictError, match="No clinical values"):
        predict_patient(exported.saved_model_dir, series, roi=(0, 0, 0, 30), clinical=None)
    with pytest.raises(PredictError, match="modality mismatch.*'mri'"):
        predict_patient(exported.saved_model_dir, series, modality="mri", roi=(0, 0, 0, 30), clinical=CLINICAL)
    with pytest.raises(PredictError, match="backend must be one of"):
        predict_patient(exported.saved_model_dir, series, backend="onnx", clinical=CLINICAL)
    with pytest.raises(PredictError, match="needs a .tflite file"):
        predict_patient(exported.saved_model_dir, series, backend="tflite", clinical=CLINICAL)
    with pytest.raises(PredictError, match="tumour mask .* or an ROI"):
        predict_patient(exported.saved_model_dir, series, clinical=CLINICAL)


def test_read_clinical_sources(tmp_path):
    from mvi_tf.export import PredictError, read_clinical

    assert read_clinical('{"age": 61}') == {"age": 61}
    (tmp_path / "one.csv").write_text("patient_id,age,afp_ng_ml\nP1,61,\n")
    assert read_clinical(str(tmp_path / "one.csv")) == {"patient_id": "P1", "age": 61, "afp_ng_ml": None}
    (tmp_path / "two.csv").write_text("patient_id,age\nP1,61\nP2,70\n")
    with pytest.raises(PredictError, match="exactly one patient row"):
        read_clinical(str(tmp_path / "two.csv"))


@pytest.mark.real
def test_backends_agree_on_a_real_ct_and_write_json(exported, fake_run, tmp_path, real_ct):
    from mvi_tf.export import predict_patient

    series = _real_series(real_ct)
    common = {"series": series, "mask_path": str(real_ct / "liver.dcm"), "mask_phase": "portal", "clinical": CLINICAL,
              "allow_shared_series": True}  # one public series stands in for every phase
    results = {
        "savedmodel": predict_patient(exported.saved_model_dir.parent, out_dir=tmp_path / "sm", **common),
        "tflite": predict_patient(exported.tflite_float32, backend="tflite", out_dir=tmp_path / "tfl", **common),
        "keras": predict_patient(exported.keras_model, backend="keras", run_dir=fake_run, out_dir=tmp_path / "k",
                                 **common),
    }
    probabilities = [r["mvi_probability"] for r in results.values()]
    assert max(probabilities) - min(probabilities) <= 1e-4
    for result in results.values():
        assert 0.0 < result["mvi_probability"] < 1.0
        assert result["predicted_group"] == ("MVI-positive" if result["mvi_probability"] >= 0.5 else "MVI-negative")
        assert sorted(result["signatures"]) == sorted(CT_PHASES)
        assert result["roi"]["source"] == "mask"
    written = (tmp_path / "sm" / "prediction.json").read_text()
    assert json.loads(written)["mvi_probability"] == results["savedmodel"]["mvi_probability"]
    assert "JANCT000" not in written and "2003" not in written  # DICOM name/date never reach the output
    assert results["savedmodel"]["gradcam_png"] is None and "gradcam_note" in results["savedmodel"]
    png = results["keras"]["gradcam_png"]
    if importlib.util.find_spec("mvi_tf.explain.gradcam") is not None:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert png is None and "not available" in results["keras"]["gradcam_note"]


@pytest.mark.real
def test_wrong_image_size_is_an_error(tmp_path, real_ct):
    from mvi_tf.export import PredictError, predict_patient

    series = _real_series(real_ct)
    run = write_run_dir(tmp_path / "run", build_tiny_cdlm(image_size=32), image_size=64)
    with pytest.raises(PredictError, match=r"Wrong image size for phase 'plain'.*\(32, 32, 3\).*\(64, 64, 3\)"):
        predict_patient(run / "cdlm.keras", series, backend="keras", mask_path=str(real_ct / "liver.dcm"),
                        mask_phase="portal", clinical=CLINICAL, allow_shared_series=True)
