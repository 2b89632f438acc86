"""Tests of the Shift layers against float64 NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_shiftadd.layers import ShiftConv2D, ShiftDense, ShiftDepthwiseConv2D

# Tolerances of float32 layers against float64 references. Each output is a
# sum of at most 27 products.
RTOL = 1e-5
ATOL = 1e-4


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
        return x, ((height - kh) // sh + 1, (width - kw) // sw + 1), (0, 0)
    out_h, out_w = -(-height // sh), -(-width // sw)
    pad_h = max((out_h - 1) * sh + kh - height, 0)
    pad_w = max((out_w - 1) * sw + kw - width, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = np.pad(
        x, ((0, 0), (top, pad_h - top), (left, pad_w - left), (0, 0))
    )
    return padded, (out_h, out_w), (top, left)


def windows(x, kernel_size, strides, padding):
    """Yield (i, j, window) over the padded input, window of shape (B, kh, kw, C)."""
    padded, (out_h, out_w), _ = pad_for_conv(x, kernel_size, strides, padding)
    (kh, kw), (sh, sw) = kernel_size, strides
    for i in range(out_h):
        for j in range(out_w):
            yield i, j, padded[:, i * sh : i * sh + kh, j * sw : j * sw + kw, :]


def reference_conv(x, kernel, strides, padding):
    x, kernel = np.float64(x), np.float64(kernel)
    _, (out_h, out_w), _ = pad_for_conv(x, kernel.shape[:2], strides, padding)
    outputs = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i, j, window in windows(x, kernel.shape[:2], strides, padding):
        outputs[:, i, j] = np.einsum("bhwc,hwcf->bf", window, kernel)
    return outputs


def reference_conv_gradients(x, kernel, upstream, strides, padding):
    """Return d(sum(conv(x, kernel) * upstream)) / d(x, kernel)."""
    x, kernel = np.float64(x), np.float64(kernel)
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    padded, _, (top, left) = pad_for_conv(x, (kh, kw), strides, padding)
    padded_gradient = np.zeros_like(padded)
    kernel_gradient = np.zeros_like(kernel)
    for i, j, window in windows(x, (kh, kw), strides, padding):
        g = upstream[:, i, j]
        kernel_gradient += np.einsum("bhwc,bf->hwcf", window, g)
        padded_gradient[:, i * sh : i * sh + kh, j * sw : j * sw + kw] += (
            np.einsum("bf,hwcf->bhwc", g, kernel)
        )
    height, width = x.shape[1:3]
    input_gradient = padded_gradient[:, top : top + height, left : left + width]
    return input_gradient, kernel_gradient


def reference_depthwise(x, kernel, strides, padding):
    """Compute a depthwise convolution.

    Output channel c * M + m reads kernel[..., c, m].
    """
    x, kernel = np.float64(x), np.float64(kernel)
    _, (out_h, out_w), _ = pad_for_conv(x, kernel.shape[:2], strides, padding)
    channels, multiplier = kernel.shape[2:]
    outputs = np.zeros((x.shape[0], out_h, out_w, channels * multiplier))
    for i, j, window in windows(x, kernel.shape[:2], strides, padding):
        per_channel = np.einsum("bhwc,hwcm->bcm", window, kernel)
        outputs[:, i, j] = per_channel.reshape(x.shape[0], -1)
    return outputs


def reference_depthwise_gradients(x, kernel, upstream, strides, padding):
    x, kernel = np.float64(x), np.float64(kernel)
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    channels, multiplier = kernel.shape[2:]
    padded, _, (top, left) = pad_for_conv(x, (kh, kw), strides, padding)
    padded_gradient = np.zeros_like(padded)
    kernel_gradient = np.zeros_like(kernel)
    for i, j, window in windows(x, (kh, kw), strides, padding):
        g = upstream[:, i, j].reshape(-1, channels, multiplier)
        kernel_gradient += np.einsum("bhwc,bcm->hwcm", window, g)
        padded_gradient[:, i * sh : i * sh + kh, j * sw : j * sw + kw] += (
            np.einsum("bcm,hwcm->bhwc", g, kernel)
        )
    height, width = x.shape[1:3]
    input_gradient = padded_gradient[:, top : top + height, left : left + width]
    return input_gradient, kernel_gradient


NUMPY_ACTIVATIONS = {
    None: lambda y: y,
    "relu": lambda y: np.maximum(y, 0.0),
    "tanh": np.tanh,
}


# Helpers --------------------------------------------------------------------


def random_inputs(rng, shape, scale=3.0):
    """Return float32 inputs that exercise rounding and both saturation ends."""
    x = rng.standard_normal(shape) * scale
    flat = x.reshape(-1)
    flat[0] = 300.0
    flat[-1] = -200.0
    flat[1] = 1e-3  # below half a fixed-point step: rounds to 0
    return x.astype(np.float32)


def set_random_weights(layer, rng, kernel_scale=0.5):
    """Assign a random kernel (with a zero entry) and bias to a built layer."""
    kernel = rng.standard_normal(layer.kernel.shape) * kernel_scale
    kernel.reshape(-1)[0] = 0.0
    weights = [kernel.astype(np.float32)]
    if layer.use_bias:
        weights.append(rng.standard_normal(layer.bias.shape).astype(np.float32))
    layer.set_weights(weights)
    return weights


def gradients(layer, x, upstream):
    """Return d(sum(layer(x) * upstream)) / d(x, latent kernel)."""
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream)
    input_gradient, kernel_gradient = tape.gradient(loss, [x, layer.kernel])
    return ops.convert_to_numpy(input_gradient), ops.convert_to_numpy(kernel_gradient)


# Forward and gradient tables ------------------------------------------------

CONV_CASES = [
    pytest.param(1, "same", 1, "relu", id="s1_same_b1_relu"),
    pytest.param(1, "valid", 3, None, id="s1_valid_b3"),
    pytest.param(2, "same", 3, "tanh", id="s2_same_b3_tanh"),
    pytest.param(2, "valid", 1, None, id="s2_valid_b1"),
]


@pytest.mark.parametrize("strides, padding, batch, activation", CONV_CASES)
def test_shift_conv2d_forward(strides, padding, batch, activation):
    rng = np.random.default_rng(0)
    x = random_inputs(rng, (batch, 7, 6, 3))
    layer = ShiftConv2D(
        4, 3, strides=strides, padding=padding, activation=activation
    )
    layer.build(x.shape)
    kernel, bias = set_random_weights(layer, rng)

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_conv(
        reference_fixed_point(x),
        reference_power_of_two(kernel),
        (strides, strides),
        padding,
    )
    expected = NUMPY_ACTIVATIONS[activation](expected + bias)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("strides, padding, batch, activation", CONV_CASES)
def test_shift_conv2d_straight_through_gradients(
    strides, padding, batch, activation
):
    del activation  # the gradient is checked before any activation
    rng = np.random.default_rng(1)
    x = random_inputs(rng, (batch, 7, 6, 3))
    layer = ShiftConv2D(4, 3, strides=strides, padding=padding)
    layer.build(x.shape)
    kernel, _ = set_random_weights(layer, rng)
    upstream = rng.standard_normal(layer.compute_output_shape(x.shape))
    upstream = upstream.astype(np.float32)

    input_gradient, kernel_gradient = gradients(layer, x, upstream)

    expected_input, expected_kernel = reference_conv_gradients(
        reference_fixed_point(x),
        reference_power_of_two(kernel),
        upstream,
        (strides, strides),
        padding,
    )
    np.testing.assert_allclose(input_gradient, expected_input, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        kernel_gradient, expected_kernel, rtol=RTOL, atol=ATOL
    )


DEPTHWISE_CASES = [
    pytest.param(1, 1, "same", 1, "relu", id="m1_s1_same_b1_relu"),
    pytest.param(1, 2, "valid", 3, None, id="m1_s2_valid_b3"),
    pytest.param(2, 1, "valid", 3, "tanh", id="m2_s1_valid_b3_tanh"),
    pytest.param(2, 2, "same", 1, None, id="m2_s2_same_b1"),
]


@pytest.mark.parametrize(
    "depth_multiplier, strides, padding, batch, activation", DEPTHWISE_CASES
)
def test_shift_depthwise_forward(
    depth_multiplier, strides, padding, batch, activation
):
    rng = np.random.default_rng(2)
    x = random_inputs(rng, (batch, 6, 7, 3))
    layer = ShiftDepthwiseConv2D(
        3,
        depth_multiplier=depth_multiplier,
        strides=strides,
        padding=padding,
        activation=activation,
    )
    layer.build(x.shape)
    kernel, bias = set_random_weights(layer, rng)

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_depthwise(
        reference_fixed_point(x),
        reference_power_of_two(kernel),
        (strides, strides),
        padding,
    )
    expected = NUMPY_ACTIVATIONS[activation](expected + bias)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "depth_multiplier, strides, padding, batch, activation", DEPTHWISE_CASES
)
def test_shift_depthwise_straight_through_gradients(
    depth_multiplier, strides, padding, batch, activation
):
    del activation  # the gradient is checked before any activation
    rng = np.random.default_rng(3)
    x = random_inputs(rng, (batch, 6, 7, 3))
    layer = ShiftDepthwiseConv2D(
        3, depth_multiplier=depth_multiplier, strides=strides, padding=padding
    )
    layer.build(x.shape)
    kernel, _ = set_random_weights(layer, rng)
    upstream = rng.standard_normal(layer.compute_output_shape(x.shape))
    upstream = upstream.astype(np.float32)

    input_gradient, kernel_gradient = gradients(layer, x, upstream)

    expected_input, expected_kernel = reference_depthwise_gradients(
        reference_fixed_point(x),
        reference_power_of_two(kernel),
        upstream,
        (strides, strides),
        padding,
    )
    np.testing.assert_allclose(input_gradient, expected_input, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        kernel_gradient, expected_kernel, rtol=RTOL, atol=ATOL
    )


DENSE_CASES = [
    pytest.param((1, 5), True, None, id="b1"),
    pytest.param((3, 5), True, "relu", id="b3_relu"),
    pytest.param((3, 5), False, "tanh", id="b3_no_bias_tanh"),
    pytest.param((3, 2, 5), True, None, id="rank3"),
]


@pytest.mark.parametrize("input_shape, use_bias, activation", DENSE_CASES)
def test_shift_dense_forward(input_shape, use_bias, activation):
    rng = np.random.default_rng(4)
    x = random_inputs(rng, input_shape)
    layer = ShiftDense(4, use_bias=use_bias, activation=activation)
    layer.build(x.shape)
    weights = set_random_weights(layer, rng)
    bias = weights[1] if use_bias else 0.0

    outputs = ops.convert_to_numpy(layer(x))

    expected = reference_fixed_point(x) @ reference_power_of_two(weights[0])
    expected = NUMPY_ACTIVATIONS[activation](expected + bias)
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("input_shape, use_bias, activation", DENSE_CASES)
def test_shift_dense_straight_through_gradients(
    input_shape, use_bias, activation
):
    del activation  # the gradient is checked before any activation
    rng = np.random.default_rng(5)
    x = random_inputs(rng, input_shape)
    layer = ShiftDense(4, use_bias=use_bias)
    layer.build(x.shape)
    kernel = set_random_weights(layer, rng)[0]
    upstream = rng.standard_normal(input_shape[:-1] + (4,)).astype(np.float32)

    input_gradient, kernel_gradient = gradients(layer, x, upstream)

    quantized_x = reference_fixed_point(x).reshape(-1, x.shape[-1])
    flat_upstream = upstream.reshape(-1, 4)
    expected_input = upstream @ reference_power_of_two(kernel).T
    expected_kernel = quantized_x.T @ flat_upstream
    np.testing.assert_allclose(input_gradient, expected_input, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        kernel_gradient, expected_kernel, rtol=RTOL, atol=ATOL
    )


# Formats --------------------------------------------------------------------

LAYER_FACTORIES = [
    pytest.param(
        lambda **kw: ShiftConv2D(2, 3, padding="same", **kw),
        (2, 5, 5, 3),
        id="conv",
    ),
    pytest.param(
        lambda **kw: ShiftDepthwiseConv2D(3, depth_multiplier=2, **kw),
        (2, 5, 5, 3),
        id="depthwise",
    ),
    pytest.param(lambda **kw: ShiftDense(3, **kw), (2, 5), id="dense"),
]


def reference_layer(layer, x, quantize_inputs):
    """Compute the layer's output in NumPy from its current weights."""
    kernel = reference_power_of_two(layer.kernel.numpy(), layer.weight_bits)
    if quantize_inputs:
        x = reference_fixed_point(
            x, layer.activation_bits, layer.activation_fraction_bits
        )
    if isinstance(layer, ShiftDense):
        outputs = np.float64(x) @ kernel
    elif isinstance(layer, ShiftDepthwiseConv2D):
        outputs = reference_depthwise(x, kernel, layer.strides, layer.padding)
    else:
        outputs = reference_conv(x, kernel, layer.strides, layer.padding)
    return outputs + layer.bias.numpy()


