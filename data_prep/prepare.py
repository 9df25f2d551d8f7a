"""Orchestration of `mvi-tf prepare`: cohort directory -> per-patient ROI stacks + tabular -> TFRecords.

`prepare_cohort` validates the three CSVs, builds one job per patient and modality, runs the DICOM work in
parallel worker processes (a progress bar over patients), encodes the tabular features with a scaling fitted
on the ``train`` cohort only, and writes sharded TFRecords, ``schema.json`` per modality, ``summary.csv`` and
``prepare_report.csv`` (one line per patient and modality, written or skipped with its reason).
`prepare_patient` does the image part for one new patient without a cohort directory (used by `predict`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import tabular
from data_prep.config import DEFAULT_PHASES, MODALITIES, PrepareConfig
from data_prep.dicom_series import ScannedFile, read_series, scan_folder
from data_prep.errors import InputError
from data_prep.masks import load_mask, mask_on_volume
from data_prep.roi import Roi, roi_from_box, roi_from_mask, window_stack

logger = logging.getLogger(__name__)

REPORT_FILE = "prepare_report.csv"
SUMMARY_FILE = "summary.csv"
REPORT_COLUMNS = ("patient_id", "modality", "status", "reason", "roi_center_x_mm", "roi_center_y_mm",
                  "roi_center_z_mm", "roi_side_mm", "slice_z_mm", "roi_source", "centre", "cohort",
                  "reference_phase")
COHORTS = ("train", "prospective")
_MANIFEST_COLUMNS = ("patient_id", "modality", "phase", "series_dir")
_LESION_COLUMNS = ("patient_id", "modality")
_CLINICAL_COLUMNS = ("patient_id", "centre", "cohort", "mvi")
_ROI_COLUMNS = ("roi_center_x_mm", "roi_center_y_mm", "roi_center_z_mm", "roi_side_mm")


class PrepareError(RuntimeError):
    """Raised by ``prepare_cohort(strict=True)`` when any patient was skipped (after writing everything)."""

    def __init__(self, message: str, result: PrepareResult) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class PrepareResult:
    """What `prepare_cohort` wrote.

    Attributes
    ----------
    out_dir, report_path, summary_path : Path
    n_written, n_skipped : int
        Patient-modality examples written / skipped.
    skipped : list of (patient_id, modality, reason)
    schema_paths : dict of modality -> Path
    """

    out_dir: Path
    report_path: Path
    n_written: int
    n_skipped: int
    skipped: list[tuple[str, str, str]]
    summary_path: Path | None = None
    schema_paths: dict[str, Path] = dataclasses.field(default_factory=dict)


class PatientStacks(dict):
    """``{phase: (S, S, 3) float32 stack in [0, 1]}`` with the ROI's provenance in ``roi`` and ``series_uids``."""

    def __init__(self, stacks: Mapping[str, np.ndarray], roi: Roi, reference_phase: str,
                 series_uids: Mapping[str, str]) -> None:
        super().__init__(stacks)
        self.roi = roi
        self.reference_phase = reference_phase
        self.series_uids = dict(series_uids)


