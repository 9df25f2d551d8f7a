"""Orchestration: draw the cohort, render and write every study in parallel, write the tables and truth/.

Output (docs/architecture.md, "Cohort directory")::

    OUT/manifest.csv                 patient_id, modality, phase, series_dir, series_uid
    OUT/lesions.csv                  tumour mask (DICOM-SEG or NIfTI) on the mask phase + square ROI (LPS, mm)
    OUT/clinical.csv                 labels, clinical and radiological columns, PFS/OS
    OUT/dicom/<patient_id>/<modality>/...   the DICOM series (file names not in slice order)
    OUT/masks/<patient_id>_<modality>_tumour.{dcm,nii.gz}
    OUT/truth/patients.csv           per patient and modality: Bayes P(MVI), latent risk, tumour, sector, signs
    OUT/truth/readings.csv           the radiologist's reading of every study (clinical.csv carries one)
    OUT/truth/bayes_auc.json         Bayes-optimal AUC per modality and cohort (and centre)
    OUT/truth/invasion/<patient_id>_<modality>.nii.gz   invasion sector on the mask phase's grid
    OUT/truth/synth.json             generator parameters and summary (written last: marks a complete cohort)

Mask phases: CT ``portal``; MRI ``hepatobiliary`` (where HCC is most conspicuous on EOB-MRI). Centres C1 and C5
store tumour masks as DICOM-SEG, C2-C4 as NIfTI. Centre C4 keeps all series of a study in one folder (the
manifest's ``series_uid`` picks the phase); C4 and C5 give each phase its own field of view, slice spacing and
table position. The prospective centre's patients have both modalities: their plain radiological columns hold the
MRI reading and ``ct_``-prefixed columns (``ct_margin``) the CT reading, which data_prep uses for the CT records;
``truth/readings.csv`` lists every reading.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.synthetic.dicom_writer import (
    draw_identity,
    write_nifti,
    write_seg,
    write_series,
)
from data_prep.synthetic.phantom import (
    MODALITIES,
    SCANNERS,
    _tumour_boundary,
    invasion_mask,
    render_study,
    series_geometries,
    tumour_centre_mm,
    tumour_mask,
)
from data_prep.synthetic.phenotype import (
    CENTRES,
    MASK_PHASE,
    MODALITY_PHASES,
    SIGNS,
    Phenotype,
    draw_cohort_phenotypes,
)

CLINICAL_COLUMNS = (
    "patient_id", "centre", "cohort", "mvi", "age", "sex", "aetiology", "bilirubin_umol_l", "alt_u_l", "ast_u_l",
    "platelets_1e9_l", "afp_ng_ml", "tumour_size_cm", "tumour_number", "margin", "peritumoral_enhancement",
    "enhancement_pattern", "capsule", "hbp_tumour_hypointensity", "hbp_peritumoral_hypointensity",
    "pfs_months", "pfs_event", "os_months", "os_event",
)
RADIOLOGICAL_COLUMNS = (
    "tumour_size_cm", "tumour_number", "margin", "peritumoral_enhancement", "enhancement_pattern", "capsule",
    "hbp_tumour_hypointensity", "hbp_peritumoral_hypointensity",
)
MANIFEST_COLUMNS = ("patient_id", "modality", "phase", "series_dir", "series_uid")
LESION_COLUMNS = (
    "patient_id", "modality", "mask_path", "mask_segment", "mask_phase",
    "roi_center_x_mm", "roi_center_y_mm", "roi_center_z_mm", "roi_side_mm",
)
GENERATOR_VERSION = 1
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 64, 512


@dataclasses.dataclass
class CohortSummary:
    """What :func:`generate_cohort` wrote.

    Attributes
    ----------
    out_dir : Path
        The cohort directory.
    n_patients : int
        Number of patients.
    per_centre : dict
        Centre code to number of patients.
    mvi_rate : dict
        Centre code to fraction of MVI-positive patients.
    n_studies, n_series, n_files : int
        Studies (patient x modality), DICOM series and DICOM image files written.
    bayes_auc : dict
        Bayes-optimal AUC per modality and cohort (``truth/bayes_auc.json``).
    seconds : float
        Wall time of the generation.
    reused : bool
        True when an identical cohort already in ``out_dir`` was kept instead of regenerated.
    """

    out_dir: Path
    n_patients: int
    per_centre: dict[str, int]
    mvi_rate: dict[str, float]
    n_studies: int = 0
    n_series: int = 0
    n_files: int = 0
    bayes_auc: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False

    def to_json(self) -> dict:
        """A JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def _roi_side_mm(p: Phenotype) -> float:
    theta = np.linspace(-np.pi, np.pi, 721)
    max_radius = float(np.max(_tumour_boundary(p, theta, np.zeros_like(theta))))
    return round(2.0 * max_radius + 10.0, 1)