@pytest.mark.parametrize("make_layer, input_shape", LAYER_FACTORIES)
def test_activation_bits_none_keeps_float_inputs(make_layer, input_shape):
    rng = np.random.default_rng(6)
    # Values off the 1/256 grid and beyond the 16-bit range.
    x = (rng.standard_normal(input_shape) * 100 + 1e-3).astype(np.float32)
    float_layer = make_layer(activation_bits=None)
    rounding_layer = make_layer()
    float_layer.build(x.shape)
    rounding_layer.build(x.shape)
    set_random_weights(float_layer, rng)
    rounding_layer.set_weights(float_layer.get_weights())

    float_outputs = ops.convert_to_numpy(float_layer(x))
    rounded_outputs = ops.convert_to_numpy(rounding_layer(x))

    np.testing.assert_allclose(
        float_outputs,
        reference_layer(float_layer, x, quantize_inputs=False),
        rtol=RTOL,
        atol=1e-3,
    )
    np.testing.assert_allclose(
        rounded_outputs,
        reference_layer(rounding_layer, x, quantize_inputs=True),
        rtol=RTOL,
        atol=1e-3,
    )
    assert np.max(np.abs(float_outputs - rounded_outputs)) > 1.0


@pytest.mark.parametrize("make_layer, input_shape", LAYER_FACTORIES)
def test_custom_formats(make_layer, input_shape):
    rng = np.random.default_rng(7)
    x = random_inputs(rng, input_shape)
    layer = make_layer(weight_bits=3, activation_bits=8, activation_fraction_bits=4)
    layer.build(x.shape)
    set_random_weights(layer, rng, kernel_scale=0.1)

    outputs = ops.convert_to_numpy(layer(x))

    np.testing.assert_allclose(
        outputs,
        reference_layer(layer, x, quantize_inputs=True),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        pytest.param({"weight_bits": 1}, "weight_bits=1", id="weight_bits_1"),
        pytest.param({"weight_bits": 8}, "weight_bits=8", id="weight_bits_8"),
        pytest.param(
            {"activation_bits": 1}, "activation_bits=1", id="activation_bits_1"
        ),
        pytest.param(
            {"activation_fraction_bits": 16},
            "activation_fraction_bits=16",
            id="fraction_bits_16",
        ),
    ],
)
@pytest.mark.parametrize("make_layer, input_shape", LAYER_FACTORIES)
def test_invalid_formats_raise(make_layer, input_shape, kwargs, fragment):
    del input_shape
    with pytest.raises(ValueError, match=fragment):
        make_layer(**kwargs)


