"""Benchmark: `mvi-tf prepare` throughput vs raw pydicom read-and-decode of the same files, in one run.

A small synthetic cohort (scale 0.05, 128 px) is generated; then, on the same machine and in the same
process, (1) every DICOM file the manifest points at is read with ``pydicom.dcmread`` and decoded with
``.pixel_array`` (one process, the plain baseline), and (2) `prepare_cohort` turns the cohort into TFRecords
(worker processes over patients, the default; and once more in one process). All are reported in slices per
second; the figure of merit is the ratio (target >= 0.5 on 2 cores). One-off imports (TensorFlow, pydicom)
are done before timing; the 1-minute load average is recorded because other work on the machine skews it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

SCALE = 0.05
IMAGE_SIZE = 128
TARGET_RATIO = 0.5


def _series_files(cohort_dir: Path) -> list[Path]:
    from data_prep.dicom_series import series_files

    with open(cohort_dir / "manifest.csv", newline="") as handle:
        folders = sorted({row["series_dir"] for row in csv.DictReader(handle)})
    return series_files([cohort_dir / folder for folder in folders])


def _raw_read(files: list[Path]) -> float:
    import pydicom

    start = time.perf_counter()
    total = 0
    for path in files:
        total += int(pydicom.dcmread(path).pixel_array.shape[0])
    seconds = time.perf_counter() - start
    if total == 0:
        raise RuntimeError("raw read decoded no pixels")
    return seconds


def run(out_dir: str | os.PathLike | None = None, scale: float = SCALE, image_size: int = IMAGE_SIZE,
        workers: int | None = None) -> dict:
    """Generate a small cohort, time raw read+decode and `prepare_cohort` on it, return the figures.

    Parameters
    ----------
    out_dir : path, optional
        Working directory (cohort and records); a temporary one by default.
    scale, image_size : float, int
        Synthetic cohort size and DICOM matrix.
    workers : int, optional
        `prepare_cohort` worker processes (default: its own default).
    """
    import data_prep.records  # noqa: F401 - import TensorFlow before timing
    from data_prep.prepare import prepare_cohort
    from data_prep.synthetic.cohort import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(out_dir) if out_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cohort = work / "cohort"
        generate_cohort(cohort, seed=0, scale=scale, image_size=image_size, progress=False)
        files = _series_files(cohort)
        _raw_read(files[:20])  # warm the file cache and the decoder
        raw_seconds = _raw_read(files)
        n = len(files)
        seconds = {}
        n_workers = workers or min(os.cpu_count() or 1, 8)
        for label, count in (("parallel", n_workers), ("serial", 1)):
            start = time.perf_counter()
            result = prepare_cohort(cohort, work / f"records_{label}", image_size=64, workers=count,
                                    progress=False)
            seconds[label] = time.perf_counter() - start
            if result.n_skipped:
                raise RuntimeError(f"prepare skipped {result.n_skipped} entries: {result.skipped[:3]}")
        raw_rate = n / raw_seconds
        ratio = (n / seconds["parallel"]) / raw_rate
        ratio_serial = (n / seconds["serial"]) / raw_rate
        return {
            "title": "prepare throughput vs raw pydicom read+decode",
            "target": f"prepare slices/s >= {TARGET_RATIO} x raw dcmread+pixel_array slices/s (same files, same run)",
            "meets_target": bool(ratio >= TARGET_RATIO),
            "figures": {
                "ratio_prepare_to_raw": round(ratio, 3),
                "ratio_prepare_serial_to_raw": round(ratio_serial, 3),
                "prepare_slices_per_s": round(n / seconds["parallel"], 1),
                "prepare_serial_slices_per_s": round(n / seconds["serial"], 1),
                "raw_read_decode_slices_per_s": round(raw_rate, 1),
                "slices": n,
                "examples_written": result.n_written,
                "workers": n_workers,
                "cohort": f"synthetic scale {scale}, {image_size} px DICOM, ROI stacks 64 px",
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="Working directory (default: temporary).")
    parser.add_argument("--scale", type=float, default=SCALE)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    result = run(args.out, args.scale, args.image_size, args.workers)
    print(json.dumps(result, indent=2))
    figures = result["figures"]
    print(f"prepare / raw = {figures['ratio_prepare_to_raw']:.2f} with {figures['workers']} workers, "
          f"{figures['ratio_prepare_serial_to_raw']:.2f} in one process (target >= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