def _truth_rows(p: Phenotype) -> list[dict]:
    rows = []
    tx, ty, tz = tumour_centre_mm(p)
    sec = p.sector
    for modality in p.modalities:
        row = {
            "patient_id": p.patient_id,
            "modality": modality,
            "centre": p.centre,
            "cohort": p.cohort,
            "mvi": p.mvi,
            "p_mvi": round(p.posterior[modality], 6),
            "p_mvi_latent": round(float(1.0 / (1.0 + np.exp(-p.latent_risk))), 6),
            "latent_risk": round(p.latent_risk, 6),
            "prior": round(p.prior, 6),
            "tumour_center_x_mm": round(tx, 3),
            "tumour_center_y_mm": round(ty, 3),
            "tumour_center_z_mm": round(tz, 3),
            "tumour_radius_mm": round(p.size_cm * 5.0, 3),
            "tumour_z_stretch": round(p.z_stretch, 4),
            "sector_is_invasion": p.mvi,
            "sector_center_deg": round(sec.center_deg, 3),
            "sector_start_deg": round(sec.center_deg - sec.width_deg / 2, 3),
            "sector_end_deg": round(sec.center_deg + sec.width_deg / 2, 3),
            "sector_z_min_mm": round(tz + sec.z_offset_mm - sec.half_height_mm, 3),
            "sector_z_max_mm": round(tz + sec.z_offset_mm + sec.half_height_mm, 3),
            "sector_band_mm": round(sec.band_mm, 3),
            "capsule_present": int(p.capsule),
            "lobulated": int(p.lobulated),
            "multifocal": int(p.multifocal),
            "typical_enhancement": int(p.typical),
            "hbp_tumour_hypointense": int(p.hbp_tumour_hypo),
            "necrosis": int(p.necrosis is not None),
            "fat": int(p.fat is not None),
            "haemorrhage": int(p.haemorrhage is not None),
            "afp_category": p.afp_category,
            "size_cm": round(p.size_cm, 4),
        }
        for sign in SIGNS["mri"]:
            row[f"sign_{sign}"] = int(p.signs[modality].get(sign, False)) if sign in SIGNS[modality] else -1
        rows.append(row)
    return rows


def cohort_tables(patients: list[Phenotype]) -> dict[str, pd.DataFrame]:
    """The clinical table, per-study truth and readings of drawn patients (no images needed).

    Parameters
    ----------
    patients : list of Phenotype
        From :func:`draw_cohort_phenotypes`.

    Returns
    -------
    dict
        ``clinical`` (the ``clinical.csv`` contract), ``truth`` (``truth/patients.csv``) and ``readings``.
    """
    clinical, truth, readings = [], [], []
    ct_columns: list[str] = []
    for p in patients:
        reading_modality = "mri" if "mri" in p.modalities else "ct"
        row = {"patient_id": p.patient_id, "centre": p.centre, "cohort": p.cohort, "mvi": p.mvi}
        row.update(p.clinical)
        row.update(p.readings[reading_modality])
        row.update(p.outcome)
        record = {c: row[c] for c in CLINICAL_COLUMNS}
        if reading_modality == "mri" and "ct" in p.modalities:
            # Both modalities: the CT reading goes in ct_-prefixed columns (data_prep's per-modality override).
            for column, value in p.readings["ct"].items():
                if value == "" or value is None:
                    continue  # no CT reading of this descriptor (hepatobiliary signs are MRI-only)
                record[f"ct_{column}"] = value
                if f"ct_{column}" not in ct_columns:
                    ct_columns.append(f"ct_{column}")
        clinical.append(record)
        truth.extend(_truth_rows(p))
        for modality in p.modalities:
            readings.append({"patient_id": p.patient_id, "modality": modality, **p.readings[modality]})
    clinical_frame = pd.DataFrame(clinical, columns=list(CLINICAL_COLUMNS) + ct_columns)
    if "ct_tumour_number" in clinical_frame:
        clinical_frame["ct_tumour_number"] = clinical_frame["ct_tumour_number"].astype("Int64")
    return {
        "clinical": clinical_frame,
        "truth": pd.DataFrame(truth),
        "readings": pd.DataFrame(readings),
    }


