"""`mvi_tf.evaluation` on small synthetic run directories written here (predictions.csv + thresholds.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from statsmodels.stats.proportion import proportion_confint

from mvi_tf import calibration as cal
from mvi_tf import stats, uncertainty
from mvi_tf.cli import main
from mvi_tf.contract import RunFiles, write_json
from mvi_tf.evaluation import compare_runs, evaluate_runs, load_run
from mvi_tf.evaluation.calibration_report import calibration_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PHASES = {"ct": ["plain", "arterial", "portal"], "mri": ["t2", "arterial", "hepatobiliary"]}
SPLIT_SIZES = {"train": 60, "val": 20, "prospective": 50}


def _patients(seed: int = 0) -> pd.DataFrame:
    """Shared patient table: id, split, label and the subgroup columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in SPLIT_SIZES.items():
        for i in range(n):
            rows.append({"patient_id": f"{split[:2].upper()}{i:03d}", "split": split})
    df = pd.DataFrame(rows)
    n = len(df)
    df["label"] = rng.integers(0, 2, n)
    df["cohort"] = np.where(df["split"] == "prospective", "prospective", "train")
    df["centre"] = np.where(df["split"] == "prospective", "C", "A")
    df["age"] = rng.integers(35, 80, n)
    df["sex"] = rng.choice(["M", "F"], n)
    df["afp_ng_ml"] = np.round(np.exp(rng.normal(3.5, 2.0, n)), 1)
    df["tumour_size_cm"] = np.round(rng.uniform(1.0, 10.0, n), 1)
    df.loc[3, "afp_ng_ml"] = np.nan  # one missing value is left out of the AFP strata
    return df


def _write_run(
    root: Path,
    modality: str,
    patients: pd.DataFrame,
    seed: int,
    synthetic: str = "metrics",
    strength: float = 1.5,
    thresholds: bool = True,
) -> Path:
    """A run directory: predictions.csv whose scores rise with the label, Youden thresholds from train."""
    rng = np.random.default_rng(seed)
    run = root / f"run_{modality}"
    run.mkdir(parents=True)
    df = patients.copy()
    df.insert(1, "modality", modality)
    y = df["label"].to_numpy()
    models = ["clinical", "radiological"] + [f"signature_{p}" for p in PHASES[modality]] + ["fusion", "cdlm"]
    for k, model in enumerate(models):
        logit = rng.normal(0.0, 1.0, len(df)) + y * strength * (0.4 + 0.12 * k)
        df[model] = np.round(1.0 / (1.0 + np.exp(-logit)), 4)
    files = RunFiles(run)
    df.to_csv(files.predictions_path, index=False)
    train = df[df["split"] == "train"]
    if thresholds:
        thr = {m: stats.youden_threshold(train["label"], train[m]).threshold for m in models}
        files.thresholds_path.write_text(json.dumps(thr))  # json.dumps: a +/-inf threshold stays a number
    if synthetic == "metrics":
        write_json(files.metrics_path, {"synthetic": True, "seed": seed})
    elif synthetic == "config":
        files.config_path.write_text(yaml.safe_dump({"data": {"synthetic": True, "modality": modality}}))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    patients = _patients()
    ct = _write_run(root, "ct", patients, seed=1, synthetic="metrics")
    # The MRI run lacks one prospective CT patient and has one extra of its own.
    mri_patients = patients[patients["patient_id"] != "PR000"].copy()
    extra = mri_patients.iloc[[-1]].assign(patient_id="PR999")
    mri = _write_run(
        root,
        "mri",
        pd.concat([mri_patients, extra], ignore_index=True),
        seed=2,
        synthetic="config",
        strength=2.5,
    )
    return {"ct": ct, "mri": mri, "root": root}


