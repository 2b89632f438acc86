"""Backbones to augment: a small CNN and the tiny networks of the ShiftAddAug paper."""

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


# The Table 3 backbones of ShiftAddAug. Their configurations follow NetAug
# (Cai et al., ICLR 2022, code in github.com/mit-han-lab/tinyml, folder
# netaug/models/base), which ShiftAddAug trains with, and the MCUNet model zoo
# (same repository, mcunet/assets/configs). Channel counts are rounded to
# multiples of 8 with `make_divisible`, as both code bases do.

CHANNEL_DIVISOR = 8


def make_divisible(value, divisor=CHANNEL_DIVISOR):
    """Round `value` to the nearest multiple of `divisor`, losing at most 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _check_input_shape(name, input_shape):
    if len(input_shape) != 3 or min(input_shape[:2]) < 32:
        raise ValueError(
            f"{name} needs inputs of shape (height, width, channels) with "
            f"both sides at least 32 pixels. Received: "
            f"input_shape={tuple(input_shape)}; pass --image-size 32 or larger."
        )


def _activation(x, kind, name):
    if kind is None:
        return x
    if kind == "relu6":
        return L.ReLU(6.0, name=name)(x)
    if kind == "relu":
        return L.ReLU(name=name)(x)
    return L.Activation(kind, name=name)(x)


def _batch_norm(x, name):
    return L.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)


def _squeeze_excite(x, channels, mid_channels, name):
    """Apply MobileNetV3's squeeze-and-excitation gate with Keras layers only."""
    gate = L.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    gate = L.Conv2D(mid_channels, 1, name=f"{name}_reduce")(gate)
    gate = L.ReLU(name=f"{name}_relu")(gate)
    gate = L.Conv2D(channels, 1, name=f"{name}_expand")(gate)
    gate = L.Activation("hard_sigmoid", name=f"{name}_gate")(gate)
    return L.Multiply(name=f"{name}_scale")([x, gate])


def _inverted_residual(x, out_channels, kernel_size, strides, mid_channels,
                       activation, name, se_channels=None, residual=None):
    """Add a MobileNetV2-style block: expand 1x1, depthwise, (SE), project 1x1.

    With `mid_channels` equal to the input channels the expansion is left out,
    which gives the depthwise-separable block of the stems. `residual=None`
    adds the shortcut whenever the stride is 1 and the channels match.
    """
    in_channels = x.shape[-1]
    shortcut = x
    if mid_channels != in_channels:
        x = L.Conv2D(mid_channels, 1, use_bias=False, name=f"{name}_expand")(x)
        x = _batch_norm(x, f"{name}_expand_bn")
        x = _activation(x, activation, f"{name}_expand_act")
    x = L.DepthwiseConv2D(kernel_size, strides=strides, padding="same",
                          use_bias=False, name=f"{name}_dw")(x)
    x = _batch_norm(x, f"{name}_dw_bn")
    x = _activation(x, activation, f"{name}_dw_act")
    if se_channels is not None:
        x = _squeeze_excite(x, mid_channels, se_channels, f"{name}_se")
    x = L.Conv2D(out_channels, 1, use_bias=False, name=f"{name}_project")(x)
    x = _batch_norm(x, f"{name}_project_bn")
    if residual is None:
        residual = strides == 1 and in_channels == out_channels
    if residual:
        x = L.Add(name=f"{name}_add")([shortcut, x])
    return x


def _stem(inputs, filters, activation):
    x = L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                 name="stem_conv")(inputs)
    x = _batch_norm(x, "stem_bn")
    return _activation(x, activation, "stem_act")


def _classifier(x, classes, feature_channels=None, activation="relu6"):
    """Add the optional 1x1 feature-mixing convolution, pooling and logits."""
    if feature_channels is not None:
        x = L.Conv2D(feature_channels, 1, use_bias=False, name="head_conv")(x)
        x = _batch_norm(x, "head_bn")
        x = _activation(x, activation, "head_act")
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return L.Dense(classes, name="classifier")(x)


