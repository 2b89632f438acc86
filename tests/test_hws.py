"""Tests of heterogeneous weight sharing: the remap, its fit, its use and plots.

Distribution checks use the kernels the shipped remaps were fitted on
(keras_shiftadd/data_files/hws_kernels.npz): a small CNN trained directly on
CIFAR-10 as Mult, Shift (fine-tuned from Mult) and Add models by
scripts/fit_remaps.py.
"""

import argparse
import importlib.resources
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_shiftadd import augment, hws, hws_command, plots, zoo
from keras_shiftadd.layers import AddConv2D, HybridConv2D, HybridDense, ShiftConv2D

OPS = ("shift", "add")


@pytest.fixture(scope="module")
def shipped_kernels():
    path = importlib.resources.files("keras_shiftadd").joinpath(
        "data_files", "hws_kernels.npz"
    )
    return hws.load_kernels(path)


@pytest.fixture(scope="module")
def specs():
    return {op: hws.load_remap(op) for op in OPS}


def small_base():
    return zoo.small_cnn(input_shape=(16, 16, 3), classes=10)


def remap_units(remap, kernel):
    """Return R(kernel) in the units of the fitted Laplace, as float64."""
    return hws.remapped_in_units(remap, kernel)


def standardized(kernel):
    mean, std = hws.numpy_statistics(kernel)
    return (np.asarray(kernel, "float64") - mean) / std


# ---------------------------------------------------------------------------
# The remap function


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (1, 1, 16, 24), (40, 10)])
def test_remap_matches_scipy_reference(op, shape, specs):
    rng = np.random.default_rng(0)
    kernel = rng.normal(0.01, 0.1, shape).astype("float32")
    remap = hws.remap_for_kernel(specs[op], shape)

    result = keras.ops.convert_to_numpy(remap.remap(kernel))
    expected = hws.numpy_remap(kernel, remap.mode, remap.loc, remap.scale,
                               remap.fc, relative=remap.relative)

    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


def test_identity_fc_maps_gaussian_to_laplace():
    rng = np.random.default_rng(1)
    weights = rng.normal(0.3, 2.0, (20000, 8)).astype("float32")
    remap = hws.KernelRemap(mode="replace", loc=0.5, scale=0.25)

    result = remap_units(remap, weights)

    assert abs(hws.excess_kurtosis(weights)) < 0.2
    assert abs(hws.excess_kurtosis(result) - 3.0) < 0.4
    assert hws.laplace_ks_distance(result, 0.5, 0.25) < 0.02


@pytest.mark.parametrize("mode", hws.MODES)
@pytest.mark.parametrize(
    "kernel",
    [
        np.zeros((3, 3, 4, 4)),
        np.full((3, 3, 4, 4), 5.0),
        np.full((3, 3, 4, 4), -1e30),
        np.random.default_rng(2).normal(0, 1e30, (3, 3, 4, 4)),
        np.random.default_rng(3).normal(0, 1e-30, (3, 3, 4, 4)),
        np.concatenate([np.full(35, 1e-3), [1e4]]).reshape(3, 3, 4, 1),
    ],
    ids=["zero", "constant", "constant-extreme", "huge", "tiny", "outlier"],
)
def test_remap_finite_for_degenerate_kernels(mode, kernel, specs):
    spec = specs["shift" if mode == "bias" else "add"]
    remap = hws.remap_for_kernel(spec, kernel.shape)
    kernel = tf.constant(kernel, "float32")

    with tf.GradientTape() as tape:
        tape.watch(kernel)
        result = remap(kernel)
    gradient = tape.gradient(result, kernel)

    assert np.all(np.isfinite(result.numpy()))
    assert np.all(np.isfinite(gradient.numpy()))


def test_constant_kernel_maps_to_itself_in_bias_mode(specs):
    kernel = np.full((3, 3, 4, 4), 0.25, "float32")
    remap = hws.remap_for_kernel(specs["shift"], kernel.shape)

    np.testing.assert_allclose(remap(kernel).numpy(), kernel, rtol=1e-5)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("size", ["1", "9"])
def test_shipped_fc_is_monotone_in_each_weight(op, size, specs):
    entry = specs[op]["remaps"][size]
    fc = {key: np.asarray(value, "float32") for key, value in entry["fc"].items()}
    k = fc["w1"].shape[0]
    rng = np.random.default_rng(4)
    z = rng.normal(0.0, 1.5, (2000, k)).astype("float32")
    step = 1e-2

    assert np.all(hws.monotone_slack(fc) >= hws.MONOTONE_MARGIN - 1e-6)
    base = keras.ops.convert_to_numpy(hws.apply_fc(z.T.reshape(k, 1, -1), fc))
    for i in range(k):
        moved = z.copy()
        moved[:, i] += step
        shifted = keras.ops.convert_to_numpy(
            hws.apply_fc(moved.T.reshape(k, 1, -1), fc)
        )
        slope = (shifted[i] - base[i]) / step
        assert slope.min() > 0.5 * hws.MONOTONE_MARGIN, f"input {i}"


