"""Tests of the hybrid layers against float64 NumPy references.

With `_t` the target channels and `_a` the augmentation channels, the
augmented paths compute, before the bias and the activation:

    HybridConv2D:
        Y_t = MF(X_t; K[:, :, :ct, :ft]) + Conv(X_a; K[:, :, ct:, :ft])
        Y_a = Conv(X; K[..., ft:])
    HybridDepthwiseConv2D:
        Y = concat(MF(X_t; K[:, :, :ct]), DepthwiseConv(X_a; K[:, :, ct:]))
    HybridDense:
        Y_t = MF(X_t; K[:dt, :ut]) + X_a @ K[dt:, :ut]
        Y_a = X @ K[:, ut:]

The target paths compute MF(X_t) plus the leading slice of the bias. MF is
the Shift, adder or plain operator that `op` names.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_shiftadd.layers import (
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
)

RTOL = 1e-5
ATOL = 1e-3


# NumPy references -----------------------------------------------------------


def reference_power_of_two(weights, weight_bits=5):
    weights = np.asarray(weights, dtype=np.float64)
    min_shift = -(2 ** (weight_bits - 1) - 1)
    sign = np.where(weights < 0, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        exponent = np.clip(np.round(np.log2(np.abs(weights))), min_shift, 0)
    return sign * 2.0**exponent


def reference_fixed_point(x, bits=16, fraction_bits=8):
    step = 2.0**-fraction_bits
    low = -(2.0 ** (bits - 1)) * step
    high = (2.0 ** (bits - 1) - 1) * step
    return np.clip(np.round(np.asarray(x, np.float64) / step) * step, low, high)


def pad_for_conv(x, kernel_size, strides, padding):
    """Zero-pad NHWC `x` as TensorFlow does and return it with the output size."""
    (kh, kw), (sh, sw) = kernel_size, strides
    _, height, width, _ = x.shape
    if padding == "valid":
        return x, ((height - kh) // sh + 1, (width - kw) // sw + 1)
    out_h, out_w = -(-height // sh), -(-width // sw)
    pad_h = max((out_h - 1) * sh + kh - height, 0)
    pad_w = max((out_w - 1) * sw + kw - width, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = np.pad(
        x, ((0, 0), (top, pad_h - top), (left, pad_w - left), (0, 0))
    )
    return padded, (out_h, out_w)


def windows(x, kernel_size, strides, padding):
    """Yield (i, j, window) over the padded input, window of shape (B, kh, kw, C)."""
    padded, (out_h, out_w) = pad_for_conv(x, kernel_size, strides, padding)
    (kh, kw), (sh, sw) = kernel_size, strides
    for i in range(out_h):
        for j in range(out_w):
            yield i, j, padded[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]


def reference_window_op(x, kernel, strides, padding, window_fn, out_channels):
    x, kernel = np.float64(x), np.float64(kernel)
    _, (out_h, out_w) = pad_for_conv(x, kernel.shape[:2], strides, padding)
    outputs = np.zeros((x.shape[0], out_h, out_w, out_channels))
    for i, j, window in windows(x, kernel.shape[:2], strides, padding):
        outputs[:, i, j] = window_fn(window, kernel)
    return outputs


def reference_conv(x, kernel, strides, padding):
    return reference_window_op(
        x,
        kernel,
        strides,
        padding,
        lambda window, k: np.einsum("bhwc,hwcf->bf", window, k),
        kernel.shape[-1],
    )


def reference_adder_conv(x, kernel, strides, padding):
    """Compute -sum |window - filter|, with the zero padding in the distance."""
    return reference_window_op(
        x,
        kernel,
        strides,
        padding,
        lambda window, k: -np.abs(window[..., None] - k[None]).sum(axis=(1, 2, 3)),
        kernel.shape[-1],
    )


def reference_depthwise(x, kernel, strides, padding):
    """Compute a depthwise convolution.

    Output channel c * M + m reads kernel[..., c, m].
    """
    channels, multiplier = kernel.shape[2:]
    return reference_window_op(
        x,
        kernel,
        strides,
        padding,
        lambda window, k: np.einsum("bhwc,hwcm->bcm", window, k).reshape(
            window.shape[0], -1
        ),
        channels * multiplier,
    )


def reference_conv_kernel_gradient(x, upstream, kernel_shape, strides, padding):
    """Return d(sum(conv(x, K) * upstream)) / dK."""
    gradient = np.zeros(kernel_shape)
    for i, j, window in windows(np.float64(x), kernel_shape[:2], strides, padding):
        gradient += np.einsum("bhwc,bf->hwcf", window, upstream[:, i, j])
    return gradient


def reference_mf_conv(op, x, kernel, strides, padding):
    if op == "shift":
        return reference_conv(
            reference_fixed_point(x), reference_power_of_two(kernel), strides, padding
        )
    if op == "add":
        return reference_adder_conv(x, kernel, strides, padding)
    return reference_conv(x, kernel, strides, padding)


def reference_mf_depthwise(op, x, kernel, strides, padding):
    if op == "shift":
        x, kernel = reference_fixed_point(x), reference_power_of_two(kernel)
    return reference_depthwise(x, kernel, strides, padding)


def reference_mf_dense(op, x, kernel):
    x, kernel = np.float64(x), np.float64(kernel)
    if op == "shift":
        return reference_fixed_point(x) @ reference_power_of_two(kernel)
    if op == "add":
        return -np.abs(x[:, :, None] - kernel[None]).sum(axis=1)
    return x @ kernel


# Helpers --------------------------------------------------------------------


def random_inputs(rng, shape, scale=2.0):
    """Return float32 inputs, one beyond the 16-bit fixed-point range."""
    x = rng.standard_normal(shape) * scale
    x.reshape(-1)[0] = 150.0
    return x.astype(np.float32)


def set_random_weights(layer, rng):
    kernel = (rng.standard_normal(layer.kernel.shape) * 0.5).astype(np.float32)
    bias = rng.standard_normal(layer.bias.shape).astype(np.float32)
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    return np.float64(kernel), np.float64(bias)


def relu(y):
    return np.maximum(y, 0.0)


def gradients(layer, x, upstream, target):
    """Return d(sum(layer(x) * upstream)) / d(kernel, bias)."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, target=target) * upstream)
    kernel_gradient, bias_gradient = tape.gradient(loss, [layer.kernel, layer.bias])
    return ops.convert_to_numpy(kernel_gradient), ops.convert_to_numpy(bias_gradient)


