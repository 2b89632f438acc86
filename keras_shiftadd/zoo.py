"""Backbones to augment: a small CNN and the paper's tiny networks."""

import keras

L = keras.layers

# Momentum of every BatchNormalization layer in zoo models. Keras' default
# of 0.99 (0.999 in keras.applications.MobileNetV2) lets the moving
# statistics lag far behind the weights in runs of a few epochs, so test
# accuracy trails training accuracy; 0.9 tracks it from the first epoch.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters, kernel_size, strides=1, activation="relu", name=None):
    x = L.Conv2D(filters, kernel_size, strides=strides, padding="same",
                 use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if activation is not None:
        x = L.Activation(activation, name=f"{name}_act")(x)
    return x


def small_cnn(input_shape=(32, 32, 3), classes=10, width=16):
    """Build a small CNN with a depthwise-separable and an inverted residual block.

    It has the building blocks of the MobileNet family (plain, depthwise and
    pointwise convolutions, BatchNormalization after each, a residual Add,
    global pooling and a dense classifier) at about 20 thousand parameters,
    so an augmented training on CPU takes seconds per epoch.

    Args:
        input_shape: `(height, width, channels)`, both sides at least 8.
            Defaults to `(32, 32, 3)`.
        classes: Number of classes. Defaults to `10`.
        width: Channels of the stem; later layers use multiples of it.
            Defaults to `16`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    inputs = keras.Input(input_shape, name="image")
    x = _conv_bn(inputs, width, 3, strides=2, name="stem")

    # Depthwise-separable block.
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="sep_dw")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="sep_dw_bn")(x)
    x = L.ReLU(name="sep_dw_relu")(x)
    x = _conv_bn(x, width * 3 // 2, 1, name="sep_pw")

    x = _conv_bn(x, width * 2, 3, strides=2, name="down")

    # Inverted residual block: expand, depthwise, project, add.
    shortcut = x
    y = _conv_bn(x, width * 4, 1, activation="relu6", name="ir_expand")
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="ir_dw")(y)
    y = L.BatchNormalization(momentum=BN_MOMENTUM, name="ir_dw_bn")(y)
    y = L.ReLU(6.0, name="ir_dw_relu")(y)
    y = _conv_bn(y, width * 2, 1, activation=None, name="ir_project")
    x = L.Add(name="ir_add")([shortcut, y])

    x = _conv_bn(x, width * 4, 3, strides=2, name="head")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dropout(0.1, name="dropout")(x)
    outputs = L.Dense(classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def mobilenet_v2(input_shape=(64, 64, 3), classes=10, alpha=0.35):
    """Build Keras' MobileNetV2 with width `alpha`, logits out, BN momentum 0.9.

    Args:
        input_shape: `(height, width, channels)`, sides at least 32.
            Defaults to `(64, 64, 3)`.
        classes: Number of classes. Defaults to `10`.
        alpha: Width multiplier. Defaults to `0.35`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    if min(input_shape[:2]) < 32:
        raise ValueError(
            "MobileNetV2 needs inputs of at least 32x32 pixels. "
            f"Received: input_shape={tuple(input_shape)}; pass --image-size 32 "
            "or larger."
        )
    model = keras.applications.MobileNetV2(
        input_shape=tuple(input_shape),
        alpha=alpha,
        include_top=True,
        weights=None,
        classes=classes,
        classifier_activation=None,
    )
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["momentum"] = BN_MOMENTUM
    config["name"] = f"mobilenetv2_w{alpha:g}"
    return keras.Model.from_config(config)


MODELS = {
    "small-cnn": small_cnn,
    "mobilenetv2-w0.35": lambda input_shape, classes: mobilenet_v2(
        input_shape, classes, alpha=0.35
    ),
}


def build(name, input_shape, classes):
    """Build the zoo model `name` for `input_shape` and `classes`."""
    if name not in MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Available models: {', '.join(MODELS)}."
        )
    return MODELS[name](input_shape=tuple(input_shape), classes=classes)
