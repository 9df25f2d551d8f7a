"""Configuration of `mvi-tf prepare`: phases per modality, intensity windows per phase, ROI geometry.

A user whose scanner protocol has other phases changes this configuration (or passes ``--phases``), never
the code. Everything is a small typed dataclass with physical units in the field names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

MODALITIES = ("ct", "mri")
#: How the ROI stacks are sampled: the paper's square ROI, or the peritumoral band unwrapped along the boundary.
SAMPLINGS = ("square", "unwrapped")

DEFAULT_PHASES: dict[str, tuple[str, ...]] = {
    "ct": ("plain", "arterial", "portal"),
    "mri": ("t2", "arterial", "portal", "transitional", "hepatobiliary"),
}


@dataclasses.dataclass(frozen=True)
class IntensityWindow:
    """How one phase's intensities are mapped to [0, 1].

    Parameters
    ----------
    kind : {"hu", "percentile"}
        ``"hu"``: a fixed Hounsfield window ``[lower, upper]`` (CT). ``"percentile"``: the ``lower``-th and
        ``upper``-th percentiles of the intensities in a context square around the ROI (MRI, whose arbitrary
        units differ between 1.5 T / 3 T scanners and vendors).
    lower, upper : float
        HU bounds or percentiles (0-100).
    """

    kind: str = "hu"
    lower: float = -160.0
    upper: float = 240.0

    def __post_init__(self) -> None:
        if self.kind not in ("hu", "percentile"):
            raise ValueError(f"IntensityWindow.kind must be 'hu' or 'percentile'. Received: kind={self.kind!r}")
        if not self.lower < self.upper:
            raise ValueError(
                f"IntensityWindow needs lower < upper. Received: lower={self.lower}, upper={self.upper}")
        if self.kind == "percentile" and not (0.0 <= self.lower and self.upper <= 100.0):
            raise ValueError(
                f"Percentile window bounds must lie in [0, 100]. Received: lower={self.lower}, upper={self.upper}")


#: A fixed soft-tissue Hounsfield window: physically meaningful, but on the synthetic cohort the CT signatures
#: trained on it memorise their training patients (docs/ct-attention-experiments.md). Opt in per phase through
#: ``PrepareConfig(windows=...)`` or :data:`CT_HU_WINDOWS`.
CT_WINDOW = IntensityWindow("hu", -160.0, 240.0)
#: The per-ROI percentile window (1st-99th percentile of a context square around the ROI).
MRI_WINDOW = IntensityWindow("percentile", 1.0, 99.0)
#: The default of every phase of both modalities. For CT it replaced the HU window after three seeds of the
#: arterial signature gave a mean prospective AUC of 0.67 against 0.58 with the HU window, with far less
#: memorisation (training AUC 0.69-0.73 against 0.74-0.97), and a full pipeline run gave signatures of 0.64-0.68
#: against 0.52-0.60 (docs/ct-attention-experiments.md; synthetic data). `make quality --ct-window hu` repeats
#: the comparison over seeds.
DEFAULT_WINDOW = MRI_WINDOW
#: The former CT defaults (HU), kept for users whose scanners are calibrated alike and for the comparison.
CT_HU_WINDOWS: dict[str, IntensityWindow] = {
    "plain": IntensityWindow("hu", -135.0, 215.0), "arterial": CT_WINDOW, "portal": CT_WINDOW,
}

DEFAULT_WINDOWS: dict[str, dict[str, IntensityWindow]] = {"ct": {}, "mri": {}}


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Settings of the DICOM -> ROI stack stage.

    Parameters
    ----------
    phases : mapping of modality -> sequence of phase names
        Phases expected per modality; every configured phase must be in the manifest for a patient.
    image_size : int
        Side ``S`` of the ``S x S x 3`` ROI stacks, in pixels.
    margin_mm : float
        Margin added on every side of the tumour's bounding square (peritumoral zone), in mm. Applied to
        mask-derived ROIs only; an explicit ROI in lesions.csv is used as drawn.
    slice_spacing_mm : float or None
        Distance between the three slices; ``None`` uses the slice spacing of the mask/reference series.
    context_factor : float
        For percentile (MRI) windows: the percentiles are computed in a square ``context_factor`` times the ROI
        side, centred on the ROI, so that the scaling sees liver as well as tumour.
    spacing_tolerance_mm : float
        Largest allowed deviation of any slice gap from the median slice gap.
    windows : mapping of modality -> mapping of phase -> IntensityWindow
        Per-phase intensity windows; phases not listed use :data:`DEFAULT_WINDOW`, percentiles 1-99 of a
        context square around the ROI (CT and MRI; :data:`CT_HU_WINDOWS` holds the former fixed CT windows).
    shard_size : int
        Examples per TFRecord shard.
    min_lesion_ml : float
        Smallest 3-D connected component of a tumour mask that counts as a lesion, in ml; smaller specks (stray
        voxels of a drawing) are left out of the ROI and only counted in the report.
    sampling : {"square", "unwrapped"}
        ``"square"``: the paper's square ROI (`data_prep.roi`). ``"unwrapped"``: the peritumoral band unwrapped
        along the tumour boundary (`data_prep.unwrap`; rows are rays, columns distances from the boundary); needs a
        tumour mask for every patient.
    band_mm : (float, float)
        For ``sampling="unwrapped"``: distances from the tumour boundary of the first and last column, in mm
        (negative: inside the tumour).
    """

    phases: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PHASES))
    image_size: int = 64
    margin_mm: float = 10.0
    slice_spacing_mm: float | None = None
    context_factor: float = 2.0
    spacing_tolerance_mm: float = 0.1
    windows: Mapping[str, Mapping[str, IntensityWindow]] = dataclasses.field(
        default_factory=lambda: {m: dict(w) for m, w in DEFAULT_WINDOWS.items()})
    shard_size: int = 256
    min_lesion_ml: float = 0.01
    sampling: str = "square"
    band_mm: tuple[float, float] = (-12.0, 18.0)

    def __post_init__(self) -> None:
        phases = {str(m): tuple(p) for m, p in dict(self.phases).items()}
        for modality, names in phases.items():
            if modality not in MODALITIES:
                raise ValueError(f"Unknown modality {modality!r}; expected one of {MODALITIES}. "
                                 f"Received: phases={phases}")
            if not names or len(set(names)) != len(names) or any(not n.isidentifier() for n in names):
                raise ValueError(f"Phases of {modality!r} must be distinct, non-empty identifiers. "
                                 f"Received: phases={phases}")
            if "tabular" in names or "label" in names:
                raise ValueError(f"Phase names may not shadow record keys. Received: phases={phases}")
        object.__setattr__(self, "phases", phases)
        if not (isinstance(self.image_size, int) and 8 <= self.image_size <= 1024):
            raise ValueError(f"image_size must be an int in [8, 1024]. Received: image_size={self.image_size}")
        if not 0.0 <= self.margin_mm <= 200.0:
            raise ValueError(f"margin_mm must lie in [0, 200]. Received: margin_mm={self.margin_mm}")
        if self.slice_spacing_mm is not None and not self.slice_spacing_mm > 0:
            raise ValueError(f"slice_spacing_mm must be > 0. Received: slice_spacing_mm={self.slice_spacing_mm}")
        if not self.context_factor >= 1.0:
            raise ValueError(f"context_factor must be >= 1. Received: context_factor={self.context_factor}")
        if not 0.0 <= self.min_lesion_ml < 1000.0:
            raise ValueError(f"min_lesion_ml must lie in [0, 1000). Received: min_lesion_ml={self.min_lesion_ml}")
        if not self.shard_size >= 1:
            raise ValueError(f"shard_size must be >= 1. Received: shard_size={self.shard_size}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}. Received: sampling={self.sampling!r}")
        band = tuple(float(b) for b in self.band_mm)
        if len(band) != 2 or not -100.0 <= band[0] < band[1] <= 100.0:
            raise ValueError(f"band_mm must be (inner, outer) mm with -100 <= inner < outer <= 100. "
                             f"Received: band_mm={self.band_mm}")
        object.__setattr__(self, "band_mm", band)

    def window(self, modality: str, phase: str) -> IntensityWindow:
        """The intensity window of one phase."""
        per_modality = dict(self.windows).get(modality, {})
        if phase in per_modality:
            return per_modality[phase]
        return DEFAULT_WINDOW

    def to_dict(self) -> dict:
        """A JSON-ready copy (stored in schema.json)."""
        return {
            "phases": {m: list(p) for m, p in self.phases.items()},
            "image_size": self.image_size,
            "margin_mm": self.margin_mm,
            "slice_spacing_mm": self.slice_spacing_mm,
            "context_factor": self.context_factor,
            "spacing_tolerance_mm": self.spacing_tolerance_mm,
            "min_lesion_ml": self.min_lesion_ml,
            "sampling": self.sampling,
            "band_mm": list(self.band_mm),
            "windows": {m: {p: dataclasses.asdict(self.window(m, p)) for p in ps} for m, ps in self.phases.items()},
        }


def parse_phases(specs: str | Sequence[str] | None) -> dict[str, tuple[str, ...]]:
    """Parse ``--phases`` values into the full phase mapping.

    Each spec is ``modality=phase,phase[;modality=phase,...]``; a spec replaces only the modalities it names,
    the others keep their defaults.

    Examples
    --------
    >>> parse_phases("ct=arterial,equilibrium")["ct"]
    ('arterial', 'equilibrium')
    """
    phases = dict(DEFAULT_PHASES)
    if specs is None:
        return phases
    if isinstance(specs, str):
        specs = [specs]
    for spec in specs:
        for part in (p.strip() for p in str(spec).split(";")):
            if not part:
                continue
            modality, sep, names = part.partition("=")
            modality = modality.strip().lower()
            names_t = tuple(n.strip() for n in names.split(",") if n.strip())
            if not sep or modality not in MODALITIES or not names_t:
                raise ValueError("Phases must read 'ct=plain,arterial,portal' or 'mri=t2,...' (';' between "
                                 f"modalities). Received: phases={spec!r}")
            phases[modality] = names_t
    return phases
