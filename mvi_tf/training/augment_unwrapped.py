"""Training-time augmentation of unwrapped ROI stacks (`data_prep.unwrap`): the symmetries of the tumour, not of
the square.

In an unwrapped stack row ``i`` is the ray at angle ``2*pi*i/S`` around the tumour and column ``j`` a fixed distance
from its boundary. Turning the patient about the tumour's centroid shifts the rows circularly; mirroring it reverses
their order; both leave every column at its distance. The square ROI's flips, quarter turns, small rotations and
shifts (`augment.Augmentation`) would instead move the boundary's columns or swap rays for distances: on the
synthetic MRI hepatobiliary branch they cost 0.10 of prospective AUC, and no geometric augmentation at all lets the
network memorise its training patients (docs/branch-experiments.md, "The boundary-unwrapped ROI").

Every phase of one patient receives the same roll and reflection; intensity jitter is drawn per phase, as in
`augment.Augmentation`. Randomness comes from ``tf.random.stateless_*`` ops keyed by the per-example seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class UnwrappedAugmentation:
    """Random circular shift of the rays, random reflection, intensity jitter; identical geometry across phases.

    Parameters
    ----------
    phases : sequence of str
        Keys of the image tensors ``(S, S, 3)`` float32 in [0, 1] to transform.
    intensity_jitter : float
        Per phase: contrast factor in ``1 +/- jitter`` around the mean and brightness offset in ``+/- jitter``;
        the result is clipped to [0, 1].
    """

    phases: Sequence[str]
    intensity_jitter: float = 0.05

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"UnwrappedAugmentation needs at least one phase. Received: phases={self.phases}")
        if not 0.0 <= self.intensity_jitter <= 0.5:
            raise ValueError(
                f"intensity_jitter must be in [0, 0.5]. Received: intensity_jitter={self.intensity_jitter}"
            )

    def __call__(self, features: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Augment one example (the phase entries are replaced, every other entry is passed through)."""
        seed = tf.cast(seed, tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, num=2 + len(self.phases))
        rays = tf.shape(features[self.phases[0]])[0]
        roll = tf.random.stateless_uniform([], seeds[0], 0, rays, dtype=tf.int32)
        mirror = tf.random.stateless_uniform([], seeds[1]) < 0.5
        out = dict(features)
        for i, phase in enumerate(self.phases):
            image = features[phase]
            # Mirror about ray 0 (row i -> row -i mod S), then turn by `roll` rays.
            image = tf.cond(mirror, lambda img=image: tf.roll(tf.reverse(img, axis=[0]), 1, axis=0),
                            lambda img=image: img)
            image = tf.roll(image, roll, axis=0)
            if self.intensity_jitter > 0:
                jitter = tf.random.stateless_uniform([2], seeds[2 + i], -1.0, 1.0) * self.intensity_jitter
                mean = tf.reduce_mean(image)
                image = (image - mean) * (1.0 + jitter[0]) + mean + jitter[1]
            out[phase] = tf.clip_by_value(image, 0.0, 1.0)
        return out
