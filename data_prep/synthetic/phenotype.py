"""The generative model of the synthetic cohort: centres, MVI, tumour phenotype, signs, table and outcome.

Everything a patient *is* is drawn here, before any pixel is rendered, from a per-patient random stream
derived from the master seed. The model is a directed graph with a known factorisation, so the
Bayes-optimal posterior P(MVI | what one modality's images and the clinical table show) is computed in
closed form (:func:`bayes_log_odds`).

Generative story for one patient of centre ``c``:

1. MVI label. Each centre holds a fixed number of MVI-positive patients (``round(n * rate)``, at least two of
   each label), placed by a seeded permutation, so every patient has the prior ``P(MVI) = n_pos / n``.
   A latent biological risk ``r ~ N(mu_c, 1.2)`` with ``MVI ~ Bernoulli(sigmoid(r))`` is drawn given the label
   (rejection sampling); it is recorded in ``truth/`` and raises the outcome hazard, but nothing in the
   images or the table depends on ``r`` beyond the label.
2. Given MVI, independently: tumour size (truncated log-normal, Table 2 of Wei et al. 2021), macroscopic
   multifocality, lobulated margin, typical enhancement pattern, AFP category; and, per modality, the
   presence of each peritumoral sign in the *invasion sector* (MVI-positive) or in a *mimic sector*
   (MVI-negative, same geometry distribution, lower probabilities: perfusion anomalies, partial-volume
   capsule gaps). The sector's geometry, sign intensities, microsatellite counts and every distractor
   (necrosis, fat, haemorrhage, capsule presence, HBP tumour hypointensity, laboratory values other than
   AFP) have the same distribution for both labels, so they carry no information.
3. Radiologist readings in ``clinical.csv`` are noisy reads of the rendered signs: given the rendered image
   they are independent of MVI, so they add nothing to the image-based posterior, and a model on the
   radiological columns alone stays well below the Bayes AUC (the sector's signs are only fully in the pixels).
4. PFS and OS: exponential hazards raised by MVI, size and the latent risk; administrative censoring
   between 6 and 46 months and random drop-out.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.special import expit, logit
from scipy.stats import norm

MODALITY_PHASES: dict[str, tuple[str, ...]] = {
    "ct": ("plain", "arterial", "portal"),
    "mri": ("t2", "arterial", "portal", "transitional", "hepatobiliary"),
}
"""Phases written per modality, in acquisition order."""

MASK_PHASE: dict[str, str] = {"ct": "portal", "mri": "hepatobiliary"}
"""Phase whose series each tumour mask and invasion mask is drawn on."""

SIGNS: dict[str, tuple[str, ...]] = {
    "ct": ("peritumoral_enhancement", "capsule_interruption", "microsatellites"),
    "mri": (
        "peritumoral_enhancement",
        "capsule_interruption",
        "peritumoral_hbp_hypointensity",
        "microsatellites",
    ),
}
"""Peritumoral signs rendered in the invasion (or mimic) sector, per modality."""

# P(sign visible | MVI=1), P(sign visible | MVI=0). EOB-MRI sees more than CT (Wei et al. 2021).
SIGN_PROBABILITIES: dict[str, dict[str, tuple[float, float]]] = {
    "ct": {
        "peritumoral_enhancement": (0.43, 0.20),
        "capsule_interruption": (0.45, 0.22),
        "microsatellites": (0.20, 0.08),
    },
    "mri": {
        "peritumoral_enhancement": (0.52, 0.20),
        "capsule_interruption": (0.50, 0.21),
        "peritumoral_hbp_hypointensity": (0.58, 0.17),
        "microsatellites": (0.30, 0.07),
    },
}

SIGN_PHASES: dict[str, tuple[str, ...] | None] = {
    "peritumoral_enhancement": ("arterial",),
    "peritumoral_hbp_hypointensity": ("hepatobiliary",),
    "capsule_interruption": None,
    "microsatellites": None,
}
"""Phases in which each peritumoral sign is rendered (None: every phase). A capsule interruption shows only
where the tumour has a capsule."""


def visible_signs(truth_row: dict, phase: str) -> list[str]:
    """Peritumoral signs of one study (a ``truth/patients.csv`` row) that are rendered in ``phase``'s image."""
    shown = []
    for sign, phases in SIGN_PHASES.items():
        if int(float(truth_row.get(f"sign_{sign}", 0) or 0)) != 1:
            continue
        if phases is not None and phase not in phases:
            continue
        if sign == "capsule_interruption" and int(float(truth_row.get("capsule_present", 0) or 0)) != 1:
            continue
        shown.append(sign)
    return shown


