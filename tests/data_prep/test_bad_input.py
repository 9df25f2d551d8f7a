"""The bad-input suite of `prepare`: one defect per patient, each skipped with a reason that names it, and the
other patients' records byte-identical to a run without the defective patients.

Table-driven: `PATIENT_CASES` (patient-level defects, one cohort run) and `FILE_CASES` (a cohort file that
cannot be read at all: the CLI exits non-zero with one line, no traceback). All DICOM is genuine, written by
`dicom_cohort_fixture`.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from click.testing import CliRunner
from dicom_cohort_fixture import CT_GEOMETRY, make_cohort, read_csv, tumour_mask, write_csv, write_nifti

from data_prep.config import PrepareConfig
from data_prep.prepare import prepare_cohort

CONFIG = PrepareConfig(phases={"ct": ("plain", "arterial", "portal")}, margin_mm=5.0, image_size=32)
GOOD = {"G01": ("train", ("ct",), "nifti"), "G02": ("train", ("ct",), "seg"),
        "G03": ("prospective", ("ct",), "roi"), "G04": ("train", ("ct",), "roi")}


def _set(root: Path, name: str, pid: str, **values: object) -> None:
    rows = read_csv(root / name)
    for row in rows:
        if row["patient_id"] == pid and (name != "manifest.csv" or row["phase"] == values.get("_phase", "portal")):
            row.update({k: v for k, v in values.items() if not k.startswith("_")})
    write_csv(root / name, list(rows[0]), rows)


def _clinical(**values: object) -> Callable[[Path, str], None]:
    return lambda root, pid: _set(root, "clinical.csv", pid, **values)


def _lesion(**values: object) -> Callable[[Path, str], None]:
    return lambda root, pid: _set(root, "lesions.csv", pid, **values)


def _manifest(**values: object) -> Callable[[Path, str], None]:
    return lambda root, pid: _set(root, "manifest.csv", pid, **values)


def _edit_line(name: str, edit: Callable[[str], str]) -> Callable[[Path, str], None]:
    def apply(root: Path, pid: str) -> None:
        lines = (root / name).read_text().splitlines()
        n = next(i for i, line in enumerate(lines) if line.startswith(pid + ","))
        lines[n] = edit(lines[n])
        (root / name).write_text("\n".join(lines) + "\n")
    return apply


def _slice(phase: str, edit: Callable[[pydicom.Dataset], None]) -> Callable[[Path, str], None]:
    def apply(root: Path, pid: str) -> None:
        path = sorted((root / "dicom" / pid / "ct" / phase).iterdir())[2]
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    return apply


def _all_slices(phase: str, edit: Callable[[pydicom.Dataset], None]) -> Callable[[Path, str], None]:
    def apply(root: Path, pid: str) -> None:
        for path in (root / "dicom" / pid / "ct" / phase).iterdir():
            ds = pydicom.dcmread(path)
            edit(ds)
            ds.save_as(path)
    return apply


def _corrupt(root: Path, pid: str) -> None:
    sorted((root / "dicom" / pid / "ct" / "arterial").iterdir())[1].write_bytes(b"not DICOM" * 40)


def _nifti_on_portal_grid(root: Path, pid: str) -> None:
    geometry = CT_GEOMETRY["portal"]  # another grid than the plain series the row names
    write_nifti(root / "masks" / f"{pid}_ct.nii.gz", tumour_mask(geometry), geometry)


def _other_patients_seg(root: Path, pid: str) -> None:
    shutil.copy(root / "masks" / "G02_ct_seg.dcm", root / "masks" / f"{pid}_ct_seg.dcm")


def _pet(root: Path, pid: str) -> None:
    _set(root, "manifest.csv", pid, modality="pet", _phase="plain")


def _delattr(name: str) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: delattr(ds, name)


def _set_attr(name: str, value: object) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: setattr(ds, name, value)


# patient -> (lesion kind, defect, words the reason must hold)
PATIENT_CASES: dict[str, tuple[str, Callable[[Path, str], None], list[str]]] = {
    "V01": ("roi", _clinical(age="999"), ["'age'", "plausible range", "age='999'"]),
    "V02": ("roi", _clinical(afp_ng_ml="1e30"), ["afp_ng_ml='1e30'", "plausible"]),
    "V03": ("roi", _clinical(tumour_size_cm="5000"), ["tumour_size_cm='5000'", "plausible"]),
    "V04": ("roi", _clinical(age="inf"), ["age='inf'", "finite"]),
    "V05": ("roi", _clinical(age="1e308"), ["age='1e308'"]),
    "V06": ("roi", _edit_line("manifest.csv", lambda line: line + ",extra"), ["manifest.csv line", "5 fields"]),
    "V07": ("roi", _edit_line("clinical.csv", lambda line: line + ",x,y"), ["clinical.csv line", "26 fields"]),
    "V08": ("roi", _edit_line("lesions.csv", lambda line: ",".join(line.split(",")[:4])), ["lesions.csv line",
                                                                                          "4 fields"]),
    "V09": ("roi", _manifest(series_dir="../../../../etc"), ["outside the cohort", "series_dir='../../../../etc'"]),
    "V10": ("roi", _manifest(series_dir="dicom/V10/ct/arterial"), ["'arterial' and 'portal' are the same series"]),
    "V11": ("roi", _slice("portal", _delattr("RescaleIntercept")), ["without RescaleIntercept", "V11/ct/portal/"]),
    "V12": ("roi", _clinical(age="sixty"), ["age='sixty'", "not a number"]),
    "V13": ("roi", _lesion(mask_path="../../etc/passwd"), ["mask_path='../../etc/passwd'", "outside the cohort"]),
    "V14": ("roi", _clinical(pfs_months="1e6"), ["pfs_months='1e6'", "plausible"]),
    "V15": ("nifti", _lesion(lesion_index="3"), ["lesion_index must lie in 1..1", "lesion_index=3"]),
    "V16": ("seg", _lesion(mask_segment="7"), ["no segment 7"]),
    "V17": ("seg", _other_patients_seg, ["drawn on another series", "wrong patient"]),
    "V18": ("roi", _all_slices("portal", _set_attr("PatientID", "HOSP-0000002")), ["2 different patients"]),
    "V19": ("roi", _corrupt, ["not readable DICOM", "V19/ct/arterial/"]),
    "V20": ("roi", _manifest(series_dir="dicom/V20/ct/nowhere"), ["does not exist", "dicom/V20/ct/nowhere"]),
    "V21": ("nifti", _lesion(mask_path="masks/absent.nii.gz"), ["does not exist", "masks/absent.nii.gz"]),
    "V22": ("roi", _clinical(cohort="validation"), ["unknown cohort", "cohort='validation'"]),
    "V23": ("roi", _lesion(roi_side_mm="-5"), ["invalid ROI", "'-5'"]),
    "V24": ("roi", _clinical(mvi="maybe"), ["unknown label", "maybe"]),
    "V25": ("roi", _lesion(roi_center_x_mm="abc"), ["must be numbers", "'abc'"]),
    "V26": ("roi", _pet, ["unknown modality", "modality='pet'"]),
    "V27": ("nifti", _nifti_on_portal_grid, ["matches no slice"]),
    "V28": ("roi", _lesion(roi_center_x_mm="200"), ["reaches outside", "200"]),
    "V29": ("roi", _slice("plain", _set_attr("PixelSpacing", [0.5, 0.5])), ["PixelSpacing"]),
    "V30": ("roi", _clinical(ast_u_l="-3"), ["ast_u_l='-3'", ">= 0"]),
    "V31": ("roi", _manifest(series_dir=""), ["empty series_dir for phase(s) ['portal']"]),
    "V32": ("roi", _manifest(series_dir="/srv/pacs/HOSP-7731920/ct"), ["outside the cohort", "series_dir='ct'"]),
}
FORMULA_ID = "=HYPERLINK(\"http://x\",\"y\")"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    patients = {**GOOD, **{pid: ("train", ("ct",), kind) for pid, (kind, _, _) in PATIENT_CASES.items()}}
    root = make_cohort(base / "cohort", patients, seed=7)
    clinical = read_csv(root / "clinical.csv")
    for n, row in enumerate(clinical):
        row["age"] = str(40 + n % 30)  # the fixture's ages grow with the patient count
    write_csv(root / "clinical.csv", list(clinical[0]), clinical)
    clean = base / "clean"
    shutil.copytree(root, clean)
    for name in ("manifest.csv", "lesions.csv", "clinical.csv"):
        rows = [r for r in read_csv(clean / name) if r["patient_id"] in GOOD]
        write_csv(clean / name, list(rows[0]), rows)
    lesions = read_csv(root / "lesions.csv")
    for row in lesions:
        row["lesion_index"] = ""
    write_csv(root / "lesions.csv", list(lesions[0]), lesions)
    # a prospective patient whose ID a spreadsheet would run as a formula (written, not skipped)
    for name in ("manifest.csv", "lesions.csv", "clinical.csv"):
        rows = read_csv(root / name)
        rows += [dict(r, patient_id=FORMULA_ID) for r in rows if r["patient_id"] == "G03"]
        write_csv(root / name, list(rows[0]), rows)
    raw_edits = ("V06", "V07", "V08")  # lines a csv.DictWriter could not write back: applied last
    for pid in [p for p in PATIENT_CASES if p not in raw_edits] + list(raw_edits):
        PATIENT_CASES[pid][1](root, pid)
    # The defective cohort goes through the command line, as a user runs it; the clean one through the library.
    cli = _cli(root, base / "bad_out", "--margin-mm", "5", "--workers", "2")
    assert cli.exit_code == 0 and "Traceback" not in cli.output, cli.output
    bad = SimpleNamespace(out_dir=base / "bad_out", report_path=base / "bad_out" / "prepare_report.csv",
                          output=cli.output)
    good = prepare_cohort(clean, base / "clean_out", config=CONFIG, workers=1, progress=False)
    return bad, good, root


def test_command_line_lists_each_skip_once_with_its_reason(runs):
    bad, _, _ = runs
    lines = bad.output.splitlines()
    for pid in PATIENT_CASES:
        modality = "pet" if pid == "V26" else "ct"
        mine = [line for line in lines if line.startswith(f"skipped: patient {pid} ({modality}): ")]
        assert len(mine) == 1, (pid, mine)
    n_skipped = sum(1 for r in read_csv(bad.report_path) if r["status"] == "skipped")
    assert sum(1 for line in lines if line.startswith("skipped: ")) == n_skipped
    summary = [line for line in lines if " written, " in line]
    assert summary and f"{n_skipped} skipped" in summary[-1], summary


def _examples(out: Path) -> dict[str, bytes]:
    import tensorflow as tf

    found = {}
    for shard in sorted((out / "ct").glob("*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(shard)).as_numpy_iterator():
            example = tf.train.Example.FromString(record)
            found[example.features.feature["patient_id"].bytes_list.value[0].decode()] = record
    return found


@pytest.mark.parametrize("pid", sorted(PATIENT_CASES))
def test_defect_skips_only_that_patient_with_a_named_reason(runs, pid):
    bad, _, _ = runs
    report = {(r["patient_id"], r["modality"]): r for r in read_csv(bad.report_path)}
    modality = "pet" if pid == "V26" else "ct"
    row = report[(pid, modality)]
    assert row["status"] == "skipped", row
    assert row["reason"].startswith(f"patient {pid} ("), row["reason"]
    for word in PATIENT_CASES[pid][2]:
        assert word in row["reason"], (word, row["reason"])
    assert "/tmp/" not in row["reason"] and "/srv" not in row["reason"] and "HOSP-" not in row["reason"]
    assert "1.2.826" not in row["reason"]  # no absolute path, no hospital ID, no UID


def test_other_patients_records_are_byte_identical_to_a_clean_run(runs):
    bad, good, _ = runs
    written_bad, written_good = _examples(bad.out_dir), _examples(good.out_dir)
    assert sorted(written_good) == sorted(GOOD)
    assert sorted(written_bad) == sorted([*GOOD, FORMULA_ID])
    for pid in GOOD:
        assert written_bad[pid] == written_good[pid], pid
    assert (bad.out_dir / "ct" / "schema.json").read_bytes() != b""
    import json

    def scaling(out: Path) -> list:
        schema = json.loads((out / "ct" / "schema.json").read_text())
        return [c.get("scaling") for c in schema["tabular"]["columns"]]

    assert scaling(bad.out_dir) == scaling(good.out_dir)  # no implausible value entered the scaling


def test_formula_like_patient_id_is_inert_in_the_csv_report(runs):
    bad, _, _ = runs
    with open(bad.report_path, newline="") as handle:
        ids = [row[0] for row in csv.reader(handle)]
    assert "'" + FORMULA_ID in ids and FORMULA_ID not in ids
    assert all(not i.startswith(("=", "+", "@")) for i in ids)


def test_schema_never_holds_nan_or_infinity(runs):
    bad, _, _ = runs
    text = (bad.out_dir / "ct" / "schema.json").read_text()
    assert "Infinity" not in text and "NaN" not in text


def _cli(cohort: Path, out: Path, *extra: str):
    from mvi_tf.cli import main

    return CliRunner().invoke(main, ["prepare", "--cohort", str(cohort), "--out", str(out), "--workers", "1",
                                     "--phases", "ct=plain,arterial,portal", "--image-size", "32", *extra])


def _rewrite(name: str, transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / name).write_bytes(transform((root / name).read_bytes()))
    return apply


# cohort file defect -> words of the one-line error
FILE_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "empty clinical.csv": (_rewrite("clinical.csv", lambda b: b""), ["clinical.csv is empty"]),
    "semicolons": (_rewrite("clinical.csv", lambda b: b.replace(b",", b";")), ["separated by 'semicolons'"]),
    "latin-1": (_rewrite("clinical.csv", lambda b: b.replace(b"centre_a", "centre_\u00e9".encode("latin-1"))),
                ["clinical.csv is not UTF-8", "byte 0xe9", "line 2"]),
    "missing manifest": (lambda root: (root / "manifest.csv").unlink(), ["manifest.csv is missing"]),
    "manifest lacks series_dir": (_rewrite("manifest.csv", lambda b: b.replace(b"series_dir", b"folder", 1)),
                                  ["manifest.csv lacks required column(s) ['series_dir']"]),
    "NUL bytes": (_rewrite("lesions.csv", lambda b: b.replace(b",", b"\x00,", 3)), ["lesions.csv"]),
}


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("files") / "cohort", {"G01": GOOD["G01"], "G04": GOOD["G04"]},
                       seed=3)


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unreadable_cohort_file_is_one_line_not_a_traceback(small_cohort, tmp_path, case):
    root = tmp_path / "cohort"
    shutil.copytree(small_cohort, root)
    damage, words = FILE_CASES[case]
    damage(root)
    result = _cli(root, tmp_path / "out")
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_utf16_clinical_csv_is_read_like_utf8(small_cohort, tmp_path):
    root = tmp_path / "cohort"
    shutil.copytree(small_cohort, root)
    text = (root / "clinical.csv").read_text(encoding="utf-8")
    (root / "clinical.csv").write_bytes(text.encode("utf-16"))  # with a byte order mark, as spreadsheets write it
    utf16 = _cli(root, tmp_path / "a")
    utf8 = _cli(small_cohort, tmp_path / "b")
    assert utf16.exit_code == 0 == utf8.exit_code, utf16.output
    assert _examples(tmp_path / "a") == _examples(tmp_path / "b")


def test_reasons_through_a_symlinked_cohort_hold_no_absolute_path(small_cohort, tmp_path):
    root = tmp_path / "real_cohort"
    shutil.copytree(small_cohort, root)
    _corrupt(root, "G04")
    _set(root, "manifest.csv", "G01", series_dir="dicom/G01/ct/none")
    link = tmp_path / "link"
    link.symlink_to(root)
    result = prepare_cohort(link, tmp_path / "out", config=CONFIG, workers=1, progress=False)
    reasons = [reason for _, _, reason in result.skipped]
    assert len(reasons) == 2 and "dicom/G04/ct/arterial/" in reasons[1] and "dicom/G01/ct/none" in reasons[0]
    assert not any(str(tmp_path) in r or "/tmp" in r or str(root.resolve()) in r for r in reasons), reasons
