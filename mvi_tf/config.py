"""Typed, nested run configuration (data / model / training) with YAML override and save.

A run is fully described by a :class:`Config`: the defaults below, optionally overridden by a YAML file
(``mvi-tf train --config run.yaml``) and then by single options (``--epochs 3``). The effective config is
written to ``RUN_DIR/config.yaml`` so every run can be repeated.

Example YAML (any subset of keys; unknown keys are an error)::

    data:
      val_fraction: 0.2
    model:
      hidden_units: 64
    train:
      epochs: 30
      fine_tune_backbones: false
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

#: Clinical columns of ``clinical.csv`` (docs/architecture.md); used when the schema carries no ``group``.
CLINICAL_COLUMNS: tuple[str, ...] = (
    "age",
    "sex",
    "aetiology",
    "bilirubin_umol_l",
    "alt_u_l",
    "ast_u_l",
    "platelets_1e9_l",
    "afp_ng_ml",
)
#: Radiological (qualitative imaging) columns of ``clinical.csv``; used when the schema carries no ``group``.
RADIOLOGICAL_COLUMNS: tuple[str, ...] = (
    "tumour_size_cm",
    "tumour_number",
    "margin",
    "peritumoral_enhancement",
    "enhancement_pattern",
    "capsule",
    "hbp_tumour_hypointensity",
    "hbp_peritumoral_hypointensity",
)

STRATEGIES = ("default", "mirrored", "multiworker")
HEADS = ("logistic", "dense")


@dataclasses.dataclass
class DataConfig:
    """Input data and split.

    Attributes
    ----------
    image_size : int or None
        Side in pixels fed to the model; None keeps the records' size (``schema.json``), another value resizes.
    phases : list of str or None
        Phases to use; None uses every phase in the records' schema.
    val_fraction : float
        Fraction of the ``train`` cohort's patients held out for internal validation (early stopping),
        stratified by label and centre.
    clinical_columns, radiological_columns : list of str
        Source columns whose encoded features form the clinical and radiological models, used only when the
        schema's tabular features carry no ``group`` field.
    shuffle_buffer : int
        Size of the example shuffle buffer.
    cache : bool
        Cache parsed examples in memory after the first epoch.
    flip : bool
        Random left-right and up-down flips.
    rot90 : bool
        Random quarter turns (0, 90, 180 or 270 degrees); with ``flip`` every one of the square's eight
        symmetries. Exact (no interpolation); suits a tumour-centred ROI whose peritumoral signs can sit at any
        angle.
    rotation_deg : float
        Maximum absolute random rotation in degrees.
    shift_fraction : float
        Maximum random shift as a fraction of the image side.
    intensity_jitter : float
        Maximum relative change of contrast and absolute change of brightness, per phase.
    synthetic : bool or None
        Whether the cohort is synthetic; None copies the flag from the records' schema.
    """

    image_size: int | None = None
    phases: list[str] | None = None
    val_fraction: float = 0.2
    clinical_columns: list[str] = dataclasses.field(default_factory=lambda: list(CLINICAL_COLUMNS))
    radiological_columns: list[str] = dataclasses.field(default_factory=lambda: list(RADIOLOGICAL_COLUMNS))
    shuffle_buffer: int = 1024
    cache: bool = True
    flip: bool = True
    rot90: bool = True
    rotation_deg: float = 10.0
    shift_fraction: float = 0.05
    intensity_jitter: float = 0.05
    synthetic: bool | None = None


@dataclasses.dataclass
class ModelConfig:
    """Model family hyper-parameters.

    Attributes
    ----------
    hidden_units : int
        Units of the fusion and CDLM dense layers.
    dropout : float
        Dropout rate before every dense head.
    weights : str or None
        torchvision ResNet18 state dict (``.pth``/``.npz``) loaded into every phase branch; None starts
        from random initialisation.
    monotone_head : bool
        Non-negative CDLM weights on the signatures (``build_cdlm(monotone=True)``): a rising signature never
        lowers the combined risk, so each phase's attention map keeps the meaning "evidence for MVI". Used by
        the ``dense`` head; the ``logistic`` head is always non-negative on the signatures.
    head : str
        How the fusion model and the CDLM combine the signatures. ``logistic`` (default): penalised logistic
        layers fitted on signature logits of patients the signature networks did not train on (leak-free
        stacking, see ``train.cross_fit_folds`` and :mod:`mvi_tf.training.stacking`). ``dense``: the paper's
        dense layers (``hidden_units``) trained on the training split's own, in-sample signatures.
    """

    hidden_units: int = 64
    dropout: float = 0.3
    weights: str | None = None
    monotone_head: bool = True
    head: str = "logistic"


@dataclasses.dataclass
class TrainConfig:
    """Optimisation, staging and runtime options.

    Attributes
    ----------
    epochs : int
        Maximum epochs per stage (signature per phase, fusion, CDLM).
    batch_size : int
        Global batch size (split across replicas under a distribution strategy).
    learning_rate : float
        Adam learning rate of the signature stage.
    head_learning_rate : float
        Adam learning rate of the fusion and CDLM stages.
    patience : int
        Early-stopping patience on validation AUC (best weights restored); 0 (default) trains every stage for
        all ``epochs`` and keeps the last, annealed weights. Choosing an epoch by the AUC of a validation split
        of a few dozen patients mostly picks noise (on the demo cohort, patience 8 restored hepatobiliary
        weights from epoch 4 of 20).
    lr_schedule : str
        ``cosine`` (default): the learning rate of every stage decays from its initial value to zero over
        ``epochs`` epochs (cosine), so late epochs refine instead of jumping around; ``constant`` keeps it fixed.
    fine_tune_backbones : bool
        Whether the ResNet18 backbones keep training in the fusion and CDLM stages. False (default) freezes
        them after the signature stage, so the later stages train their dense heads only: much faster on CPU.
    p_threshold : float
        Significance level of uni- and multivariable logistic-regression feature selection.
    class_weight : bool
        Weight samples inversely to class frequency in the training split.
    seed : int
        Fixes the split, weight initialisation, shuffling and augmentation.
    deterministic : bool
        Enable TensorFlow op determinism (bit-identical reruns, slower).
    strategy : str
        ``default``, ``mirrored`` (several local GPUs) or ``multiworker`` (machines listed in ``TF_CONFIG``).
    mixed_precision : bool
        ``mixed_float16`` compute (GPUs).
    xla : bool
        JIT-compile the training step with XLA.
    cross_fit_folds : int
        Folds of the training split over which extra copies of the signature networks train to give the
        ``logistic`` heads out-of-fold signatures (K >= 2; costs K - 1 more signature trainings); 0 fits the heads
        on the validation split's signatures instead.
    """

    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    head_learning_rate: float = 1e-3
    patience: int = 0
    lr_schedule: str = "cosine"
    fine_tune_backbones: bool = False
    p_threshold: float = 0.05
    class_weight: bool = True
    seed: int = 0
    deterministic: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    xla: bool = False
    cross_fit_folds: int = 3


@dataclasses.dataclass
class Config:
    """The effective configuration of one training run."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def validate(self) -> Config:
        """Check value ranges; return ``self``. Raises ``ValueError`` naming the field and value."""
        d, m, t = self.data, self.model, self.train
        if d.image_size is not None and d.image_size < 32:
            raise ValueError(f"data.image_size must be >= 32 or None. Received: image_size={d.image_size}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1). Received: val_fraction={d.val_fraction}")
        if d.phases is not None and (not d.phases or len(set(d.phases)) != len(d.phases)):
            raise ValueError(f"data.phases must be non-empty and unique. Received: phases={d.phases}")
        if d.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer must be >= 1. Received: shuffle_buffer={d.shuffle_buffer}")
        if not 0.0 <= d.rotation_deg <= 45.0:
            raise ValueError(f"data.rotation_deg must be in [0, 45]. Received: rotation_deg={d.rotation_deg}")
        if not 0.0 <= d.shift_fraction <= 0.25:
            raise ValueError(
                f"data.shift_fraction must be in [0, 0.25]. Received: shift_fraction={d.shift_fraction}"
            )
        if not 0.0 <= d.intensity_jitter <= 0.5:
            raise ValueError(
                f"data.intensity_jitter must be in [0, 0.5]. Received: intensity_jitter={d.intensity_jitter}"
            )
        if m.hidden_units < 1:
            raise ValueError(f"model.hidden_units must be >= 1. Received: hidden_units={m.hidden_units}")
        if not 0.0 <= m.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1). Received: dropout={m.dropout}")
        if t.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1. Received: epochs={t.epochs}")
        if t.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1. Received: batch_size={t.batch_size}")
        if t.learning_rate <= 0 or t.head_learning_rate <= 0:
            raise ValueError(
                "train learning rates must be > 0. Received: "
                f"learning_rate={t.learning_rate}, head_learning_rate={t.head_learning_rate}"
            )
        if t.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"train.lr_schedule must be 'cosine' or 'constant'. Received: lr_schedule={t.lr_schedule!r}")
        if t.patience < 0:
            raise ValueError(f"train.patience must be >= 0. Received: patience={t.patience}")
        if not 0.0 < t.p_threshold < 1.0:
            raise ValueError(f"train.p_threshold must be in (0, 1). Received: p_threshold={t.p_threshold}")
        if m.head not in HEADS:
            raise ValueError(f"model.head must be one of {HEADS}. Received: head={m.head!r}")
        if t.cross_fit_folds == 1 or t.cross_fit_folds < 0:
            raise ValueError(
                f"train.cross_fit_folds must be 0 or >= 2. Received: cross_fit_folds={t.cross_fit_folds}"
            )
        if t.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be one of {STRATEGIES}. Received: strategy={t.strategy!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Config:
        """Defaults overridden by a nested dict such as ``{"train": {"epochs": 3}}``."""
        return cls().override_nested(values or {})

    def override_nested(self, values: dict[str, Any]) -> Config:
        """A copy with nested ``{section: {field: value}}`` overrides applied (unknown keys raise)."""
        if not isinstance(values, dict):
            raise TypeError(f"Config overrides must be a mapping. Received: {values!r}")
        new = dataclasses.replace(
            self,
            data=dataclasses.replace(self.data),
            model=dataclasses.replace(self.model),
            train=dataclasses.replace(self.train),
        )
        for section, fields in values.items():
            if section not in _SECTIONS:
                raise ValueError(f"Unknown config section {section!r}; expected one of {sorted(_SECTIONS)}.")
            if not isinstance(fields, dict):
                raise TypeError(f"Config section {section!r} must be a mapping. Received: {fields!r}")
            target = getattr(new, section)
            names = {f.name for f in dataclasses.fields(target)}
            for key, value in fields.items():
                if key not in names:
                    raise ValueError(f"Unknown config key {section}.{key}; expected one of {sorted(names)}.")
                setattr(target, key, value)
        return new.validate()

    def override(self, **flat: Any) -> Config:
        """A copy with flat overrides: ``epochs=3`` or ``train__epochs=3``; None values are ignored.

        A bare key is looked up in every section; it must name exactly one field.
        """
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if value is None:
                continue
            if "__" in key:
                section, name = key.split("__", 1)
            else:
                owners = [s for s, cls_ in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls_)}]
                if len(owners) != 1:
                    raise ValueError(f"Unknown or ambiguous config option {key!r} (sections: {owners}).")
                section, name = owners[0], key
            nested.setdefault(section, {})[name] = value
        return self.override_nested(nested)

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Defaults overridden by the YAML file at ``path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}")
        with path.open() as f:
            values = yaml.safe_load(f) or {}
        try:
            return cls.from_dict(values)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)
        return path


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the YAML file at ``path`` (if given), then flat ``overrides``."""
    config = Config.load(path) if path is not None else Config()
    return config.override(**overrides)