def draw_cohort_table(seed: int = 0, scale: float = 1.0) -> dict[str, pd.DataFrame]:
    """Draw the cohort's tables without rendering images (fast; same values as :func:`generate_cohort`).

    Parameters
    ----------
    seed : int
        Master seed.
    scale : float
        1.0 is the paper's 750 patients.

    Returns
    -------
    dict
        See :func:`cohort_tables`.
    """
    return cohort_tables(draw_cohort_phenotypes(seed, scale))


def bayes_auc(truth: pd.DataFrame) -> dict:
    """AUC of the Bayes posterior ``p_mvi`` per modality and cohort, and per centre.

    Returns NaN (as ``None`` in JSON) where a group holds only one label.
    """
    from sklearn.metrics import roc_auc_score

    def auc(df: pd.DataFrame) -> float | None:
        if df["mvi"].nunique() < 2:
            return None
        return round(float(roc_auc_score(df["mvi"], df["p_mvi"])), 4)

    out: dict = {"definition": "AUC of P(MVI | the modality's images and the clinical table), analytic posterior"}
    for modality in MODALITIES:
        sub = truth[truth["modality"] == modality]
        out[modality] = {cohort: auc(g) for cohort, g in sub.groupby("cohort", sort=True)}
        out[modality]["by_centre"] = {c: auc(g) for c, g in sub.groupby("centre", sort=True)}
        out[modality]["n"] = {cohort: len(g) for cohort, g in sub.groupby("cohort", sort=True)}
    return out


def _generate_patient(task: tuple[int, Phenotype, str, int]) -> dict:
    """Render and write every study of one patient (runs in a worker process)."""
    seed, p, out_dir_str, image_size = task
    out_dir = Path(out_dir_str)
    identity = draw_identity(seed, p)
    manifest, lesions = [], []
    n_files = 0
    for modality in p.modalities:
        profile = SCANNERS[(p.centre, modality)]
        geometries = series_geometries(seed, p, modality, image_size)
        images = render_study(seed, p, modality, geometries)
        name_rng = np.random.default_rng(
            np.random.SeedSequence([seed, int(p.centre[1:]), p.index, 6, MODALITIES.index(modality)])
        )
        study_rel = Path("dicom") / p.patient_id / modality
        sources = {}
        for i, phase in enumerate(MODALITY_PHASES[modality]):
            series_rel = study_rel if profile.one_folder else study_rel / f"series_{i + 2:03d}"
            series_uid, datasets = write_series(
                out_dir / series_rel,
                images[phase],
                geometries[phase],
                seed=seed,
                p=p,
                identity=identity,
                modality=modality,
                phase=phase,
                series_number=i + 2,
                profile=profile,
                name_rng=name_rng,
                keep_datasets=profile.mask_format == "seg" and phase == MASK_PHASE[modality],
            )
            n_files += geometries[phase].n_slices
            sources[phase] = datasets
            manifest.append(
                {
                    "patient_id": p.patient_id,
                    "modality": modality,
                    "phase": phase,
                    "series_dir": series_rel.as_posix(),
                    "series_uid": series_uid,
                }
            )
        mask_phase = MASK_PHASE[modality]
        geom = geometries[mask_phase]
        mask = tumour_mask(p, geom)
        if profile.mask_format == "seg":
            mask_rel = Path("masks") / f"{p.patient_id}_{modality}_tumour.dcm"
            write_seg(
                out_dir / mask_rel,
                sources[mask_phase],
                mask,
                seed=seed,
                p=p,
                modality=modality,
                content_date=identity.study_dates[modality],
            )
        else:
            mask_rel = Path("masks") / f"{p.patient_id}_{modality}_tumour.nii.gz"
            write_nifti(out_dir / mask_rel, mask, geom)
        write_nifti(out_dir / "truth" / "invasion" / f"{p.patient_id}_{modality}.nii.gz", invasion_mask(p, geom), geom)
        tx, ty, tz = tumour_centre_mm(p)
        lesions.append(
            {
                "patient_id": p.patient_id,
                "modality": modality,
                "mask_path": mask_rel.as_posix(),
                "mask_segment": 1,
                "mask_phase": mask_phase,
                "roi_center_x_mm": round(tx, 3),
                "roi_center_y_mm": round(ty, 3),
                "roi_center_z_mm": round(tz, 3),
                "roi_side_mm": _roi_side_mm(p),
            }
        )
    return {"patient_id": p.patient_id, "manifest": manifest, "lesions": lesions, "n_files": n_files}


_MANAGED = ("manifest.csv", "lesions.csv", "clinical.csv", "dicom", "masks", "truth")


