"""Tests of the adder layers against a NumPy reference of AdderNet.

The reference unfolds the zero-padded input into windows with explicit
loops in float64. It implements AdderNet's gradients: X - F for the kernel,
optionally rescaled to norm eta * sqrt(kernel.size), and clip(F - X, -1, 1)
for the input, folded back to input positions by summation.

Numerical tests run once per implementation (the native kernels and the
TensorFlow one), chosen with the KERAS_SHIFTADD_ADDER environment variable.
"""

import math
import re
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_shiftadd import kernels
from keras_shiftadd.layers.adder import (
    CHUNK_FLOATS,
    AddConv2D,
    AddDense,
    adder_conv2d,
    adder_dense,
    default_chunk_size,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["native", "tensorflow"])
def implementation(request, monkeypatch):
    """Run the test with one adder implementation for every call."""
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", request.param)
    return request.param


# --------------------------------------------------------------------------
# NumPy reference


def same_padding(length, kernel_length, stride):
    """Return TensorFlow's SAME (before, after) padding of one axis."""
    output_length = math.ceil(length / stride)
    total = max((output_length - 1) * stride + kernel_length - length, 0)
    return total // 2, total - total // 2


def reference_adder_conv2d(x, kernel, strides, padding, upstream=None, eta=None):
    """Return the adder convolution and, given `upstream`, its gradients.

    Returns `(y, grad_x, grad_kernel)`, with the gradients of
    `sum(y * upstream)` or None when `upstream` is None.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    batch, height, width, channels = x.shape
    kernel_height, kernel_width, _, filters = kernel.shape
    stride_height, stride_width = strides

    if padding == "same":
        pad_top, pad_bottom = same_padding(height, kernel_height, stride_height)
        pad_left, pad_right = same_padding(width, kernel_width, stride_width)
    else:
        pad_top = pad_bottom = pad_left = pad_right = 0
    padded = np.pad(
        x, [(0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0)]
    )
    output_height = (padded.shape[1] - kernel_height) // stride_height + 1
    output_width = (padded.shape[2] - kernel_width) // stride_width + 1

    y = np.zeros((batch, output_height, output_width, filters))
    grad_padded = np.zeros_like(padded)
    grad_kernel = np.zeros_like(kernel)
    for i in range(output_height):
        for j in range(output_width):
            top = i * stride_height
            left = j * stride_width
            # (B, kh, kw, C, 1) window against the (kh, kw, C, F) kernel.
            window = padded[
                :, top : top + kernel_height, left : left + kernel_width, :
            ][..., None]
            difference = window - kernel[None]
            y[:, i, j, :] = -np.abs(difference).sum(axis=(1, 2, 3))
            if upstream is None:
                continue
            g = np.asarray(upstream, np.float64)[:, i, j, None, None, None, :]
            grad_padded[
                :, top : top + kernel_height, left : left + kernel_width, :
            ] += (np.clip(-difference, -1.0, 1.0) * g).sum(axis=-1)
            grad_kernel += (difference * g).sum(axis=0)

    if upstream is None:
        return y, None, None
    grad_x = grad_padded[
        :, pad_top : pad_top + height, pad_left : pad_left + width, :
    ]
    if eta is not None:
        norm = max(np.linalg.norm(grad_kernel), 1e-12)
        grad_kernel = grad_kernel * eta * math.sqrt(kernel.size) / norm
    return y, grad_x, grad_kernel


def reference_adder_dense(x, kernel, upstream, eta=None):
    """Return `(y, grad_x, grad_kernel)` of the adder dense layer."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    upstream = np.asarray(upstream, np.float64)
    difference = x[:, :, None] - kernel[None]
    y = -np.abs(difference).sum(axis=1)
    grad_x = (np.clip(-difference, -1.0, 1.0) * upstream[:, None, :]).sum(axis=2)
    grad_kernel = (difference * upstream[:, None, :]).sum(axis=0)
    if eta is not None:
        norm = max(np.linalg.norm(grad_kernel), 1e-12)
        grad_kernel = grad_kernel * eta * math.sqrt(kernel.size) / norm
    return y, grad_x, grad_kernel


def assert_close(actual, expected, rtol=1e-5):
    """Compare with a relative tolerance and an absolute one scaled to the data."""
    expected = np.asarray(expected)
    atol = rtol * max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=rtol, atol=atol)