def assert_target_gradient(kernel_gradient, bias_gradient, kernel_slice, bias_end):
    """Check that the target path trains exactly the target slice."""
    outside = np.ones(kernel_gradient.shape, bool)
    outside[kernel_slice] = False
    assert np.all(kernel_gradient[kernel_slice] != 0)
    assert np.all(kernel_gradient[outside] == 0)
    assert np.all(bias_gradient[:bias_end] != 0)
    assert np.all(bias_gradient[bias_end:] == 0)


OPS = ["shift", "add", "mult"]


# HybridConv2D ---------------------------------------------------------------

# (input_channels, target_input_channels, filters, target_filters,
#  kernel_size, strides, padding)
CONV_GEOMETRIES = [
    pytest.param(4, 2, 5, 3, (3, 3), 1, "same", id="ct<C_ft<F_s1_same"),
    pytest.param(4, 2, 3, 3, (3, 3), 2, "valid", id="ct<C_ft=F_s2_valid"),
    pytest.param(3, 3, 5, 2, (3, 3), 1, "valid", id="ct=C_ft<F_s1_valid"),
    pytest.param(3, 3, 4, 4, (3, 3), 2, "same", id="ct=C_ft=F_s2_same"),
    pytest.param(5, 1, 4, 1, (3, 2), 2, "same", id="ct=1_ft=1_s2_same_3x2"),
]
CONV_ARGS = "channels, ct, filters, ft, kernel_size, strides, padding"


def make_conv(op, channels, ct, filters, ft, kernel_size, strides, padding, **kw):
    layer = HybridConv2D(
        filters,
        ft,
        kernel_size,
        input_channels=channels,
        target_input_channels=ct,
        strides=strides,
        padding=padding,
        op=op,
        **kw,
    )
    layer.build()
    return layer


