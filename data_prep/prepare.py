"""Orchestration of `mvi-tf prepare`: cohort directory -> per-patient ROI stacks + tabular -> TFRecords.

`prepare_cohort` validates the three CSVs, builds one job per patient and modality, runs the DICOM work in
parallel worker processes (a progress bar over patients), encodes the tabular features with a scaling fitted
on the ``train`` cohort only, and writes sharded TFRecords, ``schema.json`` per modality, ``summary.csv`` and
``prepare_report.csv`` (one line per patient and modality, written or skipped with its reason).
`prepare_patient` does the image part for one new patient without a cohort directory (used by `predict`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import fcntl
import io
import logging
import multiprocessing
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep import tabular
from data_prep.config import DEFAULT_PHASES, MODALITIES, PrepareConfig
from data_prep.dicom_series import ScannedFile, Volume, read_series, scan_folder
from data_prep.errors import InputError
from data_prep.masks import LesionChoice, check_mask_identity, choose_lesion, load_mask, mask_on_volume
from data_prep.privacy import csv_cell, relative_paths, site_salt, uid_tag
from data_prep.roi import Roi, roi_from_box, roi_from_mask, window_stack
from data_prep.unwrap import UnwrappedFrame, unwrapped_frame, unwrapped_stack
from mvi_tf.contract import SCHEMA_FILE, temporary_name

logger = logging.getLogger(__name__)

REPORT_FILE = "prepare_report.csv"
SUMMARY_FILE = "summary.csv"
REPORT_COLUMNS = ("patient_id", "modality", "status", "reason", "roi_center_x_mm", "roi_center_y_mm",
                  "roi_center_z_mm", "roi_side_mm", "slice_z_mm", "roi_source", "centre", "cohort",
                  "reference_phase", "n_lesions", "lesion_volume_ml", "warnings", "notes")
#: Added after ``roi_source`` when ``PrepareConfig.sampling`` is ``"unwrapped"`` (`UnwrappedFrame.report_fields`).
UNWRAPPED_REPORT_COLUMNS = ("unwrap_center_x_mm", "unwrap_center_y_mm", "unwrap_boundary_mm", "unwrap_band_mm")
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
    warned : list of (patient_id, modality, warnings)
        Written entries with a warning (several lesions, ROI and mask disagree, ...); errors under ``strict``.
    """

    out_dir: Path
    report_path: Path
    n_written: int
    n_skipped: int
    skipped: list[tuple[str, str, str]]
    summary_path: Path | None = None
    schema_paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    warned: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)


