"""A tiny cohort written as real TFRecords with data_prep's own writer (schema, tabular encoding, shards).

MVI-positive patients carry a bright rim ("invasion") around a central disc in every phase, a raised AFP and a
non-smooth margin, so every model level has signal to learn; the rest is seeded noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CT_PHASES = ("plain", "arterial", "portal")


def clinical_row(rng: np.random.Generator, label: int) -> dict[str, object]:
    """One clinical.csv-style row whose AFP and margin depend on ``label``."""
    return {
        "age": float(rng.normal(55, 10)),
        "sex": "male" if rng.random() < 0.8 else "female",
        "aetiology": str(rng.choice(["hbv", "hcv", "other"])),
        "bilirubin_umol_l": float(rng.uniform(5, 30)),
        "alt_u_l": float(rng.uniform(10, 80)),
        "ast_u_l": float(rng.uniform(10, 80)),
        "platelets_1e9_l": float(rng.uniform(80, 300)),
        "afp_ng_ml": float(rng.choice([5.0, 100.0, 900.0], p=[0.15, 0.25, 0.6] if label else [0.6, 0.25, 0.15])),
        "tumour_size_cm": float(rng.uniform(1, 10)),
        "tumour_number": "multiple" if rng.random() < 0.2 else "solitary",
        "margin": "non-smooth" if rng.random() < (0.8 if label else 0.2) else "smooth",
        "peritumoral_enhancement": "present" if rng.random() < 0.3 else "absent",
        "enhancement_pattern": "typical" if rng.random() < 0.7 else "atypical",
        "capsule": "present" if rng.random() < 0.5 else "absent",
        "hbp_tumour_hypointensity": "present",
        "hbp_peritumoral_hypointensity": "absent",
    }


def roi_stack(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """``(size, size, 3)`` float32 in [0, 1]: noisy liver, dark tumour disc, bright rim when ``label``."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    image = 0.5 + 0.08 * rng.standard_normal((size, size, 3))
    image[r < size / 4] -= 0.25
    if label:
        image[(r >= size / 4) & (r < size / 4 + 3)] += 0.35
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def write_tiny_records(
    out_dir: str | Path,
    modality: str = "ct",
    n_train: int = 24,
    n_prospective: int = 8,
    image_size: int = 32,
    seed: int = 0,
    phases: tuple[str, ...] = CT_PHASES,
    shard_size: int = 8,
) -> Path:
    """Write ``out_dir/<modality>/{train,prospective}-*.tfrecord`` + ``schema.json``; returns ``out_dir``."""
    from data_prep import records, tabular

    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    n = n_train + n_prospective
    labels = np.zeros(n, dtype=int)
    labels[rng.permutation(n)[: round(0.45 * n)]] = 1
    labels[:4] = [0, 1, 0, 1]
    rows = [clinical_row(rng, int(y)) for y in labels]
    tab_schema = tabular.fit_schema(rows[:n_train], modality)
    schema = records.make_schema(modality, phases, image_size, tab_schema)
    schema["synthetic"] = True
    writers = {c: records.ShardedWriter(out_dir / modality, c, shard_size) for c in ("train", "prospective")}
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        cohort = "train" if i < n_train else "prospective"
        values = {
            "patient_id": f"TINY{i:03d}",
            "centre": "C" if cohort == "prospective" else ("A" if i % 2 else "B"),
            "cohort": cohort,
            "label": int(label),
            "tabular": tabular.encode_row(row, tab_schema),
            **tabular.outcome_values({**row, "pfs_months": 12.0 + i, "pfs_event": i % 2, "os_months": 20.0 + i,
                                      "os_event": (i + 1) % 2}),
            **tabular.subgroup_values(row),
        }
        for phase in phases:
            values[phase] = roi_stack(rng, int(label), image_size)
        writers[cohort].write(records.encode_example(values, schema))
    for writer in writers.values():
        writer.close()
    records.write_json_atomic(out_dir / modality / records.SCHEMA_FILE, schema)
    return out_dir
