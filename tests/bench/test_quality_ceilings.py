"""The quality benchmark's per-phase true-sign ceilings, on a hand-made truth table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.synthetic.phantom import SIGN_PHASE, signs_rendered


def test_each_phase_shows_the_signs_the_phantom_draws_on_it():
    assert set(signs_rendered("arterial")) == {"capsule_interruption", "microsatellites", "peritumoral_enhancement"}
    assert set(signs_rendered("hepatobiliary")) == {
        "capsule_interruption", "microsatellites", "peritumoral_hbp_hypointensity"}
    assert set(signs_rendered("portal")) == {"capsule_interruption", "microsatellites"}
    assert set(SIGN_PHASE.values()) == {"arterial", "hepatobiliary"}


def _truth(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """CT patients whose MVI is exactly the arterial sign; the other signs are noise; an interruption of an absent
    capsule is not visible; MRI rows must be ignored."""
    rng = np.random.default_rng(seed)
    mvi = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "modality": "ct",
        "cohort": np.where(np.arange(n) < n // 2, "train", "prospective"),
        "mvi": mvi,
        "sign_peritumoral_enhancement": mvi,
        "sign_peritumoral_hbp_hypointensity": -1,
        "sign_capsule_interruption": rng.integers(0, 2, n),
        "capsule_present": rng.integers(0, 2, n),
        "sign_microsatellites": rng.integers(0, 2, n),
        "size_cm": rng.normal(4.0, 1.0, n),
    })
    mri = frame.assign(modality="mri", mvi=1 - frame["mvi"])
    return pd.concat([frame, mri], ignore_index=True)


def test_ceiling_is_perfect_where_the_phase_shows_the_deciding_sign_and_chance_elsewhere(tmp_path):
    from bench.quality import sign_ceilings

    path = tmp_path / "patients.csv"
    _truth().to_csv(path, index=False)
    ceilings = sign_ceilings(path, "ct")
    assert set(ceilings) == {"plain", "arterial", "portal"}
    assert ceilings["arterial"]["signs"] == pytest.approx(1.0)
    for phase in ("plain", "portal"):
        assert 0.35 < ceilings[phase]["signs"] < 0.65, ceilings[phase]
        assert 0.35 < ceilings[phase]["signs_and_size"] < 0.65, ceilings[phase]


def test_ceiling_is_not_available_with_one_class(tmp_path):
    from bench.quality import sign_ceilings

    truth = _truth()
    truth.loc[truth["cohort"] == "prospective", "mvi"] = 0
    path = tmp_path / "patients.csv"
    truth.to_csv(path, index=False)
    assert all(v["signs"] is None for v in sign_ceilings(path, "ct").values())