class PatientStacks(dict):
    """``{phase: (S, S, 3) float32 stack in [0, 1]}`` with the ROI's provenance.

    Attributes
    ----------
    roi : Roi
    reference_phase : str
    series_uids : dict of phase -> SeriesInstanceUID (in memory only; never written)
    lesion : LesionChoice or None
        The lesion of the mask the ROI was built on (or checked against).
    warnings : list of str
        Things the user should look at (several lesions, ROI and mask disagree, phases from two studies);
        ``prepare --strict`` turns them into errors.
    notes : list of str
        Things done on purpose that the report records (localizers and other non-axial files left out).
    unwrapped : UnwrappedFrame or None
        The frame of unwrapped stacks (``PrepareConfig.sampling="unwrapped"``); None for square ROIs.
    """

    def __init__(self, stacks: Mapping[str, np.ndarray], roi: Roi, reference_phase: str,
                 series_uids: Mapping[str, str], lesion: LesionChoice | None = None,
                 warnings: Sequence[str] = (), notes: Sequence[str] = (),
                 unwrapped: UnwrappedFrame | None = None) -> None:
        super().__init__(stacks)
        self.unwrapped = unwrapped
        self.roi = roi
        self.reference_phase = reference_phase
        self.series_uids = dict(series_uids)
        self.lesion = lesion
        self.warnings = list(warnings)
        self.notes = list(notes)


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
                    series_uids: Mapping[str, str] | None = None,
                    lesion_index: int | None = None, allow_shared_series: bool = False) -> PatientStacks:
    """ROI stacks of every configured phase of one patient.

    Parameters
    ----------
    series_dirs : mapping of phase -> folder
        One DICOM series folder per configured phase of ``modality`` (plus ``mask_phase``'s series when the
        mask was drawn on a phase that is not configured).
    modality : {"ct", "mri"}
    mask_path : path, optional
        Tumour mask (DICOM-SEG or NIfTI) drawn on ``mask_phase``'s series. A DICOM-SEG must reference that
        series and its frame of reference. A mask holding several lesions (3-D connected components): the ROI
        is built on one lesion, chosen by ``lesion_index``, else the lesion at an explicit ``roi``, else the
        largest; the choice is recorded in ``.lesion``, and in ``.warnings`` when the default (largest) was
        taken among several, else in ``.notes``. Components under ``config.min_lesion_ml`` are specks, left out.
    mask_phase : str, optional
        Phase whose series the mask / ROI refers to (default: the first configured phase).
    roi : mapping or (x, y, z, side), optional
        Square ROI in patient coordinates (mm): ``roi_center_x_mm, roi_center_y_mm, roi_center_z_mm, roi_side_mm``.
        Given together with a mask, the mask wins (its ROI, with margin, is used) and the explicit ROI names
        the lesion: the mask's lesion holding, or nearest to, its centre. A disagreement (that lesion's centre
        outside the square, or the ROI's z outside the lesion's slices) becomes a warning.
    config : PrepareConfig, optional
    mask_segment : int, optional
        Segment number (DICOM-SEG) or label value (NIfTI).
    series_uids : mapping of phase -> SeriesInstanceUID, optional
        Picks one series out of folders holding several.
    lesion_index : int, optional
        Which lesion of a multi-lesion mask to use: 1 = the largest, 2 = the second largest, ...
    allow_shared_series : bool
        Let one series serve several phases (with a warning) -- for tests and demonstrations on a single
        public series only; otherwise an error.

    Returns
    -------
    PatientStacks
        ``{phase: (S, S, 3) float32}`` plus ``.roi`` (a `Roi`), ``.reference_phase`` and ``.series_uids``.

    Raises
    ------
    InputError
        Naming the phase, file and value on any bad input; also when two phases are one series, the phases
        belong to different patients (PatientID), or a SEG was drawn on another series.
    """
    config = config or PrepareConfig()
    phases, reference = _check_patient_args(series_dirs, modality, mask_path, mask_phase, roi, config)
    volumes = _read_volumes(series_dirs, [reference, *[p for p in phases if p != reference]], modality,
                            config, series_uids or {})
    warnings = _check_identity(volumes, phases, allow_shared_series)
    ref = volumes[reference]
    lesion = None
    notes = [f"phase {p!r}: {v.n_dropped} localizer/non-axial file(s) left out" for p, v in volumes.items()
             if v.n_dropped]
    explicit = None if roi is None else _roi_from_mapping(roi)
    if mask_path is not None:
        mask = load_mask(mask_path, mask_segment)
        check_mask_identity(mask, ref)
        grid, _ = mask_on_volume(mask, ref)
        near = None if explicit is None else ref.patient_to_index(np.asarray([explicit[:3]]))[0]
        voxel_ml = float(np.prod(ref.pixel_spacing_mm)) * ref.slice_spacing_mm / 1000.0
        lesion = choose_lesion(grid, voxel_ml, lesion_index, near, config.min_lesion_ml)
        if lesion.note():
            (warnings if lesion.rule == "largest" else notes).append(lesion.note())
        if lesion.n_specks:
            notes.append(f"{lesion.n_specks} mask speck(s) under {config.min_lesion_ml} ml left out")
        box = roi_from_mask(lesion.grid, ref, config.margin_mm, config.slice_spacing_mm)
        if explicit is not None:
            warnings += _roi_mask_disagreement(explicit, lesion.grid, box, ref)
    else:
        box = roi_from_box(*explicit, ref, config.slice_spacing_mm)  # type: ignore[misc]
    frame = None
    if config.sampling == "unwrapped":
        if lesion is None:
            raise InputError("sampling 'unwrapped' needs a tumour mask (its boundary); lesions.csv gives only a "
                             "square ROI for this patient (no mask_path)")
        frame = unwrapped_frame(lesion.grid, ref, box, config.image_size, config.band_mm)
    stacks = {}
    for phase in phases:
        window = config.window(modality, phase)
        try:
            stacks[phase] = (window_stack(volumes[phase], box, config.image_size, window, config.context_factor)
                             if frame is None else
                             unwrapped_stack(volumes[phase], frame, box, window, config.context_factor))
        except InputError as err:
            raise InputError(f"phase {phase!r} (folder {series_dirs[phase]}): {err}") from None
    return PatientStacks(stacks, box, reference, {p: volumes[p].series_uid for p in phases}, lesion, warnings,
                         notes, frame)