def conv_gradients(x, kernel, upstream, **kwargs):
    """Return adder_conv2d's output and the gradients of sum(y * upstream)."""
    x = tf.convert_to_tensor(x)
    kernel = tf.convert_to_tensor(kernel)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = adder_conv2d(x, kernel, **kwargs)
        loss = tf.reduce_sum(y * upstream)
    grad_x, grad_kernel = tape.gradient(loss, [x, kernel])
    return y, grad_x, grad_kernel


# --------------------------------------------------------------------------
# Convolution cases: (batch, height, width, channels, filters, kernel_size,
# strides, padding, chunk_size). N = batch * output height * output width is
# in the comment where the chunk size matters.

CONV_CASES = [
    (1, 6, 6, 3, 4, (1, 1), (1, 1), "valid", None),
    (3, 7, 7, 5, 4, (1, 1), (2, 2), "same", 7),  # N = 48, 7 does not divide
    (3, 7, 6, 3, 4, (3, 3), (1, 1), "same", None),
    (1, 7, 7, 5, 2, (3, 3), (2, 2), "valid", 3),  # N = 9, 3 divides
    (3, 8, 8, 3, 4, (3, 3), (2, 2), "same", 7),  # asymmetric SAME padding
    (3, 7, 7, 5, 4, (3, 3), (1, 1), "valid", 1),
    (1, 9, 9, 3, 4, (5, 5), (1, 1), "same", 7),  # N = 81
    (3, 9, 8, 5, 3, (5, 5), (2, 2), "valid", None),
    (3, 6, 5, 3, 4, (3, 1), (1, 1), "same", 7),  # N = 90
    (1, 6, 7, 5, 4, (3, 1), (2, 2), "valid", 1000),  # chunk larger than N
    (3, 7, 7, 3, 4, (1, 3), (2, 1), "same", 5),  # unequal strides
    (3, 8, 9, 5, 2, (2, 4), (1, 3), "same", None),  # even kernel sizes
    # More filters than one register tile and a ragged last vector.
    (5, 9, 7, 7, 33, (3, 3), (2, 2), "same", None),
    # 132 windows per image: several blocks of the native kernels.
    (2, 12, 11, 3, 17, (3, 3), (1, 1), "same", None),
]


def conv_case_id(case):
    batch, height, width, channels, filters, kernel, strides, padding, chunk = case
    return (
        f"b{batch}-{height}x{width}x{channels}-f{filters}-k{kernel[0]}x{kernel[1]}"
        f"-s{strides[0]}x{strides[1]}-{padding}-chunk{chunk}"
    )


def make_conv_case(case, seed=0):
    batch, height, width, channels, filters, kernel_size, *_ = case
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, height, width, channels)).astype("float32")
    # A kernel scale of 0.5 puts some |F - X| below 1 and some above, so the
    # HardTanh of the input gradient both passes and clips.
    kernel = 0.5 * rng.normal(size=(*kernel_size, channels, filters))
    return x, kernel.astype("float32"), rng


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv_forward_matches_reference(case, implementation):
    *_, strides, padding, chunk_size = case
    x, kernel, _ = make_conv_case(case)

    y = adder_conv2d(x, kernel, strides, padding, chunk_size=chunk_size)
    expected, _, _ = reference_adder_conv2d(x, kernel, strides, padding)

    assert y.shape == expected.shape
    assert_close(y, expected)


@pytest.mark.parametrize("eta", [None, 0.2])
@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv_gradients_match_reference(case, eta, implementation):
    *_, strides, padding, chunk_size = case
    x, kernel, rng = make_conv_case(case)
    expected_y, _, _ = reference_adder_conv2d(x, kernel, strides, padding)
    upstream = rng.normal(size=expected_y.shape).astype("float32")

    _, grad_x, grad_kernel = conv_gradients(
        x,
        kernel,
        upstream,
        strides=strides,
        padding=padding,
        eta=eta,
        chunk_size=chunk_size,
    )
    _, expected_grad_x, expected_grad_kernel = reference_adder_conv2d(
        x, kernel, strides, padding, upstream, eta
    )

    assert_close(grad_x, expected_grad_x, rtol=1e-4)
    assert_close(grad_kernel, expected_grad_kernel, rtol=1e-4)


