"""Tests of augment(): graph rewrite invariants, target export and saving."""

import re

import keras
import numpy as np
import pytest

from keras_shiftadd import augment, zoo
from keras_shiftadd.augment import make_divisible, widen
from keras_shiftadd.layers import (
    AddConv2D,
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
    ShiftConv2D,
    ShiftDense,
    ShiftDepthwiseConv2D,
)

L = keras.layers
OPS = ["shift", "add", "mult"]


def small_base(classes=10):
    return zoo.small_cnn(input_shape=(16, 16, 3), classes=classes)


def sequential_base():
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            L.BatchNormalization(),
            L.DepthwiseConv2D(3, depth_multiplier=2, padding="valid"),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(12, activation="relu"),
            L.Dropout(0.2),
            L.Dense(5),
        ],
        name="seq",
    )


def mobilenet_base():
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None,
    )


def exact_types(model):
    return {type(layer) for layer in model.layers}


def randomize_batch_norm(model, seed=0):
    """Give every BN layer non-trivial statistics so equality checks bite."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (L.BatchNormalization, HybridBatchNormalization)):
            weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in layer.get_weights()]
            layer.set_weights(weights)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("builder", [small_base, sequential_base])
def test_target_model_matches_target_path(op, builder, digits_images):
    base = builder()
    model = augment(base, op=op)
    target = model.target_model()

    assert target.count_params() == base.count_params()
    np.testing.assert_allclose(
        target.predict(digits_images, verbose=0),
        model.predict(digits_images, verbose=0),
        rtol=1e-5, atol=1e-5,
    )


def test_shift_target_has_no_multiplicative_layer():
    target = augment(small_base(), op="shift").target_model()
    types = exact_types(target)

    assert L.Conv2D not in types
    assert L.DepthwiseConv2D not in types
    assert L.Dense not in types
    assert {ShiftConv2D, ShiftDepthwiseConv2D, ShiftDense} <= types


def test_add_target_keeps_depthwise_and_classifier():
    target = augment(small_base(), op="add").target_model()
    types = exact_types(target)

    assert L.Conv2D not in types
    assert AddConv2D in types
    assert L.DepthwiseConv2D in types
    assert L.Dense in types


def test_mult_target_is_plain_keras():
    target = augment(small_base(), op="mult").target_model()
    types = exact_types(target)

    assert not types & {ShiftConv2D, ShiftDepthwiseConv2D, ShiftDense, AddConv2D}


@pytest.mark.parametrize("op", OPS)
def test_augmented_equals_target_without_extra_weights(op, digits_images):
    # With every augmentation weight at zero, the extra channels carry zeros
    # and the augmented network must compute exactly the target function.
    model = augment(small_base(), op=op)
    for layer in model.augmented_model().layers:
        if isinstance(layer, (HybridConv2D, HybridDense, HybridDepthwiseConv2D)):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            keep = np.zeros_like(kernel)
            if isinstance(layer, HybridConv2D):
                keep[:, :, : layer.target_input_channels, : layer.target_filters] = 1
            elif isinstance(layer, HybridDepthwiseConv2D):
                keep[:, :, : layer.target_input_channels] = 1
            else:
                keep[: layer.target_input_dim, : layer.target_units] = 1
            layer.kernel.assign(kernel * keep)

    augmented = model.augmented_model().predict(digits_images, verbose=0)
    target = model.predict(digits_images, verbose=0)

    np.testing.assert_allclose(augmented, target, rtol=1e-4, atol=1e-4)


def test_widths_follow_multipliers():
    model = augment(small_base(), op="shift", width_mult=2.0, expand_mult=1.5)
    layers = model.hybrid.hybrid_layers

    assert layers["stem_conv"].filters == 32
    assert layers["stem_conv"].target_filters == 16
    # The expansion of the inverted residual block gets both multiples.
    assert layers["ir_expand_conv"].target_filters == 64
    assert layers["ir_expand_conv"].filters == make_divisible(64 * 2.0 * 1.5)
    # The classifier keeps its classes.
    assert layers["classifier"].units == 10
    assert layers["classifier"].input_dim == 128


def test_widen_rounding():
    assert widen(16, 1.0) == 16
    assert widen(3, 1.0) == 3
    assert widen(16, 2.2) == 32
    assert widen(16, 2.8) == 48
    assert widen(8, 2.4) == 24
    assert make_divisible(5.6) == 8


def test_mobilenet_v2_rewrites_and_exports(digits_images):
    base = mobilenet_base()
    model = augment(base, op="shift", width_mult=2.0, expand_mult=2.0)
    target = model.target_model()
    images = np.tile(digits_images[:4], (1, 2, 2, 1))

    assert target.count_params() == base.count_params()
    assert model.augmented_model().count_params() > 3 * base.count_params()
    np.testing.assert_allclose(
        target.predict(images, verbose=0),
        model.predict(images, verbose=0),
        rtol=1e-4, atol=1e-4,
    )
    assert L.Conv2D not in exact_types(target)


def test_train_step_loss_combines_both_paths(digits_images):
    model = augment(small_base(), op="shift", alpha=0.5)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    labels = np.arange(len(digits_images)) % 10

    logs = model.train_on_batch(digits_images, labels, return_dict=True)

    expected = logs["target_loss"] + 0.5 * logs["augmented_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert set(logs) >= {"accuracy", "augmented_accuracy", "target_loss"}


def test_plain_training_logs_no_augmented_metrics(digits_images):
    model = augment(small_base(), op="shift", augmentation=False)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.arange(len(digits_images)) % 10

    history = model.fit(digits_images, labels, epochs=1, verbose=0)

    assert "augmented_loss" not in history.history
    assert model.augmented_network is None


def test_target_batch_norm_statistics_are_separate(digits_images):
    model = augment(small_base(), op="mult")
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.arange(len(digits_images)) % 10
    model.fit(digits_images, labels, epochs=2, verbose=0)

    # The stem reads the unwidened image, so its target outputs are the same on
    # both paths; the pointwise layer after it mixes in augmentation channels.
    bn = model.hybrid.hybrid_layers["sep_pw_bn"]
    width = bn.target_channels
    target_mean = keras.ops.convert_to_numpy(bn.target_moving_mean)
    augmented_mean = keras.ops.convert_to_numpy(bn.moving_mean)[:width]

    assert np.abs(target_mean).max() > 0
    assert not np.allclose(target_mean, augmented_mean)
    exported = model.target_model().get_layer("sep_pw_bn")
    np.testing.assert_array_equal(exported.moving_mean.numpy(), target_mean)


@pytest.mark.parametrize("op", ["shift", "add"])
def test_models_round_trip_through_keras_files(op, tmp_path, digits_images):
    model = augment(small_base(), op=op)
    randomize_batch_norm(model.augmented_model())
    target = model.target_model()
    augmented = model.augmented_model()

    target.save(tmp_path / "target.keras")
    augmented.save(tmp_path / "augmented.keras")
    model.save(tmp_path / "model.keras")
    target_loaded = keras.saving.load_model(tmp_path / "target.keras", safe_mode=True)
    augmented_loaded = keras.saving.load_model(
        tmp_path / "augmented.keras", safe_mode=True
    )
    model_loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)

    np.testing.assert_allclose(
        target_loaded.predict(digits_images, verbose=0),
        target.predict(digits_images, verbose=0), rtol=1e-6, atol=1e-6,
    )
    np.testing.assert_allclose(
        augmented_loaded.predict(digits_images, verbose=0),
        augmented.predict(digits_images, verbose=0), rtol=1e-6, atol=1e-6,
    )
    np.testing.assert_allclose(
        model_loaded.predict(digits_images, verbose=0),
        model.predict(digits_images, verbose=0), rtol=1e-6, atol=1e-6,
    )


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError, match="op='divide'"):
        augment(small_base(), op="divide")


@pytest.mark.parametrize("name", ["width_mult", "expand_mult"])
def test_multiplier_below_one_is_rejected(name):
    with pytest.raises(ValueError, match=name):
        augment(small_base(), op="shift", **{name: 0.5})


def test_unsupported_layer_is_named():
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3)(inputs)
    x = L.LayerNormalization(name="odd_norm")(x)
    x = L.GlobalAveragePooling2D()(x)
    base = keras.Model(inputs, L.Dense(3)(x))

    with pytest.raises(ValueError) as error:
        augment(base)

    message = str(error.value)
    assert "odd_norm" in message
    assert "LayerNormalization" in message
    assert "DepthwiseConv2D" in message


def test_subclassed_model_is_rejected():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        augment(Custom())


def test_reshape_changing_channels_is_rejected():
    inputs = keras.Input((4, 4, 8))
    x = L.Conv2D(8, 1)(inputs)
    x = L.Reshape((8, 16), name="mixer")(x)
    x = L.Flatten()(x)
    base = keras.Model(inputs, L.Dense(2)(x))

    with pytest.raises(ValueError, match="mixer"):
        augment(base)


def test_other_backend_fails_at_compile(monkeypatch):
    model = augment(small_base(), op="shift")
    # Pretend another backend is active: compile must refuse before training.
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")

    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        model.compile(optimizer="sgd", loss="mse")


def test_shift_only_augmentation(tmp_path, digits_images):
    model = augment(small_base(), op="shift", augmented_op="shift")
    randomize_batch_norm(model.augmented_model())

    hybrids = [layer for layer in model.augmented_model().layers
               if isinstance(layer, (HybridConv2D, HybridDense,
                                     HybridDepthwiseConv2D))]
    assert hybrids
    assert all(layer.augmented_op == "shift" for layer in hybrids)
    assert all(layer.remap is None for layer in hybrids)
    np.testing.assert_allclose(
        model.target_model().predict(digits_images, verbose=0),
        model.predict(digits_images, verbose=0), rtol=1e-5, atol=1e-5,
    )

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.augmented_op == "shift"
    np.testing.assert_allclose(
        loaded.augmented_model().predict(digits_images, verbose=0),
        model.augmented_model().predict(digits_images, verbose=0),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"op": "shift", "augmented_op": "add"}, "augmented_op='add'"),
        ({"op": "shift", "augmented_op": "shift", "hws": True}, "hws=True"),
        ({"op": "shift", "augmented_op": "shift", "mutate_blocks": (1,)},
         "mutate_blocks=(1,)"),
    ],
)
def test_invalid_augmented_op_is_rejected(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        augment(small_base(), **kwargs)