def _check_patient_args(series_dirs, modality, mask_path, mask_phase, roi, config) -> tuple[list[str], str]:
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
    return phases, reference


def _read_volumes(series_dirs: Mapping[str, str | os.PathLike], phases: Sequence[str], modality: str,
                  config: PrepareConfig, uids: Mapping[str, str]) -> dict[str, Volume]:
    """Read (headers only) the series of ``phases``; a folder shared by several phases is scanned once."""
    folders = {phase: str(Path(series_dirs[phase]).resolve()) for phase in phases}
    shared = {f for f in folders.values() if list(folders.values()).count(f) > 1}
    scans: dict[str, list[ScannedFile]] = {}
    volumes = {}
    for phase in phases:
        folder = folders[phase]
        try:
            if folder in shared and folder not in scans:
                scans[folder] = scan_folder(series_dirs[phase])
            volumes[phase] = read_series(series_dirs[phase], uids.get(phase), modality,
                                         config.spacing_tolerance_mm, scans.get(folder))
        except InputError as err:
            raise InputError(f"phase {phase!r}: {err}") from None
    return volumes


def _check_identity(volumes: Mapping[str, Volume], phases: Sequence[str], allow_shared: bool = False) -> list[str]:
    """One series per phase, one patient for all phases; phases from several studies give a warning.

    Identifiers are compared in memory; messages show only `uid_tag` hashes.
    """
    seen: dict[str, str] = {}
    warnings = []
    for phase in phases:
        uid = volumes[phase].series_uid
        if uid in seen:
            message = (f"phases {seen[uid]!r} and {phase!r} are the same series ({uid_tag(uid)}); each phase needs "
                       "its own acquisition")
            if not allow_shared:
                raise InputError(message)
            warnings.append(message)
        seen[uid] = phase
    patients = {v.patient_key for v in volumes.values() if v.patient_key}
    if len(patients) > 1:
        raise InputError(f"the phases belong to {len(patients)} different patients (PatientID differs between "
                         f"series {sorted(uid_tag(v.series_uid) for v in volumes.values())})")
    studies = {v.study_uid for v in volumes.values() if v.study_uid}
    if len(studies) > 1:
        warnings.append(f"the phases come from {len(studies)} studies ({sorted(map(uid_tag, studies))}); check "
                        "that they are one examination")
    return warnings


def _roi_mask_disagreement(explicit: tuple[float, float, float, float], lesion_grid: np.ndarray, lesion_box: Roi,
                           volume: Volume) -> list[str]:
    """A warning unless the lesion's centre lies in the explicit square and its middle slice cuts the lesion."""
    x, y, z, side = explicit
    dx, dy = lesion_box.center_x_mm - x, lesion_box.center_y_mm - y
    ks = np.flatnonzero(lesion_grid.any(axis=(1, 2)))
    z_lo, z_hi = sorted((float(volume.slice_z_mm[ks.min()]), float(volume.slice_z_mm[ks.max()])))
    half_gap = volume.slice_spacing_mm / 2.0
    if abs(dx) <= side / 2.0 and abs(dy) <= side / 2.0 and z_lo - half_gap <= z <= z_hi + half_gap:
        return []
    return [f"lesions.csv ROI and mask disagree (the mask's ROI is used): the lesion's centre lies ({dx:.1f}, "
            f"{dy:.1f}) mm from the ROI centre (ROI side {side:.1f} mm) and spans z {z_lo:.1f}..{z_hi:.1f} mm "
            f"(ROI z {z:.1f} mm)"]


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
    lesion_index: int | None = None


@dataclasses.dataclass
class _Outcome:
    patient_id: str
    modality: str
    stacks: dict[str, np.ndarray] | None
    roi: Roi | None
    reference_phase: str
    error: str
    lesion_fields: dict[str, object] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    unwrapped: UnwrappedFrame | None = None


def _relative(message: str, cohort_dir: str) -> str:
    """Paths in messages relative to the cohort directory, other absolute paths cut to their last component."""
    return relative_paths(message, cohort_dir)


