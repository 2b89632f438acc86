"""Tests of the backbone zoo: shapes, published configurations, augment()."""

import keras
import numpy as np
import pytest

from keras_shiftadd import augment, zoo

L = keras.layers


def depthwise_kernels(model):
    return [layer.kernel_size[0] for layer in model.layers
            if isinstance(layer, L.DepthwiseConv2D)]


def count_layers(model, cls):
    return sum(isinstance(layer, cls) for layer in model.layers)


@pytest.mark.parametrize("name", zoo.TABLE3_MODELS)
def test_backbone_input_size_and_classes(name):
    model = zoo.build(name, (96, 128, 3), 37)
    assert model.input_shape == (None, 96, 128, 3)
    assert model.output_shape == (None, 37)


@pytest.mark.parametrize("name", zoo.TABLE3_MODELS)
def test_backbone_widths_are_multiples_of_8(name):
    model = zoo.build(name, (64, 64, 3), 10)
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            assert layer.filters % 8 == 0, layer.name
        if isinstance(layer, L.BatchNormalization):
            assert layer.momentum == zoo.BN_MOMENTUM, layer.name


@pytest.mark.parametrize(
    "name, kernels, residuals",
    [
        ("mobilenetv2-tiny", [3] * 17, 10),
        ("proxylessnas-w0.35",
         [3, 5, 3, 7, 3, 5, 5, 7, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7], 13),
        ("mcunet-in3",
         [3, 7, 3, 7, 5, 5, 5, 5, 3, 7, 5, 5, 7, 3, 3, 7, 3, 7], 11),
        ("mobilenetv3-w0.35",
         [3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5], 10),
    ],
)
def test_backbone_block_structure(name, kernels, residuals):
    model = zoo.build(name, (64, 64, 3), 10)
    assert depthwise_kernels(model) == kernels
    assert count_layers(model, L.Add) == residuals


def test_backbone_heads():
    tiny = zoo.build("mobilenetv2-tiny", (64, 64, 3), 10)
    assert tiny.get_layer("head_conv").filters == 448
    proxyless = zoo.build("proxylessnas-w0.35", (64, 64, 3), 10)
    assert proxyless.get_layer("head_conv").filters == 1280
    mcunet = zoo.build("mcunet-in3", (64, 64, 3), 10)
    assert mcunet.get_layer("classifier").kernel.shape == (160, 10)
    v3 = zoo.build("mobilenetv3-w0.35", (64, 64, 3), 10)
    assert v3.get_layer("head_conv").filters == 336
    assert v3.get_layer("feature_conv").filters == 1280
    assert count_layers(v3, L.Multiply) == 8  # squeeze-and-excitation gates


def test_mobilenetv3_graph_has_only_layers():
    model = zoo.build("mobilenetv3-w0.35", (64, 64, 3), 10)
    assert len(model.operations) == len(model.layers)


def test_existing_models_and_alias():
    assert {"small-cnn", "mobilenetv2-w0.35"} <= set(zoo.MODELS)
    assert set(zoo.TABLE3_MODELS) <= set(zoo.MODELS)
    assert zoo.build("mcunet", (32, 32, 3), 5).name == "mcunet_in3"


def test_build_rejects_bad_input():
    with pytest.raises(ValueError, match="Unknown model"):
        zoo.build("resnet-9000", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="at least 32 pixels"):
        zoo.build("mcunet-in3", (16, 16, 3), 10)


@pytest.mark.parametrize(
    "name",
    ["mobilenetv2-w0.35", "mobilenetv2-tiny", "proxylessnas-w0.35", "mcunet-in3"],
)
def test_augment_accepts_backbone(name):
    base = zoo.build(name, (32, 32, 3), 10)
    model = augment(base, op="mult")
    assert model.target_network.output_shape == (None, 10)
    assert model.augmented_model().output_shape == (None, 10)


def test_augment_accepts_mobilenetv3_without_expand_augmentation():
    base = zoo.build("mobilenetv3-w0.35", (32, 32, 3), 10)
    model = augment(base, op="mult", expand_mult=1.0)
    assert model.augmented_model().output_shape == (None, 10)


def test_augment_mobilenetv3_with_expand_augmentation(digits_images):
    # The squeeze-and-excitation gate must be widened like the expanded
    # tensor it multiplies, or the Multiply merge would see two layouts.
    base = zoo.build("mobilenetv3-w0.35", (32, 32, 3), 10)
    model = augment(base, op="shift")
    images = np.tile(digits_images[:2], (1, 2, 2, 1))

    assert model.augmented_model().output_shape == (None, 10)
    np.testing.assert_allclose(
        model.target_model().predict(images, verbose=0),
        model.predict(images, verbose=0), rtol=1e-4, atol=1e-4,
    )
