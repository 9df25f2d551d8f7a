"""Run-directory metadata and the model card written next to every exported SavedModel version.

The card (``model_card.json`` + ``model_card.md``) is also what ``mvi-tf predict`` reads to rebuild the exact
input contract of an exported model: phases, image size, the ordered tabular features and the schema whose
encoding and scaling turn a patient's clinical values into the ``tabular`` vector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mvi_tf.contract import PREDICTIONS_FILE, RunFiles, read_json

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"

INTENDED_USE = (
    "Research use: estimating the probability of microvascular invasion (MVI) of a solitary hepatocellular "
    "carcinoma before resection, from multiphase CT or gadoxetic-acid MRI plus clinical and radiological "
    "values, as in Wei et al., Cancers 2021. Not validated for treatment decisions."
)
NOT_A_DEVICE = (
    "This model is NOT a medical device. It has no regulatory clearance and must not be used to diagnose, "
    "treat or manage any patient."
)
SYNTHETIC_BANNER = (
    "SYNTHETIC DATA: this model was trained and evaluated on a generated synthetic cohort. Its metrics say "
    "nothing about performance on real patients."
)
INT8_NOTE = (
    "The int8 TFLite model has int8 weights and activations but a float32 input/output interface: feed the same "
    "float32 images in [0, 1] and the same scaled tabular vector as every other backend."
)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read the files of a training run directory that export and predict need.

    Parameters
    ----------
    run_dir : str or Path
        A run directory (docs/architecture.md "Run directory").

    Returns
    -------
    dict
        ``run_dir``, ``keras_model`` (path), ``schema``, ``selected`` (ordered tabular features),
        ``threshold`` (CDLM Youden threshold), ``metrics``, ``config`` (dict or None), ``feature_selection``.
    """
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    files = RunFiles(run_dir)
    required = [files.cdlm_path, files.schema_path, files.feature_selection_path, files.thresholds_path]
    missing = [path.name for path in required if not path.exists()]
    if missing:
        raise FileNotFoundError(f"Run directory {run_dir} lacks {missing} (written by `mvi-tf train`).")
    feature_selection = files.feature_selection()
    if "selected" not in feature_selection:
        raise ValueError(f"{files.feature_selection_path} has no 'selected' feature list.")
    thresholds = files.thresholds()
    if "cdlm" not in thresholds:
        raise ValueError(f"{files.thresholds_path} has no 'cdlm' threshold. Received keys: {sorted(thresholds)}")
    threshold = thresholds["cdlm"]
    if isinstance(threshold, dict):
        threshold = threshold.get("threshold")
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"CDLM threshold must lie in [0, 1]. Received: threshold={threshold}")
    metrics = files.metrics() if files.metrics_path.exists() else {}
    config = None
    if files.config_path.exists():
        config = yaml.safe_load(files.config_path.read_text())
    return {
        "run_dir": run_dir,
        "keras_model": files.cdlm_path,
        "schema": files.schema(),
        "selected": [str(f) for f in feature_selection["selected"]],
        "feature_selection": feature_selection,
        "threshold": threshold,
        "metrics": metrics,
        "config": config,
    }


def schema_modality(schema: dict) -> str | None:
    """The modality recorded in a records schema, if any."""
    value = schema.get("modality")
    return str(value) if value else None


def schema_features(schema: dict) -> list[dict]:
    """Return one entry per encoded tabular feature, in the order of the records' ``tabular`` vector.

    Reads the data_prep layout (``schema["tabular"]["columns"]``, each column expanding to one or more
    ``features`` with its encoding and fitted scaling; order given by ``feature_names``).
    """
    tabular = schema.get("tabular", schema)
    if not isinstance(tabular, dict) or "feature_names" not in tabular:
        raise ValueError(f"Schema has no tabular 'feature_names'. Received keys: {sorted(tabular)}")
    by_feature: dict[str, dict] = {}
    for column in tabular.get("columns", []):
        for feature in column.get("features", [column.get("name")]):
            entry = {"name": feature, "column": column.get("name"), "kind": column.get("kind")}
            for key in ("unit", "scaling", "cutoffs", "levels"):
                if column.get(key) is not None:
                    entry[key] = column[key]
            by_feature[feature] = entry
    return [by_feature.get(name, {"name": name}) for name in tabular["feature_names"]]


def schema_feature_names(schema: dict) -> list[str]:
    """Names of the encoded tabular features, in the order of the records' ``tabular`` vector."""
    return [entry["name"] for entry in schema_features(schema)]


