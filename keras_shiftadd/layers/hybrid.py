"""Hybrid layers: one weight tensor shared by a target and an augmented path."""

import keras
import numpy as np
from keras import ops

from keras_shiftadd import hws, quantizers
from keras_shiftadd.layers import adder
from keras_shiftadd.layers.shift import quantize_shift_operands

OPS = ("shift", "add", "mult")


def _check_channels(name, target, total):
    if not isinstance(target, int) or not isinstance(total, int):
        raise ValueError(
            f"Invalid `{name}`: expected integers. Received: "
            f"target_{name}={target!r}, {name}={total!r}"
        )
    if not 0 < target <= total:
        raise ValueError(
            f"Invalid `target_{name}`: expected 0 < target_{name} <= {name}. "
            f"Received: target_{name}={target}, {name}={total}"
        )


class _HybridLayer(keras.layers.Layer):
    """Argument handling shared by the hybrid layers.

    Every hybrid layer owns one kernel of the augmented shape. Its leading
    `target_*` input and output channels form the target slice, which the
    multiplication-free operator `op` reads; all other entries are read by
    ordinary multiplication. `call(x, target=True)` runs the target path
    alone on a tensor that has only the target channels.

    `remap` (a `keras_shiftadd.hws.KernelRemap`, its serialized config, or
    `None`) is heterogeneous weight sharing: the multiplication-free operator
    reads the target slice through it, Shift as `W + R(W)` (mode "bias") and
    Add as `R(W)` (mode "replace"), while multiplication reads `W` itself.

    `augmented_op` is the operator of the entries outside the target slice:
    `"mult"` (hybrid computation, the default) or `op` itself, which makes
    the whole augmented layer multiplication-free (the "Aug. with Shift"
    ablation of the ShiftAddAug paper, Table 6).
    """

    allowed_ops = OPS

    def __init__(self, op="shift", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, weight_bits=5,
                 activation_bits=16, activation_fraction_bits=8, eta=0.2,
                 chunk_size=None, mutate=False, remap=None, augmented_op="mult",
                 **kwargs):
        super().__init__(**kwargs)
        if op not in self.allowed_ops:
            raise ValueError(
                f"Invalid `op` for {type(self).__name__}: expected one of "
                f"{self.allowed_ops}. Received: op={op!r}"
            )
        quantizers.shift_range(weight_bits)
        if activation_bits is not None:
            quantizers.check_fixed_point(activation_bits, activation_fraction_bits)
        self.op = op
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.weight_bits = weight_bits
        self.activation_bits = activation_bits
        self.activation_fraction_bits = activation_fraction_bits
        self.eta = eta
        self.chunk_size = chunk_size
        if mutate and op == "mult":
            raise ValueError(
                f"Invalid `mutate` for layer '{self.name}': block mutation "
                "turns a multiplicative target block into `op`, so it needs "
                "op='shift' or op='add'. Received: op='mult', mutate=True"
            )
        self.mutate = bool(mutate)
        self.remap = self._check_remap(remap)
        self.augmented_op = self._check_augmented_op(augmented_op)

    def _check_augmented_op(self, augmented_op):
        if augmented_op not in ("mult", self.op):
            raise ValueError(
                f"Invalid `augmented_op` for layer '{self.name}': expected "
                f"'mult' (hybrid computation) or op={self.op!r} (the extra "
                f"channels use the target's operator too). Received: "
                f"augmented_op={augmented_op!r}"
            )
        if augmented_op != "mult" and (self.mutate or self.remap is not None):
            raise ValueError(
                f"Invalid `augmented_op` for layer '{self.name}': with "
                f"augmented_op={augmented_op!r} every channel uses one "
                "operator, so there is no multiplicative block to mutate "
                "from and no heterogeneous sharing to remap. Received: "
                f"mutate={self.mutate}, remap="
                f"{'set' if self.remap is not None else None}"
            )
        return augmented_op

    @property
    def _single_operator(self):
        """True when the augmented path uses one operator on every channel."""
        return self.op == "mult" or self.augmented_op == self.op

    def _check_remap(self, remap):
        if remap is None:
            return None
        if isinstance(remap, dict):
            remap = keras.saving.deserialize_keras_object(remap)
        if not isinstance(remap, hws.KernelRemap):
            raise ValueError(
                f"Invalid `remap` for layer '{self.name}': expected a "
                "keras_shiftadd.hws.KernelRemap or None. Received: "
                f"{type(remap).__name__}"
            )
        expected = hws.OP_MODES.get(self.op)
        if remap.mode != expected:
            needed = (
                "no remap, because multiplication reads the shared weights"
                if expected is None else f"a remap with mode={expected!r}"
            )
            raise ValueError(
                f"Invalid `remap` for layer '{self.name}': op={self.op!r} "
                f"needs {needed}. Received: mode={remap.mode!r}"
            )
        return remap

    def _add_kernel_and_bias(self, kernel_shape, bias_size):
        self.kernel = self.add_weight(
            name="kernel",
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(bias_size,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.mutation = None
        if self.mutate:
            # Blend of the target block, 0 (multiplicative) to 1 (pure `op`).
            # A variable, so that a schedule can move it and checkpoints keep it.
            self.mutation = self.add_weight(
                name="mutation",
                shape=(),
                initializer="zeros",
                trainable=False,
            )

    def _blend(self, inputs, kernel, mult_fn, mf_fn):
        """Compute the target block, blended while the layer mutates.

        Without mutation this is `mf_fn(inputs, kernel)`. With mutation it is
        `(1 - m) * mult_fn(inputs, kernel) + m * mf_fn(inputs, kernel)`, where
        `m` is the `mutation` variable: the block starts as an ordinary
        multiplicative layer and is pure `op` once `m` reaches 1.
        """
        if not self.mutate:
            return mf_fn(inputs, kernel)
        blend = ops.cast(self.mutation, inputs.dtype)
        return (1.0 - blend) * mult_fn(inputs, kernel) + blend * mf_fn(
            inputs, kernel
        )

    def mf_kernel(self, kernel):
        """Return the kernel the multiplication-free operator reads.

        Without a remap this is `kernel` itself. With one (heterogeneous
        weight sharing) it is `W + R(W)` for Shift and `R(W)` for Add. `R`
        takes its Gaussian statistics from `kernel`, the target slice.
        """
        if self.remap is None:
            return kernel
        return self.remap(kernel)

    def target_kernel(self):
        """Return the target slice of the shared kernel as a tensor."""
        raise NotImplementedError

    def mf_target_kernel(self):
        """Return, as NumPy, the target kernel exactly as the target reads it."""
        kernel = self.target_kernel()
        if self.op != "mult":
            kernel = self.mf_kernel(kernel)
        return keras.ops.convert_to_numpy(kernel)

    def _shift_operands(self, inputs, kernel):
        return quantize_shift_operands(
            inputs,
            kernel,
            self.weight_bits,
            self.activation_bits,
            self.activation_fraction_bits,
        )

    def _finish(self, outputs, bias):
        if bias is not None:
            outputs = ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "op": self.op,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
                "weight_bits": self.weight_bits,
                "activation_bits": self.activation_bits,
                "activation_fraction_bits": self.activation_fraction_bits,
                "eta": self.eta,
                "chunk_size": self.chunk_size,
                "mutate": self.mutate,
                "augmented_op": self.augmented_op,
                "remap": (
                    None if self.remap is None
                    else keras.saving.serialize_keras_object(self.remap)
                ),
            }
        )
        return config