def _roi_from_mapping(roi: Mapping[str, float] | Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(roi, Roi):
        return roi.center_x_mm, roi.center_y_mm, roi.center_z_mm, roi.side_mm
    if isinstance(roi, Mapping):
        try:
            return tuple(float(roi[k]) for k in _ROI_COLUMNS)  # type: ignore[return-value]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"ROI needs numeric {list(_ROI_COLUMNS)}. Received: roi={dict(roi)}") from err
    values = tuple(float(v) for v in roi)
    if len(values) != 4:
        raise InputError(f"ROI needs (x, y, z, side) in mm. Received: roi={roi}")
    return values  # type: ignore[return-value]


def prepare_patient(series_dirs: Mapping[str, str | os.PathLike], modality: str,
                    mask_path: str | os.PathLike | None = None, mask_phase: str | None = None,
                    roi: Mapping[str, float] | Sequence[float] | Roi | None = None,
                    config: PrepareConfig | None = None, mask_segment: int | None = None,
                    series_uids: Mapping[str, str] | None = None) -> PatientStacks:
    """ROI stacks of every configured phase of one patient.

    Parameters
    ----------
    series_dirs : mapping of phase -> folder
        One DICOM series folder per configured phase of ``modality`` (plus ``mask_phase``'s series when the
        mask was drawn on a phase that is not configured).
    modality : {"ct", "mri"}
    mask_path : path, optional
        Tumour mask (DICOM-SEG or NIfTI) drawn on ``mask_phase``'s series. Takes precedence over ``roi``.
    mask_phase : str, optional
        Phase whose series the mask / ROI refers to (default: the first configured phase).
    roi : mapping or (x, y, z, side), optional
        Square ROI in patient coordinates (mm): ``roi_center_x_mm, roi_center_y_mm, roi_center_z_mm, roi_side_mm``.
    config : PrepareConfig, optional
    mask_segment : int, optional
        Segment number (DICOM-SEG) or label value (NIfTI).
    series_uids : mapping of phase -> SeriesInstanceUID, optional
        Picks one series out of folders holding several.

    Returns
    -------
    PatientStacks
        ``{phase: (S, S, 3) float32}`` plus ``.roi`` (a `Roi`), ``.reference_phase`` and ``.series_uids``.

    Raises
    ------
    InputError
        Naming the phase, file and value on any bad input.
    """
    config = config or PrepareConfig()
    if modality not in config.phases:
        raise ValueError(f"modality must be one of {sorted(config.phases)}. Received: modality={modality!r}")
    phases = list(config.phases[modality])
    missing = [p for p in phases if p not in series_dirs]
    if missing:
        raise InputError(f"missing phase(s) {missing}; configured {modality} phases are {phases}. "
                         f"Received: phases={sorted(series_dirs)}")
    reference = mask_phase or phases[0]
    if reference not in series_dirs:
        raise InputError(f"mask_phase {reference!r} has no series. Received: mask_phase={mask_phase!r}")
    if mask_path is None and roi is None:
        raise InputError("neither a tumour mask nor an ROI is given (lesions.csv: mask_path / roi_*)")
    uids = dict(series_uids or {})
    folders = {phase: str(Path(folder).resolve()) for phase, folder in series_dirs.items()}
    shared = {f for f in folders.values() if list(folders.values()).count(f) > 1}
    scans: dict[str, list[ScannedFile]] = {}

    def read(phase: str):
        folder = folders[phase]
        try:
            if folder in shared and folder not in scans:  # several phases in one folder: read it once
                scans[folder] = scan_folder(folder)
            return read_series(folder, uids.get(phase), modality, config.spacing_tolerance_mm, scans.get(folder))
        except InputError as err:
            raise InputError(f"phase {phase!r}: {err}") from None

    ref = read(reference)
    volumes = {reference: ref} if reference in phases else {}
    if mask_path is not None:
        mask = load_mask(mask_path, mask_segment)
        grid, _ = mask_on_volume(mask, ref)
        box = roi_from_mask(grid, ref, config.margin_mm, config.slice_spacing_mm)
    else:
        box = roi_from_box(*_roi_from_mapping(roi), ref, config.slice_spacing_mm)  # type: ignore[arg-type]
    stacks, found_uids = {}, {}
    for phase in phases:
        volume = volumes.pop(phase) if phase in volumes else read(phase)
        try:
            stacks[phase] = window_stack(volume, box, config.image_size, config.window(modality, phase),
                                         config.context_factor)
        except InputError as err:
            raise InputError(f"phase {phase!r} (folder {series_dirs[phase]}): {err}") from None
        found_uids[phase] = volume.series_uid
    return PatientStacks(stacks, box, reference, found_uids)


# --------------------------------------------------------------------------------------------------------
# Cohort


@dataclasses.dataclass
class _Job:
    patient_id: str
    modality: str
    series_dirs: dict[str, str]
    series_uids: dict[str, str]
    mask_path: str | None
    mask_segment: int | None
    mask_phase: str | None
    roi: tuple[float, float, float, float] | None
    config: PrepareConfig
    cohort_dir: str


@dataclasses.dataclass
class _Outcome:
    patient_id: str
    modality: str
    stacks: dict[str, np.ndarray] | None
    roi: Roi | None
    reference_phase: str
    error: str


def _relative(message: str, cohort_dir: str) -> str:
    """Paths in messages relative to the cohort directory (no home folders in reports)."""
    return message.replace(cohort_dir.rstrip("/") + "/", "")


def _run_job(job: _Job) -> _Outcome:
    """Worker: one patient and modality; every failure becomes a reason, never an exception."""
    try:
        stacks = prepare_patient(job.series_dirs, job.modality, job.mask_path, job.mask_phase, job.roi,
                                 job.config, job.mask_segment, job.series_uids)
        return _Outcome(job.patient_id, job.modality, dict(stacks), stacks.roi, stacks.reference_phase, "")
    except (InputError, OSError, ValueError, MemoryError) as err:
        message = str(err)
    except Exception as err:  # noqa: BLE001 - an unexpected decoder failure still becomes a reported skip
        message = f"unexpected {type(err).__name__}: {err}"
    reference = job.mask_phase or job.config.phases[job.modality][0]
    return _Outcome(job.patient_id, job.modality, None, None, reference, _relative(message, job.cohort_dir))


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"Cohort file {path} is missing")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        absent = [c for c in required if c not in columns]
        if absent:
            raise ValueError(f"{path.name} lacks required column(s) {absent}. Received columns: {columns}")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _optional_int(text: str, what: str) -> int | None:
    if text.lower() in tabular.MISSING_TOKENS:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise InputError(f"lesions.csv: {what} is not an integer. Received: {what}={text!r}") from None