@pytest.mark.parametrize("op", OPS)
def test_remap_of_dense_kernel_is_increasing(op, specs):
    # With size-1 FCs every value is remapped alone, so sorted weights stay
    # sorted after the remap.
    weights = np.sort(np.random.default_rng(5).normal(0, 0.2, 500)).astype("float32")
    kernel = weights.reshape(50, 10)
    remap = hws.remap_for_kernel(specs[op], kernel.shape)

    result = remap(kernel).numpy().ravel()

    assert np.all(np.diff(result) > 0)


def test_mode_mismatch_is_rejected(specs):
    with pytest.raises(ValueError, match="mode='replace'"):
        HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                     op="add", remap=hws.KernelRemap(mode="bias"))
    with pytest.raises(ValueError, match="no remap"):
        HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                     op="mult", remap=hws.KernelRemap(mode="replace"))
    with pytest.raises(ValueError, match="fitted for op='shift'"):
        hws.resolve_hws(specs["shift"], "add")


# ---------------------------------------------------------------------------
# Distributions on real trained kernels


def _fitted_layers(shipped_kernels, op):
    return [name for name in shipped_kernels[op] if name in shipped_kernels["mult"]]


@pytest.mark.parametrize("op", OPS)
def test_remapped_real_kernels_are_laplace_like(op, shipped_kernels, specs):
    mult = shipped_kernels["mult"]
    names = _fitted_layers(shipped_kernels, op)
    inputs, outputs = [], []
    for name in names:
        remap = hws.remap_for_kernel(specs[op], mult[name].shape)
        result = remap_units(remap, mult[name])
        # Pool in units of the fitted Laplace scale around its location.
        inputs.append(standardized(mult[name]).ravel())
        outputs.append((result.ravel() - remap.loc) / remap.scale)

        assert hws.laplace_ks_distance(result, remap.loc, remap.scale) < 0.06, name
        assert hws.excess_kurtosis(result) > hws.excess_kurtosis(mult[name]) + 1.5, name

    # Short trainings from a uniform initialization leave the Mult kernels a
    # little lighter-tailed than a Gaussian (excess kurtosis about -0.8).
    assert abs(hws.excess_kurtosis(np.concatenate(inputs))) < 1.2
    assert 2.0 < hws.excess_kurtosis(np.concatenate(outputs)) < 4.0


@pytest.mark.parametrize("op", OPS)
def test_fitted_fc_beats_identity_fc(op, shipped_kernels, specs):
    mult = shipped_kernels["mult"]
    for name in _fitted_layers(shipped_kernels, op):
        fitted = hws.remap_for_kernel(specs[op], mult[name].shape)
        identity = hws.KernelRemap(mode=fitted.mode, loc=fitted.loc,
                                   scale=fitted.scale, relative=fitted.relative)
        distance = hws.laplace_ks_distance(
            remap_units(fitted, mult[name]), fitted.loc, fitted.scale
        )
        baseline = hws.laplace_ks_distance(
            remap_units(identity, mult[name]), fitted.loc, fitted.scale
        )

        assert distance < baseline, name


def test_shift_read_kernel_follows_fine_tuned_shift(shipped_kernels, specs):
    # Shift reads W + R(W); its distribution should be close to the kernel
    # fine-tuning actually produced.
    for name in _fitted_layers(shipped_kernels, "shift"):
        mult = shipped_kernels["mult"][name]
        remap = hws.remap_for_kernel(specs["shift"], mult.shape)
        read = remap(mult).numpy()

        distance = hws.two_sample_ks_distance(read, shipped_kernels["shift"][name])

        assert distance < 0.08, name


def test_fit_reduces_quantile_loss(shipped_kernels):
    mult = {name: shipped_kernels["mult"][name] for name in ("down_conv", "ir_expand_conv")}
    spec = hws.fit_remap_from_kernels("add", mult, shipped_kernels["add"], steps=40)

    assert set(spec["remaps"]) == {"1", "9"}
    for entry in spec["remaps"].values():
        assert entry["loss"]["fitted_fc"] < entry["loss"]["identity_fc"]
        assert entry["scale"] > 0
    assert hws.resolve_hws(spec, "add")["op"] == "add"