def test_conv_gradient_scaling_sets_norm(implementation):
    case = CONV_CASES[2]
    x, kernel, rng = make_conv_case(case)
    upstream = rng.normal(size=(3, 7, 6, 4)).astype("float32")

    _, _, grad_kernel = conv_gradients(
        x, kernel, upstream, padding="same", eta=0.2
    )

    expected_norm = 0.2 * math.sqrt(kernel.size)
    assert np.linalg.norm(grad_kernel) == pytest.approx(expected_norm, rel=1e-5)


def test_conv_zero_gradient_stays_zero(implementation):
    x, kernel, _ = make_conv_case(CONV_CASES[2])
    upstream = np.zeros((3, 7, 6, 4), "float32")

    _, grad_x, grad_kernel = conv_gradients(
        x, kernel, upstream, padding="same", eta=0.2
    )

    assert np.all(np.asarray(grad_kernel) == 0.0)
    assert np.all(np.asarray(grad_x) == 0.0)


def test_conv_kernel_slice_gets_gradient(implementation):
    x, kernel, rng = make_conv_case(CONV_CASES[2])
    shared = tf.Variable(np.concatenate([kernel, kernel], axis=-1))
    upstream = rng.normal(size=(3, 7, 6, 4)).astype("float32")

    with tf.GradientTape() as tape:
        y = adder_conv2d(x, shared[..., :4], padding="same", eta=None)
        loss = tf.reduce_sum(y * upstream)
    grad_shared = np.asarray(tape.gradient(loss, shared))
    _, _, expected = reference_adder_conv2d(
        x, kernel, (1, 1), "same", upstream, eta=None
    )

    assert_close(grad_shared[..., :4], expected, rtol=1e-4)
    assert np.all(grad_shared[..., 4:] == 0.0)


def test_conv_xla_matches_eager():
    case = CONV_CASES[4]
    *_, strides, padding, chunk_size = case
    x, kernel, rng = make_conv_case(case)
    upstream = rng.normal(size=(3, 4, 4, 4)).astype("float32")
    kwargs = dict(strides=strides, padding=padding, chunk_size=chunk_size)

    # Eagerly the native kernels run where they build; under XLA the
    # TensorFlow implementation takes over, as no custom op compiles there.
    eager = conv_gradients(x, kernel, upstream, **kwargs)
    compiled = tf.function(
        lambda x, kernel: conv_gradients(x, kernel, upstream, **kwargs),
        jit_compile=True,
    )(x, kernel)

    for eager_value, compiled_value in zip(eager, compiled):
        assert_close(compiled_value, eager_value, rtol=1e-4)


def test_conv_empty_batch(implementation):
    y = adder_conv2d(
        np.zeros((0, 5, 5, 2), "float32"), np.zeros((3, 3, 2, 4), "float32")
    )

    assert y.shape == (0, 3, 3, 4)


def test_default_chunk_size():
    assert default_chunk_size(288, 64) == CHUNK_FLOATS // (288 * 64)
    assert default_chunk_size(288, 64) * 288 * 64 <= CHUNK_FLOATS
    assert default_chunk_size(CHUNK_FLOATS, 2) == 1


# --------------------------------------------------------------------------
# Layers


@pytest.mark.parametrize("case", CONV_CASES, ids=conv_case_id)
def test_conv_layer_output_shape_matches_conv2d(case, implementation):
    batch, height, width, channels, filters, kernel_size, strides, padding, _ = (
        case
    )
    input_shape = (batch, height, width, channels)
    layer = AddConv2D(filters, kernel_size, strides=strides, padding=padding)
    conv = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding
    )

    expected = conv.compute_output_shape(input_shape)
    assert layer.compute_output_shape(input_shape) == expected
    assert layer(np.zeros(input_shape, "float32")).shape == expected


def test_conv_layer_matches_function(implementation):
    x, _, _ = make_conv_case(CONV_CASES[4])
    layer = AddConv2D(
        4,
        3,
        strides=2,
        padding="SAME",
        use_bias=True,
        bias_initializer="ones",
        activation="relu",
    )

    y = layer(x)
    expected = np.maximum(
        adder_conv2d(x, layer.kernel, 2, "same", eta=None) + 1.0, 0.0
    )

    assert layer.kernel.shape == (3, 3, 3, 4)
    assert layer.bias.shape == (4,)
    assert_close(y, expected)