def _lesion_roi(row: Mapping[str, str]) -> tuple[float, float, float, float] | None:
    texts = [row.get(c, "") for c in _ROI_COLUMNS]
    if all(t.lower() in tabular.MISSING_TOKENS for t in texts):
        return None
    try:
        values = tuple(float(t) for t in texts)
    except ValueError:
        raise InputError(f"lesions.csv: ROI values must be numbers. Received: "
                         f"{dict(zip(_ROI_COLUMNS, texts))}") from None
    if not all(np.isfinite(values)) or values[3] <= 0:
        raise InputError(f"lesions.csv: invalid ROI. Received: {dict(zip(_ROI_COLUMNS, texts))}")
    return values  # type: ignore[return-value]


def _clinical_base(row: Mapping[str, str]) -> dict[str, object]:
    """Label, cohort, centre, outcomes and subgroup values of one clinical row (raises naming the value)."""
    cohort = row.get("cohort", "").lower()
    if cohort not in COHORTS:
        raise InputError(f"clinical.csv: unknown cohort; expected one of {list(COHORTS)}. "
                         f"Received: cohort={row.get('cohort')!r}")
    centre = row.get("centre", "")
    if not centre:
        raise InputError("clinical.csv: missing value in required column 'centre'. Received: centre=''")
    try:
        label = tabular.parse_label(row)
    except InputError as err:
        raise InputError(f"clinical.csv: unknown label: {err}") from None
    try:
        values = {"label": label, "cohort": cohort, "centre": centre, **tabular.outcome_values(row),
                  **tabular.subgroup_values(row)}
    except InputError as err:
        raise InputError(f"clinical.csv: {err}") from None
    return values


