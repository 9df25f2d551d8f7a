"""Abdominal phantom: anatomy, tumour and peritumoral signs rendered on a scanner grid in patient coordinates.

The phantom is a continuous function of DICOM patient coordinates (LPS, mm): body wall with subcutaneous fat
and muscle, liver (patient's right, image left), spleen, spine, aorta, IVC, intrahepatic vessels, the tumour
with its capsule, distractors and satellites, and the peritumoral sector. Every phase is rendered by
sampling that one function on the phase's own grid (:class:`SeriesGeometry`), so phases of one study with
different field of view, pixel spacing or slice positions stay registered through patient coordinates, exactly
as real multiphase studies do.

Intensities are Hounsfield units for CT and arbitrary MR signal (scaled by field strength) for MRI. Per-centre
scanner profiles (:data:`SCANNERS`) set noise, contrast, field of view, slice thickness and 1.5 T / 3 T scale.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import gaussian_filter

from data_prep.synthetic.phenotype import MODALITY_PHASES, Phenotype

MODALITIES = ("ct", "mri")
#: The peritumoral signs drawn on one phase only; capsule interruption and microsatellites show on every phase.
SIGN_PHASE = {"peritumoral_enhancement": "arterial", "peritumoral_hbp_hypointensity": "hepatobiliary"}
SIGNS_ON_EVERY_PHASE = ("capsule_interruption", "microsatellites")

BODY_SEMI_AXES_MM = (165.0, 120.0)
LIVER_CENTRE_MM = (-45.0, 0.0)


def signs_rendered(phase: str) -> tuple[str, ...]:
    """The MVI signs (``Phenotype.signs`` keys) the phantom can draw on ``phase``."""
    return SIGNS_ON_EVERY_PHASE + tuple(sign for sign, on in SIGN_PHASE.items() if on == phase)


@dataclasses.dataclass(frozen=True)
class ScannerProfile:
    """Acquisition settings of one centre for one modality.

    Parameters
    ----------
    manufacturer, model : str
        Written to the DICOM equipment module.
    fov_mm : float
        Reconstruction field of view; pixel spacing is ``fov_mm / image_size``.
    slice_thickness_mm, slice_spacing_mm : float
        Nominal reconstructed slice thickness and distance between slice centres.
    noise : float
        CT: noise standard deviation in HU. MRI: noise standard deviation as a fraction of liver signal.
    contrast_gain : float
        Multiplies contrast enhancement (iodine concentration, kVp, gadoxetate dose, sequence).
    field_strength_t : float
        MRI only: 1.5 or 3.0 (3 T images are brighter by ``intensity_scale``).
    intensity_scale : float
        MRI only: global signal scale.
    kvp : float
        CT only: tube voltage.
    vary_phase_geometry : bool
        Phases of one study get different field of view, slice spacing and table position.
    mask_format : str
        ``seg`` (DICOM-SEG) or ``nifti`` for the tumour mask.
    one_folder : bool
        All series of a study in one folder (the manifest's ``series_uid`` picks the phase).
    institution : str
        Fictitious institution name written to every file.
    """

    manufacturer: str
    model: str
    fov_mm: float
    slice_thickness_mm: float
    slice_spacing_mm: float
    noise: float
    contrast_gain: float
    field_strength_t: float = 0.0
    intensity_scale: float = 1.0
    kvp: float = 120.0
    vary_phase_geometry: bool = False
    mask_format: str = "nifti"
    one_folder: bool = False
    institution: str = ""


SCANNERS: dict[tuple[str, str], ScannerProfile] = {
    ("C1", "ct"): ScannerProfile(
        "GE MEDICAL SYSTEMS", "LightSpeed VCT", 360.0, 5.0, 5.0, 12.0, 1.0,
        kvp=120.0, mask_format="seg", institution="North Lake Liver Hospital",
    ),
    ("C2", "ct"): ScannerProfile(
        "SIEMENS", "SOMATOM Definition AS", 380.0, 3.0, 2.5, 18.0, 1.15,
        kvp=100.0, institution="Riverside Medical University Hospital",
    ),
    ("C3", "mri"): ScannerProfile(
        "SIEMENS", "MAGNETOM Aera", 380.0, 6.0, 6.0, 0.035, 1.0,
        field_strength_t=1.5, intensity_scale=1.0, institution="East Harbour General Hospital",
    ),
    ("C4", "mri"): ScannerProfile(
        "GE MEDICAL SYSTEMS", "Discovery MR750", 360.0, 4.0, 4.0, 0.025, 0.9,
        field_strength_t=3.0, intensity_scale=1.6, vary_phase_geometry=True, one_folder=True,
        institution="Central Plains Provincial Hospital",
    ),
    ("C5", "ct"): ScannerProfile(
        "Philips", "iCT 256", 350.0, 3.0, 3.0, 14.0, 1.05,
        kvp=120.0, vary_phase_geometry=True, mask_format="seg", institution="West Bay Cancer Centre",
    ),
    ("C5", "mri"): ScannerProfile(
        "Philips", "Ingenia", 370.0, 5.0, 5.0, 0.03, 1.0,
        field_strength_t=3.0, intensity_scale=1.5, vary_phase_geometry=True, mask_format="seg",
        institution="West Bay Cancer Centre",
    ),
}
"""Scanner profile per (centre, modality)."""

# Tissue intensities per phase. CT in HU; MRI in arbitrary units at 1.5 T.
_TISSUES = (
    "air", "fat", "muscle", "cavity", "liver", "spleen", "vessel", "aorta", "ivc", "bone", "canal",
    "tumour", "tumour_atypical", "tumour_hbp_iso", "capsule", "necrosis", "fat_focus", "haemorrhage",
    "ape_delta", "phh_factor",
)
INTENSITIES: dict[str, dict[str, tuple[float, ...]]] = {
    "ct": {
        #           air    fat   musc  cav   liver spl  vess  aorta ivc  bone canal tum  atyp  iso  caps necr  fatf  haem  ape  phh
        "plain": (-1000, -105, 50, -15, 58, 48, 42, 42, 40, 550, 15, 40, 44, 40, 45, 20, -55, 72, 0, 1.0),
        "arterial": (-1000, -102, 56, -10, 72, 115, 125, 330, 70, 560, 16, 128, 86, 128, 70, 23, -50, 74, 48, 1.0),
        "portal": (-1000, -100, 62, -5, 118, 122, 178, 168, 150, 560, 18, 86, 112, 86, 142, 27, -45, 76, 10, 1.0),
    },
    "mri": {
        "t2": (0, 620, 150, 330, 250, 480, 60, 40, 60, 220, 900, 430, 400, 430, 200, 900, 560, 300, 0, 1.0),
        "arterial": (0, 140, 320, 250, 420, 620, 700, 1200, 450, 300, 120, 700, 470, 700, 400, 200, 260, 800, 240, 1.0),
        "portal": (0, 140, 330, 260, 560, 640, 900, 850, 800, 310, 120, 430, 540, 430, 720, 210, 270, 800, 40, 1.0),
        "transitional": (
            0, 140, 330, 260, 600, 560, 700, 650, 650, 310, 120, 380, 500, 380, 720, 220, 280, 790, 0, 1.0,
        ),
        "hepatobiliary": (
            0, 140, 320, 250, 800, 420, 300, 330, 320, 300, 120, 330, 380, 760, 450, 220, 290, 780, 0, 0.6,
        ),
    },
}


def tissue_values(modality: str, phase: str, profile: ScannerProfile) -> dict[str, float]:
    """Intensity of every tissue for one phase after the scanner's contrast gain and scale."""
    try:
        row = INTENSITIES[modality][phase]
    except KeyError:
        raise ValueError(f"No intensities for modality/phase. Received: modality={modality}, phase={phase}") from None
    values = dict(zip(_TISSUES, (float(v) for v in row), strict=True))
    if modality == "ct":
        plain = dict(zip(_TISSUES, (float(v) for v in INTENSITIES["ct"]["plain"]), strict=True))
        for t in _TISSUES[:-2]:
            values[t] = plain[t] + profile.contrast_gain * (values[t] - plain[t])
        values["ape_delta"] *= profile.contrast_gain
    else:
        if phase != "t2":
            liver = values["liver"]
            for t in _TISSUES[1:-2]:
                values[t] = liver + profile.contrast_gain * (values[t] - liver)
            values["ape_delta"] *= profile.contrast_gain
        for t in _TISSUES[:-1]:
            values[t] *= profile.intensity_scale
    return values


@dataclasses.dataclass(frozen=True)
class SeriesGeometry:
    """An axial image grid in patient coordinates (LPS, mm).

    ``ImageOrientationPatient`` is ``[1, 0, 0, 0, 1, 0]``: columns run along +x (towards the patient's
    left), rows along +y (posterior), slices along +z (superior). Voxel ``[k, r, c]`` lies at
    ``origin + (c * col_spacing, r * row_spacing, k * slice_spacing)``.
    """

    origin_mm: tuple[float, float, float]
    row_spacing_mm: float
    col_spacing_mm: float
    slice_spacing_mm: float
    slice_thickness_mm: float
    n_rows: int
    n_cols: int
    n_slices: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return (self.n_slices, self.n_rows, self.n_cols)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (columns), y (rows) and z (slices) coordinates in mm."""
        x = self.origin_mm[0] + self.col_spacing_mm * np.arange(self.n_cols)
        y = self.origin_mm[1] + self.row_spacing_mm * np.arange(self.n_rows)
        z = self.origin_mm[2] + self.slice_spacing_mm * np.arange(self.n_slices)
        return x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)

    def slice_position(self, k: int) -> tuple[float, float, float]:
        """``ImagePositionPatient`` of slice ``k`` (centre of its first transmitted pixel)."""
        return (self.origin_mm[0], self.origin_mm[1], self.origin_mm[2] + k * self.slice_spacing_mm)

    def nifti_affine(self) -> np.ndarray:
        """RAS affine of a NIfTI image whose array is indexed ``[column, row, slice]``.

        The LPS affine maps ``(c, r, k, 1)`` to patient coordinates; flipping the sign of the first two rows
        converts LPS to RAS, as NIfTI requires.
        """
        lps = np.array(
            [
                [self.col_spacing_mm, 0.0, 0.0, self.origin_mm[0]],
                [0.0, self.row_spacing_mm, 0.0, self.origin_mm[1]],
                [0.0, 0.0, self.slice_spacing_mm, self.origin_mm[2]],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _stream(seed: int, p: Phenotype, *tags: int) -> np.random.Generator:
    """An independent random stream for one patient, keyed by integer tags."""
    return np.random.default_rng(np.random.SeedSequence([seed, int(p.centre[1:]), p.index, *tags]))


def _anatomy_rng(seed: int, p: Phenotype) -> np.random.Generator:
    return _stream(seed, p, 2)


def liver_ellipse_mm(p: Phenotype) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre and semi-axes (mm) of the liver's axial ellipse; it grows with the tumour, within the abdomen."""
    radius = p.size_cm * 5.0
    semi = (min(max(90.0, radius + 20.0), 95.0), min(max(75.0, radius + 17.0), 88.0))
    return (LIVER_CENTRE_MM[0] + p.body_shift_mm[0], LIVER_CENTRE_MM[1] + p.body_shift_mm[1]), semi


def tumour_centre_mm(p: Phenotype) -> tuple[float, float, float]:
    """Centre of the main tumour in patient coordinates (LPS, mm).

    The tumour is placed so that its lobulated boundary plus the peritumoral band stays inside the liver
    where the liver is large enough.
    """
    (cx, cy), semi = liver_ellipse_mm(p)
    reach = 1.2 * p.size_cm * 5.0 + 14.0
    room = (0.6 * max(0.0, semi[0] - reach), 0.6 * max(0.0, semi[1] - reach))
    return (cx + p.tumour_offset_unit[0] * room[0], cy + p.tumour_offset_unit[1] * room[1], p.table_z_mm)


def series_geometries(
    seed: int, p: Phenotype, modality: str, image_size: int
) -> dict[str, SeriesGeometry]:
    """Grid of every phase of one study.

    Slices cover the tumour plus about 2 cm on either side (12 to 40 slices). Centres whose profile has
    ``vary_phase_geometry`` give each phase its own field of view, slice spacing and table position.

    Parameters
    ----------
    seed : int
        Master seed.
    p : Phenotype
        The patient.
    modality : str
        ``ct`` or ``mri``.
    image_size : int
        Matrix size (rows = columns), 64 to 512.

    Returns
    -------
    dict
        Phase name to :class:`SeriesGeometry`.
    """
    profile = SCANNERS[(p.centre, modality)]
    rng = _stream(seed, p, 3, MODALITIES.index(modality))
    tx, ty, tz = tumour_centre_mm(p)
    radius = p.size_cm * 5.0
    cx = p.body_shift_mm[0] + rng.uniform(-10.0, 10.0)
    cy = p.body_shift_mm[1] + 15.0 + rng.uniform(-10.0, 10.0)
    geometries = {}
    for phase in MODALITY_PHASES[modality]:
        fov = profile.fov_mm
        spacing = profile.slice_spacing_mm
        thickness = profile.slice_thickness_mm
        z_shift = 0.0
        if profile.vary_phase_geometry:
            fov *= float(rng.uniform(0.92, 1.08))
            z_shift = float(rng.uniform(-0.5, 0.5)) * spacing
            if phase in ("t2", "plain"):
                spacing *= 1.2
                thickness *= 1.2
        pixel = fov / image_size
        coverage = 2.0 * radius / p.z_stretch + 40.0
        n_slices = int(np.clip(math.ceil(coverage / spacing) + 1, 12, 40))
        z0 = tz - 0.5 * (n_slices - 1) * spacing + z_shift
        origin = (cx - 0.5 * fov + 0.5 * pixel, cy - 0.5 * fov + 0.5 * pixel, z0)
        geometries[phase] = SeriesGeometry(
            origin_mm=tuple(round(v, 4) for v in origin),
            row_spacing_mm=round(pixel, 6),
            col_spacing_mm=round(pixel, 6),
            slice_spacing_mm=round(spacing, 4),
            slice_thickness_mm=round(thickness, 4),
            n_rows=image_size,
            n_cols=image_size,
            n_slices=n_slices,
        )
    del ty, tx
    return geometries


@dataclasses.dataclass
class _Fields:
    """Coordinate fields on one grid, relative to the tumour."""

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    s: np.ndarray  # signed distance-like: mm outside the tumour boundary (negative inside)
    theta_deg: np.ndarray
    dz: np.ndarray  # z relative to the tumour centre (mm)


def _tumour_boundary(p: Phenotype, theta: np.ndarray, dz: np.ndarray) -> np.ndarray:
    radius = p.size_cm * 5.0
    shape = 1.0
    for harmonic, amplitude, phase in p.lobulation:
        shape = shape + amplitude * np.cos(harmonic * theta + phase + 0.03 * dz)
    return radius * shape


def _fields(p: Phenotype, geom: SeriesGeometry) -> _Fields:
    x, y, z = geom.axes()
    X = x[None, None, :]
    Y = y[None, :, None]
    Z = z[:, None, None]
    tx, ty, tz = tumour_centre_mm(p)
    dx, dy, dz = X - tx, Y - ty, (Z - tz) * p.z_stretch
    theta = np.arctan2(dy, dx)
    d = np.sqrt(dx**2 + dy**2 + dz**2)
    s = d - _tumour_boundary(p, theta, dz)
    return _Fields(X, Y, Z, s.astype(np.float32), np.degrees(theta), Z - tz)


def _sphere(X, Y, Z, centre, radius) -> np.ndarray:
    return (X - centre[0]) ** 2 + (Y - centre[1]) ** 2 + (Z - centre[2]) ** 2 < radius**2


def _ellipse(X, Y, centre, semi) -> np.ndarray:
    return ((X - centre[0]) / semi[0]) ** 2 + ((Y - centre[1]) / semi[1]) ** 2 < 1.0


def _angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return (a - b + 180.0) % 360.0 - 180.0


def _sector_parts(p: Phenotype, f: _Fields) -> tuple[np.ndarray, np.ndarray]:
    """Boolean angular-and-axial membership of the sector and a soft weight decaying away from the tumour."""
    sec = p.sector
    dtheta = np.abs(_angle_diff(f.theta_deg, sec.center_deg))
    dzs = np.abs(f.dz - sec.z_offset_mm)
    member = (dtheta <= sec.width_deg / 2) & (dzs <= sec.half_height_mm)
    w_ang = np.cos(0.5 * np.pi * np.clip(dtheta / (sec.width_deg / 2), 0, 1))
    w_z = np.clip(1.5 - 1.5 * dzs / sec.half_height_mm, 0, 1)
    w_rad = np.where((f.s >= -1.0) & (f.s < sec.band_mm), np.exp(-np.clip(f.s, 0, None) / (0.6 * sec.band_mm)), 0)
    return member, w_ang * w_z * w_rad


def invasion_mask(p: Phenotype, geom: SeriesGeometry) -> np.ndarray:
    """The invasion sector as a boolean ``(slices, rows, columns)`` mask; all false for MVI-negative patients.

    The sector is the peritumoral band from 3 mm inside to ``band_mm`` outside the tumour boundary, within
    the sector's angular range and axial extent.
    """
    if not p.mvi:
        return np.zeros(geom.shape, dtype=bool)
    f = _fields(p, geom)
    member, _ = _sector_parts(p, f)
    return member & (f.s >= -3.0) & (f.s <= p.sector.band_mm)


def tumour_mask(p: Phenotype, geom: SeriesGeometry) -> np.ndarray:
    """The main tumour as a boolean ``(slices, rows, columns)`` mask."""
    return _fields(p, geom).s < 0


def _microsatellite_centres(p: Phenotype) -> list[tuple[float, float, float, float]]:
    tx, ty, tz = tumour_centre_mm(p)
    centres = []
    for angle_deg, dz, depth, radius in p.sector.microsatellites:
        theta = math.radians(angle_deg)
        boundary = float(_tumour_boundary(p, np.array(theta), np.array(dz * p.z_stretch)))
        in_plane = math.sqrt(max(boundary**2 - (dz * p.z_stretch) ** 2, 1.0)) + depth
        centres.append((tx + in_plane * math.cos(theta), ty + in_plane * math.sin(theta), tz + dz, radius))
    return centres


def _texture(rng: np.random.Generator, n_waves: int, wavelength_mm: tuple[float, float]):
    """A smooth random field of unit variance: a sum of plane waves in patient coordinates.

    The field is evaluated on an axis-aligned grid as a batched complex matrix product of the per-axis
    phase factors, which is much cheaper than evaluating ``sin`` over the whole volume for every wave.
    """
    k = rng.normal(size=(n_waves, 3))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    k *= (2 * np.pi / rng.uniform(*wavelength_mm, size=n_waves))[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=n_waves)

    def field(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        ex = np.exp(1j * np.outer(k[:, 0], x))  # (w, nc)
        ey = np.exp(1j * np.outer(y, k[:, 1]))  # (nr, w)
        ez = np.exp(1j * (np.outer(z, k[:, 2]) + phase[None, :]))  # (nz, w)
        stack = ez[:, None, :] * ey[None, :, :]  # (nz, nr, w)
        flat = stack.reshape(-1, n_waves) @ ex
        return (flat.imag.reshape(len(z), len(y), len(x)) / math.sqrt(n_waves / 2)).astype(np.float32)

    return field


@dataclasses.dataclass
class _Anatomy:
    """Label maps and smooth fields of one patient on one grid (shared by every phase on that grid)."""

    fields: _Fields
    body: np.ndarray
    inner: np.ndarray
    cavity: np.ndarray
    background: np.ndarray
    spleen: np.ndarray
    liver: np.ndarray
    liver_texture: np.ndarray
    bone: np.ndarray
    canal: np.ndarray
    aorta: np.ndarray
    ivc: np.ndarray
    vessels: np.ndarray
    member: np.ndarray
    weight: np.ndarray
    tumour_texture: np.ndarray
    satellites: np.ndarray
    microsatellites: np.ndarray
    foci: dict[str, np.ndarray]


def _anatomy(seed: int, p: Phenotype, geom: SeriesGeometry) -> _Anatomy:
    arng = _anatomy_rng(seed, p)
    f = _fields(p, geom)
    X, Y, Z = f.X, f.Y, f.Z
    x_axis, y_axis, z_axis = geom.axes()
    shape = geom.shape
    bx, by = p.body_shift_mm
    a, b = BODY_SEMI_AXES_MM
    cavity = _ellipse(X, Y, (bx, by), (a - 28, b - 28))
    lc, liver_semi = liver_ellipse_mm(p)
    liver = _ellipse(X, Y, lc, liver_semi) & cavity
    background = _texture(arng, 6, (15.0, 60.0))(x_axis, y_axis, z_axis)
    liver_texture = _texture(arng, 8, (8.0, 30.0))(x_axis, y_axis, z_axis)
    vessels = np.zeros(shape, dtype=bool)
    for _ in range(5):  # intrahepatic portal and hepatic vein branches, drifting through the slices
        vx = lc[0] + arng.uniform(-0.7, 0.7) * liver_semi[0]
        vy = lc[1] + arng.uniform(-0.7, 0.7) * liver_semi[1]
        drift = arng.uniform(-0.3, 0.3, size=2)
        r_vessel = arng.uniform(3.5, 6.5)
        dz = Z - p.table_z_mm
        vessels |= ((X - vx - drift[0] * dz) ** 2 + (Y - vy - drift[1] * dz) ** 2 < r_vessel**2) & liver
    tumour_texture = _texture(arng, 8, (6.0, 20.0))(x_axis, y_axis, z_axis)
    member, weight = _sector_parts(p, f)
    tx, ty, tz = tumour_centre_mm(p)
    satellites = np.zeros(shape, dtype=bool)
    for sx, sy, sz, sr in p.satellites:
        satellites |= _sphere(X, Y, Z, (tx + sx, ty + sy, tz + sz), sr)
    microsatellites = np.zeros(shape, dtype=bool)
    for mc in _microsatellite_centres(p):
        microsatellites |= _sphere(X, Y, Z, mc[:3], mc[3])
    inside = f.s < 0
    foci = {}
    for focus, name in ((p.necrosis, "necrosis"), (p.fat, "fat_focus"), (p.haemorrhage, "haemorrhage")):
        if focus is not None:
            foci[name] = _sphere(X, Y, Z, (tx + focus[0], ty + focus[1], tz + focus[2]), focus[3]) & inside
    return _Anatomy(
        fields=f,
        body=np.broadcast_to(_ellipse(X, Y, (bx, by), (a, b)), shape),
        inner=np.broadcast_to(_ellipse(X, Y, (bx, by), (a - 18, b - 18)), shape),
        cavity=np.broadcast_to(cavity, shape),
        background=background,
        spleen=np.broadcast_to(_ellipse(X, Y, (bx + 95, by + 15), (40, 55)) & cavity, shape),
        liver=np.broadcast_to(liver, shape),
        liver_texture=liver_texture,
        bone=np.broadcast_to(_ellipse(X, Y, (bx, by + 78), (22, 20)), shape),
        canal=np.broadcast_to(_ellipse(X, Y, (bx, by + 104), (8, 8)), shape),
        aorta=np.broadcast_to(_ellipse(X, Y, (bx + 22, by + 45), (12, 12)), shape),
        ivc=np.broadcast_to(_ellipse(X, Y, (bx - 28, by + 38), (11, 13)), shape),
        vessels=vessels,
        member=member,
        weight=weight.astype(np.float32),
        tumour_texture=tumour_texture,
        satellites=satellites,
        microsatellites=microsatellites,
        foci=foci,
    )


def _paint(
    seed: int, p: Phenotype, modality: str, phase: str, geom: SeriesGeometry, anat: _Anatomy
) -> np.ndarray:
    profile = SCANNERS[(p.centre, modality)]
    v = tissue_values(modality, phase, profile)
    f = anat.fields
    shape = geom.shape
    img = np.full(shape, v["air"], dtype=np.float32)
    img[anat.body] = v["fat"]
    img[anat.inner] = v["muscle"]
    cav_value = v["cavity"] + 0.35 * abs(v["fat"] - v["muscle"]) * np.clip(anat.background, -1.5, 1.5)
    img = np.where(anat.cavity, cav_value, img)
    img[anat.spleen] = v["spleen"]
    img = np.where(anat.liver, v["liver"] * (1.0 + 0.025 * anat.liver_texture), img)
    img[anat.bone] = v["bone"]
    img[anat.canal] = v["canal"]
    img[anat.aorta] = v["aorta"]
    img[anat.ivc] = v["ivc"]
    img[anat.vessels] = v["vessel"]

    # Peritumoral sector (invasion for MVI-positive, mimic otherwise) and its signs.
    signs = p.signs[modality]
    outside = (f.s >= 0) & anat.liver
    if signs.get("peritumoral_enhancement") and phase == SIGN_PHASE["peritumoral_enhancement"]:
        img = np.where(outside, img + v["ape_delta"] * anat.weight, img)
    if signs.get("peritumoral_hbp_hypointensity") and phase == SIGN_PHASE["peritumoral_hbp_hypointensity"]:
        factor = 1.0 - (1.0 - v["phh_factor"]) * np.clip(1.6 * anat.weight, 0, 1)
        img = np.where(outside, img * factor, img)

    tumour_value = v["tumour"] if p.typical else v["tumour_atypical"]
    if modality == "mri" and phase == "hepatobiliary" and not p.hbp_tumour_hypo:
        tumour_value = v["tumour_hbp_iso"]
    lesion_value = tumour_value + 0.06 * abs(tumour_value - v["liver"]) * anat.tumour_texture
    img = np.where(anat.satellites, lesion_value, img)
    if signs.get("microsatellites"):
        img[anat.microsatellites] = tumour_value
    if p.capsule:
        thickness = max(2.0, 0.8 * geom.col_spacing_mm)
        capsule = (f.s >= 0) & (f.s < thickness)
        if signs.get("capsule_interruption"):
            capsule &= ~anat.member
        img[capsule] = v["capsule"]
    img = np.where(f.s < 0, lesion_value, img)
    for name, focus in anat.foci.items():
        img[focus] = v[name]

    # Partial volume in-plane and through the slice, then scanner noise.
    sigma_z = 0.35 * geom.slice_thickness_mm / geom.slice_spacing_mm
    img = gaussian_filter(img, sigma=(sigma_z, 0.6, 0.6))
    nrng = _stream(seed, p, 4, MODALITIES.index(modality), MODALITY_PHASES[modality].index(phase))
    if modality == "ct":
        noise = gaussian_filter(nrng.standard_normal(shape, dtype=np.float32), sigma=(0, 0.7, 0.7))
        img += np.float32(profile.noise * 2.0 * math.sqrt(math.pi) * 0.7) * noise
    else:
        bx, by = p.body_shift_mm
        a, b = BODY_SEMI_AXES_MM
        sd = profile.noise * (v["liver"] if phase != "t2" else 400.0 * profile.intensity_scale)
        bias = (1.0 + 0.12 * (f.X - bx) / a - 0.08 * (f.Y - by) / b).astype(np.float32)
        real = img * bias + np.float32(sd) * nrng.standard_normal(shape, dtype=np.float32)
        imag = np.float32(sd) * nrng.standard_normal(shape, dtype=np.float32)
        img = np.sqrt(real**2 + imag**2)
    return img.astype(np.float32)


def render_study(
    seed: int, p: Phenotype, modality: str, geometries: dict[str, SeriesGeometry]
) -> dict[str, np.ndarray]:
    """Render every phase of one study; phases sharing a grid share its anatomy computation.

    Parameters
    ----------
    seed : int
        Master seed (anatomy is shared by all phases; noise is drawn per phase).
    p : Phenotype
        The patient.
    modality : str
        ``ct`` or ``mri``.
    geometries : dict
        Phase name to :class:`SeriesGeometry` (from :func:`series_geometries`).

    Returns
    -------
    dict
        Phase name to float32 ``(slices, rows, columns)``: HU for CT, MR signal for MRI.
    """
    cache: dict[SeriesGeometry, _Anatomy] = {}
    images = {}
    for phase, geom in geometries.items():
        if geom not in cache:
            cache[geom] = _anatomy(seed, p, geom)
        images[phase] = _paint(seed, p, modality, phase, geom, cache[geom])
    return images


def reconstruction_circle(geom: SeriesGeometry) -> np.ndarray:
    """Boolean ``(rows, columns)`` mask of pixels inside the CT reconstruction circle."""
    r = (np.arange(geom.n_rows) - (geom.n_rows - 1) / 2)[:, None]
    c = (np.arange(geom.n_cols) - (geom.n_cols - 1) / 2)[None, :]
    return r**2 + c**2 <= (min(geom.n_rows, geom.n_cols) / 2) ** 2