# Tumour-level (modality-independent) findings: P(present | MVI=1), P(present | MVI=0).
MULTIFOCAL_P = (0.27, 0.17)
LOBULATED_P = (0.60, 0.50)
TYPICAL_PATTERN_P = (0.70, 0.64)
CAPSULE_P = 0.70  # radiologic capsule, unrelated to MVI (Table 2, p = 0.93)
HBP_TUMOUR_HYPO_P = 0.90  # unrelated to MVI
NECROSIS_P, FAT_P, HAEMORRHAGE_P = 0.30, 0.15, 0.12  # distractors, unrelated to MVI
# AFP categories (<20, 20-400, >400 ng/mL), the paper's cut-offs; weakly informative.
AFP_CUTS = (20.0, 400.0)
AFP_P = {1: (0.38, 0.32, 0.30), 0: (0.57, 0.23, 0.20)}
SIZE_LIMITS_CM = (1.0, 18.0)


@dataclasses.dataclass(frozen=True)
class CentreSpec:
    """One hospital of the synthetic study.

    Parameters
    ----------
    code : str
        Centre code used in ``patient_id`` and the ``centre`` column (``C1``).
    cohort : str
        ``train`` or ``prospective``.
    modalities : tuple of str
        Modalities every patient of the centre has (``("ct",)``, ``("ct", "mri")``).
    n_patients : int
        Number of patients at ``scale=1`` (the paper's section 2.1).
    mvi_rate : float
        Fraction of MVI-positive patients.
    size_lognormal : dict
        ``{1: (mu, sigma), 0: (mu, sigma)}``: the tumour diameter in cm is log-normal with these parameters,
        truncated to :data:`SIZE_LIMITS_CM`, by MVI label.
    """

    code: str
    cohort: str
    modalities: tuple[str, ...]
    n_patients: int
    mvi_rate: float
    size_lognormal: dict[int, tuple[float, float]]


CENTRES: tuple[CentreSpec, ...] = (
    CentreSpec("C1", "train", ("ct",), 156, 0.333, {1: (1.55, 0.80), 0: (1.00, 0.90)}),
    CentreSpec("C2", "train", ("ct",), 150, 0.333, {1: (1.55, 0.80), 0: (1.00, 0.90)}),
    CentreSpec("C3", "train", ("mri",), 207, 0.437, {1: (1.20, 0.65), 0: (0.84, 0.62)}),
    CentreSpec("C4", "train", ("mri",), 122, 0.437, {1: (1.20, 0.65), 0: (0.84, 0.62)}),
    CentreSpec("C5", "prospective", ("ct", "mri"), 115, 0.470, {1: (1.76, 0.46), 0: (1.56, 0.46)}),
)
"""The paper's five centres: two CT training, two MRI training, one prospective with both modalities.

Tumour sizes (cm, mean +- sd after truncation to 1-18 cm): CT training 5.6 +- 3.7 (MVI+) vs 4.0 +- 3.0
(MVI-), close to Table 2's 5.8 +- 4.3 vs 4.0 +- 3.6; MRI training 4.1 +- 3.0 vs 2.8 +- 1.9 and prospective
6.5 +- 3.1 vs 5.3 +- 2.6, narrower than Table 2's 4.1 vs 2.3 and 7.6 vs 4.7 cm so that size alone does not
decide the CT task.
"""