def selected_indices(schema: dict, selected: list[str]) -> list[int]:
    """Positions of the ``selected`` features in the schema's full tabular vector (raises naming a missing one)."""
    names = schema_feature_names(schema)
    unknown = [f for f in selected if f not in names]
    if unknown:
        raise ValueError(f"Selected tabular features {unknown} are not in the schema. Schema features: {names}")
    return [names.index(f) for f in selected]


def cohort_summary(run_dir: Path, schema: dict) -> dict:
    """Patients, MVI-positive count and centres per split of the run's ``predictions.csv`` (training data only:
    ``train`` and ``val``; prospective patients are evaluation data and are left out)."""
    import pandas as pd

    summary: dict[str, Any] = {}
    tabular = schema.get("tabular", {})
    if "n_fit" in tabular:
        summary["tabular_scaling_fitted_on"] = f"{tabular.get('fitted_on', 'train')} cohort, n={tabular['n_fit']}"
    path = RunFiles(Path(run_dir)).predictions_path
    if not path.exists():
        summary["splits"] = f"{PREDICTIONS_FILE} not found in the run directory"
        return summary
    frame = pd.read_csv(path, dtype={"patient_id": str})
    if "split" not in frame:
        return summary
    for split in ("train", "val"):
        part = frame[frame["split"] == split]
        entry: dict[str, Any] = {"n": len(part)}
        if "label" in part:
            entry["n_mvi"] = int(part["label"].sum())
        if "centre" in part:
            entry["centres"] = sorted(str(c) for c in part["centre"].dropna().unique())
        summary[split] = entry
    return summary


CALIBRATION_SPLITS = {"train": "training split", "val": "internal validation split", "prospective": "prospective cohort"}
CALIBRATION_KEYS = (
    "n", "n_events", "observed", "expected", "intercept", "intercept_ci_low", "intercept_ci_high", "slope",
    "slope_ci_low", "slope_ci_high", "brier", "brier_scaled", "oe_ratio", "oe_ratio_ci_low", "oe_ratio_ci_high",
    "e_avg", "n_excluded",
)
CALIBRATION_NOTE = (
    "Calibration-in-the-large: intercept of a logistic model with logit(p) as offset (0 ideal, > 0 the model "
    "under-predicts MVI); slope: logistic recalibration on logit(p) (1 ideal, < 1 predictions too extreme); "
    "O/E: observed / expected MVI count; definitions of rms::val.prob (mvi_tf.calibration), Wald 95% CIs."
)


def cdlm_calibration(run_dir: Path) -> dict[str, Any]:
    """Calibration of the run's CDLM probabilities per split of ``predictions.csv`` (train, val, prospective).

    A split that is absent is left out; one whose calibration is not estimable (a single class, separation)
    keeps the numbers that are defined and a ``note``.
    """
    import warnings

    import pandas as pd

    from mvi_tf import calibration

    path = RunFiles(Path(run_dir)).predictions_path
    if not path.exists():
        return {"note": f"{PREDICTIONS_FILE} not found in the run directory"}
    frame = pd.read_csv(path, dtype={"patient_id": str})
    if not {"split", "label", "cdlm"} <= set(frame.columns):
        return {"note": f"predictions.csv lacks split/label/cdlm columns. Received: columns={list(frame.columns)}"}
    out: dict[str, Any] = {"definitions": CALIBRATION_NOTE}
    if "recalibration_fit" in frame.columns:  # a run written by `mvi-tf recalibrate`
        fitted = frame["recalibration_fit"] == 1
        frame = frame[~fitted]
        out["definitions"] += (f" The {int(fitted.sum())} patients the recalibration was fitted on are left out "
                               "(their calibration is optimistic by construction).")
    for split in CALIBRATION_SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            result = calibration.calibration(part["label"].to_numpy(int), part["cdlm"].to_numpy(float)).as_dict()
        entry = {k: (None if isinstance(result[k], float) and not np.isfinite(result[k]) else result[k])
                 for k in CALIBRATION_KEYS}
        notes = sorted({str(w.message).rstrip(".") for w in caught if issubclass(w.category, RuntimeWarning)})
        if notes:
            entry["note"] = "; ".join(notes)
        out[split] = entry
    return out


def recalibration_record(run_dir: Path) -> dict[str, Any] | None:
    """``recalibration.json`` of a run written by ``mvi-tf recalibrate`` (None for an ordinary run)."""
    path = Path(run_dir) / "recalibration.json"
    return read_json(path) if path.is_file() else None