def _mbconv_stages(x, stages, width_mult, activation="relu6"):
    """Add NetAug-style stages of inverted residual blocks.

    Each stage is `(out_channels, expand_ratios, kernel_sizes, strides)`:
    one block per entry of `expand_ratios`, the first with `strides`. Middle
    widths are `make_divisible(round(ratio * in_channels))`, and only blocks
    after a stage's first have shortcuts, as in NetAug's definitions.
    """
    index = 0
    for out_channels, ratios, kernels, strides in stages:
        out_channels = make_divisible(out_channels * width_mult)
        for i, (ratio, kernel) in enumerate(zip(ratios, kernels)):
            index += 1
            in_channels = x.shape[-1]
            stride = strides if i == 0 else 1
            x = _inverted_residual(
                x, out_channels, kernel, stride,
                make_divisible(round(ratio * in_channels)), activation,
                name=f"block{index}",
                residual=stride == 1 and in_channels == out_channels and i > 0,
            )
    return x


# MobileNetV2 (Sandler et al., CVPR 2018) as NetAug writes it: per stage
# (out_channels, expand_ratios, kernel_sizes, first_stride) at width 1.0.
MOBILENET_V2_STAGES = (
    (24, (6, 6), (3, 3), 2),
    (32, (6, 6, 6), (3, 3, 3), 2),
    (64, (6, 6, 6, 6), (3, 3, 3, 3), 2),
    (96, (6, 6, 6), (3, 3, 3), 1),
    (160, (6, 6, 6), (3, 3, 3), 2),
    (320, (6,), (3,), 1),
)


def mobilenet_v2_tiny(input_shape=(160, 160, 3), classes=100):
    """Build MobileNetV2-Tiny, MobileNetV2-w0.35 with a 448-channel head.

    NetAug's `TinyMobileNetV2` (the model MCUNet calls MobileNetV2-w0.35 with
    feature mixing at 448 channels, `mbv2-w0.35-r144_imagenet`): stem 16,
    stages 8, 8, 16, 24, 32, 56, 112, then a 1x1 convolution to 448 channels
    instead of MobileNetV2's 1280. At 160x160 with 100 classes it has
    27.31M MACs and 0.35M parameters (BatchNormalization folded).

    Args:
        input_shape: `(height, width, channels)`, sides at least 32.
            Defaults to `(160, 160, 3)`.
        classes: Number of classes. Defaults to `100`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    _check_input_shape("MobileNetV2-Tiny", input_shape)
    width = 0.35
    inputs = keras.Input(input_shape, name="image")
    x = _stem(inputs, make_divisible(32 * width), "relu6")
    x = _inverted_residual(x, make_divisible(16 * width), 3, 1, x.shape[-1],
                           "relu6", name="block0", residual=False)
    x = _mbconv_stages(x, MOBILENET_V2_STAGES, width)
    outputs = _classifier(x, classes, feature_channels=448)
    return keras.Model(inputs, outputs, name="mobilenetv2_tiny")


# ProxylessNAS-Mobile (Cai et al., ICLR 2019; the `proxyless_mobile` config)
# as NetAug writes it, at width 1.0: the searched "zero" blocks are dropped.
PROXYLESSNAS_STAGES = (
    (32, (3, 3), (5, 3), 2),
    (40, (3, 3, 3, 3), (7, 3, 5, 5), 2),
    (80, (6, 3, 3, 3), (7, 5, 5, 5), 2),
    (96, (6, 3, 3, 3), (5, 5, 5, 5), 1),
    (192, (6, 6, 3, 3), (7, 7, 7, 7), 2),
    (320, (6,), (7,), 1),
)


def proxylessnas(input_shape=(160, 160, 3), classes=100, width_mult=0.35):
    """Build ProxylessNAS-Mobile at width `width_mult` (default 0.35).

    Stem `32 * w`, a depthwise-separable block to `16 * w`, the searched
    stages of `PROXYLESSNAS_STAGES`, then a 1x1 convolution to
    `max(1280, 1280 * w)` channels. At 160x160, 100 classes and w=0.35 it has
    34.56M MACs and 0.63M parameters.

    Args:
        input_shape: `(height, width, channels)`, sides at least 32.
            Defaults to `(160, 160, 3)`.
        classes: Number of classes. Defaults to `100`.
        width_mult: Width multiplier. Defaults to `0.35`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    _check_input_shape("ProxylessNAS", input_shape)
    inputs = keras.Input(input_shape, name="image")
    x = _stem(inputs, make_divisible(32 * width_mult), "relu6")
    x = _inverted_residual(x, make_divisible(16 * width_mult), 3, 1,
                           x.shape[-1], "relu6", name="block0", residual=False)
    x = _mbconv_stages(x, PROXYLESSNAS_STAGES, width_mult)
    head = max(1280, make_divisible(1280 * width_mult))
    outputs = _classifier(x, classes, feature_channels=head)
    return keras.Model(inputs, outputs, name=f"proxylessnas_w{width_mult:g}")


