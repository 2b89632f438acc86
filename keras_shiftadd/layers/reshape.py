"""Flatten and reshape layers that keep target channels in a leading slice."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridFlatten(keras.layers.Layer):
    """Flatten a widened tensor so that target features come first.

    A plain `Flatten` interleaves channels with positions, which would
    scatter the target channels. This layer flattens the target channels
    and the augmentation channels separately and concatenates them, so the
    next dense layer reads the target features as a leading slice. With
    `target=True` it is a plain flatten.

    Args:
        target_channels: Leading channels that belong to the target.

    Input shape:
        `(batch, ..., channels)`.

    Output shape:
        `(batch, prod(...) * channels)`.
    """

    def __init__(self, target_channels, **kwargs):
        super().__init__(**kwargs)
        self.target_channels = target_channels

    def call(self, inputs, target=False):
        batch = ops.shape(inputs)[0]
        if target:
            return ops.reshape(inputs, (batch, -1))
        ct = self.target_channels
        return ops.concatenate(
            [
                ops.reshape(inputs[..., :ct], (batch, -1)),
                ops.reshape(inputs[..., ct:], (batch, -1)),
            ],
            axis=-1,
        )

    def get_config(self):
        config = super().get_config()
        config["target_channels"] = self.target_channels
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridReshape(keras.layers.Layer):
    """Reshape that keeps the channel axis last, on either path.

    Args:
        target_shape: Shape without the batch axis, as in
            `keras.layers.Reshape`; its last entry is replaced by the
            channel count of the input, so one layer serves the augmented
            and the target width.

    Input shape:
        `(batch, ..., channels)`.

    Output shape:
        `(batch,) + target_shape[:-1] + (channels,)`.
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(target_shape)

    def call(self, inputs, target=False):
        shape = (ops.shape(inputs)[0],) + self.target_shape[:-1] + (
            inputs.shape[-1],
        )
        return ops.reshape(inputs, shape)

    def get_config(self):
        config = super().get_config()
        config["target_shape"] = self.target_shape
        return config
