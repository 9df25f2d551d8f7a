"""Training-time augmentation of multiphase ROI stacks in TensorFlow ops with stateless, seeded randomness.

Every phase of one patient receives the same geometric transform (flips, rotation, shift), so the phases stay
co-registered; intensity jitter (contrast and brightness) is drawn per phase. The three channels are three
contiguous axial slices: they are transformed together and never reordered. All randomness comes from
``tf.random.stateless_*`` ops keyed by a per-example seed, so a pipeline with a fixed seed is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random flips, small rotations/shifts and intensity jitter, identical geometry across phases.

    Parameters
    ----------
    phases : sequence of str
        Keys of the image tensors ``(S, S, 3)`` float32 in [0, 1] to transform.
    flip : bool
        Random left-right and up-down flips (each with probability 0.5).
    rotation_deg : float
        Maximum absolute rotation in degrees (uniform).
    shift_fraction : float
        Maximum absolute shift along each axis as a fraction of the side (uniform).
    intensity_jitter : float
        Per phase: contrast factor in ``1 +/- jitter`` around the mean and brightness offset in ``+/- jitter``;
        the result is clipped to [0, 1].
    rot90 : bool
        Random quarter turn (0, 90, 180 or 270 degrees, uniform), before the small rotation. With ``flip`` this
        draws from all eight symmetries of the square.
    """

    phases: Sequence[str]
    flip: bool = True
    rotation_deg: float = 10.0
    shift_fraction: float = 0.05
    intensity_jitter: float = 0.05
    rot90: bool = False

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError(f"Augmentation needs at least one phase. Received: phases={self.phases}")
        if not 0.0 <= self.rotation_deg <= 45.0:
            raise ValueError(f"rotation_deg must be in [0, 45]. Received: rotation_deg={self.rotation_deg}")
        if not 0.0 <= self.shift_fraction <= 0.25:
            raise ValueError(f"shift_fraction must be in [0, 0.25]. Received: shift_fraction={self.shift_fraction}")
        if not 0.0 <= self.intensity_jitter <= 0.5:
            raise ValueError(
                f"intensity_jitter must be in [0, 0.5]. Received: intensity_jitter={self.intensity_jitter}"
            )

    def __call__(self, features: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Augment one example.

        Parameters
        ----------
        features : dict
            Example dict; the phase entries are replaced, every other entry is passed through.
        seed : tf.Tensor
            int64 ``(2,)`` stateless seed for this example.
        """
        seed = tf.cast(seed, tf.int64)
        seeds = tf.random.experimental.stateless_split(seed, num=4 + len(self.phases))
        first = features[self.phases[0]]
        side = tf.cast(tf.shape(first)[0], tf.float32)

        flips = tf.random.stateless_uniform([2], seeds[0]) < 0.5 if self.flip else tf.constant([False, False])
        angle = tf.random.stateless_uniform([], seeds[1], -1.0, 1.0) * (self.rotation_deg * math.pi / 180.0)
        shift = tf.random.stateless_uniform([2], seeds[2], -1.0, 1.0) * (self.shift_fraction * side)
        transform = _rotation_shift_transform(angle, shift[0], shift[1], side)
        if self.rot90:
            quarter_turns = tf.random.stateless_uniform([], seeds[3], 0, 4, dtype=tf.int32)

        out = dict(features)
        for i, phase in enumerate(self.phases):
            image = features[phase]
            image = tf.cond(flips[0], lambda img=image: tf.reverse(img, axis=[1]), lambda img=image: img)
            image = tf.cond(flips[1], lambda img=image: tf.reverse(img, axis=[0]), lambda img=image: img)
            if self.rot90:
                image = tf.image.rot90(image, quarter_turns)
            if self.rotation_deg > 0 or self.shift_fraction > 0:
                image = tf.raw_ops.ImageProjectiveTransformV3(
                    images=image[tf.newaxis],
                    transforms=transform[tf.newaxis],
                    output_shape=tf.shape(image)[:2],
                    fill_value=0.0,
                    interpolation="BILINEAR",
                    fill_mode="NEAREST",
                )[0]
            if self.intensity_jitter > 0:
                jitter = tf.random.stateless_uniform([2], seeds[4 + i], -1.0, 1.0) * self.intensity_jitter
                mean = tf.reduce_mean(image)
                image = (image - mean) * (1.0 + jitter[0]) + mean + jitter[1]
            out[phase] = tf.clip_by_value(image, 0.0, 1.0)
        return out


def _rotation_shift_transform(angle: tf.Tensor, dx: tf.Tensor, dy: tf.Tensor, side: tf.Tensor) -> tf.Tensor:
    """Projective transform (8 params, output->input mapping) rotating about the centre, then shifting."""
    centre = (side - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # input = R^-1 (output - centre - shift) + centre, with R^-1 = [[cos, sin], [-sin, cos]].
    ox = centre - cos * (centre + dx) - sin * (centre + dy)
    oy = centre + sin * (centre + dx) - cos * (centre + dy)
    zero = tf.zeros([], tf.float32)
    return tf.stack([cos, sin, ox, -sin, cos, oy, zero, zero])
