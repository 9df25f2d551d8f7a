"""Scoring attention maps against known invasion sites, with baselines and a weight-randomisation check.

Definitions (all in the ROI frame, on the central slice):

- **Target region**: the truth invasion sector plus a peritumoral ring of ``tolerance_mm`` (default 5 mm) around
  it, i.e. every pixel whose centre lies within ``tolerance_mm`` of a sector pixel. The ring absorbs the coarse
  resolution of a stage-4 map (1/32 of the input) and the few-millimetre band where the peritumoral signs live.
- **Pointing game** (Zhang et al. 2018): a hit when the map's maximum lies in the target region. A constant map
  points nowhere and counts as a miss.
- **Energy fraction**: the share of the map's total value inside the target region.
- **Chance level**: what a map with a uniformly random maximum / uniform energy scores: the target region's area
  fraction of the ROI.
- **Centre-of-tumour baseline**: an isotropic Gaussian at the ROI centre (where data_prep centres the tumour) with
  ``sigma = side / 6``; it asks whether the maps do better than "look at the tumour".
- **Randomised-weight baseline** (Adebayo et al. 2018, "Sanity checks for saliency maps"): maps of the same
  architecture whose learned weights are re-drawn from their initialisers — all at once ("full") or top-down in
  stages ("cascading": head, then stage 4, 3, 2, 1 and the stem of every phase branch). Trustworthy maps change
  when the weights do: a low Spearman rank correlation between trained and randomised maps.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats

from mvi_tf import na

DEFAULT_TOLERANCE_MM = 5.0
CASCADE_LEVELS = ("head", "stage4", "stage3", "stage2", "stage1", "stem")


def target_region(sector: np.ndarray, pixel_mm: float, tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> np.ndarray:
    """The invasion sector plus its peritumoral ring of ``tolerance_mm`` (boolean, same shape)."""
    sector = np.asarray(sector, dtype=bool)
    if pixel_mm <= 0 or tolerance_mm < 0:
        raise ValueError(
            f"`pixel_mm` must be > 0 and `tolerance_mm` >= 0. Received: pixel_mm={pixel_mm}, tolerance_mm={tolerance_mm}"
        )
    if not sector.any():
        return sector.copy()
    distance_mm = ndimage.distance_transform_edt(~sector) * pixel_mm
    return distance_mm <= tolerance_mm


def pointing_hit(cam: np.ndarray, region: np.ndarray) -> bool:
    """True when the map's maximum lies inside ``region`` (ties: any maximal pixel inside; flat map: False)."""
    cam = np.asarray(cam, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if cam.shape != region.shape:
        raise ValueError(f"Map and region shapes differ. Received: {cam.shape} vs {region.shape}")
    if _is_flat(cam):
        return False
    return bool(region[cam >= cam.max() - 1e-9].any())


def energy_fraction(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of the (non-negative) map's total value inside ``region``; NaN for an all-zero map."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    region = np.asarray(region, dtype=bool)
    if cam.shape != region.shape:
        raise ValueError(f"Map and region shapes differ. Received: {cam.shape} vs {region.shape}")
    total = cam.sum()
    return float(cam[region].sum() / total) if total > 0 else float("nan")


def centre_baseline_map(size_px: int, sigma_fraction: float = 1.0 / 6.0) -> np.ndarray:
    """Isotropic Gaussian at the ROI centre, ``sigma = sigma_fraction * size``, peak 1."""
    if size_px < 1 or sigma_fraction <= 0:
        raise ValueError(
            f"`size_px` must be >= 1 and `sigma_fraction` > 0. Received: size_px={size_px}, "
            f"sigma_fraction={sigma_fraction}"
        )
    centre = (size_px - 1) / 2.0
    grid = np.arange(size_px) - centre
    sigma = sigma_fraction * size_px
    g = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.max()).astype(np.float32)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN when either is constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Maps must have the same size. Received: {a.size} vs {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def _level_of(layer_name: str, phases: Sequence[str]) -> str | None:
    """Cascade level of a layer with weights: a branch stage, the stem, or the head (anything after the branches)."""
    for phase in phases:
        prefix = f"{phase}_"
        if layer_name.startswith(prefix):
            rest = layer_name[len(prefix):]
            for stage in ("stage1", "stage2", "stage3", "stage4"):
                if rest.startswith(stage):
                    return stage
            if rest.startswith(("conv1", "bn1")):
                return "stem"
            if rest.startswith("imagenet_norm"):
                return None  # fixed ImageNet statistics, not learned
            return "head"
    return "head"


def randomise_weights(model, phases: Sequence[str], seed: int = 0, levels: Sequence[str] = CASCADE_LEVELS):
    """A copy of ``model`` whose learned weights in ``levels`` are re-drawn from their initialisers.

    The copy is built with ``keras.models.clone_model`` (fresh, seeded initialisation of every layer); the
    layers outside ``levels`` then get the trained weights back. ``levels=CASCADE_LEVELS`` is Adebayo et al.'s
    full randomisation; a prefix of it (``("head",)``, ``("head", "stage4")``, ...) is one step of the cascade.
    The fixed ImageNet normalisation always keeps its statistics; frozen layers (the trunks after the signature
    stage) are learned weights and are re-drawn.

    Parameters
    ----------
    model : keras.Model
        Trained model.
    phases : sequence of str
        Phase branch names (layer-name prefixes).
    seed : int
        Seed of the re-initialisation (``keras.utils.set_random_seed`` is called with it).
    levels : sequence of str
        Which parts to randomise, from :data:`CASCADE_LEVELS`.

    Returns
    -------
    keras.Model
    """
    import keras

    unknown = [level for level in levels if level not in CASCADE_LEVELS]
    if unknown:
        raise ValueError(f"Unknown randomisation levels {unknown}; choose from {CASCADE_LEVELS}. Received: {levels}")
    keras.utils.set_random_seed(int(seed))
    clone = keras.models.clone_model(model)
    for layer in model.layers:
        if not layer.weights:
            continue
        # Frozen is not fixed: trunks frozen for the later training stages were still learned, so they are
        # re-drawn like any other layer of their level (only the ImageNet statistics, level None, are fixed).
        level = _level_of(layer.name, phases)
        if level is not None and level in levels:
            continue
        clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


@dataclasses.dataclass
class PatientScore:
    """Localisation of one patient's maps (one phase)."""

    patient_id: str
    phase: str
    hit: bool
    energy: float
    centre_hit: bool
    centre_energy: float
    random_hit: bool
    random_energy: float
    chance: float
    rank_corr_random: float
    sign_visible: bool | None = None
    empty: bool = False
    random_empty: bool = False


def score_patient(
    patient_id: str,
    phase: str,
    cam: np.ndarray,
    random_cam: np.ndarray,
    sector: np.ndarray,
    pixel_mm: float,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    sign_visible: bool | None = None,
) -> PatientScore | None:
    """Score one phase map of one patient against its invasion sector; None when the sector misses the ROI.

    ``sign_visible`` records whether the truth says a peritumoral sign is rendered in this phase's image (None:
    unknown); a map cannot be expected to find an invasion that its image does not show.
    """
    region = target_region(sector, pixel_mm, tolerance_mm)
    if not region.any():
        return None
    centre = centre_baseline_map(cam.shape[0])
    return PatientScore(
        patient_id=patient_id,
        phase=phase,
        hit=pointing_hit(cam, region),
        energy=energy_fraction(cam, region),
        centre_hit=pointing_hit(centre, region),
        centre_energy=energy_fraction(centre, region),
        random_hit=pointing_hit(random_cam, region),
        random_energy=energy_fraction(random_cam, region),
        chance=float(region.mean()),
        rank_corr_random=rank_correlation(cam, random_cam),
        sign_visible=sign_visible,
        empty=_is_flat(cam),
        random_empty=_is_flat(random_cam),
    )


def _is_flat(cam: np.ndarray) -> bool:
    """A map that points nowhere (constant, e.g. all zero after Grad-CAM's ReLU); it scores as a miss."""
    cam = np.asarray(cam, dtype=np.float64)
    return bool(not np.isfinite(cam).all() or cam.max() - cam.min() <= 1e-12)


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Exact two-sided McNemar p-value for paired hits (a vs b); None without discordant pairs."""
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    if a_only + b_only == 0:
        return None
    return float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)


def _binomial_greater(k: int, n: int, chance: float | None) -> float | None:
    """One-sided exact binomial p-value of ``k`` hits in ``n`` when each hits with probability ``chance``."""
    if n == 0 or chance is None:
        return None
    return float(stats.binomtest(int(k), int(n), float(chance), alternative="greater").pvalue)


def summarise_scores(scores: Sequence[PatientScore], phases: Sequence[str], alpha: float = 0.05) -> dict:
    """Per-phase hit rates and energy fractions with both baselines, and which phases carry the localisation.

    Parameters
    ----------
    scores : sequence of PatientScore
        One per scored patient and phase.
    phases : sequence of str
        Phases to summarise, in order.
    alpha : float
        Significance level of ``localising_phases``.

    Returns
    -------
    dict
        ``{"per_phase": {phase: {...}}, "phase_ranking": [phase, ...], "localising_phases": [phase, ...],
        "alpha": float, "n_patients": int}``. ``localising_phases`` (in ranking order) are the phases whose hit
        rate beats the centre-of-tumour map, the randomised-weight maps (both at exact McNemar p < ``alpha``)
        and area chance (one-sided exact binomial p < ``alpha``, ``p_vs_chance``). A map that is flat (Grad-CAM's
        ReLU leaves nothing, common with randomised weights) points nowhere and scores a miss; ``n_empty_maps``
        counts them, for the trained and the randomised maps. Rates are None for a phase without scored
        patients. ``p_vs_centre`` / ``p_vs_random`` are exact McNemar p-values of the paired
        hits. Where the scores know whether a sign is visible in the phase, ``n_sign_visible`` and ``sign_visible``
        (the same summary over those patients only) are added. A figure the scores cannot define (no scored
        patient, every map flat, no discordant pair) is None and its dict's ``not_available`` entry gives the
        reason (:mod:`mvi_tf.na`).
    """
    per_phase: dict[str, dict] = {}
    for phase in phases:
        rows = [s for s in scores if s.phase == phase]
        if not rows:
            per_phase[phase] = na.mark({"n": 0}, "hit_rate", NO_SCORABLE_PATIENT)
            warnings.warn(f"No MVI-positive patient with an invasion sector in the ROI for phase {phase!r}.", stacklevel=2)
            continue
        per_phase[phase] = _phase_summary(rows)
        known = [s for s in rows if s.sign_visible is not None]
        if known:
            visible = [s for s in known if s.sign_visible]
            per_phase[phase]["n_sign_visible"] = len(visible)
            per_phase[phase]["sign_visible"] = _phase_summary(visible) if visible else None
            if not visible:
                na.mark(per_phase[phase], "sign_visible", "no scored patient whose image shows a sign in this phase")
    ranked = [p for p in phases if per_phase[p].get("n")]
    ranked.sort(key=lambda p: (-per_phase[p]["hit_rate"], -(per_phase[p]["energy_fraction"] or 0.0)))
    return {
        "per_phase": per_phase,
        "phase_ranking": ranked,
        "localising_phases": [p for p in ranked if _localises(per_phase[p], alpha)],
        "alpha": alpha,
        "n_patients": len({s.patient_id for s in scores}),
    }


def _localises(row: dict, alpha: float) -> bool:
    """Whether a phase's hits beat both baselines and area chance significantly (and in that direction)."""
    for baseline, p_value in (("centre_baseline", row["p_vs_centre"]), ("randomised_weights", row["p_vs_random"])):
        if p_value is None or p_value >= alpha or row["hit_rate"] <= row[baseline]["hit_rate"]:
            return False
    return row["p_vs_chance"] is not None and row["p_vs_chance"] < alpha


NO_SCORABLE_PATIENT = "no MVI-positive patient with an invasion sector on the ROI slice"
FLAT_MAPS = "every map is flat (nothing left after Grad-CAM's ReLU), so it has no energy to share out"
NO_DISCORDANT = "no discordant pairs (the maps and the baseline hit the same patients), so McNemar is undefined"
CONSTANT_MAPS = "a trained or randomised map is constant for every patient, so the rank correlation is undefined"


def _phase_summary(rows: Sequence[PatientScore]) -> dict:
    """Hit rate, energy fraction, both baselines, chance, empty maps and the p-values over ``rows``.

    Figures the rows cannot define are None with their reason (:mod:`mvi_tf.na`).
    """
    hits = [s.hit for s in rows]
    chance = _mean([s.chance for s in rows])
    summary = {
        "n": len(rows),
        "hit_rate": _mean([float(h) for h in hits]),
        "energy_fraction": _mean([s.energy for s in rows]),
        "centre_baseline": {
            "hit_rate": _mean([float(s.centre_hit) for s in rows]),
            "energy_fraction": _mean([s.centre_energy for s in rows]),
        },
        "n_empty_maps": sum(1 for s in rows if s.empty),
        "randomised_weights": {
            "hit_rate": _mean([float(s.random_hit) for s in rows]),
            "energy_fraction": _mean([s.random_energy for s in rows]),
            "n_empty_maps": sum(1 for s in rows if s.random_empty),
        },
        "chance": chance,
        "p_vs_chance": _binomial_greater(sum(hits), len(hits), chance),
        "rank_corr_vs_randomised_mean": _mean([s.rank_corr_random for s in rows]),
        "p_vs_centre": _mcnemar_exact(hits, [s.centre_hit for s in rows]),
        "p_vs_random": _mcnemar_exact(hits, [s.random_hit for s in rows]),
    }
    na.explain(summary["centre_baseline"], energy_fraction=FLAT_MAPS)
    na.explain(summary["randomised_weights"], energy_fraction=FLAT_MAPS)
    return na.explain(summary, energy_fraction=FLAT_MAPS, rank_corr_vs_randomised_mean=CONSTANT_MAPS,
                      p_vs_centre=NO_DISCORDANT, p_vs_random=NO_DISCORDANT)