@dataclasses.dataclass
class SectorGeometry:
    """Peritumoral sector (true invasion for MVI-positive, mimic otherwise), relative to the tumour.

    Angles are in the axial plane of patient coordinates (LPS), ``atan2(y, x)`` in degrees.
    """

    center_deg: float
    width_deg: float
    z_offset_mm: float
    half_height_mm: float
    band_mm: float
    microsatellites: list[tuple[float, float, float, float]]  # (angle_deg, dz_mm, depth_mm, radius_mm)


@dataclasses.dataclass
class Phenotype:
    """Everything drawn for one patient; rendering and tables read from it."""

    patient_id: str
    centre: str
    cohort: str
    modalities: tuple[str, ...]
    index: int
    mvi: int
    prior: float
    latent_risk: float
    clinical: dict[str, object]
    afp_category: int
    size_cm: float
    lobulated: bool
    lobulation: list[tuple[int, float, float]]  # (harmonic, amplitude, phase)
    z_stretch: float
    multifocal: bool
    satellites: list[tuple[float, float, float, float]]  # (dx_mm, dy_mm, dz_mm, radius_mm)
    capsule: bool
    typical: bool
    hbp_tumour_hypo: bool
    necrosis: tuple[float, float, float, float] | None  # (dx, dy, dz, radius) relative to tumour, mm
    fat: tuple[float, float, float, float] | None
    haemorrhage: tuple[float, float, float, float] | None
    tumour_offset_unit: tuple[float, float]  # in-plane tumour position in the liver, in [-1, 1] of the room
    table_z_mm: float
    body_shift_mm: tuple[float, float]
    sector: SectorGeometry
    signs: dict[str, dict[str, bool]]
    readings: dict[str, dict[str, object]]
    outcome: dict[str, float | int]
    posterior: dict[str, float] = dataclasses.field(default_factory=dict)


def centre_sizes(scale: float) -> dict[str, int]:
    """Number of patients per centre at ``scale`` (at least four, so that two of each label fit).

    Parameters
    ----------
    scale : float
        1.0 gives the paper's 750 patients.

    Returns
    -------
    dict
        Centre code to number of patients.
    """
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number. Received: scale={scale}")
    return {c.code: max(4, round(c.n_patients * scale)) for c in CENTRES}


def _n_positive(n: int, rate: float) -> int:
    return int(min(max(round(n * rate), 2), n - 2))


def _size_log_density(size_cm: float, spec: CentreSpec, label: int) -> float:
    """Log density of the truncated log-normal size model (without the common 1/x Jacobian)."""
    mu, sigma = spec.size_lognormal[label]
    lo, hi = (math.log(v) for v in SIZE_LIMITS_CM)
    z_mass = norm.cdf((hi - mu) / sigma) - norm.cdf((lo - mu) / sigma)
    return float(norm.logpdf(math.log(size_cm), mu, sigma) - math.log(z_mass))


def _draw_size(rng: np.random.Generator, spec: CentreSpec, label: int) -> float:
    mu, sigma = spec.size_lognormal[label]
    while True:
        value = float(np.exp(rng.normal(mu, sigma)))
        if SIZE_LIMITS_CM[0] <= value <= SIZE_LIMITS_CM[1]:
            return value


def _bern(rng: np.random.Generator, probs: tuple[float, float], label: int) -> bool:
    return bool(rng.random() < (probs[0] if label else probs[1]))


def _log_ratio(present: bool, probs: tuple[float, float]) -> float:
    p1, p0 = probs
    return math.log(p1 / p0) if present else math.log((1 - p1) / (1 - p0))