def _prepare_out_dir(out_dir: Path, params: dict) -> CohortSummary | None:
    """Return the summary of an identical complete cohort, clear an older synthetic one, refuse anything else."""
    marker = out_dir / "truth" / "synth.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("params") == params:
            summary = CohortSummary(**{**previous["summary"], "out_dir": out_dir, "reused": True})
            return summary
    if out_dir.exists():
        entries = sorted(e.name for e in out_dir.iterdir())
        synthetic = marker.is_file() or ((out_dir / "truth").is_dir() and (out_dir / "dicom").is_dir())
        if entries and (not synthetic or any(e not in _MANAGED for e in entries)):
            raise FileExistsError(
                "Output directory is not empty and does not hold only a synthetic cohort; choose a new "
                f"directory. Received: out_dir={out_dir} (contains {entries[:6]})"
            )
        for name in _MANAGED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return None


def generate_cohort(
    out_dir: str | os.PathLike,
    seed: int = 0,
    scale: float = 1.0,
    image_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
) -> CohortSummary:
    """Generate the synthetic multi-centre cohort in genuine DICOM.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Cohort directory; created if missing. An older synthetic cohort there is replaced; an identical one
        (same seed, scale, image size and generator version) is kept as is. Any other non-empty directory
        is refused.
    seed : int
        Master seed: the same seed gives byte-identical images, masks and tables.
    scale : float
        Fraction of the paper's cohort: 1.0 gives 750 patients (156 + 150 CT training, 207 + 122 MRI
        training, 115 prospective with both CT and MRI); every centre keeps at least two patients per label.
    image_size : int
        DICOM matrix (rows = columns), 64 to 512; the field of view is fixed per scanner, so the pixel
        spacing is ``fov / image_size``.
    workers : int, optional
        Worker processes (default: CPU count); 0 or 1 renders in this process.
    progress : bool
        Show a tqdm progress bar over patients.

    Returns
    -------
    CohortSummary
    """
    if not isinstance(image_size, (int, np.integer)) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]. Received: image_size={image_size}"
        )
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 0):
        raise ValueError(f"workers must be a non-negative integer or None. Received: workers={workers}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    params = {"seed": int(seed), "scale": float(scale), "image_size": int(image_size), "version": GENERATOR_VERSION}
    patients = draw_cohort_phenotypes(int(seed), float(scale))
    reused = _prepare_out_dir(out_dir, params)
    if reused is not None:
        return reused

    tasks = [(int(seed), p, str(out_dir), int(image_size)) for p in patients]
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    n_workers = min(n_workers, len(tasks))
    bar = tqdm(total=len(tasks), desc="synth", unit="patient", disable=not progress)
    results = []
    if n_workers <= 1:
        for task in tasks:
            results.append(_generate_patient(task))
            bar.update(1)
    else:
        with multiprocessing.get_context("spawn").Pool(n_workers) as pool:
            for result in pool.imap_unordered(_generate_patient, tasks, chunksize=1):
                results.append(result)
                bar.update(1)
    bar.close()
    results.sort(key=lambda r: r["patient_id"])

    manifest = pd.DataFrame([row for r in results for row in r["manifest"]], columns=list(MANIFEST_COLUMNS))
    lesions = pd.DataFrame([row for r in results for row in r["lesions"]], columns=list(LESION_COLUMNS))
    tables = cohort_tables(patients)
    manifest.to_csv(out_dir / "manifest.csv", index=False)
    lesions.to_csv(out_dir / "lesions.csv", index=False)
    tables["clinical"].to_csv(out_dir / "clinical.csv", index=False)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    tables["truth"].to_csv(truth_dir / "patients.csv", index=False)
    tables["readings"].to_csv(truth_dir / "readings.csv", index=False)
    auc = bayes_auc(tables["truth"])
    (truth_dir / "bayes_auc.json").write_text(json.dumps(auc, indent=2, sort_keys=True) + "\n")

    clinical = tables["clinical"]
    summary = CohortSummary(
        out_dir=out_dir,
        n_patients=len(patients),
        per_centre={c: int(n) for c, n in clinical.groupby("centre")["patient_id"].count().items()},
        mvi_rate={c: round(float(r), 4) for c, r in clinical.groupby("centre")["mvi"].mean().items()},
        n_studies=len(lesions),
        n_series=len(manifest),
        n_files=sum(r["n_files"] for r in results),
        bayes_auc=auc,
        seconds=round(time.perf_counter() - start, 2),
    )
    record = {"params": params, "summary": {k: v for k, v in summary.to_json().items() if k != "out_dir"}}
    record["summary"].pop("reused")
    (truth_dir / "synth.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return summary


__all__ = [
    "CENTRES",
    "CohortSummary",
    "bayes_auc",
    "cohort_tables",
    "draw_cohort_table",
    "generate_cohort",
]
