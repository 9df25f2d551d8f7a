"""Clinical and radiological columns -> the tabular feature vector, by a declared schema.

Categories follow the paper (Wei et al. 2021, Table 2): total bilirubin > 20.4 umol/L, ALT > 40 U/L,
AST > 35 U/L, platelets > 125 x 10^9/L, AFP < 20 / 20-400 / > 400 ng/mL (a value equal to a cut-off falls in
the lower group), tumour number solitary/multiple, smooth/non-smooth margin, peritumoral enhancement, typical/
atypical enhancement, radiologic capsule (absent / complete / interrupted) and (MRI only) hepatobiliary-phase tumour and peritumoral
hypointensity. Categorical columns are dummy coded against a reference level; continuous columns (age, tumour
size) are standardised with a mean and standard deviation fitted on the ``train`` cohort only and stored in the
schema. A missing or unparseable value is never filled in: it raises an `InputError` naming column and value,
and `prepare_cohort` skips and reports that patient. So does a number outside its column's plausible range
(`PLAUSIBLE_RANGES`: a typing error such as age 999 or AFP 1e30 must not enter the scaling fitted on everyone).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from data_prep.errors import InputError

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "?", "missing", "-"})
_TRUE = {"1", "1.0", "yes", "y", "true", "present", "positive", "pos"}
_FALSE = {"0", "0.0", "no", "n", "false", "absent", "negative", "neg"}


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    """One clinical.csv column and how it becomes features.

    Attributes
    ----------
    name : str
        Column in clinical.csv.
    kind : {"numeric", "cutoff", "category"}
    features : tuple of str
        Names of the produced features, in order.
    cutoffs : tuple of float
        ``cutoff`` columns: ascending cut-offs; feature ``n`` is 1 when the value lies above cut-off ``n`` and not
        above cut-off ``n + 1``.
    levels : tuple of str
        ``category`` columns: the reference level first; one feature per other level.
    aliases : mapping of str -> str
        Spellings accepted for the levels (lower case).
    modalities : tuple of str
        Modalities that use the column.
    unit : str
    """

    name: str
    kind: str
    features: tuple[str, ...]
    cutoffs: tuple[float, ...] = ()
    levels: tuple[str, ...] = ()
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    modalities: tuple[str, ...] = ("ct", "mri")
    unit: str = ""


# Plausible ranges (inclusive, in the column's unit). Wide enough for every real patient -- AFP in HCC reaches
# millions of ng/mL, bilirubin in liver failure several hundred umol/L -- and narrow enough to catch typing
# and unit errors (age 999, a size in mm in a cm column, a follow-up in days). A site may widen them here.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),                  # years
    "bilirubin_umol_l": (0.0, 1500.0),    # umol/L
    "alt_u_l": (0.0, 20000.0),            # U/L
    "ast_u_l": (0.0, 20000.0),            # U/L
    "platelets_1e9_l": (0.0, 2000.0),     # 10^9/L
    "afp_ng_ml": (0.0, 1.0e7),            # ng/mL
    "tumour_size_cm": (0.1, 40.0),        # cm, largest diameter
    "pfs_months": (0.0, 600.0),           # months
    "os_months": (0.0, 600.0),            # months
}

_ABSENT_PRESENT = {**{t: "present" for t in _TRUE}, **{t: "absent" for t in _FALSE}}

COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("age", "numeric", ("age",), unit="years"),
    ColumnSpec("sex", "category", ("sex_male",), levels=("female", "male"),
               aliases={"f": "female", "m": "male", "woman": "female", "man": "male"}),
    ColumnSpec("aetiology", "category", ("aetiology_hbv", "aetiology_hcv"), levels=("other", "hbv", "hcv"),
               aliases={"none": "other", "none or other": "other", "etoh": "other", "alcohol": "other",
                        "nafld": "other", "unknown": "other"}),
    ColumnSpec("bilirubin_umol_l", "cutoff", ("bilirubin_gt_20_4",), cutoffs=(20.4,), unit="umol/L"),
    ColumnSpec("alt_u_l", "cutoff", ("alt_gt_40",), cutoffs=(40.0,), unit="U/L"),
    ColumnSpec("ast_u_l", "cutoff", ("ast_gt_35",), cutoffs=(35.0,), unit="U/L"),
    ColumnSpec("platelets_1e9_l", "cutoff", ("platelets_gt_125",), cutoffs=(125.0,), unit="10^9/L"),
    ColumnSpec("afp_ng_ml", "cutoff", ("afp_20_400", "afp_gt_400"), cutoffs=(20.0, 400.0), unit="ng/mL"),
    ColumnSpec("tumour_size_cm", "numeric", ("tumour_size_cm",), unit="cm"),
    ColumnSpec("tumour_number", "category", ("tumour_number_multiple",), levels=("solitary", "multiple"),
               aliases={"single": "solitary", "1": "solitary", "multifocal": "multiple"}),
    ColumnSpec("margin", "category", ("margin_non_smooth",), levels=("smooth", "non-smooth"),
               aliases={"non_smooth": "non-smooth", "nonsmooth": "non-smooth", "irregular": "non-smooth",
                        "non smooth": "non-smooth", "0": "smooth", "1": "non-smooth"}),
    ColumnSpec("peritumoral_enhancement", "category", ("peritumoral_enhancement",),
               levels=("absent", "present"), aliases=_ABSENT_PRESENT),
    ColumnSpec("enhancement_pattern", "category", ("enhancement_pattern_atypical",),
               levels=("typical", "atypical"), aliases={"0": "typical", "1": "atypical"}),
    ColumnSpec("capsule", "category", ("capsule_complete", "capsule_interrupted"),
               levels=("absent", "complete", "interrupted"),
               aliases={**{t: "absent" for t in _FALSE}, "present": "complete", "intact": "complete",
                        "1": "complete", "incomplete": "interrupted", "disrupted": "interrupted"}),
    ColumnSpec("hbp_tumour_hypointensity", "category", ("hbp_tumour_hypointensity",),
               levels=("absent", "present"), aliases=_ABSENT_PRESENT, modalities=("mri",)),
    ColumnSpec("hbp_peritumoral_hypointensity", "category", ("hbp_peritumoral_hypointensity",),
               levels=("absent", "present"), aliases=_ABSENT_PRESENT, modalities=("mri",)),
)

SUBGROUP_COLUMNS = ("age", "sex_male", "afp_ng_ml", "tumour_size_cm")


def column_specs(modality: str) -> list[ColumnSpec]:
    """The declared columns used for one modality."""
    if modality not in ("ct", "mri"):
        raise ValueError(f"modality must be 'ct' or 'mri'. Received: modality={modality!r}")
    return [c for c in COLUMNS if modality in c.modalities]


def _text(row: Mapping[str, object], column: str) -> str:
    if column not in row:
        raise InputError(f"column {column!r} is missing from the clinical row")
    value = row[column]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise InputError(f"missing value in required column {column!r}. Received: {column}={value!r}")
    text = str(value).strip()
    if text.lower() in MISSING_TOKENS:
        raise InputError(f"missing value in required column {column!r}. Received: {column}={value!r}")
    return text


def parse_number(row: Mapping[str, object], column: str, minimum: float = 0.0,
                 plausible: tuple[float, float] | None = None) -> float:
    """A finite number >= ``minimum`` within the column's plausible range, or an `InputError` naming both.

    ``plausible`` defaults to ``PLAUSIBLE_RANGES[column]`` (no range check for other columns).
    """
    text = _text(row, column)
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"column {column!r} is not a number. Received: {column}={text!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise InputError(f"column {column!r} must be a finite number >= {minimum}. Received: {column}={text!r}")
    low, high = plausible or PLAUSIBLE_RANGES.get(column, (-math.inf, math.inf))
    if not low <= number <= high:
        raise InputError(f"column {column!r} lies outside its plausible range [{low:g}, {high:g}] (a typing or "
                         f"unit error?). Received: {column}={text!r}")
    return number


def parse_flag(row: Mapping[str, object], column: str) -> int:
    """A 0/1 flag (accepts 0/1, yes/no, true/false, present/absent, positive/negative)."""
    text = _text(row, column).lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise InputError(f"column {column!r} must be 0/1 (or yes/no, present/absent). Received: {column}={text!r}")


def parse_label(row: Mapping[str, object]) -> int:
    """The MVI label (0/1) of a clinical row; an unknown label raises naming the value."""
    return parse_flag(row, "mvi")


def parse_category(spec: ColumnSpec, row: Mapping[str, object]) -> str:
    """The level of a categorical column after aliases; unknown levels raise naming column and value."""
    text = _text(row, spec.name).lower()
    if spec.name == "tumour_number":
        try:
            count = float(text)
        except ValueError:
            count = None
        if count is not None:
            if count < 1 or count != int(count):
                raise InputError(f"column 'tumour_number' must be a count >= 1 or solitary/multiple. "
                                 f"Received: tumour_number={text!r}")
            return "solitary" if count == 1 else "multiple"
    level = spec.aliases.get(text, text)
    if level not in spec.levels:
        raise InputError(f"column {spec.name!r} has unknown value; expected one of {list(spec.levels)}. "
                         f"Received: {spec.name}={text!r}")
    return level


def _raw_features(spec: ColumnSpec, row: Mapping[str, object],
                  plausible: tuple[float, float] | None = None) -> list[float]:
    if spec.kind == "numeric":
        return [parse_number(row, spec.name, plausible=plausible)]
    if spec.kind == "cutoff":
        value = parse_number(row, spec.name, plausible=plausible)
        group = int(np.searchsorted(np.asarray(spec.cutoffs), value, side="left"))
        return [1.0 if group == n + 1 else 0.0 for n in range(len(spec.cutoffs))]
    level = parse_category(spec, row)
    return [1.0 if level == other else 0.0 for other in spec.levels[1:]]


def validate_row(row: Mapping[str, object], modality: str) -> None:
    """Check that every declared column of ``modality`` parses; raises `InputError` naming column and value."""
    for spec in column_specs(modality):
        _raw_features(spec, row)


def fit_schema(rows: Sequence[Mapping[str, object]], modality: str) -> dict:
    """Fit the tabular schema (standardisation of numeric columns) on training rows.

    Parameters
    ----------
    rows : sequence of mappings
        clinical.csv rows of the ``train`` cohort (only these: the prospective cohort is never seen here).
    modality : {"ct", "mri"}

    Returns
    -------
    dict
        JSON-ready schema: ``columns`` (declared encodings and fitted scaling), ``feature_names``,
        ``fitted_on`` and ``n_fit``.

    Raises
    ------
    ValueError
        If there are no valid training rows to fit on.
    """
    specs = column_specs(modality)
    columns = []
    for spec in specs:
        entry = {"name": spec.name, "kind": spec.kind, "features": list(spec.features), "unit": spec.unit}
        if spec.kind == "cutoff":
            entry["cutoffs"] = list(spec.cutoffs)
        if spec.kind in ("numeric", "cutoff") and spec.name in PLAUSIBLE_RANGES:
            entry["plausible"] = list(PLAUSIBLE_RANGES[spec.name])
        if spec.kind == "category":
            entry["levels"] = list(spec.levels)
            entry["aliases"] = dict(spec.aliases)
        if spec.kind == "numeric":
            values = []
            for row in rows:
                try:
                    values.append(parse_number(row, spec.name))
                except InputError:
                    continue
            if not values:
                raise ValueError(f"No valid training values to fit the scaling of {spec.name!r} "
                                 f"({modality}); the train cohort is empty. Received: {len(rows)} rows")
            mean, std = float(np.mean(values)), float(np.std(values))
            if not (math.isfinite(mean) and math.isfinite(std)):
                raise ValueError(f"The scaling of {spec.name!r} ({modality}) is not finite. Received: mean={mean}, "
                                 f"std={std}")
            entry["scaling"] = {"mean": mean, "std": std if std > 1e-12 else 1.0, "n": len(values)}
        columns.append(entry)
    return {
        "columns": columns,
        "feature_names": [f for spec in specs for f in spec.features],
        "fitted_on": "train",
        "n_fit": len(rows),
        "missing_values": "patient skipped and reported; never imputed",
    }


def encode_row(row: Mapping[str, object], schema: Mapping) -> np.ndarray:
    """Encode one clinical row with a stored schema (cut-offs, dummy coding, fitted scaling).

    Parameters
    ----------
    row : mapping
        Column name -> value (as in clinical.csv).
    schema : mapping
        `fit_schema`'s result, or a records schema.json dict holding it under ``"tabular"``.

    Returns
    -------
    np.ndarray
        ``(n_features,)`` float32 in the order of ``schema["feature_names"]``.

    Raises
    ------
    InputError
        On a missing or unparseable value, naming column and value.
    """
    if "tabular" in schema:
        schema = schema["tabular"]
    by_name = {spec.name: spec for spec in COLUMNS}
    features: list[float] = []
    for entry in schema["columns"]:
        spec = by_name.get(entry["name"])
        if spec is None or list(spec.features) != list(entry["features"]):
            spec = ColumnSpec(entry["name"], entry["kind"], tuple(entry["features"]),
                              tuple(entry.get("cutoffs", ())), tuple(entry.get("levels", ())),
                              dict(entry.get("aliases", {})))
        plausible = tuple(entry["plausible"]) if "plausible" in entry else None
        values = _raw_features(spec, row, plausible)  # type: ignore[arg-type]
        if spec.kind == "numeric":
            scaling = entry["scaling"]
            values = [(values[0] - scaling["mean"]) / scaling["std"]]
        features.extend(values)
    return np.asarray(features, dtype=np.float32)


def subgroup_values(row: Mapping[str, object]) -> dict[str, float]:
    """Raw (unscaled) columns kept in the records for subgroup analyses."""
    sex = parse_category(by_name("sex"), row)
    return {"age": parse_number(row, "age"), "sex_male": float(sex == "male"),
            "afp_ng_ml": parse_number(row, "afp_ng_ml"), "tumour_size_cm": parse_number(row, "tumour_size_cm")}


def outcome_values(row: Mapping[str, object]) -> dict[str, float]:
    """PFS/OS months (>= 0) and events (0/1)."""
    return {"pfs_months": parse_number(row, "pfs_months"), "pfs_event": float(parse_flag(row, "pfs_event")),
            "os_months": parse_number(row, "os_months"), "os_event": float(parse_flag(row, "os_event"))}


def by_name(name: str) -> ColumnSpec:
    """The declared column called ``name``."""
    for spec in COLUMNS:
        if spec.name == name:
            return spec
    raise KeyError(f"No declared clinical column {name!r}. Received: name={name!r}")