def _draw_clinical(rng: np.random.Generator, label: int) -> tuple[dict[str, object], int]:
    """Demographics and laboratory values; only the AFP category depends on MVI."""
    afp_category = int(rng.choice(3, p=AFP_P[label]))
    bounds = [(1.0, AFP_CUTS[0]), AFP_CUTS, (AFP_CUTS[1], 20000.0)][afp_category]
    afp = float(np.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))
    aetiology = str(rng.choice(["HBV", "HCV", "other"], p=[0.93, 0.03, 0.04]))
    clinical = {
        "age": int(np.clip(round(rng.normal(54.0, 10.5)), 18, 85)),
        "sex": "M" if rng.random() < 0.80 else "F",
        "aetiology": aetiology,
        "bilirubin_umol_l": round(float(np.exp(rng.normal(math.log(16.0), 0.45))), 1),
        "alt_u_l": round(float(np.exp(rng.normal(math.log(40.0), 0.55))), 1),
        "ast_u_l": round(float(np.exp(rng.normal(math.log(38.0), 0.50))), 1),
        "platelets_1e9_l": round(float(np.exp(rng.normal(math.log(150.0), 0.40))), 0),
        "afp_ng_ml": round(afp, 1),
    }
    return clinical, afp_category


def _offset_in_tumour(rng: np.random.Generator, radius_mm: float, frac: tuple[float, float]):
    r_focus = radius_mm * rng.uniform(*frac)
    room = max(radius_mm - r_focus - 2.0, 0.0) * 0.6
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    d = direction * room * rng.random()
    return (float(d[0]), float(d[1]), float(d[2]), float(r_focus))


def _reading(rng: np.random.Generator, truth: bool, sensitivity: float, false_positive: float) -> bool:
    return bool(rng.random() < (sensitivity if truth else false_positive))


def _draw_readings(rng: np.random.Generator, p: Phenotype, modality: str) -> dict[str, object]:
    """A radiologist's reading of what was rendered for ``modality`` (independent of MVI given the image)."""
    signs = p.signs[modality]
    ci_visible = p.capsule and signs["capsule_interruption"]
    if not p.capsule:
        capsule = "absent" if rng.random() < 0.9 else "complete"
    elif _reading(rng, ci_visible, 0.60, 0.10):
        capsule = "interrupted"
    else:
        capsule = "complete"
    lobulated_read = _reading(rng, p.lobulated, 0.85, 0.15)
    typical_read = _reading(rng, p.typical, 0.90, 0.10)
    reading: dict[str, object] = {
        "tumour_size_cm": round(max(0.5, p.size_cm + rng.normal(0.0, 0.25)), 1),
        "tumour_number": 1 + len(p.satellites),
        "margin": "non-smooth" if lobulated_read else "smooth",
        "peritumoral_enhancement": "present"
        if _reading(rng, signs["peritumoral_enhancement"], 0.65, 0.12)
        else "absent",
        "enhancement_pattern": "typical" if typical_read else "atypical",
        "capsule": capsule,
        "hbp_tumour_hypointensity": "",
        "hbp_peritumoral_hypointensity": "",
    }
    if modality == "mri":
        reading["hbp_tumour_hypointensity"] = (
            "present" if _reading(rng, p.hbp_tumour_hypo, 0.95, 0.05) else "absent"
        )
        reading["hbp_peritumoral_hypointensity"] = (
            "present" if _reading(rng, signs["peritumoral_hbp_hypointensity"], 0.65, 0.10) else "absent"
        )
    return reading


def _draw_outcome(rng: np.random.Generator, label: int, size_cm: float, latent: float) -> dict[str, float | int]:
    """PFS/OS (months): exponential hazards raised by MVI, size and latent risk; censoring and drop-out."""
    risk = 0.50 * label + 0.35 * math.log(size_cm / 5.0) + 0.10 * latent
    t_prog = rng.exponential(1.0 / (0.042 * math.exp(risk)))
    t_death = rng.exponential(1.0 / (0.0075 * math.exp(0.25 * label + 0.5 * math.log(size_cm / 5.0))))
    follow_up = rng.uniform(6.0, 46.0)
    if rng.random() < 0.07:  # lost to follow-up
        follow_up = rng.uniform(1.0, follow_up)
    t_pfs = min(t_prog, t_death)
    os_months = round(max(min(t_death, follow_up), 0.1), 1)
    pfs_months = round(max(min(t_pfs, follow_up), 0.1), 1)
    return {
        "pfs_months": min(pfs_months, os_months),
        "pfs_event": int(t_pfs <= follow_up),
        "os_months": os_months,
        "os_event": int(t_death <= follow_up),
    }