def test_conv_layer_rejects_small_input():
    layer = AddConv2D(4, 5)

    with pytest.raises(ValueError, match="smaller than the kernel"):
        layer.compute_output_shape((1, 4, 8, 3))


@pytest.mark.parametrize("eta", [None, 0.2])
@pytest.mark.parametrize("batch,chunk_size", [(1, None), (5, 2), (6, 3)])
def test_dense_matches_reference(batch, chunk_size, eta, implementation):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, 7)).astype("float32")
    kernel = (0.5 * rng.normal(size=(7, 3))).astype("float32")
    upstream = rng.normal(size=(batch, 3)).astype("float32")
    x_tensor = tf.constant(x)
    kernel_variable = tf.Variable(kernel)

    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        y = adder_dense(x_tensor, kernel_variable, eta=eta, chunk_size=chunk_size)
        loss = tf.reduce_sum(y * upstream)
    grad_x, grad_kernel = tape.gradient(loss, [x_tensor, kernel_variable])
    expected_y, expected_grad_x, expected_grad_kernel = reference_adder_dense(
        x, kernel, upstream, eta
    )

    assert_close(y, expected_y)
    assert_close(grad_x, expected_grad_x, rtol=1e-4)
    assert_close(grad_kernel, expected_grad_kernel, rtol=1e-4)


def test_dense_layer_accepts_rank_3(implementation):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 7)).astype("float32")
    layer = AddDense(3, use_bias=True, bias_initializer="ones")

    y = layer(x)
    expected, _, _ = reference_adder_dense(
        x.reshape(10, 7), np.asarray(layer.kernel), np.zeros((10, 3))
    )

    assert y.shape == (2, 5, 3)
    assert layer.compute_output_shape((2, 5, 7)) == (2, 5, 3)
    assert_close(y, expected.reshape(2, 5, 3) + 1.0)


# --------------------------------------------------------------------------
# Serialization and training


def test_conv_layer_config_round_trip():
    layer = AddConv2D(
        8,
        (3, 1),
        strides=(2, 1),
        padding="same",
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        kernel_regularizer="l2",
        activity_regularizer="l1",
        kernel_constraint="non_neg",
        eta=None,
        chunk_size=16,
        name="adder",
    )

    config = layer.get_config()
    restored = AddConv2D.from_config(config)

    assert restored.get_config() == config
    assert config["kernel_size"] == (3, 1)
    assert config["strides"] == (2, 1)
    assert config["eta"] is None
    assert config["chunk_size"] == 16
    assert restored.activation is keras.activations.relu
    assert isinstance(restored.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(restored.activity_regularizer, keras.regularizers.L1)


def test_dense_layer_config_round_trip():
    layer = AddDense(5, activation="tanh", use_bias=True, eta=0.5, chunk_size=3)

    config = layer.get_config()
    restored = AddDense.from_config(config)

    assert restored.get_config() == config
    assert config["units"] == 5
    assert config["eta"] == 0.5


def test_model_save_load_round_trip(tmp_path, implementation):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            AddConv2D(4, 3, padding="same", chunk_size=10),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            AddDense(2, use_bias=True),
        ]
    )
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "adder.keras")

    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded.layers[0], AddConv2D)
    assert isinstance(loaded.layers[-1], AddDense)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_fit_lowers_loss(implementation):
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    # The label is whether the image's mean is positive.
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    x += rng.choice([-0.5, 0.5], size=(64, 1, 1, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            AddConv2D(8, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            AddDense(1),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy")

    initial_loss = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    final_loss = model.evaluate(x, y, verbose=0)

    assert final_loss < initial_loss


# --------------------------------------------------------------------------
# Argument checks


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(filters=0, kernel_size=3), "filters=0"),
        (dict(filters=2.5, kernel_size=3), "filters=2.5"),
        (dict(filters=4, kernel_size=0), "kernel_size=0"),
        (dict(filters=4, kernel_size=(3, 3, 3)), r"kernel_size=\(3, 3, 3\)"),
        (dict(filters=4, kernel_size=(3, "3")), r"kernel_size=\(3, '3'\)"),
        (dict(filters=4, kernel_size=3, strides=(1, 0)), r"strides=\(1, 0\)"),
        (dict(filters=4, kernel_size=3, padding="causal"), "padding='causal'"),
        (dict(filters=4, kernel_size=3, eta=0), "eta=0"),
        (dict(filters=4, kernel_size=3, eta=-0.2), "eta=-0.2"),
        (dict(filters=4, kernel_size=3, eta=True), "eta=True"),
        (dict(filters=4, kernel_size=3, chunk_size=0), "chunk_size=0"),
        (dict(filters=4, kernel_size=3, chunk_size=True), "chunk_size=True"),
    ],
)
def test_conv_layer_rejects_invalid_argument(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        AddConv2D(**kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(units=0), "units=0"),
        (dict(units=3, eta=float("nan")), "eta=nan"),
        (dict(units=3, chunk_size=-1), "chunk_size=-1"),
    ],
)
def test_dense_layer_rejects_invalid_argument(kwargs, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        AddDense(**kwargs)


def test_conv_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="input channels"):
        adder_conv2d(np.zeros((1, 5, 5, 3), "float32"), np.zeros((3, 3, 2, 4)))