def _run_job(job: _Job) -> _Outcome:
    """Worker: one patient and modality; every failure becomes a reason, never an exception."""
    try:
        stacks = prepare_patient(job.series_dirs, job.modality, job.mask_path, job.mask_phase, job.roi,
                                 job.config, job.mask_segment, job.series_uids, job.lesion_index)
        lesion = stacks.lesion
        fields = {} if lesion is None else {"n_lesions": lesion.n_lesions,
                                            "lesion_volume_ml": round(lesion.volume_ml, 3)}
        return _Outcome(job.patient_id, job.modality, dict(stacks), stacks.roi, stacks.reference_phase, "",
                        fields, [_relative(w, job.cohort_dir) for w in stacks.warnings],
                        [_relative(n, job.cohort_dir) for n in stacks.notes], stacks.unwrapped)
    except (InputError, OSError, ValueError, MemoryError) as err:
        message = str(err)
    except Exception as err:  # noqa: BLE001 - an unexpected decoder failure still becomes a reported skip
        message = f"unexpected {type(err).__name__}: {err}"
    reference = job.mask_phase or job.config.phases[job.modality][0]
    return _Outcome(job.patient_id, job.modality, None, None, reference, _relative(message, job.cohort_dir))


class CohortError(InputError):
    """A cohort file that cannot be read at all (missing, not UTF-8, empty, wrong separator, columns missing)."""