def _draw_sector(rng: np.random.Generator, radius_mm: float) -> SectorGeometry:
    width = float(rng.uniform(45.0, 90.0))
    half_height = float(np.clip(rng.uniform(0.35, 0.6) * radius_mm, 6.0, 20.0))
    band = float(rng.uniform(8.0, 12.0))
    center = float(rng.uniform(-180.0, 180.0))
    z_offset = float(rng.uniform(-0.3, 0.3) * radius_mm)
    microsatellites = []
    for _ in range(int(rng.integers(2, 5))):
        microsatellites.append(
            (
                center + float(rng.uniform(-0.4, 0.4)) * width,
                z_offset + float(rng.uniform(-0.6, 0.6)) * half_height,
                float(rng.uniform(3.5, band - 1.0)),
                float(rng.uniform(2.5, 4.0)),
            )
        )
    return SectorGeometry(center, width, z_offset, half_height, band, microsatellites)


def draw_phenotype(
    seed: int, spec: CentreSpec, index: int, label: int, prior: float
) -> Phenotype:
    """Draw one patient of a centre given the MVI label.

    Parameters
    ----------
    seed : int
        Master seed of the cohort.
    spec : CentreSpec
        The patient's centre.
    index : int
        Position of the patient in the centre (0-based); with ``seed`` it fixes the random stream.
    label : int
        MVI label (0 or 1).
    prior : float
        The centre's MVI prevalence used as prior in the Bayes posterior.

    Returns
    -------
    Phenotype
    """
    centre_number = int(spec.code[1:])
    rng = np.random.default_rng(np.random.SeedSequence([seed, centre_number, index, 1]))
    mu_c = float(logit(spec.mvi_rate)) * 1.25
    while True:  # latent risk given the label, by rejection
        latent = float(rng.normal(mu_c, 1.2))
        if (rng.random() < expit(latent)) == bool(label):
            break
    clinical, afp_category = _draw_clinical(rng, label)
    size_cm = _draw_size(rng, spec, label)
    radius = size_cm * 5.0
    lobulated = _bern(rng, LOBULATED_P, label)
    amplitudes = (0.07, 0.13) if lobulated else (0.0, 0.02)
    lobulation = [
        (int(rng.integers(3, 7)), float(rng.uniform(*amplitudes)), float(rng.uniform(0, 2 * math.pi))),
        (int(rng.integers(5, 9)), float(rng.uniform(*amplitudes)) * 0.6, float(rng.uniform(0, 2 * math.pi))),
    ]
    multifocal = _bern(rng, MULTIFOCAL_P, label)
    satellites = []
    if multifocal:
        for _ in range(1 if rng.random() < 0.7 else 2):
            angle = rng.uniform(0, 2 * math.pi)
            r_sat = float(rng.uniform(5.0, 11.0))
            dist = radius + r_sat + float(rng.uniform(12.0, 30.0))
            satellites.append(
                (dist * math.cos(angle), dist * math.sin(angle), float(rng.uniform(-0.4, 0.4) * radius), r_sat)
            )
    capsule = bool(rng.random() < CAPSULE_P)
    typical = _bern(rng, TYPICAL_PATTERN_P, label)
    hbp_tumour_hypo = bool(rng.random() < HBP_TUMOUR_HYPO_P)
    big = radius >= 12.0
    necrosis = _offset_in_tumour(rng, radius, (0.30, 0.50)) if big and rng.random() < NECROSIS_P else None
    fat = _offset_in_tumour(rng, radius, (0.12, 0.22)) if big and rng.random() < FAT_P else None
    haem = _offset_in_tumour(rng, radius, (0.15, 0.28)) if big and rng.random() < HAEMORRHAGE_P else None
    tumour_offset = (float(rng.uniform(-1.0, 1.0)), float(rng.uniform(-1.0, 1.0)))
    table_z = float(rng.uniform(-250.0, -120.0))
    body_shift = (float(rng.uniform(-8.0, 8.0)), float(rng.uniform(-8.0, 8.0)))
    sector = _draw_sector(rng, radius)
    signs = {
        m: {s: _bern(rng, SIGN_PROBABILITIES[m][s], label) for s in SIGNS[m]} for m in spec.modalities
    }
    outcome = _draw_outcome(rng, label, size_cm, latent)
    p = Phenotype(
        patient_id=f"{spec.code}-{index + 1:04d}",
        centre=spec.code,
        cohort=spec.cohort,
        modalities=spec.modalities,
        index=index,
        mvi=int(label),
        prior=prior,
        latent_risk=latent,
        clinical=clinical,
        afp_category=afp_category,
        size_cm=size_cm,
        lobulated=lobulated,
        lobulation=lobulation,
        z_stretch=float(rng.uniform(0.9, 1.1)),
        multifocal=multifocal,
        satellites=satellites,
        capsule=capsule,
        typical=typical,
        hbp_tumour_hypo=hbp_tumour_hypo,
        necrosis=necrosis,
        fat=fat,
        haemorrhage=haem,
        tumour_offset_unit=tumour_offset,
        table_z_mm=table_z,
        body_shift_mm=body_shift,
        sector=sector,
        signs=signs,
        readings={},
        outcome=outcome,
    )
    p.readings = {m: _draw_readings(rng, p, m) for m in spec.modalities}
    p.posterior = {m: float(expit(bayes_log_odds(p, m, spec))) for m in spec.modalities}
    return p