def _recalibration_lines(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return []
    lines = [
        "## Recalibration",
        "",
        f"This version applies a logistic recalibration fitted on {record['n_fit']} patients of cohort "
        f"`{record['cohort']}` ({record['method']}): p' = expit({record['intercept']:.4f} + "
        f"{record['slope']:.4f} x logit(p)). Threshold {record['threshold']['original']:.4f} -> "
        f"{record['threshold']['recalibrated']:.4f} (same predicted groups).",
        "",
        "| patients | n | calibration-in-the-large before | after | slope before | after | O/E before | after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for part in ("fit", "held_out"):
        before, after = record["before"].get(part, {}), record["after"].get(part, {})
        if not before.get("n"):
            continue
        cells = [part.replace("_", " "), str(before["n"])]
        for key in ("intercept", "slope", "oe_ratio"):
            cells += ["n/a" if row.get(key) is None else f"{row[key]:.3f}" for row in (before, after)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _calibration_lines(calibration: dict[str, Any]) -> list[str]:
    lines = ["## Calibration", ""]
    splits = [s for s in CALIBRATION_SPLITS if s in calibration]
    if not splits:
        return lines + [calibration.get("note", "No calibration available."), ""]

    def ci(entry: dict, key: str) -> str:
        if entry.get(key) is None:
            return "n/a"
        low, high = entry.get(key + "_ci_low"), entry.get(key + "_ci_high")
        bounds = "n/a" if low is None or high is None else f"{low:.2f} to {high:.2f}"
        return f"{entry[key]:.2f} ({bounds})"

    prospective = calibration.get("prospective")
    if prospective:
        lines += [
            f"On the prospective cohort (n = {prospective['n']}, {prospective['n_events']} with MVI) the CDLM's "
            f"calibration-in-the-large is {ci(prospective, 'intercept')}, its calibration slope "
            f"{ci(prospective, 'slope')} and its observed/expected ratio {ci(prospective, 'oe_ratio')}.",
            "",
        ]
    lines += [
        "| cohort | n (MVI+) | observed / mean predicted | calibration-in-the-large (95% CI) | slope (95% CI) "
        "| O/E (95% CI) | Brier (scaled) | E_avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split in splits:
        e = calibration[split]
        lines.append(
            f"| {CALIBRATION_SPLITS[split]} | {e['n']} ({e['n_events']}) | {_fmt(e['observed'])} / "
            f"{_fmt(e['expected'])} | {ci(e, 'intercept')} | {ci(e, 'slope')} | {ci(e, 'oe_ratio')} | "
            f"{_fmt(e['brier'])} ({_fmt(e['brier_scaled'])}) | {_fmt(e['e_avg'])} |"
        )
    notes = [f"{CALIBRATION_SPLITS[s]}: {calibration[s]['note']}" for s in splits if calibration[s].get("note")]
    return lines + ["", calibration["definitions"], *notes, ""]


def image_input_text(schema: dict) -> str:
    """What one phase's image input holds, for the ROI sampling the records were prepared with."""
    prepare = schema.get("prepare_config") or {}
    if prepare.get("sampling") == "unwrapped":
        inner, outer = prepare.get("band_mm", ("?", "?"))
        where = (f"the peritumoral band unwrapped along the tumour boundary (row i: the ray from the centroid of "
                 f"the largest section at angle 2*pi*i/S; columns: {inner} to {outer} mm from the boundary)")
    else:
        where = "the square tumour ROI"
    return (f"float32 (batch, S, S, 3) in [0, 1]: three contiguous axial slices of {where} after per-phase "
            "windowing; ImageNet mean/std normalisation happens inside the model")


def build_model_card(
    *,
    name: str,
    version: int,
    modality: str,
    phases: list[str],
    image_size: int,
    run: dict[str, Any],
    signature: dict,
    tflite: dict[str, Any],
    parity: dict[str, Any],
    synthetic: bool,
) -> dict[str, Any]:
    """Assemble the model card as a JSON-serialisable dict (see module docstring for what it is used for)."""
    schema = run["schema"]
    by_name = {entry["name"]: entry for entry in schema_features(schema)}
    tabular = [{**by_name.get(f, {"name": f}), "position": i} for i, f in enumerate(run["selected"])]
    return {
        "name": name,
        "version": int(version),
        "model": "CDLM (combined deep-learning model: per-phase ResNet18 signatures + clinical/radiological)",
        "modality": modality,
        "phases": list(phases),
        "image_size": int(image_size),
        "image_input": image_input_text(schema),
        "tabular_features": list(run["selected"]),
        "tabular_encoding": tabular,
        "threshold": float(run["threshold"]),
        "threshold_rule": "Youden index on the training split (thresholds.json 'cdlm')",
        "signature": signature,
        "metrics": run["metrics"],
        "training_cohort": cohort_summary(run["run_dir"], schema),
        "calibration": cdlm_calibration(run["run_dir"]),
        "recalibration": recalibration_record(run["run_dir"]),
        "tflite": tflite,
        "parity": parity,
        "synthetic": bool(synthetic),
        "intended_use": INTENDED_USE,
        "not_a_medical_device": NOT_A_DEVICE,
        "schema": schema,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    return str(value)


def render_markdown(card: dict[str, Any]) -> str:
    """Render the card as Markdown for people (the JSON stays the machine-readable copy)."""
    lines = [f"# Model card: {card['name']} (version {card['version']})", ""]
    if card["synthetic"]:
        lines += [f"> **{SYNTHETIC_BANNER}**", ""]
    lines += [f"> **{NOT_A_DEVICE}**", "", "## Intended use", "", card["intended_use"], ""]
    lines += [
        "## Inputs",
        "",
        f"- Modality: `{card['modality']}`; phases (one input each, named after the phase): "
        + ", ".join(f"`{p}`" for p in card["phases"]),
        f"- Images: {card['image_input']}; S = {card['image_size']}",
        f"- `tabular`: float32 (batch, {len(card['tabular_features'])}), features in this order:",
        "",
        "| position | feature | encoding / scaling |",
        "| --- | --- | --- |",
    ]
    for entry in card["tabular_encoding"]:
        extra = {k: v for k, v in entry.items() if k not in ("name", "position")}
        lines.append(f"| {entry['position']} | `{entry['name']}` | {json.dumps(extra, default=str) if extra else '-'} |")
    lines += ["", "## Outputs", ""]
    for out_name, spec in card["signature"].get("outputs", {}).items():
        lines.append(f"- `{out_name}`: {spec['dtype']} {spec['shape']}")
    lines += [
        "",
        f"Predicted group: MVI-positive when `mvi_probability` >= {card['threshold']:.4f} ({card['threshold_rule']}).",
        "",
        "## Training cohort",
        "",
        "```json",
        json.dumps(card["training_cohort"], indent=2, default=str) if card["training_cohort"] else "{}",
        "```",
        "",
        "## Metrics",
        "",
        "```json",
        json.dumps(card["metrics"], indent=2, default=str) if card["metrics"] else "{}",
        "```",
        "",
        *_calibration_lines(card.get("calibration", {})),
        *_recalibration_lines(card.get("recalibration")),
        "## Export parity",
        "",
        "| check | value | limit |",
        "| --- | --- | --- |",
    ]
    for key, item in card["parity"].items():
        if isinstance(item, dict) and "value" in item:
            lines.append(f"| {key} | {_fmt(item.get('value'))} | {_fmt(item.get('limit'))} |")
    auc = card["parity"].get("validation_auc")
    lines += ["", f"Parity inputs: {card['parity'].get('data', 'n/a')}."]
    if isinstance(auc, dict):
        lines.append(f"Validation-split AUC (n={auc['n']}): "
                     + ", ".join(f"{m} {_fmt(auc.get(m))}" for m in ("float32", "dynamic", "int8") if m in auc)
                     + " (target: quantised within 0.01 of float32).")
        lines += [f"Not available: {reason}." for reason in dict.fromkeys((auc.get("not_available") or {}).values())]
    elif auc:
        lines.append(f"Validation-split AUC: {auc}.")
    lines += ["", "## TFLite models", "", INT8_NOTE, ""]
    for mode, info in card["tflite"].items():
        if isinstance(info, dict):
            lines.append(f"- `{mode}`: `{info.get('file')}` ({_fmt(info.get('bytes'))} bytes)")
        else:
            lines.append(f"- {mode}: {info}")
    return "\n".join(lines) + "\n"


def write_model_card(card: dict[str, Any], version_dir: str | Path) -> tuple[Path, Path]:
    """Write ``model_card.json`` and ``model_card.md`` into ``version_dir``; returns both paths."""
    version_dir = Path(version_dir)

    def _default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"Not JSON serialisable in model card: {type(value)}")

    json_path = version_dir / CARD_JSON
    json_path.write_text(json.dumps(card, indent=2, default=_default))
    md_path = version_dir / CARD_MD
    md_path.write_text(render_markdown(card))
    return json_path, md_path


def read_model_card(path: str | Path) -> dict[str, Any]:
    """Read a ``model_card.json`` (given the file or the version folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_JSON
    if not path.is_file():
        raise FileNotFoundError(f"No model card at {path}; export the model with `mvi-tf export`.")
    return json.loads(path.read_text())