def _decode_csv(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise CohortError(f"{path.name} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line}; save it "
                          "as UTF-8 (\"CSV UTF-8\" in a spreadsheet)") from None


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a cohort CSV with ``_line``; a row with too many / too few fields carries ``_error``."""
    if not path.is_file():
        raise CohortError(f"cohort file {path.name} is missing; expected columns {list(required)}")
    text = _decode_csv(path)
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise CohortError(f"{path.name} is not a readable CSV file: {err}") from None
    while table and not any(cell.strip() for cell in table[-1]):
        table.pop()
    if not table or not any(cell.strip() for cell in table[0]):
        raise CohortError(f"{path.name} is empty; expected a header row with columns {list(required)}")
    columns = [c.strip() for c in table[0]]
    absent = [c for c in required if c not in columns]
    if absent:
        hint = next((f"; the file seems to be separated by {name!r}, not by commas" for sep, name in
                     ((";", "semicolons"), ("\t", "tabs")) if len(columns) == 1 and sep in columns[0]), "")
        raise CohortError(f"{path.name} lacks required column(s) {absent}{hint}. Received columns: "
                          f"{[c[:40] for c in columns[:12]]}")
    rows = []
    for n, cells in enumerate(table[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        row = {c: (cells[i].strip() if i < len(cells) else "") for i, c in enumerate(columns)}
        row["_line"] = str(n)
        if len(cells) != len(columns):
            row["_error"] = (f"{path.name} line {n} has {len(cells)} fields, the header has {len(columns)}; "
                             "a stray comma or a missing value?")
        rows.append(row)
    return rows


def _inside(cohort_dir: Path, text: str, roots: Sequence[Path], what: str, key: str) -> str:
    """``cohort_dir / text`` if it resolves inside the cohort (or an allowed root); else an `InputError`."""
    path = cohort_dir / text
    resolved = path.resolve()
    if not any(resolved == root or root in resolved.parents for root in (cohort_dir, *roots)):
        raise InputError(f"{what} lies outside the cohort directory (allow other folders with --allow-root). "
                         f"Received: {key}={text!r}")
    return str(path)


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
    if matching[0].get("_error"):
        raise InputError(matching[0]["_error"])
    row = dict(matching[0])
    prefix = f"{modality}_"
    row.update({k[len(prefix):]: v for k, v in matching[0].items() if k.startswith(prefix) and v != ""})
    return row


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def prepare_cohort(cohort_dir: str | os.PathLike, out_dir: str | os.PathLike = "tfrecords",
                   phases: Mapping[str, Sequence[str]] | None = None, image_size: int = 64,
                   margin_mm: float = 10.0, strict: bool = False, workers: int | None = None,
                   progress: bool = True, config: PrepareConfig | None = None,
                   allowed_roots: Sequence[str | os.PathLike] = (), sampling: str = "square") -> PrepareResult:
    """Turn a cohort directory into TFRecords, schema.json, summary.csv and prepare_report.csv.

    Parameters
    ----------
    cohort_dir : path
        Holds manifest.csv, lesions.csv and clinical.csv (see docs/architecture.md).
    out_dir : path
        Output directory; records go to ``out_dir/<modality>/``. A run holds an exclusive lock on it (a
        second run on the same folder fails with `OutputLockedError`), writes into ``out_dir/.prepare-staging``
        and only then replaces the previous run's records, schemas and reports as a whole: what is left is
        exactly what the report lists.
    phases : mapping of modality -> list of phases, optional
        Replaces the default phase set of the modalities it names; None keeps the defaults.
    image_size : int
        Side of the ROI stacks in pixels.
    margin_mm : float
        Margin around the tumour's bounding square (mask-derived ROIs).
    strict : bool
        Raise `PrepareError` (after writing everything) if any patient was skipped or has a warning.
    workers : int, optional
        Worker processes; default ``min(cpu_count, 8)``; 1 runs in this process.
    progress : bool
        Show a progress bar over patients.
    config : PrepareConfig, optional
        Full configuration; overrides ``phases``, ``image_size``, ``margin_mm`` and ``sampling`` when given.
    allowed_roots : sequence of paths
        Folders outside the cohort directory that ``series_dir`` and ``mask_path`` may point into (default:
        none; a path that resolves outside the cohort skips that patient).
    sampling : {"square", "unwrapped"}
        The paper's square ROI, or the peritumoral band unwrapped along the tumour boundary (`PrepareConfig`);
        with ``"unwrapped"`` a patient whose lesions.csv row has no mask is skipped with its reason.

    Returns
    -------
    PrepareResult

    Raises
    ------
    CohortError
        A cohort CSV cannot be read at all (missing, not UTF-8, empty, wrong separator, columns missing).
    OutputLockedError
        Another run is writing into ``out_dir``.
    """
    cohort_dir = Path(cohort_dir).resolve()
    out_dir = Path(out_dir)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1. Received: workers={workers}")
    if config is None:
        merged = {m: tuple(p) for m, p in DEFAULT_PHASES.items()}
        merged.update({str(m).lower(): tuple(p) for m, p in (phases or {}).items()})
        config = PrepareConfig(phases=merged, image_size=image_size, margin_mm=margin_mm, sampling=sampling)
    roots = [Path(r).resolve() for r in allowed_roots]
    report = _Report(cohort_dir)
    plan = _plan_jobs(cohort_dir, config, roots, report)
    with _locked(out_dir):
        staging = _fresh_staging(out_dir)
        done = _run_images(plan, staging / ".pending", report, workers, progress)
        tabular_schemas = _fit_tabular(plan, done, report)
        counts, schemas = _write_records(plan, done, tabular_schemas, config, staging, cohort_dir, report)
        shutil.rmtree(staging / ".pending")
        _write_tables(staging, counts, report, config)
        _commit(staging, out_dir)
    rows = report.rows()
    skipped = [(str(r["patient_id"]), str(r["modality"]), str(r["reason"])) for r in rows
               if r["status"] == "skipped"]
    warned = [r for r in rows if r["status"] == "written" and r.get("warnings")]
    n_written = sum(1 for r in rows if r["status"] == "written")
    # Logged at INFO: the result lists them and the caller presents them (the CLI prints each once).
    for _pid, _modality, reason in skipped:
        logger.info("skipped %s", reason)
    for row in warned:
        logger.info("warning: patient %s (%s): %s", row["patient_id"], row["modality"], row["warnings"])
    logger.info("prepare: %d written, %d skipped -> %s", n_written, len(skipped), out_dir)
    result = PrepareResult(out_dir, out_dir / REPORT_FILE, n_written, len(skipped), skipped,
                           out_dir / SUMMARY_FILE, {m: out_dir / m / SCHEMA_FILE for m in schemas},
                           [(str(r["patient_id"]), str(r["modality"]), str(r["warnings"])) for r in warned])
    if strict and (skipped or warned):
        raise PrepareError(f"{len(skipped)} patient/modality entries skipped and {len(warned)} written with "
                           f"warnings (strict mode); see {result.report_path}", result)
    return result


class _Report:
    """prepare_report.csv lines, one per patient and modality; the first skip reason of an entry is kept.

    Reasons pass through `relative_paths`: paths relative to the cohort, any other absolute path cut to its name.
    """

    def __init__(self, cohort_dir: Path | None = None) -> None:
        self.lines: dict[tuple[str, str], dict[str, object]] = {}
        self.cohort_dir = cohort_dir

    def skip(self, pid: str, modality: str, reason: str, **extra: object) -> None:
        if (pid, modality) in self.lines and self.lines[(pid, modality)]["status"] == "skipped":
            return
        reason = relative_paths(reason, self.cohort_dir)
        self.lines[(pid, modality)] = {"patient_id": pid, "modality": modality, "status": "skipped",
                                       "reason": f"patient {pid or '<empty>'} ({modality or '-'}): {reason}",
                                       **extra}

    def skipped(self, pid: str, modality: str) -> bool:
        return self.lines.get((pid, modality), {}).get("status") == "skipped"

    def written(self, pid: str, modality: str, **fields: object) -> None:
        self.lines[(pid, modality)] = {"patient_id": pid, "modality": modality, "status": "written", "reason": "",
                                       **fields}

    def rows(self) -> list[dict[str, object]]:
        return [self.lines[k] for k in sorted(self.lines)]


@dataclasses.dataclass
class _Plan:
    jobs: list[_Job]
    base_values: dict[tuple[str, str], dict[str, object]]
    clinical_ok: dict[tuple[str, str], dict[str, str]]


def _group_rows(cohort_dir: Path, report: _Report):
    """Read the three CSVs and group them; rows with a wrong field count skip their patient."""
    manifest = _read_csv(cohort_dir / "manifest.csv", _MANIFEST_COLUMNS)
    lesions = _read_csv(cohort_dir / "lesions.csv", _LESION_COLUMNS)
    clinical = _read_csv(cohort_dir / "clinical.csv", _CLINICAL_COLUMNS)
    clinical_rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in clinical:
        clinical_rows[row["patient_id"]].append(row)
    entries: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for row in manifest:
        modality = row["modality"].lower()
        if row.get("_error"):
            report.skip(row["patient_id"], modality, row["_error"])
        elif modality not in MODALITIES:
            report.skip(row["patient_id"], row["modality"], f"manifest.csv line {row['_line']}: unknown modality; "
                        f"expected one of {list(MODALITIES)}. Received: modality={row['modality']!r}")
            continue
        entries[(row["patient_id"], modality)][row["phase"]].append(row)
    lesion_rows: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in lesions:
        lesion_rows[(row["patient_id"], row["modality"].lower())].append(row)
    return clinical_rows, entries, lesion_rows


def _plan_jobs(cohort_dir: Path, config: PrepareConfig, roots: Sequence[Path], report: _Report) -> _Plan:
    """One job per patient and modality whose tables are complete and valid; everything else is skipped."""
    clinical_rows, entries, lesion_rows = _group_rows(cohort_dir, report)
    for pid in sorted(set(clinical_rows) - {pid for pid, _ in entries}):
        report.skip(pid, "", "in clinical.csv but not in manifest.csv; no images to prepare")
    plan = _Plan([], {}, {})
    for (pid, modality), phase_rows in sorted(entries.items()):
        if report.skipped(pid, modality):
            continue
        if pid not in clinical_rows:
            report.skip(pid, modality, "in manifest.csv but not in clinical.csv (no label or clinical data)")
            continue
        try:
            plan.clinical_ok[(pid, modality)] = row = _clinical_view(pid, modality, clinical_rows[pid])
            plan.base_values[(pid, modality)] = base = _clinical_base(row)
            tabular.validate_row(row, modality)
        except InputError as err:
            report.skip(pid, modality, f"{err}" if str(err).startswith("clinical.csv") else f"clinical.csv: {err}")
            continue
        try:
            plan.jobs.append(_job(pid, modality, phase_rows, lesion_rows.get((pid, modality), []), config,
                                  cohort_dir, roots))
        except InputError as err:
            report.skip(pid, modality, str(err), **base_report(base))
    return plan


def _job(pid: str, modality: str, phase_rows: Mapping[str, list[dict[str, str]]],
         lesion: Sequence[dict[str, str]], config: PrepareConfig, cohort_dir: Path, roots: Sequence[Path]) -> _Job:
    configured = list(config.phases[modality])
    duplicated = [p for p in configured if len(phase_rows.get(p, [])) > 1]
    missing = [p for p in configured if p not in phase_rows]
    if duplicated:
        raise InputError(f"manifest.csv lists phase(s) {duplicated} more than once")
    if missing:
        raise InputError(f"manifest.csv: missing phase(s) {missing}; configured {modality} phases are "
                         f"{configured}, found {sorted(phase_rows)}")
    if len(lesion) != 1:
        raise InputError(f"lesions.csv has {len(lesion)} rows for this patient and modality (need 1)")
    row = lesion[0]
    if row.get("_error"):
        raise InputError(row["_error"])
    roi = _lesion_roi(row)
    segment = _optional_int(row.get("mask_segment", ""), "mask_segment")
    lesion_index = _optional_int(row.get("lesion_index", ""), "lesion_index")
    if lesion_index is not None and lesion_index < 1:
        raise InputError(f"lesions.csv: lesion_index counts from 1 (the largest). Received: lesion_index={lesion_index}")
    mask_text = row.get("mask_path", "")
    mask_path = (None if mask_text.lower() in tabular.MISSING_TOKENS
                 else _inside(cohort_dir, mask_text, roots, "lesions.csv mask_path", "mask_path"))
    mask_phase = row.get("mask_phase", "") or None
    if mask_phase is not None and (mask_phase not in phase_rows or len(phase_rows[mask_phase]) > 1):
        raise InputError(f"lesions.csv: mask_phase has no single series in manifest.csv (phases "
                         f"{sorted(phase_rows)}). Received: mask_phase={mask_phase!r}")
    used = configured + ([mask_phase] if mask_phase and mask_phase not in configured else [])
    empty = [p for p in used if not phase_rows[p][0]["series_dir"].strip()]
    if empty:
        raise InputError(f"manifest.csv: empty series_dir for phase(s) {empty}. Received: series_dir=''")
    dirs = {p: _inside(cohort_dir, phase_rows[p][0]["series_dir"], roots, f"manifest.csv series_dir of phase {p!r}",
                       "series_dir") for p in used}
    uids = {p: phase_rows[p][0]["series_uid"] for p in used if phase_rows[p][0].get("series_uid")}
    return _Job(pid, modality, dirs, uids, mask_path, segment, mask_phase, roi, config, str(cohort_dir),
                lesion_index)


def _run_images(plan: _Plan, pending: Path, report: _Report, workers: int | None,
                progress: bool) -> list[tuple[_Outcome, Path]]:
    """Run the DICOM jobs in worker processes; each success's stacks wait in ``pending`` (fitting the tabular
    scaling needs to know first which patients have images)."""
    pending.mkdir()
    jobs, done = plan.jobs, []
    n_workers = min(workers or _default_workers(), max(1, len(jobs)))
    bar = tqdm(total=len(jobs), desc="prepare", unit="patient", disable=not progress)
    site_salt()  # before the workers start: a key made for this process reaches them through the environment
    pool = multiprocessing.get_context("spawn").Pool(n_workers) if n_workers > 1 and len(jobs) > 1 else None
    try:
        outcomes = pool.imap(_run_job, jobs, chunksize=1) if pool is not None else map(_run_job, jobs)
        for n, outcome in enumerate(outcomes):
            bar.update(1)
            base = plan.base_values[(outcome.patient_id, outcome.modality)]
            if outcome.stacks is None:
                report.skip(outcome.patient_id, outcome.modality, outcome.error,
                            reference_phase=outcome.reference_phase, **base_report(base))
                continue
            path = pending / f"{n:06d}.npz"
            np.savez(path, **outcome.stacks)
            outcome.stacks = None
            done.append((outcome, path))
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return done


def _fit_tabular(plan: _Plan, done: Sequence[tuple[_Outcome, Path]], report: _Report) -> dict[str, dict]:
    """Tabular scaling per modality, fitted on the train cohort's patients that have images, only."""
    schemas: dict[str, dict] = {}
    for modality in sorted({outcome.modality for outcome, _ in done}):
        keys = [(o.patient_id, modality) for o, _ in done if o.modality == modality]
        train_rows = [plan.clinical_ok[k] for k in keys if plan.base_values[k]["cohort"] == "train"]
        try:
            schemas[modality] = tabular.fit_schema(train_rows, modality)
        except ValueError as err:
            for pid, _ in keys:
                report.skip(pid, modality, f"cannot fit tabular scaling: {err}",
                            **base_report(plan.base_values[(pid, modality)]))
    return schemas