def test_fit_rejects_mismatched_kernels():
    with pytest.raises(ValueError, match="same architecture"):
        hws.fit_remap_from_kernels("shift", {"a": np.zeros((3, 3, 2, 2))},
                                   {"a": np.zeros((3, 3, 2, 4))})


# ---------------------------------------------------------------------------
# Use in hybrid layers and models


@pytest.mark.parametrize("op", OPS)
def test_gradients_reach_kernel_while_fc_stays_frozen(op, specs, digits_images):
    layer = HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                         op=op, remap=hws.remap_for_kernel(specs[op], (3, 3, 1, 1)))
    x = tf.constant(np.concatenate([digits_images[:4]] * 2, axis=-1))
    layer(x)
    fc_before = {k: v.copy() for k, v in layer.remap.fc.items()}

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x[..., :3], target=True)))
    gradient = tape.gradient(loss, layer.kernel)
    target_gradient = gradient.numpy()[:, :, :3, :4]
    keras.optimizers.SGD(0.1).apply_gradients([(gradient, layer.kernel)])

    assert np.all(np.isfinite(target_gradient))
    assert np.count_nonzero(target_gradient) > 0.9 * target_gradient.size
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert layer.remap.weights == []
    for key, value in fc_before.items():
        np.testing.assert_array_equal(layer.remap.fc[key], value)


@pytest.mark.parametrize("op", OPS)
def test_hybrid_layer_reads_remapped_target_slice(op, specs):
    layer = HybridDense(6, 6, input_dim=8, target_input_dim=4, op=op,
                        remap=hws.remap_for_kernel(specs[op], (8, 6)))
    layer.build()
    target = layer.target_kernel()

    read = layer.mf_kernel(target).numpy()
    remapped = layer.remap.remap(target).numpy()

    expected = target.numpy() + remapped if op == "shift" else remapped
    np.testing.assert_allclose(read, expected, rtol=1e-6)


def test_augment_hws_default_and_ablation():
    base = small_base()
    shift = augment(base, op="shift")
    add = augment(base, op="add")
    layers = shift.hybrid.hybrid_layers

    assert layers["head_conv"].remap.mode == "bias"
    assert layers["head_conv"].remap.fc_size == 9
    assert layers["ir_expand_conv"].remap.fc_size == 1
    assert layers["classifier"].remap is not None
    assert add.hybrid.hybrid_layers["head_conv"].remap.mode == "replace"
    # Add models keep depthwise and dense layers multiplicative: no remap.
    assert add.hybrid.hybrid_layers["ir_dw"].remap is None
    assert add.hybrid.hybrid_layers["classifier"].remap is None
    assert add.hybrid.hybrid_layers["head_conv"].remap.straight_through
    assert not layers["head_conv"].remap.straight_through
    for model in (augment(base, op="shift", hws=False),
                  augment(base, op="add", hws=False),
                  augment(base, op="shift", augmented_op="shift"),
                  augment(base, op="mult"),
                  augment(base, op="shift", augmentation=False)):
        assert all(getattr(layer, "remap", None) is None
                   for layer in model.hybrid.hybrid_layers.values()), model.name


def test_plain_model_takes_explicit_spec(specs):
    model = augment(small_base(), op="add", augmentation=False, hws=specs["add"])

    assert model.hybrid.hybrid_layers["down_conv"].remap is not None


def test_invalid_hws_is_rejected():
    with pytest.raises(ValueError, match="Invalid `hws`"):
        augment(small_base(), op="shift", hws="yes")


@pytest.mark.parametrize("op", OPS)
def test_target_model_bakes_remap(op, digits_images):
    model = augment(small_base(), op=op, hws=True)
    target = model.target_model()

    np.testing.assert_allclose(
        target.predict(digits_images, verbose=0),
        model.predict(digits_images, verbose=0),
        rtol=1e-5, atol=1e-5,
    )
    layer_type = ShiftConv2D if op == "shift" else AddConv2D
    exported = target.get_layer("head_conv")
    hybrid = model.hybrid.hybrid_layers["head_conv"]
    assert type(exported) is layer_type
    assert not any(isinstance(layer, hws.KernelRemap) for layer in target.layers)
    np.testing.assert_allclose(
        exported.kernel.numpy(), hybrid.mf_kernel(hybrid.target_kernel()).numpy()
    )
    assert not np.allclose(exported.kernel.numpy(), hybrid.target_kernel().numpy())


