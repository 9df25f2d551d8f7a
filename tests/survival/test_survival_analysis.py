"""`survival_analysis` and `mvi-tf survival` on small synthetic run directories built in the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mvi_tf.cli import main
from mvi_tf.contract import RunFiles, write_json
from mvi_tf.survival import logrank_test, survival_analysis

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(
    root: Path,
    modality: str,
    seed: int,
    n: int = 80,
    hazard_ratio: float = 4.0,
    threshold: float = 0.5,
    synthetic_flag: str = "metrics",
) -> Path:
    """A run directory per docs/architecture.md whose MVI-positive patients progress and die faster.

    Half the patients are `train`, half `prospective`; the last two prospective patients have no PFS
    follow-up (drop-outs).
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    score = np.clip(0.3 + 0.4 * label + rng.normal(0.0, 0.15, n), 0.001, 0.999)
    cohort = np.where(np.arange(n) < n // 2, "train", "prospective")
    hazard = np.where(label == 1, hazard_ratio, 1.0) / 20.0

    def follow_up() -> tuple[np.ndarray, np.ndarray]:
        event_time = rng.exponential(1.0 / hazard)
        censor_time = rng.uniform(6.0, 46.0, n)
        return np.minimum(event_time, censor_time).round(1) + 0.1, (event_time <= censor_time).astype(int)

    os_months, os_event = follow_up()
    pfs_months, pfs_event = follow_up()
    # Progression-free survival ends at death at the latest.
    pfs_event = np.where(pfs_months > os_months, os_event, pfs_event)
    pfs_months = np.minimum(pfs_months, os_months)
    frame = pd.DataFrame(
        {
            "patient_id": [f"SYN-{modality}-{i:03d}" for i in range(n)],
            "modality": modality,
            "centre": "centre_a",
            "cohort": cohort,
            "split": np.where(
                cohort == "train", np.where(np.arange(n) % 5 == 0, "val", "train"), "prospective"
            ),
            "label": label,
            "pfs_months": pfs_months,
            "pfs_event": pfs_event.astype(float),
            "os_months": os_months,
            "os_event": os_event,
            "cdlm": score,
        }
    )
    frame.loc[[n - 1, n - 2], ["pfs_months", "pfs_event"]] = np.nan
    run = root / f"run_{modality}"
    run.mkdir(parents=True)
    files = RunFiles(run)
    frame.to_csv(files.predictions_path, index=False)
    write_json(files.thresholds_path, {"clinical": 0.4, "cdlm": threshold})
    if synthetic_flag == "metrics":
        write_json(files.metrics_path, {"synthetic": True, "modality": modality})
    elif synthetic_flag == "config":
        files.config_path.write_text("data:\n  synthetic: true\n")
    else:
        write_json(files.metrics_path, {"synthetic": False})
    return run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, dict]:
    root = tmp_path_factory.mktemp("survival_runs")
    runs = [make_run(root, "ct", seed=11), make_run(root, "mri", seed=12, synthetic_flag="config")]
    out = root / "out"
    return runs, out, survival_analysis(runs, out)


def test_writes_plots_tables_and_json(two_runs: tuple[list[Path], Path, dict]) -> None:
    _, out, result = two_runs
    expected_plots = {
        f"km_prospective_{modality}_{endpoint}_{grouping}.png"
        for modality in ("ct", "mri")
        for endpoint in ("pfs", "os")
        for grouping in ("predicted", "histopathology")
    }
    assert {path.name for path in (out / "plots").iterdir()} == expected_plots
    for name in expected_plots:
        assert (out / "plots" / name).read_bytes()[:8] == PNG_SIGNATURE
    stored = json.loads((out / "survival.json").read_text())
    assert stored["synthetic"] is True and stored["note"] == "SYNTHETIC DATA"
    assert len(stored["analyses"]) == 4 == len(result["analyses"])
    table = pd.read_csv(out / "survival_table.csv")
    assert len(table) == 12  # 2 modalities x 2 endpoints x (predicted, histopathological, continuous score)
    assert set(table["analysis"]) == {
        "CDLM-predicted MVI",
        "Histopathological MVI",
        "CDLM score (continuous, HR per 0.1)",
    }
    assert table["synthetic"].all()
    markdown = (out / "survival_table.md").read_text()
    assert markdown.startswith("**SYNTHETIC DATA**")
    assert "CE-CT" in markdown and "EOB-MRI" in markdown


def test_no_patient_identifier_in_outputs(two_runs: tuple[list[Path], Path, dict]) -> None:
    _, out, _ = two_runs
    for name in ("survival.json", "survival_table.csv", "survival_table.md"):
        assert "SYN-" not in (out / name).read_text()


def test_groups_dropouts_and_logrank_match_the_input(two_runs: tuple[list[Path], Path, dict]) -> None:
    runs, _, result = two_runs
    predictions = pd.read_csv(runs[0] / "predictions.csv")
    prospective = predictions[predictions["cohort"] == "prospective"]
    pfs = next(a for a in result["analyses"] if a["modality"] == "ct" and a["endpoint"] == "pfs")
    assert pfs["dropped_out"] == 2
    complete = prospective.dropna(subset=["pfs_months"])
    assert pfs["n"] == len(complete) and pfs["events"] == int(complete["pfs_event"].sum())
    predicted = pfs["predicted"]
    assert predicted["groups"]["MVI present (CDLM)"]["n"] == int((complete["cdlm"] >= 0.5).sum())
    direct = logrank_test(complete["pfs_months"], complete["pfs_event"], complete["cdlm"] >= 0.5)
    assert predicted["logrank"]["p_value"] == pytest.approx(direct.p_value, rel=1e-12)
    histopathology = logrank_test(complete["pfs_months"], complete["pfs_event"], complete["label"])
    assert pfs["histopathology"]["logrank"]["chi2"] == pytest.approx(histopathology.statistic, rel=1e-12)
    assert pfs["follow_up"]["range"] == [complete["pfs_months"].min(), complete["pfs_months"].max()]


