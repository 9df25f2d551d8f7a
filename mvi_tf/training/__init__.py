"""Training of the signature, fusion and combined (CDLM) models from TFRecords (``mvi-tf train``).

Modules: :mod:`~mvi_tf.training.pipeline` (tf.data), :mod:`~mvi_tf.training.augment`,
:mod:`~mvi_tf.training.feature_selection`, :mod:`~mvi_tf.training.baselines` (clinical and radiological
logistic models), :mod:`~mvi_tf.training.callbacks`, :mod:`~mvi_tf.training.stages`,
:mod:`~mvi_tf.training.distribute` and :mod:`~mvi_tf.training.train`.
"""

from mvi_tf.training.train import TrainResult, train

__all__ = ["TrainResult", "train"]