def run_python(code, **env):
    """Run `code` in a fresh Python process from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "layer_class,args", [(AddConv2D, (4, 3)), (AddDense, (4,))]
)
def test_layers_reject_other_backends(monkeypatch, layer_class, args):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        layer_class(*args)


# --------------------------------------------------------------------------
# Memory bound


def test_chunking_bounds_memory():
    # Batch 256 of 16x16x32 with 64 3x3 filters: N * D * F = 65536 * 288 * 64
    # = 1.2e9 floats, 4.8 GB if the difference tensor were held whole.
    result = run_python(
        """
        import numpy as np, tensorflow as tf
        from keras_shiftadd.layers.adder import AddConv2D

        def peak_rss_mib():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024

        x = tf.constant(np.random.default_rng(0).random((256, 16, 16, 32), "float32"))
        layer = AddConv2D(64, 3, padding="same")
        layer.build(x.shape)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            return tape.gradient(y, [x, layer.kernel])

        before = peak_rss_mib()
        grad_x, grad_kernel = step(x)
        assert np.isfinite(grad_x.numpy()).all()
        print(peak_rss_mib() - before)
        """
    )

    assert result.returncode == 0, result.stderr
    growth_mib = float(result.stdout.strip().splitlines()[-1])
    assert growth_mib < 1500, f"peak RSS grew by {growth_mib:.0f} MiB"


# --------------------------------------------------------------------------
# Choice of implementation


def test_native_path_is_taken_when_it_builds(monkeypatch):
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", "auto")
    x, kernel, _ = make_conv_case(CONV_CASES[2])

    graph = tf.function(
        lambda x: adder_conv2d(x, kernel, padding="same")
    ).get_concrete_function(tf.TensorSpec(x.shape, tf.float32)).graph
    op_types = {op.type for op in graph.get_operations()}

    assert kernels.load() is not None
    assert "KerasShiftaddAdderConv2D" in op_types


@pytest.fixture
def broken_compiler(monkeypatch, tmp_path):
    """Make the native kernels fail to build, as on a machine without C++."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("KERAS_SHIFTADD_CACHE_DIR", str(tmp_path / "cache"))
    kernels.reset()
    yield
    # Forget the failure so later tests load the real library again.
    kernels.reset()


def test_fallback_when_native_kernels_do_not_build(
    broken_compiler, monkeypatch, caplog
):
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", "auto")
    case = CONV_CASES[4]
    *_, strides, padding, _ = case
    x, kernel, rng = make_conv_case(case)
    expected_y, _, _ = reference_adder_conv2d(x, kernel, strides, padding)
    upstream = rng.normal(size=expected_y.shape).astype("float32")

    with caplog.at_level("WARNING", logger="keras_shiftadd.kernels"):
        y, grad_x, grad_kernel = conv_gradients(
            x, kernel, upstream, strides=strides, padding=padding
        )
    _, expected_grad_x, expected_grad_kernel = reference_adder_conv2d(
        x, kernel, strides, padding, upstream, eta=0.2
    )

    assert kernels.load() is None
    assert "Native adder kernels unavailable" in caplog.text
    assert "no-such-compiler" in caplog.text
    assert_close(y, expected_y)
    assert_close(grad_x, expected_grad_x, rtol=1e-4)
    assert_close(grad_kernel, expected_grad_kernel, rtol=1e-4)
    assert not os.listdir(os.environ["KERAS_SHIFTADD_CACHE_DIR"])