def _clinical_view(pid: str, modality: str, rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """The clinical row of one patient for one modality.

    clinical.csv holds one row per patient; if it has a ``modality`` column, a row whose modality matches is
    preferred over a row with an empty modality. Columns prefixed ``<modality>_`` (``mri_margin``) override the
    plain column for that modality, so per-modality radiological readings can share one row.
    """
    if not pid:
        raise InputError(f"clinical.csv line(s) {[r['_line'] for r in rows]}: empty patient_id")
    matching = [r for r in rows if r.get("modality", "").lower() == modality]
    if not matching:
        matching = [r for r in rows if not r.get("modality", "")]
    if len(matching) != 1:
        lines = [r["_line"] for r in (matching or rows)]
        what = "duplicate patient" if len(matching) > 1 else "no row for this modality"
        raise InputError(f"clinical.csv: {what} (lines {lines}). Received: patient_id={pid!r} x{len(matching)}")
    row = dict(matching[0])
    prefix = f"{modality}_"
    row.update({k[len(prefix):]: v for k, v in matching[0].items() if k.startswith(prefix) and v != ""})
    return row


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def prepare_cohort(cohort_dir: str | os.PathLike, out_dir: str | os.PathLike = "tfrecords",
                   phases: Mapping[str, Sequence[str]] | None = None, image_size: int = 64,
                   margin_mm: float = 10.0, strict: bool = False, workers: int | None = None,
                   progress: bool = True, config: PrepareConfig | None = None) -> PrepareResult:
    """Turn a cohort directory into TFRecords, schema.json, summary.csv and prepare_report.csv.

    Parameters
    ----------
    cohort_dir : path
        Holds manifest.csv, lesions.csv and clinical.csv (see docs/architecture.md).
    out_dir : path
        Output directory; records go to ``out_dir/<modality>/``.
    phases : mapping of modality -> list of phases, optional
        Replaces the default phase set of the modalities it names; None keeps the defaults.
    image_size : int
        Side of the ROI stacks in pixels.
    margin_mm : float
        Margin around the tumour's bounding square (mask-derived ROIs).
    strict : bool
        Raise `PrepareError` (after writing everything) if any patient was skipped.
    workers : int, optional
        Worker processes; default ``min(cpu_count, 8)``; 1 runs in this process.
    progress : bool
        Show a progress bar over patients.
    config : PrepareConfig, optional
        Full configuration; overrides ``phases``, ``image_size`` and ``margin_mm`` when given.

    Returns
    -------
    PrepareResult
    """
    cohort_dir = Path(cohort_dir).resolve()
    out_dir = Path(out_dir)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1. Received: workers={workers}")
    if config is None:
        merged = {m: tuple(p) for m, p in DEFAULT_PHASES.items()}
        merged.update({str(m).lower(): tuple(p) for m, p in (phases or {}).items()})
        config = PrepareConfig(phases=merged, image_size=image_size, margin_mm=margin_mm)
    manifest = _read_csv(cohort_dir / "manifest.csv", _MANIFEST_COLUMNS)
    lesions = _read_csv(cohort_dir / "lesions.csv", _LESION_COLUMNS)
    clinical = _read_csv(cohort_dir / "clinical.csv", _CLINICAL_COLUMNS)

    report: dict[tuple[str, str], dict[str, object]] = {}

    def skip(pid: str, modality: str, reason: str, **extra: object) -> None:
        if (pid, modality) in report and report[(pid, modality)]["status"] == "skipped":
            return
        report[(pid, modality)] = {"patient_id": pid, "modality": modality, "status": "skipped",
                                   "reason": f"patient {pid or '<empty>'} ({modality or '-'}): {reason}", **extra}

    # clinical.csv: one row per patient (or, with a `modality` column, per patient and modality).
    clinical_rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for n, row in enumerate(clinical, start=2):
        row["_line"] = str(n)
        clinical_rows[row["patient_id"]].append(row)

    # manifest.csv: group phases per patient and modality.
    entries: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for n, row in enumerate(manifest, start=2):
        modality = row["modality"].lower()
        if modality not in MODALITIES:
            skip(row["patient_id"], row["modality"], f"manifest.csv line {n}: unknown modality; expected one of "
                 f"{list(MODALITIES)}. Received: modality={row['modality']!r}")
            continue
        entries[(row["patient_id"], modality)][row["phase"]].append(row)
    lesion_rows: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in lesions:
        lesion_rows[(row["patient_id"], row["modality"].lower())].append(row)

    manifest_patients = {pid for pid, _ in entries}
    for pid in sorted(set(clinical_rows) - manifest_patients):
        skip(pid, "", "in clinical.csv but not in manifest.csv; no images to prepare")

    jobs: list[_Job] = []
    base_values: dict[tuple[str, str], dict[str, object]] = {}
    clinical_ok: dict[tuple[str, str], dict[str, str]] = {}
    for (pid, modality), phase_rows in sorted(entries.items()):
        if pid not in clinical_rows:
            skip(pid, modality, "in manifest.csv but not in clinical.csv (no label or clinical data)")
            continue
        try:
            clinical_ok[(pid, modality)] = row = _clinical_view(pid, modality, clinical_rows[pid])
            base_values[(pid, modality)] = base = _clinical_base(row)
            tabular.validate_row(row, modality)
        except InputError as err:
            skip(pid, modality, f"{err}" if str(err).startswith("clinical.csv") else f"clinical.csv: {err}")
            continue
        configured = list(config.phases[modality])
        duplicated = [p for p in configured if len(phase_rows.get(p, [])) > 1]
        missing = [p for p in configured if p not in phase_rows]
        if duplicated:
            skip(pid, modality, f"manifest.csv lists phase(s) {duplicated} more than once", **base_report(base))
            continue
        if missing:
            skip(pid, modality, f"manifest.csv: missing phase(s) {missing}; configured {modality} phases are "
                 f"{configured}, found {sorted(phase_rows)}", **base_report(base))
            continue
        lesion = lesion_rows.get((pid, modality), [])
        if len(lesion) != 1:
            skip(pid, modality, f"lesions.csv has {len(lesion)} rows for this patient and modality (need 1)",
                 **base_report(base))
            continue
        row = lesion[0]
        try:
            roi = _lesion_roi(row)
            segment = _optional_int(row.get("mask_segment", ""), "mask_segment")
            mask_text = row.get("mask_path", "")
            mask_path = None if mask_text.lower() in tabular.MISSING_TOKENS else str(cohort_dir / mask_text)
            mask_phase = row.get("mask_phase", "") or None
            if mask_phase is not None and (mask_phase not in phase_rows or len(phase_rows[mask_phase]) > 1):
                raise InputError(f"lesions.csv: mask_phase has no single series in manifest.csv (phases "
                                 f"{sorted(phase_rows)}). Received: mask_phase={mask_phase!r}")
        except InputError as err:
            skip(pid, modality, str(err), **base_report(base))
            continue
        used = configured + ([mask_phase] if mask_phase and mask_phase not in configured else [])
        jobs.append(_Job(pid, modality,
                         {p: str(cohort_dir / phase_rows[p][0]["series_dir"]) for p in used},
                         {p: phase_rows[p][0]["series_uid"] for p in used
                          if phase_rows[p][0].get("series_uid")},
                         mask_path, segment, mask_phase, roi, config, str(cohort_dir)))

    # Tabular scaling: fitted on the train cohort only, per modality.
    tabular_schemas: dict[str, dict] = {}
    for modality in sorted({job.modality for job in jobs}):
        train_rows = [clinical_ok[(job.patient_id, modality)] for job in jobs
                      if job.modality == modality and base_values[(job.patient_id, modality)]["cohort"] == "train"]
        try:
            tabular_schemas[modality] = tabular.fit_schema(train_rows, modality)
        except ValueError as err:
            for job in jobs:
                if job.modality == modality:
                    skip(job.patient_id, modality, f"cannot fit tabular scaling: {err}")
    jobs = [job for job in jobs if job.modality in tabular_schemas]

    from data_prep import (
        records,  # TensorFlow only in the parent process, never in the DICOM workers
    )

    schemas = {m: records.make_schema(m, config.phases[m], config.image_size, tabular_schemas[m],
                                      config.to_dict()) for m in tabular_schemas}
    writers: dict[tuple[str, str], records.ShardedWriter] = {}
    counts: Counter = Counter()
    n_workers = min(workers or _default_workers(), max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc="prepare", unit="patient", disable=not progress)
    pool = multiprocessing.get_context("spawn").Pool(n_workers) if n_workers > 1 and len(jobs) > 1 else None
    try:
        outcomes = pool.imap(_run_job, jobs, chunksize=1) if pool is not None else map(_run_job, jobs)
        for outcome in outcomes:
            bar.update(1)
            pid, modality = outcome.patient_id, outcome.modality
            base = base_values[(pid, modality)]
            if outcome.stacks is None:
                skip(pid, modality, outcome.error, reference_phase=outcome.reference_phase, **base_report(base))
                continue
            try:
                vector = tabular.encode_row(clinical_ok[(pid, modality)], tabular_schemas[modality])
            except InputError as err:
                skip(pid, modality, f"clinical.csv: {err}", **base_report(base))
                continue
            values = {**outcome.stacks, "tabular": vector, "patient_id": pid, **base}
            serialized = records.encode_example(values, schemas[modality])
            key = (modality, str(base["cohort"]))
            if key not in writers:
                writers[key] = records.ShardedWriter(out_dir / modality, key[1], config.shard_size)
            writers[key].write(serialized)
            counts[(modality, base["cohort"], base["centre"], base["label"])] += 1
            report[(pid, modality)] = {"patient_id": pid, "modality": modality, "status": "written", "reason": "",
                                       **outcome.roi.report_fields(), "reference_phase": outcome.reference_phase,
                                       **base_report(base)}
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    for writer in writers.values():
        writer.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    schema_paths = {}
    for modality, schema in schemas.items():
        (out_dir / modality).mkdir(parents=True, exist_ok=True)
        schema["counts"] = {cohort: sum(n for (m, c, _, _), n in counts.items() if m == modality and c == cohort)
                            for cohort in COHORTS}
        # A generated cohort carries truth/ (synth.json marks a complete one); every downstream output of its
        # records is labelled as synthetic.
        schema["synthetic"] = (cohort_dir / "truth" / "synth.json").is_file()
        schema_paths[modality] = records.write_json_atomic(out_dir / modality / records.SCHEMA_FILE, schema)
    summary_path = _write_csv(out_dir / SUMMARY_FILE, ("modality", "cohort", "centre", "label", "n_patients"),
                              [dict(zip(("modality", "cohort", "centre", "label"), k), n_patients=n)
                               for k, n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))])
    rows = [report[k] for k in sorted(report)]
    report_path = _write_csv(out_dir / REPORT_FILE, REPORT_COLUMNS, rows)
    skipped = [(str(r["patient_id"]), str(r["modality"]), str(r["reason"])) for r in rows
               if r["status"] == "skipped"]
    n_written = sum(1 for r in rows if r["status"] == "written")
    for _pid, _modality, reason in skipped:
        logger.warning("skipped %s", reason)
    logger.info("prepare: %d written, %d skipped -> %s", n_written, len(skipped), out_dir)
    result = PrepareResult(out_dir, report_path, n_written, len(skipped), skipped, summary_path, schema_paths)
    if strict and skipped:
        raise PrepareError(f"{len(skipped)} patient/modality entries skipped (strict mode); see {report_path}",
                           result)
    return result


def base_report(base: Mapping[str, object]) -> dict[str, object]:
    """The centre/cohort columns of a report line."""
    return {"centre": base.get("centre", ""), "cohort": base.get("cohort", "")}


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    os.replace(tmp, path)
    return path