# Serialization and training -------------------------------------------------


@pytest.mark.parametrize("make_layer, input_shape", LAYER_FACTORIES)
def test_config_round_trip(make_layer, input_shape):
    rng = np.random.default_rng(8)
    x = random_inputs(rng, input_shape)
    layer = make_layer(
        weight_bits=4, activation_bits=12, activation_fraction_bits=6
    )
    layer.build(x.shape)
    set_random_weights(layer, rng)

    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())

    assert clone.get_config() == config
    assert config["weight_bits"] == 4
    assert config["activation_bits"] == 12
    assert config["activation_fraction_bits"] == 6
    np.testing.assert_array_equal(
        ops.convert_to_numpy(clone(x)), ops.convert_to_numpy(layer(x))
    )


def test_config_round_trip_without_input_rounding():
    layer = ShiftDense(3, activation_bits=None)

    clone = ShiftDense.from_config(layer.get_config())

    assert clone.activation_bits is None


def build_small_model(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            ShiftConv2D(4, 3, padding="same", activation="relu", weight_bits=4),
            ShiftDepthwiseConv2D(
                3, depth_multiplier=2, strides=2, activation_bits=12,
                activation_fraction_bits=6,
            ),
            keras.layers.Flatten(),
            ShiftDense(3, activation_bits=None),
        ]
    )


def test_keras_file_round_trip(tmp_path):
    model = build_small_model(seed=9)
    x = random_inputs(np.random.default_rng(9), (3, 6, 6, 2))
    expected = model.predict(x, verbose=0)
    path = tmp_path / "shift_model.keras"

    model.save(path)
    loaded = keras.saving.load_model(path)

    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers
    ]
    assert loaded.layers[0].weight_bits == 4
    assert loaded.layers[1].activation_bits == 12
    assert loaded.layers[1].activation_fraction_bits == 6
    assert loaded.layers[3].activation_bits is None
    for original, restored in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(original, restored)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def test_fit_reduces_loss():
    model = build_small_model(seed=10)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((32, 6, 6, 2)).astype(np.float32)
    y = rng.standard_normal((32, 3)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    initial_loss = model.evaluate(x, y, verbose=0)

    model.fit(x, y, epochs=30, batch_size=8, verbose=0)
    final_loss = model.evaluate(x, y, verbose=0)

    assert np.isfinite(final_loss)
    assert final_loss < 0.7 * initial_loss
