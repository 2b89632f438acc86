"""Shift layers: power-of-two weights and fixed-point activations (DeepShift-Q)."""

import keras
from keras import ops

from keras_shiftadd import quantizers


def _check_shift_args(weight_bits, activation_bits, activation_fraction_bits):
    quantizers.shift_range(weight_bits)
    if activation_bits is not None:
        quantizers.check_fixed_point(activation_bits, activation_fraction_bits)


def quantize_shift_operands(inputs, kernel, weight_bits=5, activation_bits=16,
                            activation_fraction_bits=8):
    """Round activations to fixed point and weights to signed powers of two.

    Both roundings pass gradients straight through. `activation_bits=None`
    leaves the activations in floating point.

    Returns:
        The tuple `(inputs, kernel)` as the shift operator sees them.
    """
    if activation_bits is not None:
        inputs = quantizers.round_fixed_point(
            inputs, activation_bits, activation_fraction_bits
        )
    kernel = quantizers.round_power_of_two(kernel, weight_bits)
    return inputs, kernel


class _ShiftMixin:
    """Stores and serializes the bit widths shared by every Shift layer."""

    def _init_shift(self, weight_bits, activation_bits, activation_fraction_bits):
        _check_shift_args(weight_bits, activation_bits, activation_fraction_bits)
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.activation_fraction_bits = activation_fraction_bits

    def _quantize(self, inputs, kernel):
        return quantize_shift_operands(
            inputs,
            kernel,
            self.weight_bits,
            self.activation_bits,
            self.activation_fraction_bits,
        )

    def _shift_config(self):
        return {
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "activation_fraction_bits": self.activation_fraction_bits,
        }


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class ShiftConv2D(_ShiftMixin, keras.layers.Conv2D):
    """2D convolution whose weights are signed powers of two.

    The layer keeps a float latent kernel `W` and convolves with
    `sign(W) * 2**round(log2|W|)`, the exponent clipped to what `weight_bits`
    can encode. The inputs are rounded to signed fixed point first. Both
    roundings use straight-through gradients (DeepShift-Q), so the layer
    trains like `Conv2D`. In integer inference every product becomes a
    bit-shift and a negation.

    Args:
        filters, kernel_size, strides, padding, ...: as in
            `keras.layers.Conv2D`.
        weight_bits: Bits per weight: one sign bit plus `weight_bits - 1`
            bits of shift, so 5 bits give shifts 0 to -15. Defaults to `5`.
        activation_bits: Total bits of the signed fixed-point input format,
            or `None` to keep float inputs. Defaults to `16`.
        activation_fraction_bits: Fractional bits of that format. Defaults
            to `8`, which covers [-128, 128) in steps of 1/256.

    Input shape:
        4D tensor `(batch, rows, cols, channels)`.

    Output shape:
        4D tensor `(batch, new_rows, new_cols, filters)`.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> ShiftConv2D(4, 3, padding="same")(x).shape
    (2, 8, 8, 4)
    """

    def __init__(self, filters, kernel_size, weight_bits=5, activation_bits=16,
                 activation_fraction_bits=8, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_shift(weight_bits, activation_bits, activation_fraction_bits)

    def convolution_op(self, inputs, kernel):
        inputs, kernel = self._quantize(inputs, kernel)
        return super().convolution_op(inputs, kernel)

    def get_config(self):
        config = super().get_config()
        config.update(self._shift_config())
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class ShiftDepthwiseConv2D(_ShiftMixin, keras.layers.DepthwiseConv2D):
    """Depthwise 2D convolution whose weights are signed powers of two.

    Args:
        kernel_size, strides, padding, depth_multiplier, ...: as in
            `keras.layers.DepthwiseConv2D`.
        weight_bits, activation_bits, activation_fraction_bits: as in
            `ShiftConv2D`. Default to `5`, `16` and `8`.

    Input shape:
        4D tensor `(batch, rows, cols, channels)`.

    Output shape:
        4D tensor `(batch, new_rows, new_cols, channels * depth_multiplier)`.

    Example:

    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> ShiftDepthwiseConv2D(3, depth_multiplier=2)(x).shape
    (2, 6, 6, 6)
    """

    def __init__(self, kernel_size, weight_bits=5, activation_bits=16,
                 activation_fraction_bits=8, **kwargs):
        super().__init__(kernel_size, **kwargs)
        self._init_shift(weight_bits, activation_bits, activation_fraction_bits)

    def call(self, inputs):
        inputs, kernel = self._quantize(inputs, self.kernel)
        outputs = ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._shift_config())
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class ShiftDense(_ShiftMixin, keras.layers.Dense):
    """Densely connected layer whose weights are signed powers of two.

    Args:
        units, activation, use_bias, ...: as in `keras.layers.Dense`.
        weight_bits, activation_bits, activation_fraction_bits: as in
            `ShiftConv2D`. Default to `5`, `16` and `8`.

    Input shape:
        N-D tensor `(batch, ..., input_dim)`.

    Output shape:
        N-D tensor `(batch, ..., units)`.

    Example:

    >>> ShiftDense(3)(np.ones((2, 5), "float32")).shape
    (2, 3)
    """

    def __init__(self, units, weight_bits=5, activation_bits=16,
                 activation_fraction_bits=8, **kwargs):
        super().__init__(units, **kwargs)
        self._init_shift(weight_bits, activation_bits, activation_fraction_bits)

    def call(self, inputs, training=None):
        inputs, kernel = self._quantize(inputs, self.kernel)
        outputs = ops.matmul(inputs, kernel)
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(self._shift_config())
        return config