def bayes_log_odds(p: Phenotype, modality: str, spec: CentreSpec) -> float:
    """Log-odds of P(MVI | everything ``modality``'s images and the clinical table show), in closed form.

    The sum of the log prior odds and the log likelihood ratios of the informative observables: tumour size,
    multifocality, margin, enhancement pattern, AFP category and the presence of each peritumoral sign of
    the modality (capsule interruption only counts when a capsule exists to be interrupted). Radiologist
    readings are functions of the image plus reader noise and drop out; all other variables have the same
    distribution under both labels.

    Parameters
    ----------
    p : Phenotype
        The patient.
    modality : str
        ``ct`` or ``mri``; must be one of the patient's modalities.
    spec : CentreSpec
        The patient's centre (its size model).

    Returns
    -------
    float
        Log posterior odds of MVI.
    """
    if modality not in p.signs:
        raise ValueError(f"Patient {p.patient_id} has no {modality!r} study. Received: modality={modality}")
    lo = float(logit(p.prior))
    lo += _size_log_density(p.size_cm, spec, 1) - _size_log_density(p.size_cm, spec, 0)
    lo += _log_ratio(p.multifocal, MULTIFOCAL_P)
    lo += _log_ratio(p.lobulated, LOBULATED_P)
    lo += _log_ratio(p.typical, TYPICAL_PATTERN_P)
    lo += math.log(AFP_P[1][p.afp_category] / AFP_P[0][p.afp_category])
    for sign, present in p.signs[modality].items():
        if sign == "capsule_interruption" and not p.capsule:
            continue
        lo += _log_ratio(present, SIGN_PROBABILITIES[modality][sign])
    return lo


def draw_cohort_phenotypes(seed: int = 0, scale: float = 1.0) -> list[Phenotype]:
    """Draw every patient of the cohort without rendering any image.

    Parameters
    ----------
    seed : int
        Master seed; the same seed gives the same cohort.
    scale : float
        1.0 gives the paper's 750 patients; every centre keeps at least two patients of each label.

    Returns
    -------
    list of Phenotype
        Ordered by centre then patient number.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed}")
    sizes = centre_sizes(scale)
    patients: list[Phenotype] = []
    for spec in CENTRES:
        n = sizes[spec.code]
        n_pos = _n_positive(n, spec.mvi_rate)
        centre_rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(spec.code[1:]), 0]))
        labels = np.zeros(n, dtype=int)
        labels[:n_pos] = 1
        labels = centre_rng.permutation(labels)
        prior = n_pos / n
        for index in range(n):
            patients.append(draw_phenotype(int(seed), spec, index, int(labels[index]), prior))
    return patients