@pytest.mark.parametrize(CONV_ARGS, CONV_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_conv_augmented_forward(
    op, channels, ct, filters, ft, kernel_size, strides, padding
):
    rng = np.random.default_rng(0)
    layer = make_conv(
        op, channels, ct, filters, ft, kernel_size, strides, padding,
        activation="relu",
    )
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (2, 7, 6, channels))
    stride_pair = (strides, strides)

    outputs = ops.convert_to_numpy(layer(x))

    target_part = reference_mf_conv(
        op, x[..., :ct], kernel[:, :, :ct, :ft], stride_pair, padding
    )
    if ct < channels:
        target_part += reference_conv(
            x[..., ct:], kernel[:, :, ct:, :ft], stride_pair, padding
        )
    augmented_part = reference_conv(x, kernel[..., ft:], stride_pair, padding)
    expected = relu(np.concatenate([target_part, augmented_part], -1) + bias)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(CONV_ARGS, CONV_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_conv_target_forward(
    op, channels, ct, filters, ft, kernel_size, strides, padding
):
    rng = np.random.default_rng(1)
    layer = make_conv(op, channels, ct, filters, ft, kernel_size, strides, padding)
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (3, 6, 7, ct))

    outputs = ops.convert_to_numpy(layer(x, target=True))

    expected = reference_mf_conv(
        op, x, kernel[:, :, :ct, :ft], (strides, strides), padding
    )
    expected += bias[:ft]
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        layer.mf_target_kernel(), kernel[:, :, :ct, :ft], rtol=0, atol=0
    )


