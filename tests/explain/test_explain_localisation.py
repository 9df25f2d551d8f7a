"""Localisation scores: target region, pointing game, energy fraction, baselines and the summary."""

from __future__ import annotations

import numpy as np
import pytest

from mvi_tf.explain import localisation as loc


def _sector(size=32):
    sector = np.zeros((size, size), bool)
    sector[2:6, 20:28] = True
    return sector


def test_target_region_adds_a_ring_of_tolerance_mm():
    sector = _sector()
    region = loc.target_region(sector, pixel_mm=1.0, tolerance_mm=3.0)
    assert region[sector].all()
    assert region[2, 17] and not region[2, 16]  # 3 mm left of column 20 is inside, 4 mm is not
    assert region[8, 24] and not region[9, 24]  # 3 mm below row 5
    # 2 mm pixels: the same 3 mm ring is one pixel wide.
    region2 = loc.target_region(sector, pixel_mm=2.0, tolerance_mm=3.0)
    assert region2[2, 19] and not region2[2, 18]
    assert not loc.target_region(np.zeros((4, 4), bool), 1.0).any()
    with pytest.raises(ValueError, match="pixel_mm"):
        loc.target_region(sector, pixel_mm=0.0)


def test_pointing_and_energy_on_hand_worked_maps():
    region = _sector()
    cam = np.zeros((32, 32))
    cam[3, 22] = 1.0
    cam[20, 5] = 1.0 / 3.0
    assert loc.pointing_hit(cam, region)
    assert loc.energy_fraction(cam, region) == pytest.approx(0.75)
    cam[20, 5] = 2.0
    assert not loc.pointing_hit(cam, region)
    assert not loc.pointing_hit(np.ones((32, 32)), region)  # a flat map points nowhere
    assert np.isnan(loc.energy_fraction(np.zeros((32, 32)), region))
    with pytest.raises(ValueError, match="shapes differ"):
        loc.pointing_hit(cam, region[:8])


def test_centre_baseline_peaks_at_the_centre():
    g = loc.centre_baseline_map(33)
    assert g.max() == pytest.approx(1.0) and np.unravel_index(g.argmax(), g.shape) == (16, 16)
    np.testing.assert_allclose(g, g.T)
    # sigma = 33/6 = 5.5 px: value one sigma from the centre is exp(-1/2).
    assert g[16, 16 + 5] == pytest.approx(np.exp(-(5**2) / (2 * 5.5**2)), rel=1e-5)


def test_rank_correlation():
    a = np.arange(16.0).reshape(4, 4)
    assert loc.rank_correlation(a, a**3) == pytest.approx(1.0)
    assert loc.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(loc.rank_correlation(a, np.zeros_like(a)))


def test_summary_ranks_phases_and_compares_with_baselines():
    sector = _sector()
    hot = np.zeros((32, 32))
    hot[3, 23] = 1.0
    cold = np.zeros((32, 32))
    cold[25, 3] = 1.0
    scores = []
    for i in range(6):
        scores.append(loc.score_patient(f"P{i}", "arterial", hot, cold, sector, 1.0))
        scores.append(loc.score_patient(f"P{i}", "portal", hot if i < 3 else cold, cold, sector, 1.0))
    summary = loc.summarise_scores(scores, ["portal", "arterial"])
    art = summary["per_phase"]["arterial"]
    assert summary["phase_ranking"] == ["arterial", "portal"]
    # Arterial: 6 of 6 against 0 of 6 for both baselines (p = 0.031); portal: 3 of 6, p = 0.25.
    assert summary["localising_phases"] == ["arterial"] and summary["alpha"] == 0.05
    assert loc.summarise_scores(scores, ["portal", "arterial"], alpha=0.01)["localising_phases"] == []
    assert summary["n_patients"] == 6
    assert art["hit_rate"] == 1.0 and summary["per_phase"]["portal"]["hit_rate"] == 0.5
    assert art["centre_baseline"]["hit_rate"] == 0.0  # the Gaussian peaks at the tumour centre, off the sector
    assert art["randomised_weights"]["hit_rate"] == 0.0
    assert art["p_vs_centre"] == pytest.approx(2 * 0.5**6)  # exact McNemar, 6 discordant pairs all one way
    assert art["p_vs_chance"] == pytest.approx(art["chance"] ** 6)  # 6 of 6 hits, each with P = area fraction
    # The 'cold' randomised map points at a corner; an all-zero map points nowhere: a miss, counted as empty.
    assert art["n_empty_maps"] == 0 and art["randomised_weights"]["n_empty_maps"] == 0
    flat = loc.score_patient("P0", "arterial", hot, np.zeros((32, 32)), sector, 1.0)
    assert flat.random_empty and not flat.random_hit and not flat.empty
    assert 0.0 < art["chance"] < 0.2
    # A sector outside the ROI cannot be scored.
    assert loc.score_patient("P9", "arterial", hot, cold, np.zeros((32, 32), bool), 1.0) is None


def test_summary_splits_out_patients_whose_phase_shows_a_sign():
    def score(pid, hit, visible):
        return loc.PatientScore(pid, "arterial", hit, 0.5, False, 0.1, False, 0.2, 0.15, 0.0, sign_visible=visible)

    scores = [score("a", True, True), score("b", True, True), score("c", False, False), score("d", False, False)]
    row = loc.summarise_scores(scores, ["arterial"])["per_phase"]["arterial"]
    assert row["n"] == 4 and row["hit_rate"] == 0.5
    assert row["n_sign_visible"] == 2 and row["sign_visible"]["hit_rate"] == 1.0
    assert row["sign_visible"]["randomised_weights"]["hit_rate"] == 0.0
    # Fewer hits than the randomised-weight maps is not localisation, however small the p-value.
    worse = [loc.PatientScore(f"w{i}", "arterial", False, 0.1, False, 0.1, True, 0.5, 0.15, 0.0) for i in range(8)]
    assert loc.summarise_scores(worse, ["arterial"])["localising_phases"] == []
    unknown = [loc.PatientScore("e", "arterial", True, 0.5, False, 0.1, False, 0.2, 0.15, 0.0)]
    assert "sign_visible" not in loc.summarise_scores(unknown, ["arterial"])["per_phase"]["arterial"]


def test_summary_gives_the_reason_for_every_figure_a_pilot_cannot_define():
    """Two patients whose trained and randomised maps are all flat (as on a one-epoch pilot), and a phase with
    no scorable patient: the figures are None with their reasons, the rest is still computed."""
    sector, flat = _sector(), np.zeros((32, 32))
    scores = [loc.score_patient(f"P{i}", "arterial", flat, flat, sector, 1.0) for i in range(2)]
    with pytest.warns(UserWarning, match="portal"):
        summary = loc.summarise_scores(scores, ["arterial", "portal"])
    art, portal = summary["per_phase"]["arterial"], summary["per_phase"]["portal"]
    assert art["hit_rate"] == 0.0 and art["n_empty_maps"] == 2 and art["p_vs_chance"] == 1.0
    assert art["energy_fraction"] is None and "flat" in art["not_available"]["energy_fraction"]
    assert "flat" in art["randomised_weights"]["not_available"]["energy_fraction"]
    assert "energy_fraction" not in art["centre_baseline"].get("not_available", {})
    assert "discordant" in art["not_available"]["p_vs_centre"]
    assert "constant" in art["not_available"]["rank_corr_vs_randomised_mean"]
    assert portal["hit_rate"] is None and "no MVI-positive patient" in portal["not_available"]["hit_rate"]
    assert summary["phase_ranking"] == ["arterial"] and summary["localising_phases"] == []