def _write_records(plan: _Plan, done: Sequence[tuple[_Outcome, Path]], tabular_schemas: Mapping[str, dict],
                   config: PrepareConfig, staging: Path, cohort_dir: Path, report: _Report):
    """Encode each prepared patient's stacks and tabular vector into the staged shards and schemas."""
    from data_prep import records  # TensorFlow only in the parent process, never in the DICOM workers

    schemas = {m: records.make_schema(m, config.phases[m], config.image_size, tabular_schemas[m],
                                      config.to_dict()) for m in tabular_schemas}
    writers: dict[tuple[str, str], records.ShardedWriter] = {}
    counts: Counter = Counter()
    for outcome, path in done:
        pid, modality = outcome.patient_id, outcome.modality
        if modality not in schemas:
            continue
        base = plan.base_values[(pid, modality)]
        try:
            vector = tabular.encode_row(plan.clinical_ok[(pid, modality)], tabular_schemas[modality])
        except InputError as err:
            report.skip(pid, modality, f"clinical.csv: {err}", **base_report(base))
            continue
        with np.load(path) as stacks:
            values = {**{k: stacks[k] for k in stacks.files}, "tabular": vector, "patient_id": pid, **base}
        key = (modality, str(base["cohort"]))
        if key not in writers:
            writers[key] = records.ShardedWriter(staging / modality, key[1], config.shard_size)
        writers[key].write(records.encode_example(values, schemas[modality]))
        counts[(modality, base["cohort"], base["centre"], base["label"])] += 1
        frame = {} if outcome.unwrapped is None else outcome.unwrapped.report_fields()
        report.written(pid, modality, **outcome.roi.report_fields(), **frame, reference_phase=outcome.reference_phase,
                       **outcome.lesion_fields, warnings=" | ".join(outcome.warnings),
                       notes=" | ".join(outcome.notes), **base_report(base))
    shards = {key: writer.close() for key, writer in writers.items()}
    for modality, schema in schemas.items():
        (staging / modality).mkdir(parents=True, exist_ok=True)
        schema["counts"] = {cohort: sum(n for (m, c, _, _), n in counts.items() if m == modality and c == cohort)
                            for cohort in COHORTS}
        schema["shards"] = {p.name: p.stat().st_size for (m, _), paths in sorted(shards.items()) if m == modality
                            for p in paths}
        # A generated cohort carries truth/ (synth.json marks a complete one); every downstream output of its
        # records is labelled as synthetic.
        schema["synthetic"] = (cohort_dir / "truth" / "synth.json").is_file()
        records.write_json_atomic(staging / modality / records.SCHEMA_FILE, schema)
    return counts, schemas