@pytest.mark.parametrize("op", OPS)
def test_model_with_hws_round_trips_through_keras_file(op, tmp_path, digits_images):
    model = augment(small_base(), op=op, hws=True)
    path = tmp_path / f"{op}.keras"
    model.save(path)

    loaded = keras.saving.load_model(path)

    assert loaded.get_config()["hws"] == json.loads(json.dumps(model.get_config()["hws"]))
    np.testing.assert_allclose(
        loaded.predict(digits_images, verbose=0),
        model.predict(digits_images, verbose=0),
        rtol=1e-5, atol=1e-5,
    )


def test_hybrid_layer_config_round_trip(specs):
    layer = HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                         op="shift", remap=hws.remap_for_kernel(specs["shift"], (3, 3, 1, 1)))
    clone = HybridConv2D.from_config(json.loads(json.dumps(layer.get_config())))

    assert clone.remap.get_config() == layer.remap.get_config()


# ---------------------------------------------------------------------------
# Plots and command line


def _parser():
    parser = argparse.ArgumentParser(prog="keras-shiftadd")
    hws_command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_plot_weights_from_kernel_archive(tmp_path):
    archive = importlib.resources.files("keras_shiftadd").joinpath(
        "data_files", "hws_kernels.npz"
    )
    output = tmp_path / "weights.png"
    args = _parser().parse_args(["plot-weights", str(archive), "--output", str(output)])

    status = args.handler(args)

    assert status == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_weights_of_one_layer_of_saved_model(tmp_path):
    path = tmp_path / "model.keras"
    augment(small_base(), op="shift").save(path)
    weights = plots.collect_weights(path, layer="head_conv")

    assert weights.rows() == [plots.WITH_SHARING, plots.AFTER_REMAP, plots.REMAP_BIAS]
    assert plots.plot_weights(path, tmp_path / "layer.png", layer="head_conv")


def test_plot_weights_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        plots.plot_weights(tmp_path / "missing.keras", tmp_path / "out.png")
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(ValueError, match="Found no weights"):
        plots.plot_weights(empty, tmp_path / "out.png")
    archive = importlib.resources.files("keras_shiftadd").joinpath(
        "data_files", "hws_kernels.npz"
    )
    with pytest.raises(ValueError, match="Layer 'nope' not found"):
        plots.plot_weights(archive, tmp_path / "out.png", layer="nope")
    with pytest.raises(ValueError, match="expected a .png file"):
        plots.plot_weights(archive, tmp_path / "out.jpg")


def test_fit_remap_command_on_saved_kernels(tmp_path):
    archive = importlib.resources.files("keras_shiftadd").joinpath(
        "data_files", "hws_kernels.npz"
    )
    args = _parser().parse_args([
        "fit-remap", "--kernels", str(archive), "--op", "shift",
        "--fit-steps", "5", "--output", str(tmp_path),
    ])

    assert args.handler(args) == 0
    spec = json.loads((tmp_path / "hws_shift.json").read_text())
    assert hws.resolve_hws(spec, "shift")["mode"] == "bias"


def test_fit_remap_command_needs_data(tmp_path):
    args = _parser().parse_args(["fit-remap", "--output", str(tmp_path)])

    with pytest.raises(ValueError, match="needs real training data"):
        args.handler(args)


@pytest.mark.parametrize("mode", hws.MODES)
def test_straight_through_keeps_output_and_passes_gradient(mode, specs):
    op = {"bias": "shift", "replace": "add"}[mode]
    spec = specs[op]
    entry = spec["remaps"]["9"]
    kernel = tf.Variable(
        np.random.default_rng(3).normal(0, 0.1, (3, 3, 4, 5)).astype("float32")
    )
    exact, straight = (
        hws.KernelRemap(mode=mode, loc=entry["loc"], scale=entry["scale"],
                        fc=entry["fc"], relative=spec.get("relative", True),
                        straight_through=flag)
        for flag in (False, True)
    )
    upstream = np.random.default_rng(4).normal(size=kernel.shape)

    with tf.GradientTape(persistent=True) as tape:
        exact_out = exact(kernel)
        straight_out = straight(kernel)
        exact_loss = tf.reduce_sum(exact_out * upstream)
        straight_loss = tf.reduce_sum(straight_out * upstream)

    np.testing.assert_array_equal(straight_out.numpy(), exact_out.numpy())
    np.testing.assert_allclose(
        tape.gradient(straight_loss, kernel).numpy(), upstream, rtol=1e-6
    )
    assert not np.allclose(tape.gradient(exact_loss, kernel).numpy(), upstream)
    restored = hws.KernelRemap.from_config(straight.get_config())
    assert restored.straight_through