# MCUNet "mcunet-in3" (Lin et al., NeurIPS 2020), the ImageNet model that fits
# 320 KB of SRAM and 1 MB of Flash (`mcunet-320kb-1mb_imagenet.json` in the
# MCUNet model zoo): per block (out_channels, mid_channels, kernel, stride).
# The stem is a 3x3 convolution to 16 channels, then a depthwise-separable
# block to 8; the classifier reads the last block's 160 channels directly.
MCUNET_IN3_BLOCKS = (
    (16, 24, 7, 2),
    (16, 80, 3, 1),
    (16, 80, 7, 1),
    (16, 64, 5, 1),
    (24, 80, 5, 2),
    (24, 120, 5, 1),
    (24, 120, 5, 1),
    (40, 120, 3, 2),
    (40, 240, 7, 1),
    (40, 160, 5, 1),
    (48, 200, 5, 1),
    (48, 240, 7, 1),
    (48, 240, 3, 1),
    (96, 288, 3, 2),
    (96, 480, 7, 1),
    (96, 384, 3, 1),
    (160, 480, 7, 1),
)


def mcunet(input_shape=(160, 160, 3), classes=100):
    """Build MCUNet "mcunet-in3" (320 KB SRAM, 1 MB Flash, ImageNet).

    The configuration is the MCUNet model zoo's; blocks whose input and
    output shapes match have identity shortcuts. At 160x160 with 100 classes
    it has 65.72M MACs and 0.59M parameters.

    Args:
        input_shape: `(height, width, channels)`, sides at least 32.
            Defaults to `(160, 160, 3)`.
        classes: Number of classes. Defaults to `100`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    _check_input_shape("MCUNet", input_shape)
    inputs = keras.Input(input_shape, name="image")
    x = _stem(inputs, 16, "relu6")
    x = _inverted_residual(x, 8, 3, 1, x.shape[-1], "relu6", name="block0",
                           residual=False)
    for index, (out_channels, mid, kernel, stride) in enumerate(
        MCUNET_IN3_BLOCKS, start=1
    ):
        x = _inverted_residual(x, out_channels, kernel, stride, mid, "relu6",
                               name=f"block{index}")
    outputs = _classifier(x, classes)
    return keras.Model(inputs, outputs, name="mcunet_in3")


# MobileNetV3-Large (Howard et al., ICCV 2019) as NetAug writes it, at width
# 1.0: per stage (out_channels, mid_channels per block, kernel, first stride,
# activation, squeeze-and-excitation).
MOBILENET_V3_STAGES = (
    (24, (64, 72), 3, 2, "relu", False),
    (40, (72, 120, 120), 5, 2, "relu", True),
    (80, (240, 200, 184, 184), 3, 2, "hard_swish", False),
    (112, (480, 672), 3, 1, "hard_swish", True),
    (160, (672, 960, 960), 5, 2, "hard_swish", True),
)


def mobilenet_v3(input_shape=(160, 160, 3), classes=100, width_mult=0.35):
    """Build MobileNetV3-Large at width `width_mult` (default 0.35).

    NetAug's definition starts with a stem of `16 * w` channels with
    hard-swish and a depthwise-separable block with a shortcut. The stages
    of `MOBILENET_V3_STAGES` follow, with middle widths
    `make_divisible(round(mid * w))` and squeeze-and-excitation to
    `max(16, make_divisible(mid / 4))` channels. The head is a 1x1
    convolution to `960 * w`, global pooling, a 1x1 convolution with bias to
    1280 channels and the classifier. The gates are built from layers only (a Multiply
    layer and the `hard_sigmoid` activation), so `augment()` can walk the
    graph. At 160x160 with 100 classes it has 18.35M MACs and 0.96M
    parameters.

    Args:
        input_shape: `(height, width, channels)`, sides at least 32.
            Defaults to `(160, 160, 3)`.
        classes: Number of classes. Defaults to `100`.
        width_mult: Width multiplier. Defaults to `0.35`.

    Returns:
        A functional `keras.Model` returning logits.
    """
    _check_input_shape("MobileNetV3", input_shape)
    inputs = keras.Input(input_shape, name="image")
    stem = make_divisible(16 * width_mult)
    x = _stem(inputs, stem, "hard_swish")
    x = _inverted_residual(x, stem, 3, 1, stem, "relu", name="block0",
                           residual=True)
    index = 0
    for out_channels, mids, kernel, strides, activation, use_se in (
        MOBILENET_V3_STAGES
    ):
        out_channels = make_divisible(out_channels * width_mult)
        for i, mid in enumerate(mids):
            index += 1
            in_channels = x.shape[-1]
            stride = strides if i == 0 else 1
            mid = make_divisible(round(mid * width_mult))
            se = max(16, make_divisible(mid / 4)) if use_se else None
            x = _inverted_residual(
                x, out_channels, kernel, stride, mid, activation,
                name=f"block{index}", se_channels=se,
                residual=stride == 1 and in_channels == out_channels and i > 0,
            )
    x = L.Conv2D(make_divisible(960 * width_mult), 1, use_bias=False,
                 name="head_conv")(x)
    x = _batch_norm(x, "head_bn")
    x = _activation(x, "hard_swish", "head_act")
    x = L.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    x = L.Conv2D(max(1280, make_divisible(1280 * width_mult)), 1,
                 name="feature_conv")(x)
    x = _activation(x, "hard_swish", "feature_act")
    x = L.Flatten(name="flatten")(x)
    outputs = L.Dense(classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"mobilenetv3_w{width_mult:g}")


MODELS = {
    "small-cnn": small_cnn,
    "mobilenetv2-w0.35": lambda input_shape, classes: mobilenet_v2(
        input_shape, classes, alpha=0.35
    ),
    "mobilenetv2-tiny": mobilenet_v2_tiny,
    "proxylessnas-w0.35": lambda input_shape, classes: proxylessnas(
        input_shape, classes, width_mult=0.35
    ),
    "mcunet-in3": mcunet,
    "mcunet": mcunet,  # alias: ShiftAddAug's name for mcunet-in3
    "mobilenetv3-w0.35": lambda input_shape, classes: mobilenet_v3(
        input_shape, classes, width_mult=0.35
    ),
}

# The backbones of ShiftAddAug's Table 3, in the paper's row order.
TABLE3_MODELS = (
    "mobilenetv2-w0.35",
    "mobilenetv3-w0.35",
    "mcunet-in3",
    "proxylessnas-w0.35",
    "mobilenetv2-tiny",
)


def build(name, input_shape, classes):
    """Build the zoo model `name` for `input_shape` and `classes`."""
    if name not in MODELS:
        raise ValueError(
            f"Unknown model {name!r}. Available models: {', '.join(MODELS)}."
        )
    return MODELS[name](input_shape=tuple(input_shape), classes=classes)