def _write_tables(staging: Path, counts: Counter, report: _Report, config: PrepareConfig) -> None:
    _write_csv(staging / SUMMARY_FILE, ("modality", "cohort", "centre", "label", "n_patients"),
               [dict(zip(("modality", "cohort", "centre", "label"), k), n_patients=n)
                for k, n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0])))])
    columns = REPORT_COLUMNS
    if config.sampling == "unwrapped":
        at = REPORT_COLUMNS.index("roi_source") + 1
        columns = REPORT_COLUMNS[:at] + UNWRAPPED_REPORT_COLUMNS + REPORT_COLUMNS[at:]
    _write_csv(staging / REPORT_FILE, columns, report.rows())


# --------------------------------------------------------------------------------------------------------
# Guarded output folder

LOCK_FILE = ".prepare.lock"
STAGING_DIR = ".prepare-staging"
_OWNED_PATTERNS = ("*-*-of-*.tfrecord", ".*.tfrecord.tmp", SCHEMA_FILE, temporary_name(SCHEMA_FILE))


class OutputLockedError(RuntimeError):
    """Another `prepare` run holds the lock on the output folder."""


@contextlib.contextmanager
def _locked(out_dir: Path):
    """Hold an exclusive advisory lock on ``out_dir/.prepare.lock`` (released by the OS if the run dies)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    handle = (out_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputLockedError(f"another `mvi-tf prepare` is writing into {out_dir} (it holds {LOCK_FILE}); "
                                "wait for it to finish or give another --out") from None
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def _fresh_staging(out_dir: Path) -> Path:
    """An empty staging folder (one left by a killed run is removed first)."""
    staging = out_dir / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def _commit(staging: Path, out_dir: Path) -> None:
    """Replace the previous run's outputs by the staged ones: old shards and schemas go first, new schemas last."""
    for modality in MODALITIES:
        folder = out_dir / modality
        for pattern in _OWNED_PATTERNS if folder.is_dir() else ():
            for path in folder.glob(pattern):
                path.unlink()
    for name in (SUMMARY_FILE, REPORT_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for folder in sorted(p for p in staging.iterdir() if p.is_dir()):
        (out_dir / folder.name).mkdir(exist_ok=True)
        for path in sorted(folder.iterdir(), key=lambda p: p.name == SCHEMA_FILE):
            os.replace(path, out_dir / folder.name / path.name)
    for name in (SUMMARY_FILE, REPORT_FILE):
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging)


def base_report(base: Mapping[str, object]) -> dict[str, object]:
    """The centre/cohort columns of a report line."""
    return {"centre": base.get("centre", ""), "cohort": base.get("cohort", "")}


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Path:
    """Write a CSV under a temporary name, then rename; text cells that a spreadsheet would run are made inert."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: csv_cell(row.get(c, "")) for c in columns})
    os.replace(tmp, path)
    return path