def test_strong_effect_is_detected_next_to_true_labels(two_runs: tuple[list[Path], Path, dict]) -> None:
    """MVI-positive patients carry a four-fold hazard: both the true-label and the CDLM grouping must show
    it (HR > 1, log-rank p < 0.05) and the continuous score must rank risk (C-index > 0.5)."""
    _, _, result = two_runs
    for analysis in result["analyses"]:
        for key in ("histopathology", "predicted"):
            assert analysis[key]["cox"]["hazard_ratio"] > 1.5, (
                analysis["modality"],
                analysis["endpoint"],
                key,
            )
            assert analysis[key]["logrank"]["p_value"] < 0.05, (
                analysis["modality"],
                analysis["endpoint"],
                key,
            )
        assert analysis["continuous"]["concordance"] > 0.5


def test_cohort_selection_and_degenerate_groups(tmp_path: Path) -> None:
    """Threshold 0: every patient is predicted MVI-present, so the predicted log-rank and Cox are not
    estimable; the run still completes and says why. `all` pools train and prospective patients."""
    run = make_run(tmp_path, "ct", seed=3, n=40, threshold=0.0, synthetic_flag="none")
    predictions = pd.read_csv(run / "predictions.csv")
    predictions.loc[(predictions["label"] == 0) & predictions["pfs_event"].notna(), "pfs_event"] = (
        0.0  # separation: no MVI-negative progresses
    )
    predictions.to_csv(run / "predictions.csv", index=False)
    result = survival_analysis([run], tmp_path / "out", cohorts=("all",))
    pfs_analysis = next(a for a in result["analyses"] if a["endpoint"] == "pfs")
    reason = "HR not estimable: no events among MVI absent (pathology)"
    assert pfs_analysis["histopathology"]["cox"] == {
        "error": reason, "hazard_ratio": None, "p_value": None,
        "not_available": {"hazard_ratio": reason, "p_value": reason},
    }
    assert pfs_analysis["histopathology"]["logrank"]["p_value"] < 0.05
    os_analysis = next(a for a in result["analyses"] if a["endpoint"] == "os")
    assert os_analysis["n"] == 40 and os_analysis["cohort"] == "all"
    assert "single group" in os_analysis["predicted"]["logrank"]["error"]
    assert os_analysis["predicted"]["logrank"]["p_value"] is None
    assert "single group" in os_analysis["predicted"]["logrank"]["not_available"]["p_value"]
    assert "constant" in os_analysis["predicted"]["cox"]["error"]
    assert os_analysis["histopathology"]["logrank"]["p_value"] is not None
    assert result["synthetic"] is False
    assert "SYNTHETIC" not in (tmp_path / "out" / "survival_table.md").read_text()
    table = pd.read_csv(tmp_path / "out" / "survival_table.csv")
    assert table.loc[table["analysis"] == "CDLM-predicted MVI", "note"].str.contains("single group").all()


def test_bad_input_names_file_patient_and_value(tmp_path: Path) -> None:
    run = make_run(tmp_path, "ct", seed=5, n=20)
    predictions = pd.read_csv(run / "predictions.csv")
    predictions.loc[3, "cdlm"] = 1.7
    predictions.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"patient SYN-ct-003 .*cdlm=1\.7"):
        survival_analysis([run], tmp_path / "out")
    predictions.loc[3, "cdlm"] = 0.7
    predictions.loc[4, "os_event"] = np.nan
    predictions.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="patient SYN-ct-004"):
        survival_analysis([run], tmp_path / "out")
    predictions.loc[4, "os_event"] = 1
    predictions.loc[5, "pfs_months"] = predictions.loc[5, "os_months"] + 10.0
    predictions.to_csv(run / "predictions.csv", index=False)
    (run / "thresholds.json").unlink()
    with (
        pytest.warns(UserWarning, match="patient SYN-ct-005: pfs_months"),
        pytest.raises(FileNotFoundError, match="thresholds.json"),
    ):
        survival_analysis([run], tmp_path / "out")
    with pytest.raises(ValueError, match="cohorts=\\('validation',\\)"):
        survival_analysis([run], tmp_path / "out", cohorts=("validation",))


def test_cli_survival(tmp_path: Path) -> None:
    run = make_run(tmp_path, "mri", seed=8, n=40)
    out = tmp_path / "cli_out"
    result = CliRunner().invoke(main, ["survival", "--run", str(run), "--out", str(out), "--cohort", "train"])
    assert result.exit_code == 0, result.output
    assert "EOB-MRI PFS" in result.output and "[SYNTHETIC DATA]" in result.output
    stored = json.loads((out / "survival.json").read_text())
    assert stored["cohorts"] == ["train"]
    assert {a["n_total"] for a in stored["analyses"]} == {20}