@pytest.mark.parametrize(CONV_ARGS, CONV_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_conv_gradients(
    op, channels, ct, filters, ft, kernel_size, strides, padding
):
    rng = np.random.default_rng(2)
    layer = make_conv(op, channels, ct, filters, ft, kernel_size, strides, padding)
    set_random_weights(layer, rng)
    stride_pair = (strides, strides)
    x = random_inputs(rng, (2, 7, 6, channels))
    upstream = rng.standard_normal(layer(x).shape).astype(np.float32)
    x_target = random_inputs(rng, (2, 7, 6, ct))
    target_upstream = rng.standard_normal(layer(x_target, target=True).shape)
    target_upstream = target_upstream.astype(np.float32)

    kernel_gradient, bias_gradient = gradients(layer, x, upstream, target=False)
    target_kernel_gradient, target_bias_gradient = gradients(
        layer, x_target, target_upstream, target=True
    )

    # The augmented output reads every kernel entry.
    assert np.all(kernel_gradient != 0)
    np.testing.assert_allclose(
        bias_gradient, upstream.sum(axis=(0, 1, 2)), rtol=RTOL, atol=ATOL
    )
    # Outside the target block the operator is a plain convolution of X.
    # Inside it, Shift passes the gradient at the rounded inputs through.
    expected = reference_conv_kernel_gradient(
        x, upstream, layer.kernel.shape, stride_pair, padding
    )
    if op == "shift":
        expected[:, :, :ct, :ft] = reference_conv_kernel_gradient(
            reference_fixed_point(x[..., :ct]),
            upstream[..., :ft],
            expected[:, :, :ct, :ft].shape,
            stride_pair,
            padding,
        )
    checked = np.ones(expected.shape, bool)
    if op == "add":
        checked[:, :, :ct, :ft] = False
    np.testing.assert_allclose(
        kernel_gradient[checked], expected[checked], rtol=1e-4, atol=ATOL
    )
    assert_target_gradient(
        target_kernel_gradient,
        target_bias_gradient,
        np.s_[:, :, :ct, :ft],
        ft,
    )


# HybridDepthwiseConv2D ------------------------------------------------------

# (input_channels, target_input_channels, depth_multiplier, strides, padding)
DEPTHWISE_GEOMETRIES = [
    pytest.param(4, 2, 1, 1, "same", id="ct<C_m1_s1_same"),
    pytest.param(4, 2, 2, 2, "valid", id="ct<C_m2_s2_valid"),
    pytest.param(3, 3, 2, 1, "valid", id="ct=C_m2_s1_valid"),
    pytest.param(5, 1, 1, 2, "same", id="ct=1_m1_s2_same"),
]
DEPTHWISE_ARGS = "channels, ct, multiplier, strides, padding"


def make_depthwise(op, channels, ct, multiplier, strides, padding, **kw):
    layer = HybridDepthwiseConv2D(
        3,
        input_channels=channels,
        target_input_channels=ct,
        depth_multiplier=multiplier,
        strides=strides,
        padding=padding,
        op=op,
        **kw,
    )
    layer.build()
    return layer


@pytest.mark.parametrize(DEPTHWISE_ARGS, DEPTHWISE_GEOMETRIES)
@pytest.mark.parametrize("op", ["shift", "mult"])
def test_depthwise_forward(op, channels, ct, multiplier, strides, padding):
    rng = np.random.default_rng(3)
    layer = make_depthwise(
        op, channels, ct, multiplier, strides, padding, activation="relu"
    )
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (2, 6, 7, channels))
    x_target = random_inputs(rng, (3, 6, 7, ct))
    stride_pair = (strides, strides)
    target_width = ct * multiplier

    outputs = ops.convert_to_numpy(layer(x))
    target_outputs = ops.convert_to_numpy(layer(x_target, target=True))

    target_part = reference_mf_depthwise(
        op, x[..., :ct], kernel[:, :, :ct], stride_pair, padding
    )
    augmented_part = reference_depthwise(
        x[..., ct:], kernel[:, :, ct:], stride_pair, padding
    )
    expected = relu(np.concatenate([target_part, augmented_part], -1) + bias)
    expected_target = reference_mf_depthwise(
        op, x_target, kernel[:, :, :ct], stride_pair, padding
    )
    expected_target = relu(expected_target + bias[:target_width])
    assert outputs.shape == expected.shape
    assert target_outputs.shape == expected_target.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(target_outputs, expected_target, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(DEPTHWISE_ARGS, DEPTHWISE_GEOMETRIES)
@pytest.mark.parametrize("op", ["shift", "mult"])
def test_depthwise_gradients(op, channels, ct, multiplier, strides, padding):
    rng = np.random.default_rng(4)
    layer = make_depthwise(op, channels, ct, multiplier, strides, padding)
    set_random_weights(layer, rng)
    x = random_inputs(rng, (2, 6, 7, channels))
    upstream = rng.standard_normal(layer(x).shape).astype(np.float32)
    x_target = random_inputs(rng, (2, 6, 7, ct))
    target_upstream = rng.standard_normal(layer(x_target, target=True).shape)
    target_upstream = target_upstream.astype(np.float32)

    kernel_gradient, bias_gradient = gradients(layer, x, upstream, target=False)
    target_kernel_gradient, target_bias_gradient = gradients(
        layer, x_target, target_upstream, target=True
    )

    assert np.all(kernel_gradient != 0)
    assert np.all(bias_gradient != 0)
    assert_target_gradient(
        target_kernel_gradient,
        target_bias_gradient,
        np.s_[:, :, :ct, :],
        ct * multiplier,
    )


# HybridDense ----------------------------------------------------------------

# (input_dim, target_input_dim, units, target_units)
DENSE_GEOMETRIES = [
    pytest.param(6, 3, 5, 2, id="dt<D_ut<U"),
    pytest.param(6, 3, 4, 4, id="dt<D_ut=U"),
    pytest.param(5, 5, 3, 2, id="dt=D_ut<U"),
    pytest.param(4, 1, 2, 1, id="dt=1_ut=1"),
]
DENSE_ARGS = "input_dim, dt, units, ut"


def make_dense(op, input_dim, dt, units, ut, **kw):
    layer = HybridDense(
        units, ut, input_dim=input_dim, target_input_dim=dt, op=op, **kw
    )
    layer.build()
    return layer


@pytest.mark.parametrize(DENSE_ARGS, DENSE_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_dense_forward(op, input_dim, dt, units, ut):
    rng = np.random.default_rng(5)
    layer = make_dense(op, input_dim, dt, units, ut, activation="relu")
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (3, input_dim))
    x_target = random_inputs(rng, (1, dt))

    outputs = ops.convert_to_numpy(layer(x))
    target_outputs = ops.convert_to_numpy(layer(x_target, target=True))

    target_part = reference_mf_dense(op, x[:, :dt], kernel[:dt, :ut])
    target_part += np.float64(x[:, dt:]) @ kernel[dt:, :ut]
    augmented_part = np.float64(x) @ kernel[:, ut:]
    expected = relu(np.concatenate([target_part, augmented_part], -1) + bias)
    expected_target = relu(
        reference_mf_dense(op, x_target, kernel[:dt, :ut]) + bias[:ut]
    )
    assert outputs.shape == expected.shape
    assert target_outputs.shape == expected_target.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(target_outputs, expected_target, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(DENSE_ARGS, DENSE_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_dense_gradients(op, input_dim, dt, units, ut):
    rng = np.random.default_rng(6)
    layer = make_dense(op, input_dim, dt, units, ut)
    set_random_weights(layer, rng)
    x = random_inputs(rng, (3, input_dim))
    upstream = rng.standard_normal((3, units)).astype(np.float32)
    x_target = random_inputs(rng, (3, dt))
    target_upstream = rng.standard_normal((3, ut)).astype(np.float32)

    kernel_gradient, bias_gradient = gradients(layer, x, upstream, target=False)
    target_kernel_gradient, target_bias_gradient = gradients(
        layer, x_target, target_upstream, target=True
    )

    assert np.all(kernel_gradient != 0)
    expected = np.float64(x).T @ upstream
    if op == "shift":
        expected[:dt, :ut] = reference_fixed_point(x[:, :dt]).T @ upstream[:, :ut]
    checked = np.ones(expected.shape, bool)
    if op == "add":
        checked[:dt, :ut] = False
    np.testing.assert_allclose(
        kernel_gradient[checked], expected[checked], rtol=1e-4, atol=ATOL
    )
    np.testing.assert_allclose(bias_gradient, upstream.sum(0), rtol=RTOL, atol=ATOL)
    assert_target_gradient(
        target_kernel_gradient, target_bias_gradient, np.s_[:dt, :ut], ut
    )


# HybridBatchNormalization ---------------------------------------------------


def make_batch_norm(rng, channels=5, target_channels=3, **kw):
    layer = HybridBatchNormalization(
        channels, target_channels, momentum=0.9, epsilon=1e-3, **kw
    )
    layer.build()
    if layer.gamma is not None:
        layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    if layer.beta is not None:
        layer.beta.assign(rng.standard_normal(channels).astype(np.float32))
    layer.moving_mean.assign(rng.standard_normal(channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype(np.float32))
    layer.target_moving_mean.assign(
        rng.standard_normal(target_channels).astype(np.float32)
    )
    layer.target_moving_variance.assign(
        rng.uniform(0.5, 2.0, target_channels).astype(np.float32)
    )
    return layer


def batch_norm_state(layer):
    names = ["moving_mean", "moving_variance", "target_moving_mean",
             "target_moving_variance"]
    return {name: getattr(layer, name).numpy().astype(np.float64) for name in names}


def reference_batch_norm(x, mean, variance, gamma, beta, epsilon=1e-3):
    return gamma * (np.float64(x) - mean) / np.sqrt(variance + epsilon) + beta


@pytest.mark.parametrize(
    "shape", [pytest.param((4, 3, 2), id="image"), pytest.param((6,), id="flat")]
)
@pytest.mark.parametrize("target", [False, True])
def test_batch_norm_training_uses_batch_statistics(target, shape):
    rng = np.random.default_rng(7)
    layer = make_batch_norm(rng)
    width = 3 if target else 5
    x = (rng.standard_normal(shape + (width,)) * 2 + 1).astype(np.float32)
    before = batch_norm_state(layer)
    gamma = layer.gamma.numpy()[:width]
    beta = layer.beta.numpy()[:width]

    outputs = ops.convert_to_numpy(layer(x, training=True, target=target))
    after = batch_norm_state(layer)

    axes = tuple(range(x.ndim - 1))
    mean = np.float64(x).mean(axis=axes)
    variance = np.float64(x).var(axis=axes)
    expected = reference_batch_norm(x, mean, variance, gamma, beta)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    updated, kept = "moving_mean", "target_moving_mean"
    if target:
        updated, kept = kept, updated
    np.testing.assert_allclose(
        after[updated], 0.9 * before[updated] + 0.1 * mean, rtol=1e-5, atol=1e-5
    )
    variance_name = updated.replace("mean", "variance")
    np.testing.assert_allclose(
        after[variance_name],
        0.9 * before[variance_name] + 0.1 * variance,
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_array_equal(after[kept], before[kept])
    kept_variance = kept.replace("mean", "variance")
    np.testing.assert_array_equal(after[kept_variance], before[kept_variance])


@pytest.mark.parametrize("target", [False, True])
def test_batch_norm_inference_uses_moving_statistics(target):
    rng = np.random.default_rng(8)
    layer = make_batch_norm(rng)
    width = 3 if target else 5
    x = rng.standard_normal((4, 2, 2, width)).astype(np.float32)
    before = batch_norm_state(layer)
    prefix = "target_" if target else ""

    outputs = ops.convert_to_numpy(layer(x, training=False, target=target))

    expected = reference_batch_norm(
        x,
        before[prefix + "moving_mean"],
        before[prefix + "moving_variance"],
        layer.gamma.numpy()[:width],
        layer.beta.numpy()[:width],
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    after = batch_norm_state(layer)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def test_batch_norm_without_center_and_scale():
    rng = np.random.default_rng(9)
    layer = make_batch_norm(rng, center=False, scale=False)
    x = rng.standard_normal((8, 3)).astype(np.float32)

    outputs = ops.convert_to_numpy(layer(x, training=True, target=True))

    expected = reference_batch_norm(x, x.mean(0), x.var(0), 1.0, 0.0)
    assert layer.gamma is None
    assert layer.beta is None
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


# Configuration --------------------------------------------------------------

CONFIG_CASES = [
    pytest.param(
        lambda: HybridConv2D(
            5, 3, (3, 2), input_channels=4, target_input_channels=2,
            strides=2, padding="same", op="add", eta=0.5, chunk_size=7,
            activation="relu", weight_bits=4, activation_bits=12,
            activation_fraction_bits=5,
        ),
        (2, 6, 6, 4),
        (2, 6, 6, 2),
        id="conv",
    ),
    pytest.param(
        lambda: HybridDepthwiseConv2D(
            3, input_channels=4, target_input_channels=1, depth_multiplier=2,
            padding="same", op="shift", activation_bits=None, use_bias=True,
        ),
        (2, 5, 5, 4),
        (2, 5, 5, 1),
        id="depthwise",
    ),
    pytest.param(
        lambda: HybridDense(
            4, 2, input_dim=6, target_input_dim=3, op="mult",
            kernel_initializer="he_normal",
        ),
        (3, 6),
        (3, 3),
        id="dense",
    ),
    pytest.param(
        lambda: HybridBatchNormalization(
            6, 2, momentum=0.8, epsilon=1e-2, gamma_initializer="random_normal",
        ),
        (3, 6),
        (3, 2),
        id="batch_norm",
    ),
]


@pytest.mark.parametrize("make_layer, input_shape, target_shape", CONFIG_CASES)
def test_config_round_trip(make_layer, input_shape, target_shape):
    rng = np.random.default_rng(10)
    layer = make_layer()
    layer.build()
    x = rng.standard_normal(input_shape).astype(np.float32)
    x_target = rng.standard_normal(target_shape).astype(np.float32)

    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build()
    clone.set_weights(layer.get_weights())

    assert clone.get_config() == config
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(layer(x))
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone(x_target, target=True)),
        ops.convert_to_numpy(layer(x_target, target=True)),
    )


INVALID_CASES = [
    pytest.param(
        lambda: HybridConv2D(
            5, 3, 3, input_channels=4, target_input_channels=2, op="conv"
        ),
        "op='conv'",
        id="conv_unknown_op",
    ),
    pytest.param(
        lambda: HybridDense(4, 2, input_dim=6, target_input_dim=3, op="Shift"),
        "op='Shift'",
        id="dense_unknown_op",
    ),
    pytest.param(
        lambda: HybridDepthwiseConv2D(
            3, input_channels=4, target_input_channels=2, op="add"
        ),
        "op='add'",
        id="depthwise_add",
    ),
    pytest.param(
        lambda: HybridConv2D(5, 6, 3, input_channels=4, target_input_channels=2),
        "target_filters=6",
        id="conv_target_filters_above_filters",
    ),
    pytest.param(
        lambda: HybridConv2D(5, 3, 3, input_channels=4, target_input_channels=5),
        "target_input_channels=5",
        id="conv_target_channels_above_channels",
    ),
    pytest.param(
        lambda: HybridConv2D(5, 3, 3, input_channels=4, target_input_channels=0),
        "target_input_channels=0",
        id="conv_zero_target_channels",
    ),
    pytest.param(
        lambda: HybridConv2D(5, 2.0, 3, input_channels=4, target_input_channels=2),
        "target_filters=2.0",
        id="conv_float_target_filters",
    ),
    pytest.param(
        lambda: HybridConv2D(
            5, 3, 3, input_channels=4, target_input_channels=2, op="add",
            dilation_rate=2,
        ),
        "dilation_rate=2",
        id="conv_add_dilation",
    ),
    pytest.param(
        lambda: HybridConv2D(
            5, 3, 3, input_channels=4, target_input_channels=2, padding="full"
        ),
        "padding='full'",
        id="conv_padding",
    ),
    pytest.param(
        lambda: HybridDepthwiseConv2D(3, input_channels=8, target_input_channels=9),
        "target_input_channels=9",
        id="depthwise_target_channels_above_channels",
    ),
    pytest.param(
        lambda: HybridDepthwiseConv2D(
            3, input_channels=8, target_input_channels=4, depth_multiplier=0
        ),
        "depth_multiplier=0",
        id="depthwise_zero_multiplier",
    ),
    pytest.param(
        lambda: HybridDense(10, 11, input_dim=6, target_input_dim=3),
        "target_units=11",
        id="dense_target_units_above_units",
    ),
    pytest.param(
        lambda: HybridDense(10, 10, input_dim=6, target_input_dim=0),
        "target_input_dim=0",
        id="dense_zero_target_input_dim",
    ),
    pytest.param(
        lambda: HybridDense(4, 2, input_dim=6, target_input_dim=3, weight_bits=9),
        "weight_bits=9",
        id="dense_weight_bits",
    ),
    pytest.param(
        lambda: HybridDense(
            4, 2, input_dim=6, target_input_dim=3, activation_fraction_bits=16
        ),
        "activation_fraction_bits=16",
        id="dense_fraction_bits",
    ),
    pytest.param(
        lambda: HybridBatchNormalization(6, 7),
        "target_channels=7",
        id="batch_norm_target_above_channels",
    ),
]


@pytest.mark.parametrize("make_layer, fragment", INVALID_CASES)
def test_invalid_arguments_raise(make_layer, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        make_layer()


# Single-operator augmentation (augmented_op = op) ----------------------------


@pytest.mark.parametrize("op", ["shift", "add"])
def test_conv_single_operator_uses_op_on_every_channel(op):
    rng = np.random.default_rng(20)
    layer = make_conv(op, 4, 2, 5, 3, (3, 3), 2, "same", augmented_op=op)
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (2, 7, 6, 4))

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_mf_conv(op, x, kernel, (2, 2), "same") + bias
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


def test_depthwise_single_operator_uses_shift_on_every_channel():
    rng = np.random.default_rng(21)
    layer = make_depthwise("shift", 6, 4, 2, 1, "valid", augmented_op="shift")
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (2, 6, 5, 6))

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_mf_depthwise("shift", x, kernel, (1, 1), "valid") + bias
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["shift", "add"])
def test_dense_single_operator_uses_op_on_every_channel(op):
    rng = np.random.default_rng(22)
    layer = make_dense(op, 6, 3, 5, 2, augmented_op=op)
    kernel, bias = set_random_weights(layer, rng)
    x = random_inputs(rng, (4, 6))

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_mf_dense(op, x, kernel) + bias
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"op": "shift", "augmented_op": "add"}, "augmented_op='add'"),
        ({"op": "shift", "augmented_op": "shift", "mutate": True}, "mutate=True"),
    ],
)
def test_invalid_augmented_op_raises(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        HybridDense(4, 2, input_dim=6, target_input_dim=3, **kwargs)