def test_native_request_raises_when_unavailable(broken_compiler):
    x, kernel, _ = make_conv_case(CONV_CASES[0])

    with pytest.raises(kernels.NativeKernelError, match="no-such-compiler"):
        adder_conv2d(x, kernel, implementation="native")


def test_float16_falls_back_to_tensorflow(monkeypatch):
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", "auto")
    x, kernel, _ = make_conv_case(CONV_CASES[2])
    expected, _, _ = reference_adder_conv2d(x, kernel, (1, 1), "same")

    y = adder_conv2d(x.astype("float16"), kernel, padding="same")

    assert y.dtype == tf.float16
    assert_close(np.float32(y), expected, rtol=2e-3)
    with pytest.raises(ValueError, match="dtype=float16"):
        adder_conv2d(x.astype("float16"), kernel, implementation="native")


def test_invalid_implementation_setting_raises(monkeypatch):
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", "fast")
    x, kernel, _ = make_conv_case(CONV_CASES[0])

    with pytest.raises(ValueError, match=re.escape("KERAS_SHIFTADD_ADDER='fast'")):
        adder_conv2d(x, kernel)


def test_empty_implementation_setting_means_auto(monkeypatch):
    monkeypatch.setenv("KERAS_SHIFTADD_ADDER", " ")

    assert kernels.implementation_setting() == "auto"


def test_valid_input_smaller_than_kernel_raises(implementation):
    with pytest.raises(ValueError, match="smaller than the kernel"):
        adder_conv2d(
            np.zeros((1, 2, 5, 1), "float32"), np.ones((3, 3, 1, 4), "float32")
        )


def test_nan_input_gives_nan_gradient(implementation):
    x, kernel, rng = make_conv_case(CONV_CASES[2])
    x[1, 3, 2, 0] = np.nan
    upstream = rng.normal(size=(3, 7, 6, 4)).astype("float32")

    y, grad_x, grad_kernel = conv_gradients(
        x, kernel, upstream, padding="same", eta=None
    )

    assert np.isnan(np.asarray(y)[1, 3, 2]).all()
    assert np.isnan(np.asarray(grad_x)[1, 3, 2, 0])
    assert np.isfinite(np.asarray(grad_x)[0]).all()
    assert np.isnan(np.asarray(grad_kernel)).any()


def test_kernel_cache_recovery_and_reuse(tmp_path):
    cache = tmp_path / "cache"
    env = {"KERAS_SHIFTADD_CACHE_DIR": str(cache), "KERAS_SHIFTADD_ADDER": "native"}
    code = """
        import numpy as np
        from keras_shiftadd import kernels
        from keras_shiftadd.layers.adder import adder_conv2d
        y = adder_conv2d(np.ones((1, 4, 4, 2), "float32"),
                         np.zeros((3, 3, 2, 5), "float32"))
        print(float(np.asarray(y).sum()), kernels.library_path())
        """
    # A corrupt file where the library belongs, as a crash could leave.
    cache.mkdir()
    result = run_python("from keras_shiftadd import kernels; "
                        "print(kernels.library_path())", **env)
    path = result.stdout.strip().splitlines()[-1]
    with open(path, "wb") as file:
        file.write(b"not a library")

    rebuilt = run_python(code, **env)
    # Without any compiler on the PATH, the cached library still loads.
    without_compiler = run_python(code, PATH=str(tmp_path / "empty-bin"), **env)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.splitlines()[-1].split() == ["-360.0", path]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o755 & ~umask
    assert sorted(os.listdir(cache)) == [os.path.basename(path)]
    assert without_compiler.returncode == 0, without_compiler.stderr
    assert without_compiler.stdout.splitlines()[-1].split() == ["-360.0", path]

    # A library cut short (loading one can end the process with SIGBUS)
    # is detected and compiled again.
    with open(path, "rb") as file:
        head = file.read(40000)
    with open(path, "wb") as file:
        file.write(head)
    after_truncation = run_python(code, **env)

    assert after_truncation.returncode == 0, after_truncation.stderr
    assert after_truncation.stdout.splitlines()[-1].split() == ["-360.0", path]


def test_invalid_implementation_argument_raises():
    x, kernel, _ = make_conv_case(CONV_CASES[0])

    with pytest.raises(ValueError, match="implementation='c'"):
        adder_conv2d(x, kernel, implementation="c")