@pytest.fixture(scope="module")
def evaluation(runs, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate_runs([runs["ct"], runs["mri"]], out, progress=False), out


def test_evaluate_writes_every_output(evaluation):
    result, out = evaluation
    for name in [
        "table3.csv",
        "table3.md",
        "performance.csv",
        "subgroups.csv",
        "subgroups.md",
        "evaluation.json",
    ]:
        assert (out / name).stat().st_size > 0, name
    for modality in ("ct", "mri"):
        for cohort in ("training", "internal_validation", "prospective"):
            for kind in ("roc", "decision_curves"):
                png = out / f"{kind}_{modality}_{cohort}.png"
                assert png.read_bytes()[:8] == PNG_MAGIC, png
    assert set(result["files"]) == {p.name for p in out.iterdir()}
    json.loads((out / "evaluation.json").read_text())  # strict JSON (no NaN)


def test_table3_numbers_use_training_thresholds(evaluation, runs):
    result, out = evaluation
    table = pd.read_csv(out / "table3.csv")
    assert len(table) == 2 * 7  # 7 models per modality
    assert list(table["model"][:7]) == [
        "clinical",
        "radiological",
        "signature_plain",
        "signature_arterial",
        "signature_portal",
        "fusion",
        "cdlm",
    ]
    pred = pd.read_csv(runs["ct"] / "predictions.csv")
    thr = json.loads((runs["ct"] / "thresholds.json").read_text())["cdlm"]
    row = table[(table["modality"] == "ct") & (table["model"] == "cdlm")].iloc[0]
    prosp = pred[pred["split"] == "prospective"]
    positives, negatives = prosp[prosp["label"] == 1], prosp[prosp["label"] == 0]
    assert row["prospective_sensitivity"] == pytest.approx(np.mean(positives["cdlm"] >= thr))
    assert row["prospective_specificity"] == pytest.approx(np.mean(negatives["cdlm"] < thr))
    assert row["prospective_auc"] == pytest.approx(stats.roc_auc_ci(prosp["label"], prosp["cdlm"]).auc)
    # The prospective Youden threshold would differ: proves the training threshold was applied unchanged.
    assert stats.youden_threshold(prosp["label"], prosp["cdlm"]).threshold != pytest.approx(thr)
    training = pred[pred["split"].isin(["train", "val"])]
    assert row["training_n"] == len(training) == SPLIT_SIZES["train"] + SPLIT_SIZES["val"]
    assert row["training_auc"] == pytest.approx(stats.roc_auc_ci(training["label"], training["cdlm"]).auc)
    assert row["data_label"] == "SYNTHETIC DATA"
    internal = [r for r in result["performance"] if r["cohort"] == "internal_validation"]
    assert {r["n"] for r in internal} == {SPLIT_SIZES["val"]}


def test_outputs_are_labelled_synthetic(evaluation, runs, tmp_path):
    result, out = evaluation
    assert result["synthetic"] is True
    assert "SYNTHETIC DATA" in (out / "table3.md").read_text()
    assert "SYNTHETIC DATA" in (out / "subgroups.md").read_text()
    assert [r["synthetic_flag"] for r in result["runs"]] == [True, True]  # metrics.json and config.yaml
    plain = evaluate_runs([runs["ct"]], tmp_path, synthetic=False, progress=False)
    assert plain["data_label"] == "" and "SYNTHETIC" not in (tmp_path / "table3.md").read_text()


def test_subgroups(evaluation, runs):
    result, _ = evaluation
    sub = pd.DataFrame(result["subgroups"])
    ct_prosp = sub[(sub["modality"] == "ct") & (sub["cohort"] == "prospective")]
    strata = ct_prosp[ct_prosp["kind"] == "stratum"]
    assert set(strata["factor"]) == {"age", "sex", "afp", "tumour_size"}
    afp = strata[strata["factor"] == "afp"]
    assert list(afp["stratum"]) == ["<= 20 ng/mL", "20-400 ng/mL", "> 400 ng/mL"]
    assert afp["n"].sum() == SPLIT_SIZES["prospective"]
    training_afp = sub[(sub["modality"] == "ct") & (sub["cohort"] == "training") & (sub["factor"] == "afp")]
    assert training_afp[training_afp["kind"] == "test"]["n_missing"].iloc[0] == 1
    size = strata[strata["factor"] == "tumour_size"]
    test = ct_prosp[(ct_prosp["kind"] == "test") & (ct_prosp["factor"] == "tumour_size")].iloc[0]
    z = (size["auc"].iloc[0] - size["auc"].iloc[1]) / np.sqrt(size["auc_variance"].sum())
    assert test["auc_z"] == pytest.approx(z)
    tests = sub[sub["kind"] == "test"]
    for col in ("auc_p_value", "sensitivity_p_value", "specificity_p_value"):
        values = tests[col].dropna()
        assert len(values) and values.between(0, 1).all()


def test_strata_cut_offs_are_inclusive_below():
    from mvi_tf.evaluation.subgroups import _strata

    df = pd.DataFrame(
        {
            "age": [60, 61, np.nan],
            "sex_male": [1, 0, 1],
            "afp_ng_ml": [20.0, 400.0, 400.1],
            "tumour_size_cm": [5.0, 5.01, np.nan],
        }
    )
    strata = {k: list(v[0]) for k, v in _strata(df, age_cutoff=60).items()}
    assert strata["age"][:2] == ["<= 60 y", "> 60 y"] and pd.isna(strata["age"][2])
    assert strata["sex"] == ["male", "female", "male"]
    assert strata["afp"] == ["<= 20 ng/mL", "20-400 ng/mL", "> 400 ng/mL"]
    assert strata["tumour_size"][:2] == ["<= 5 cm", "> 5 cm"] and pd.isna(strata["tumour_size"][2])


def test_compare_runs(runs, tmp_path):
    r = compare_runs(runs["ct"], runs["mri"], tmp_path)
    assert r["n_paired"] == SPLIT_SIZES["prospective"] - 1
    assert (r["n_ct_only"], r["n_mri_only"]) == (1, 1)
    for name in r["files"]:
        assert (tmp_path / name).is_file()
    assert (tmp_path / "head_to_head_decision_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert "SYNTHETIC DATA" in (tmp_path / "head_to_head.md").read_text()

    ct = pd.read_csv(runs["ct"] / "predictions.csv", dtype={"patient_id": str})
    mri = pd.read_csv(runs["mri"] / "predictions.csv", dtype={"patient_id": str})
    both = (
        ct[ct["split"] == "prospective"]
        .merge(mri[mri["split"] == "prospective"], on="patient_id", suffixes=("_ct", "_mri"))
        .sort_values("patient_id")
    )
    y = both["label_ct"].to_numpy()
    delong = stats.delong_test(y, both["cdlm_ct"], both["cdlm_mri"])
    assert r["auc"]["delong_z"] == pytest.approx(delong.z)
    assert r["auc"]["delong_p_value"] == pytest.approx(delong.p_value)
    nri = uncertainty.reclassification(y, both["cdlm_mri"], both["cdlm_ct"])
    assert r["reclassification_mri_over_ct"]["nri"] == pytest.approx(nri.nri)
    assert r["reclassification_mri_over_ct"]["idi_ci_high"] == pytest.approx(nri.idi_ci[1])
    assert "Continuous NRI, MRI over CT" in (tmp_path / "head_to_head.md").read_text()

    thr_ct = json.loads((runs["ct"] / "thresholds.json").read_text())["cdlm"]
    thr_mri = json.loads((runs["mri"] / "thresholds.json").read_text())["cdlm"]
    pos = y == 1
    ct_ok, mri_ok = both["cdlm_ct"].to_numpy()[pos] >= thr_ct, both["cdlm_mri"].to_numpy()[pos] >= thr_mri
    table = [
        [int(np.sum(ct_ok & mri_ok)), int(np.sum(ct_ok & ~mri_ok))],
        [int(np.sum(~ct_ok & mri_ok)), int(np.sum(~ct_ok & ~mri_ok))],
    ]
    assert r["sensitivity"]["table"] == table
    assert r["sensitivity"]["mri"] == pytest.approx(mri_ok.mean())
    b, c = table[0][1], table[1][0]
    if b + c:
        assert r["sensitivity"]["mcnemar_statistic"] == pytest.approx((abs(b - c) - 1) ** 2 / (b + c))
    assert sum(map(sum, r["specificity"]["table"])) == int((~pos).sum())

    dc = r["decision_curves"]
    grid = np.array(dc["ct"]["thresholds"])
    assert grid[0] == 0.01 and grid[-1] == 0.99 and grid.size == 99
    nb_ct, nb_mri = np.array(dc["ct"]["net_benefit"]), np.array(dc["mri"]["net_benefit"])
    for lo, hi in dc["mri_higher"]:
        inside = (grid >= lo) & (grid <= hi)
        assert np.all(nb_mri[inside] > nb_ct[inside])
    covered = sum(
        int(np.sum((grid >= lo) & (grid <= hi)))
        for key in ("ct_higher", "mri_higher", "equal")
        for lo, hi in dc[key]
    )
    assert covered == grid.size


def test_compare_rejects_label_mismatch_and_wrong_modality(runs, tmp_path):
    bad = runs["root"] / "run_mri_bad"
    bad.mkdir()
    pred = pd.read_csv(runs["mri"] / "predictions.csv", dtype={"patient_id": str})
    idx = pred.index[pred["patient_id"] == "PR005"][0]
    pred.loc[idx, "label"] = 1 - pred.loc[idx, "label"]
    pred.to_csv(bad / "predictions.csv", index=False)
    (bad / "thresholds.json").write_text((runs["mri"] / "thresholds.json").read_text())
    with pytest.raises(ValueError, match="PR005"):
        compare_runs(runs["ct"], bad, tmp_path)
    with pytest.raises(ValueError, match="CT run and an MRI run"):
        compare_runs(runs["mri"], runs["ct"], tmp_path)


def test_load_run_errors_name_patient_and_file(tmp_path):
    patients = _patients(seed=5)
    run = _write_run(tmp_path, "ct", patients, seed=3, thresholds=False, synthetic="none")
    loaded = load_run(run)
    assert loaded.synthetic is False
    assert set(loaded.threshold_source.values()) == {"recomputed on train split"}
    pred = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    pred.loc[7, "fusion"] = np.nan
    pred.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(
        ValueError, match=rf"predictions.csv: patient '{pred.loc[7, 'patient_id']}'.*'fusion'"
    ):
        load_run(run)
    pred.loc[7, "fusion"] = 0.5
    pred.loc[9, "split"] = "test"
    pred.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="split 'test'"):
        load_run(run)
    pred.loc[9, "split"] = "train"
    pred.loc[2, "label"] = 3
    pred.to_csv(run / "predictions.csv", index=False)
    with pytest.raises(ValueError, match="label 3"):
        load_run(run)
    with pytest.raises(FileNotFoundError, match="predictions.csv"):
        load_run(tmp_path / "nowhere")


def test_cli_evaluate_and_compare(runs, tmp_path):
    cli = CliRunner()
    res = cli.invoke(
        main, ["evaluate", "--run", str(runs["ct"]), "--out", str(tmp_path / "ev"), "--n-boot", "50", "--seed", "7"]
    )
    assert res.exit_code == 0, res.output
    assert "ct CDLM prospective: AUC" in res.output and "[SYNTHETIC DATA]" in res.output
    assert "ct CDLM prospective calibration: intercept" in res.output
    assert (tmp_path / "ev" / "table3.csv").is_file()
    assert set(pd.read_csv(tmp_path / "ev" / "improvement.csv")["n_boot"]) == {50}
    res = cli.invoke(
        main,
        [
            "compare",
            "--ct-run",
            str(runs["ct"]),
            "--mri-run",
            str(runs["mri"]),
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "DeLong p" in res.output and (tmp_path / "cmp" / "head_to_head.json").is_file()
    assert "MRI over CT: continuous NRI" in res.output
    help_text = cli.invoke(main, ["evaluate", "--help"]).output
    assert "--run" in help_text and "--synthetic" in help_text


def test_constant_model_with_infinite_threshold(tmp_path):
    """A collapsed model (constant score) gets pROC's -inf Youden threshold: everybody positive."""
    run = _write_run(tmp_path, "ct", _patients(seed=9), seed=4)
    pred = pd.read_csv(run / "predictions.csv")
    pred["fusion"] = 0.5
    pred.to_csv(run / "predictions.csv", index=False)
    thr = json.loads((run / "thresholds.json").read_text())
    thr["fusion"] = stats.youden_threshold(pred["label"], pred["fusion"]).threshold
    assert thr["fusion"] == -np.inf
    (run / "thresholds.json").write_text(json.dumps(thr))  # written as -Infinity, as json.dumps does
    result = evaluate_runs([run], tmp_path / "out", progress=False)
    row = next(r for r in result["performance"] if r["model"] == "fusion" and r["cohort"] == "prospective")
    assert (row["sensitivity"], row["specificity"], row["auc"], row["threshold"]) == (1.0, 0.0, 0.5, None)
    assert "calls every patient MVI+" in row["not_available"]["threshold"]


def test_table3_shows_exact_cis_for_sen_spe_acc(evaluation, runs):
    _, out = evaluation
    table = pd.read_csv(out / "table3.csv")
    row = table[(table["modality"] == "ct") & (table["model"] == "cdlm")].iloc[0]
    pred = pd.read_csv(runs["ct"] / "predictions.csv")
    thr = json.loads((runs["ct"] / "thresholds.json").read_text())["cdlm"]
    prosp = pred[pred["split"] == "prospective"]
    positives = prosp[prosp["label"] == 1]
    hits = int(np.sum(positives["cdlm"] >= thr))
    low, high = proportion_confint(hits, len(positives), alpha=0.05, method="beta")
    assert (row["prospective_sensitivity_ci_low"], row["prospective_sensitivity_ci_high"]) == pytest.approx(
        (low, high), abs=1e-10
    )
    md = (out / "table3.md").read_text()
    assert "SEN (95% CI)" in md and f"({100 * low:.1f}–{100 * high:.1f})" in md
    assert "Clopper-Pearson" in md


def test_calibration_table_per_model_cohort_and_centre(evaluation, runs):
    result, out = evaluation
    table = pd.read_csv(out / "calibration.csv")
    assert {"intercept", "slope", "brier", "brier_scaled", "oe_ratio", "e_avg"} <= set(table.columns)
    # 7 models x (training, train, internal_validation pooled) + prospective; centres only where a cohort has >1.
    ct = table[table["modality"] == "ct"]
    assert set(ct["cohort"]) == {"training", "train", "internal_validation", "prospective"}
    assert set(ct["centre"]) == {"all"}
    pred = pd.read_csv(runs["ct"] / "predictions.csv")
    prosp = pred[pred["split"] == "prospective"]
    direct = cal.calibration(prosp["label"], prosp["cdlm"])
    row = ct[(ct["model"] == "cdlm") & (ct["cohort"] == "prospective")].iloc[0]
    assert row["intercept"] == pytest.approx(direct.intercept, abs=1e-12)
    assert row["slope"] == pytest.approx(direct.slope, abs=1e-12)
    assert row["oe_ratio"] == pytest.approx(prosp["label"].sum() / prosp["cdlm"].sum())
    assert "Calibration-in-the-large" in (out / "calibration.md").read_text()
    for modality in ("ct", "mri"):
        for cohort in ("training", "internal_validation", "prospective"):
            png = out / f"calibration_{modality}_{cohort}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC, png
    assert len(result["calibration"]) == len(table)


def test_calibration_rows_split_by_centre(runs, tmp_path):
    pred = pd.read_csv(runs["ct"] / "predictions.csv")
    pred.loc[pred["split"] == "prospective", "centre"] = np.where(
        np.arange(int((pred["split"] == "prospective").sum())) % 2 == 0, "C", "D"
    )
    run = tmp_path / "run"
    run.mkdir()
    pred.to_csv(run / "predictions.csv", index=False)
    (run / "thresholds.json").write_text((runs["ct"] / "thresholds.json").read_text())
    rows = calibration_rows([load_run(run)], ("prospective",))
    cdlm = {r["centre"]: r for r in rows if r["model"] == "cdlm"}
    assert set(cdlm) == {"all", "C", "D"}
    assert cdlm["C"]["n"] + cdlm["D"]["n"] == cdlm["all"]["n"]
    part = pred[(pred["split"] == "prospective") & (pred["centre"] == "D")]
    assert cdlm["D"]["brier"] == pytest.approx(np.mean((part["cdlm"] - part["label"]) ** 2))


def test_improvement_of_cdlm_over_radiological(evaluation, runs):
    result, out = evaluation
    table = pd.read_csv(out / "improvement.csv")
    assert set(table["cohort"]) == {"training", "internal_validation", "prospective"}
    row = table[(table["modality"] == "mri") & (table["cohort"] == "prospective")].iloc[0]
    pred = pd.read_csv(runs["mri"] / "predictions.csv")
    prosp = pred[pred["split"] == "prospective"]
    y = prosp["label"].to_numpy()
    direct = uncertainty.reclassification(y, prosp["cdlm"], prosp["radiological"])
    assert row["nri"] == pytest.approx(direct.nri) and row["idi_ci_low"] == pytest.approx(direct.idi_ci[0])
    boot = uncertainty.bootstrap_auc_difference(y, prosp["cdlm"], prosp["radiological"], n_boot=2000, seed=0)
    assert (row["auc_difference_ci_low"], row["auc_difference_ci_high"]) == pytest.approx(
        (boot.ci_low, boot.ci_high)
    )
    nb = stats.net_benefit(y, prosp["cdlm"], [0.3]).model[0] - stats.net_benefit(y, prosp["radiological"], [0.3]).model[0]
    assert row["nb_30_difference"] == pytest.approx(nb)
    assert row["nb_30_difference_ci_low"] <= nb <= row["nb_30_difference_ci_high"]
    md = (out / "improvement.md").read_text()
    assert "NRI, continuous" in md and "IDI" in md and "pt = 0.3" in md


def test_degenerate_cohort_gets_notes_not_errors(tmp_path):
    """Three prospective patients, all MVI-negative, CDLM scores exactly 0 and 1: calibration and the CDLM vs
    radiological comparison say why a number is missing; the run still writes every file."""
    run = _write_run(tmp_path, "ct", _patients(seed=5), seed=6)
    pred = pd.read_csv(run / "predictions.csv")
    pred = pred[(pred["split"] != "prospective") | (pred.index.isin(pred.index[pred["split"] == "prospective"][:3]))]
    pred.loc[pred["split"] == "prospective", "label"] = 0
    pred.loc[pred.index[:2], "cdlm"] = [0.0, 1.0]
    pred.to_csv(run / "predictions.csv", index=False)
    result = evaluate_runs([run], tmp_path / "out", progress=False, n_boot=20)
    cal_rows = [r for r in result["calibration"] if r["model"] == "cdlm"]
    prosp = next(r for r in cal_rows if r["cohort"] == "prospective")
    assert prosp["intercept"] is None and prosp["brier"] is not None and "undefined" in prosp["note"]
    train = next(r for r in cal_rows if r["cohort"] == "train")
    assert train["n_excluded"] == 2 and "exactly 0 or 1" in train["note"]
    comparison = next(r for r in result["improvement"] if r["cohort"] == "prospective")
    assert "not estimable" in comparison["note"]
    assert (tmp_path / "out" / "calibration_ct_prospective.png").is_file()


def test_single_class_prospective_cohort_is_reported_not_available(tmp_path):
    """A pilot whose prospective patients are all MVI-negative: evaluate and compare exit 0, write what they
    can (training figures, specificity McNemar, decision curves) and give the reason for each missing AUC."""
    patients = _patients(seed=11)
    patients.loc[patients["split"] == "prospective", "label"] = 0
    ct = _write_run(tmp_path, "ct", patients, seed=1)
    mri = _write_run(tmp_path / "m", "mri", patients, seed=2)
    cli = CliRunner()
    res = cli.invoke(main, ["evaluate", "--run", str(ct), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "ct CDLM prospective: AUC not available (AUC needs >= 2 MVI+ and >= 2 MVI- patients; the cohort " \
           "has 0 MVI+ and 50 MVI- patients)" in res.output
    assert "ct CDLM training: AUC 0." in res.output
    stored = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    row = next(r for r in stored["performance"] if r["model"] == "cdlm" and r["cohort"] == "prospective")
    assert row["auc"] is None and "0 MVI+ and 50 MVI-" in row["not_available"]["auc"]
    assert "single class" in row["not_available"]["sensitivity"]
    res = cli.invoke(main, ["compare", "--ct-run", str(ct), "--mri-run", str(mri), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert "AUC n/a vs n/a (DeLong p = n/a)" in res.output
    assert "AUC needs >= 2 MVI+ and >= 2 MVI- prospective patients in both runs; there are 0 MVI+" in res.output
    h2h = json.loads((tmp_path / "cmp" / "head_to_head.json").read_text())
    assert h2h["auc"]["delong_p_value"] is None and "0 MVI+" in h2h["auc"]["not_available"]["delong_p_value"]
    assert h2h["sensitivity"]["n"] == 0 and "no MVI+ patients" in h2h["sensitivity"]["not_available"]["ct"]
    assert h2h["specificity"]["n"] == 50 and h2h["specificity"]["mcnemar_exact_p_value"] is not None
    assert not (tmp_path / "cmp" / "head_to_head_roc.png").exists()
    assert (tmp_path / "cmp" / "head_to_head_decision_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_empty_stratum_stays_in_the_subgroup_table_with_its_reason(tmp_path):
    patients = _patients(seed=12)
    patients["tumour_size_cm"] = 3.0  # nobody above 5 cm
    run = _write_run(tmp_path, "ct", patients, seed=1)
    result = evaluate_runs([run], tmp_path / "out", progress=False)
    empty = [r for r in result["subgroups"] if r["factor"] == "tumour_size" and r["stratum"] == "> 5 cm"]
    assert empty and all(r["n"] == 0 and r["not_available"]["auc"] == "no patients" for r in empty)
    test = next(r for r in result["subgroups"] if r["factor"] == "tumour_size" and r["kind"] == "test")
    assert "fewer than two strata" in test["not_available"]["auc_p_value"]