def _pair(value, name):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"Invalid `{name}`: expected a positive integer or a pair of "
            f"positive integers. Received: {name}={value!r}"
        )
    return value


def _padding(value):
    padding = str(value).lower()
    if padding not in ("valid", "same"):
        raise ValueError(
            "Invalid `padding`: expected 'valid' or 'same'. "
            f"Received: padding={value!r}"
        )
    return padding


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridConv2D(_HybridLayer):
    """2D convolution split into a multiplication-free target and a wider
    multiplicative augmentation, sharing one kernel.

    With `X = concat(X_t, X_a)` on the channel axis, the augmented path
    computes `Y_t = MF(X_t) + Conv(X_a)`, `Y_a = Conv(X)` and returns
    `concat(Y_t, Y_a)`; the target path computes `MF(X_t)` alone. `MF` is
    `op`: a Shift convolution, an adder convolution, or `Conv2D` itself.

    Args:
        filters: Output channels of the augmented path.
        target_filters: Output channels of the target path, the leading
            slice of `filters`.
        kernel_size: Integer or pair, the window size.
        input_channels: Input channels of the augmented path.
        target_input_channels: Input channels of the target path.
        op: `"shift"`, `"add"` or `"mult"`, the operator of the target
            slice. Defaults to `"shift"`.
        strides: Integer or pair. Defaults to `1`.
        padding: `"valid"` or `"same"`. Defaults to `"valid"`.
        dilation_rate: Integer or pair; must be 1 for `op="add"`.
            Defaults to `1`.
        weight_bits, activation_bits, activation_fraction_bits: Shift
            formats, see `ShiftConv2D`. Default to `5`, `16`, `8`.
        eta, chunk_size: Adder settings, see `AddConv2D`. Default to `0.2`
            and `None` (automatic).
        mutate: Whether the target block mutates (block mutation). The
            layer then owns a non-trainable scalar `mutation` in [0, 1],
            starting at 0, and computes the target block as
            `(1 - mutation) * Conv(X_t) + mutation * MF(X_t)` on both paths.
            Needs `op` other than `"mult"`. Defaults to `False`.
        activation, use_bias, *_initializer, *_regularizer, *_constraint:
            as in `keras.layers.Conv2D`. The bias belongs to the
            multiplication-free part: the target uses its leading slice.

    Input shape:
        `(batch, rows, cols, input_channels)`, or `target_input_channels`
        channels with `target=True`.

    Output shape:
        `(batch, new_rows, new_cols, filters)`, or `target_filters` channels
        with `target=True`.

    Example:

    >>> layer = HybridConv2D(16, 8, 3, input_channels=6,
    ...                      target_input_channels=3, padding="same")
    >>> layer(np.ones((1, 8, 8, 6), "float32")).shape
    (1, 8, 8, 16)
    >>> layer(np.ones((1, 8, 8, 3), "float32"), target=True).shape
    (1, 8, 8, 8)
    """

    def __init__(self, filters, target_filters, kernel_size, input_channels,
                 target_input_channels, strides=1, padding="valid",
                 dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        _check_channels("filters", target_filters, filters)
        _check_channels("input_channels", target_input_channels, input_channels)
        self.filters = filters
        self.target_filters = target_filters
        self.input_channels = input_channels
        self.target_input_channels = target_input_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _padding(padding)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if self.op == "add" and self.dilation_rate != (1, 1):
            raise ValueError(
                "Invalid `dilation_rate` for op='add': adder convolutions "
                "support only dilation 1. "
                f"Received: dilation_rate={dilation_rate!r}"
            )

    def build(self, input_shape=None):
        kernel_shape = self.kernel_size + (self.input_channels, self.filters)
        self._add_kernel_and_bias(kernel_shape, self.filters)

        # Mask that removes the target block (target inputs x target outputs)
        # from the multiplicative convolution, where MF computes it instead.
        mask = np.ones(kernel_shape, dtype="float32")
        mask[:, :, : self.target_input_channels, : self.target_filters] = 0.0
        self._mult_mask = mask

    def _conv(self, inputs, kernel):
        return ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )

    def _mf_conv(self, inputs, kernel):
        return self._blend(inputs, kernel, self._conv, self._pure_mf_conv)

    def _pure_mf_conv(self, inputs, kernel):
        kernel = self.mf_kernel(kernel)
        if self.op == "shift":
            inputs, kernel = self._shift_operands(inputs, kernel)
            return self._conv(inputs, kernel)
        if self.op == "add":
            return adder.adder_conv2d(
                inputs,
                kernel,
                strides=self.strides,
                padding=self.padding,
                eta=self.eta,
                chunk_size=self.chunk_size,
            )
        return self._conv(inputs, kernel)

    def target_kernel(self):
        return self.kernel[:, :, : self.target_input_channels, : self.target_filters]

    def call(self, inputs, target=False):
        ct, ft = self.target_input_channels, self.target_filters
        target_kernel = self.target_kernel()
        bias = self.bias

        if target:
            outputs = self._mf_conv(inputs, target_kernel)
            return self._finish(outputs, None if bias is None else bias[:ft])

        if self.op == "mult":
            return self._finish(self._conv(inputs, self.kernel), bias)
        if self._single_operator:
            return self._finish(self._pure_mf_conv(inputs, self.kernel), bias)

        if ct == self.input_channels:
            # Unwidened input (the stem): only the extra filters multiply.
            parts = [self._mf_conv(inputs, target_kernel)]
            if ft < self.filters:
                parts.append(self._conv(inputs, self.kernel[..., ft:]))
            outputs = parts[0] if len(parts) == 1 else ops.concatenate(parts, -1)
            return self._finish(outputs, bias)

        mult = self._conv(inputs, self.kernel * self._mult_mask)
        mf = self._mf_conv(inputs[..., :ct], target_kernel)
        outputs = ops.concatenate([mf + mult[..., :ft], mult[..., ft:]], axis=-1)
        return self._finish(outputs, bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "target_filters": self.target_filters,
                "kernel_size": self.kernel_size,
                "input_channels": self.input_channels,
                "target_input_channels": self.target_input_channels,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridDepthwiseConv2D(_HybridLayer):
    """Depthwise convolution whose leading channels are multiplication-free.

    The augmented path computes `concat(MF(X_t), DepthwiseConv(X_a))`; the
    target path computes `MF(X_t)`. Adder depthwise convolutions are not
    offered: in Add models depthwise layers stay multiplicative.

    Args:
        kernel_size: Integer or pair, the window size.
        input_channels: Channels of the augmented input.
        target_input_channels: Channels of the target input.
        depth_multiplier: Output channels per input channel. Defaults to `1`.
        op: `"shift"` or `"mult"`. Defaults to `"shift"`.
        strides, padding, dilation_rate: as in `HybridConv2D`.
        Other arguments: as in `HybridConv2D`.

    Input shape:
        `(batch, rows, cols, input_channels)`, or `target_input_channels`
        channels with `target=True`.

    Output shape:
        `(batch, new_rows, new_cols, input_channels * depth_multiplier)`,
        or `target_input_channels * depth_multiplier` with `target=True`.

    Example:

    >>> layer = HybridDepthwiseConv2D(3, input_channels=8,
    ...                               target_input_channels=4)
    >>> layer(np.ones((1, 6, 6, 8), "float32")).shape
    (1, 4, 4, 8)
    """

    allowed_ops = ("shift", "mult")

    def __init__(self, kernel_size, input_channels, target_input_channels,
                 depth_multiplier=1, strides=1, padding="valid",
                 dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        _check_channels("input_channels", target_input_channels, input_channels)
        if not isinstance(depth_multiplier, int) or depth_multiplier < 1:
            raise ValueError(
                "Invalid `depth_multiplier`: expected a positive integer. "
                f"Received: depth_multiplier={depth_multiplier!r}"
            )
        self.input_channels = input_channels
        self.target_input_channels = target_input_channels
        self.depth_multiplier = depth_multiplier
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _padding(padding)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")

    def build(self, input_shape=None):
        kernel_shape = self.kernel_size + (
            self.input_channels,
            self.depth_multiplier,
        )
        self._add_kernel_and_bias(
            kernel_shape, self.input_channels * self.depth_multiplier
        )

    def _depthwise(self, inputs, kernel):
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )

    def _mf_depthwise(self, inputs, kernel):
        return self._blend(inputs, kernel, self._depthwise,
                           self._pure_mf_depthwise)

    def _pure_mf_depthwise(self, inputs, kernel):
        kernel = self.mf_kernel(kernel)
        if self.op == "shift":
            inputs, kernel = self._shift_operands(inputs, kernel)
        return self._depthwise(inputs, kernel)

    def target_kernel(self):
        return self.kernel[:, :, : self.target_input_channels]

    def call(self, inputs, target=False):
        ct = self.target_input_channels
        target_outputs = ct * self.depth_multiplier
        bias = self.bias

        if target:
            outputs = self._mf_depthwise(inputs, self.kernel[:, :, :ct])
            return self._finish(
                outputs, None if bias is None else bias[:target_outputs]
            )

        if self.op == "mult":
            return self._finish(self._depthwise(inputs, self.kernel), bias)
        if self._single_operator:
            return self._finish(
                self._pure_mf_depthwise(inputs, self.kernel), bias
            )
        if ct == self.input_channels:
            return self._finish(self._mf_depthwise(inputs, self.kernel), bias)

        mf = self._mf_depthwise(inputs[..., :ct], self.kernel[:, :, :ct])
        mult = self._depthwise(inputs[..., ct:], self.kernel[:, :, ct:])
        return self._finish(ops.concatenate([mf, mult], axis=-1), bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "input_channels": self.input_channels,
                "target_input_channels": self.target_input_channels,
                "depth_multiplier": self.depth_multiplier,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridDense(_HybridLayer):
    """Dense layer whose target block is multiplication-free.

    The augmented path computes `Y_t = MF(X_t) + Dense(X_a)`,
    `Y_a = Dense(X)` and returns `concat(Y_t, Y_a)`; for a classifier,
    `units == target_units` and `Y_a` is empty. The target path computes
    `MF(X_t)`.

    Args:
        units: Output units of the augmented path.
        target_units: Output units of the target path.
        input_dim: Input features of the augmented path.
        target_input_dim: Input features of the target path.
        op: `"shift"`, `"add"` or `"mult"`. Defaults to `"shift"`.
        Other arguments: as in `HybridConv2D`.

    Input shape:
        `(batch, input_dim)`, or `(batch, target_input_dim)` with
        `target=True`.

    Output shape:
        `(batch, units)`, or `(batch, target_units)` with `target=True`.

    Example:

    >>> layer = HybridDense(10, 10, input_dim=32, target_input_dim=16)
    >>> layer(np.ones((2, 32), "float32")).shape
    (2, 10)
    """

    def __init__(self, units, target_units, input_dim, target_input_dim,
                 **kwargs):
        super().__init__(**kwargs)
        _check_channels("units", target_units, units)
        _check_channels("input_dim", target_input_dim, input_dim)
        self.units = units
        self.target_units = target_units
        self.input_dim = input_dim
        self.target_input_dim = target_input_dim

    def build(self, input_shape=None):
        kernel_shape = (self.input_dim, self.units)
        self._add_kernel_and_bias(kernel_shape, self.units)
        mask = np.ones(kernel_shape, dtype="float32")
        mask[: self.target_input_dim, : self.target_units] = 0.0
        self._mult_mask = mask

    def _mf_matmul(self, inputs, kernel):
        return self._blend(inputs, kernel, ops.matmul, self._pure_mf_matmul)

    def _pure_mf_matmul(self, inputs, kernel):
        kernel = self.mf_kernel(kernel)
        if self.op == "shift":
            inputs, kernel = self._shift_operands(inputs, kernel)
        elif self.op == "add":
            return adder.adder_dense(
                inputs, kernel, eta=self.eta, chunk_size=self.chunk_size
            )
        return ops.matmul(inputs, kernel)

    def target_kernel(self):
        return self.kernel[: self.target_input_dim, : self.target_units]

    def call(self, inputs, target=False):
        dt, ut = self.target_input_dim, self.target_units
        target_kernel = self.target_kernel()
        bias = self.bias

        if target:
            outputs = self._mf_matmul(inputs, target_kernel)
            return self._finish(outputs, None if bias is None else bias[:ut])

        if self.op == "mult":
            return self._finish(ops.matmul(inputs, self.kernel), bias)
        if self._single_operator:
            return self._finish(self._pure_mf_matmul(inputs, self.kernel), bias)

        mult = ops.matmul(inputs, self.kernel * self._mult_mask)
        mf = self._mf_matmul(inputs[..., :dt], target_kernel)
        outputs = ops.concatenate([mf + mult[..., :ut], mult[..., ut:]], axis=-1)
        return self._finish(outputs, bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "target_units": self.target_units,
                "input_dim": self.input_dim,
                "target_input_dim": self.target_input_dim,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class HybridBatchNormalization(keras.layers.Layer):
    """Batch normalization with separate moving statistics for the target.

    `gamma` and `beta` have the augmented width and the target reads their
    leading slice. The augmented path keeps `moving_mean` and
    `moving_variance` of the augmented width. The target path keeps its own
    `target_moving_mean` and `target_moving_variance`, so a standalone
    target model is normalized with statistics of its own activations.

    Args:
        channels: Channels of the augmented input.
        target_channels: Channels of the target input.
        momentum: Momentum of the moving averages. Defaults to `0.99`.
        epsilon: Added to the variance. Defaults to `1e-3`.
        center, scale: Whether to use `beta` and `gamma`. Default to `True`.
        *_initializer, *_regularizer, *_constraint: as in
            `keras.layers.BatchNormalization`.

    Input shape:
        `(..., channels)`, or `(..., target_channels)` with `target=True`.

    Output shape:
        Same as the input.
    """

    def __init__(self, channels, target_channels, momentum=0.99, epsilon=1e-3,
                 center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        _check_channels("channels", target_channels, channels)
        self.channels = channels
        self.target_channels = target_channels
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.moving_mean_initializer = keras.initializers.get(
            moving_mean_initializer
        )
        self.moving_variance_initializer = keras.initializers.get(
            moving_variance_initializer
        )
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)

    def build(self, input_shape=None):
        self.gamma = None
        self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(self.channels,),
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(self.channels,),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
            )
        self.moving_mean = self.add_weight(
            name="moving_mean",
            shape=(self.channels,),
            initializer=self.moving_mean_initializer,
            trainable=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance",
            shape=(self.channels,),
            initializer=self.moving_variance_initializer,
            trainable=False,
        )
        self.target_moving_mean = self.add_weight(
            name="target_moving_mean",
            shape=(self.target_channels,),
            initializer=self.moving_mean_initializer,
            trainable=False,
        )
        self.target_moving_variance = self.add_weight(
            name="target_moving_variance",
            shape=(self.target_channels,),
            initializer=self.moving_variance_initializer,
            trainable=False,
        )

    def call(self, inputs, training=None, target=False):
        width = self.target_channels if target else self.channels
        if target:
            moving_mean = self.target_moving_mean
            moving_variance = self.target_moving_variance
        else:
            moving_mean = self.moving_mean
            moving_variance = self.moving_variance

        if training:
            axes = list(range(len(inputs.shape) - 1))
            mean, variance = ops.moments(inputs, axes=axes)
            momentum = self.momentum
            moving_mean.assign(
                moving_mean * momentum + ops.cast(mean, moving_mean.dtype) * (1 - momentum)
            )
            moving_variance.assign(
                moving_variance * momentum
                + ops.cast(variance, moving_variance.dtype) * (1 - momentum)
            )
        else:
            mean = ops.cast(moving_mean, inputs.dtype)
            variance = ops.cast(moving_variance, inputs.dtype)

        gamma = None if self.gamma is None else self.gamma[:width]
        beta = None if self.beta is None else self.beta[:width]
        return ops.batch_normalization(
            inputs,
            mean=mean,
            variance=variance,
            axis=-1,
            offset=beta,
            scale=gamma,
            epsilon=self.epsilon,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "channels": self.channels,
                "target_channels": self.target_channels,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "beta_initializer": keras.initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_initializer": keras.initializers.serialize(
                    self.gamma_initializer
                ),
                "moving_mean_initializer": keras.initializers.serialize(
                    self.moving_mean_initializer
                ),
                "moving_variance_initializer": keras.initializers.serialize(
                    self.moving_variance_initializer
                ),
                "beta_regularizer": keras.regularizers.serialize(
                    self.beta_regularizer
                ),
                "gamma_regularizer": keras.regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_constraint": keras.constraints.serialize(
                    self.beta_constraint
                ),
                "gamma_constraint": keras.constraints.serialize(
                    self.gamma_constraint
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class TargetFade(keras.layers.Layer):
    """Scale the target path by a fade factor; pass the augmented path unchanged.

    The gate of an augment block: the block's output reaches the target
    multiplied by the non-trainable scalar `fade` (1 at creation, moved to 0
    by `keras_shiftadd.callbacks.BlockFade`), while the augmented network
    always receives it in full.

    Input shape:
        Any.

    Output shape:
        Same as the input.
    """

    def build(self, input_shape=None):
        self.fade = self.add_weight(
            name="fade", shape=(), initializer="ones", trainable=False
        )

    def call(self, inputs, target=False):
        if not target:
            return inputs
        return inputs * ops.cast(self.fade, inputs.dtype)
