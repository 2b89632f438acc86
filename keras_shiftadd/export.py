"""Export target models to LiteRT, and run Shift targets in integer arithmetic.

`to_litert` rebuilds a target model from layers whose TensorFlow graphs
convert to LiteRT builtin operators, and writes a `.tflite` file:

- Shift layers become the matching Keras layer with the power-of-two
  kernel, preceded by the layer's fixed-point rounding of its inputs
  (MUL, ROUND, MINIMUM, MAXIMUM) and followed by `_FoldingBarrier`, which
  keeps the kernel powers of two. The float LiteRT kernels still multiply
  by those powers of two. The file is for deployment on LiteRT and shows
  that the numbers survive, and `IntegerReference` is the evidence that the
  network needs no multiplication by a weight.
- Adder layers become padding, strided slices and a concatenation (the
  patches), then `-sum |patch - kernel|` with broadcasting in tiles of
  output channels (SUB, ABS, SUM, NEG).
- Ordinary layers are copied.

`IntegerReference` runs a Shift target in NumPy on integer fixed-point
activations with shifts, negations and additions in place of weight
multiplications, and writes the packed weight codes for other runtimes.
"""

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_shiftadd import graph, quantizers
from keras_shiftadd.layers import adder
from keras_shiftadd.layers.hybrid import (
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
)
from keras_shiftadd.layers.reshape import HybridFlatten, HybridReshape
from keras_shiftadd.layers.shift import (
    ShiftConv2D,
    ShiftDense,
    ShiftDepthwiseConv2D,
)

logger = logging.getLogger(__name__)

SHIFT_LAYERS = (ShiftConv2D, ShiftDepthwiseConv2D, ShiftDense)
ADD_LAYERS = (adder.AddConv2D, adder.AddDense)
# Ordinary weighted layers. Shift layers subclass them, so classify a layer
# with `layer_kind`, which checks the Shift classes first.
MULT_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)
HYBRID_LAYERS = (
    HybridConv2D,
    HybridDepthwiseConv2D,
    HybridDense,
    HybridBatchNormalization,
    HybridFlatten,
    HybridReshape,
)
# Layers copied unchanged into the export graph.
COPIED_LAYERS = (
    graph.PASS_THROUGH
    + graph.MERGES
    + graph.RESHAPES
    + MULT_LAYERS
    + (keras.layers.BatchNormalization,)
)

# An adder layer's broadcast (positions, depth, channels) difference tensor
# is built in tiles of output channels that hold at most this many floats per
# image, so the interpreter's scratch memory stays bounded (4 MiB in float32).
TILE_FLOATS = 2**20

_SHIFT_KEYS = ("weight_bits", "activation_bits", "activation_fraction_bits")


def layer_kind(layer):
    """Return `"shift"`, `"add"`, `"mult"` or `"other"` for a target layer."""
    if isinstance(layer, SHIFT_LAYERS):
        return "shift"
    if isinstance(layer, ADD_LAYERS):
        return "add"
    if isinstance(layer, MULT_LAYERS):
        return "mult"
    return "other"


def target_of(model):
    """Return the target model to export from a target or augmented model.

    A `ShiftAddAugModel` gives its `target_model()`. A functional model of
    hybrid layers (the augmented network itself) is rejected, because its
    augmentation channels multiply.
    """
    from keras_shiftadd.model import ShiftAddAugModel

    if isinstance(model, ShiftAddAugModel):
        return model.target_model()
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a keras.Model or a ShiftAddAugModel. "
            f"Received: {type(model).__name__}"
        )
    hybrid = [layer.name for layer in model.layers if isinstance(layer, HYBRID_LAYERS)]
    if hybrid:
        raise ValueError(
            f"Model '{model.name}' contains hybrid layers ({', '.join(hybrid)}), "
            "so it is an augmented network, not a target. Pass the "
            "ShiftAddAugModel or its target_model() instead."
        )
    return model


def multiplying_layers(model):
    """Return the names of the layers that multiply activations by weights.

    These are the ordinary convolutions and dense layers. BatchNormalization
    is not listed: it stays a per-channel scale and offset in every export,
    see `IntegerReference.operation_counts`.
    """
    return [layer.name for layer in model.layers if layer_kind(layer) == "mult"]


def check_supported(model):
    """Raise ValueError if `model` has a layer that the export cannot rebuild."""
    steps, _ = graph.walk(model)
    for step in steps:
        layer = step.layer
        if step.is_input or layer_kind(layer) != "other":
            continue
        if isinstance(layer, COPIED_LAYERS):
            continue
        supported = sorted(
            {cls.__name__ for cls in SHIFT_LAYERS + ADD_LAYERS + COPIED_LAYERS}
        )
        raise ValueError(
            f"Cannot export layer '{layer.name}' ({type(layer).__name__}) of "
            f"model '{model.name}'. Supported layers: {', '.join(supported)}. "
            "Replace the layer or remove it before exporting."
        )


# ---------------------------------------------------------------------------
# Export layers: builtin-only formulations


class _FixedPointRounding(keras.layers.Layer):
    """Round to signed fixed point, as a Shift layer does with its inputs."""

    def __init__(self, bits, fraction_bits, **kwargs):
        super().__init__(**kwargs)
        self.bits = bits
        self.fraction_bits = fraction_bits

    def call(self, inputs):
        return quantizers.fixed_point(inputs, self.bits, self.fraction_bits)


class _FoldingBarrier(keras.layers.Layer):
    """Identity that keeps the converter from folding into the previous layer.

    The LiteRT converter folds a constant per-channel multiplication that
    follows a convolution or dense layer (an inference BatchNormalization)
    into that layer's kernel, which would turn power-of-two weights into
    arbitrary floats. `maximum(x, lowest float32)` returns `x` for every
    input except NaN, and the converter does not fold through it.
    """

    def call(self, inputs):
        return ops.maximum(inputs, np.finfo(np.float32).min)


def _output_length(length, kernel_length, stride, padding):
    if padding == "same":
        return (length + stride - 1) // stride
    return (length - kernel_length) // stride + 1


def _window_patches(inputs, kernel_size, strides, padding):
    """Return the (B, H', W', kh*kw*C) patches, depth index (u*kw + v)*C + c.

    Padding follows `keras.layers.Conv2D`: "same" pads `total // 2` before
    and the rest after. Only PAD, STRIDED_SLICE and CONCATENATION are used,
    so the copy is exact and needs no multiplication.
    """
    kernel_height, kernel_width = kernel_size
    stride_height, stride_width = strides
    if tuple(kernel_size) == (1, 1):
        # A 1x1 window needs no padding in either mode.
        if tuple(strides) == (1, 1):
            return inputs
        return inputs[:, ::stride_height, ::stride_width, :]
    height, width = inputs.shape[1], inputs.shape[2]
    output_height = _output_length(height, kernel_height, stride_height, padding)
    output_width = _output_length(width, kernel_width, stride_width, padding)
    pad_height = pad_width = 0
    if padding == "same":
        pad_height = max((output_height - 1) * stride_height + kernel_height - height, 0)
        pad_width = max((output_width - 1) * stride_width + kernel_width - width, 0)
    if pad_height or pad_width:
        inputs = ops.pad(
            inputs,
            [
                [0, 0],
                [pad_height // 2, pad_height - pad_height // 2],
                [pad_width // 2, pad_width - pad_width // 2],
                [0, 0],
            ],
        )
    taps = []
    for u in range(kernel_height):
        for v in range(kernel_width):
            row_end = u + (output_height - 1) * stride_height + 1
            column_end = v + (output_width - 1) * stride_width + 1
            taps.append(
                inputs[:, u:row_end:stride_height, v:column_end:stride_width, :]
            )
    if len(taps) == 1:
        return taps[0]
    return ops.concatenate(taps, axis=-1)


def _negative_l1_tiles(rows, kernel_matrix, positions):
    """Compute `-sum_d |rows[n, d] - kernel[d, f]|` in tiles of channels.

    `rows` is (N, D) and `kernel_matrix` a (D, F) NumPy array. `positions`
    is the number of rows per image, which sizes the tiles.
    """
    depth, filters = kernel_matrix.shape
    tile = max(1, TILE_FLOATS // max(1, positions * depth))
    columns = ops.expand_dims(rows, -1)
    outputs = []
    for start in range(0, filters, tile):
        kernel_tile = kernel_matrix[:, start:start + tile]
        difference = ops.subtract(columns, kernel_tile)
        outputs.append(ops.negative(ops.sum(ops.abs(difference), axis=1)))
    if len(outputs) == 1:
        return outputs[0]
    return ops.concatenate(outputs, axis=-1)


class _L1DistanceConv2D(keras.layers.Layer):
    """Forward pass of `AddConv2D` in LiteRT builtin operators.

    The kernel and bias are NumPy constants, so the converter embeds them.
    """

    def __init__(self, source, **kwargs):
        super().__init__(name=source.name, **kwargs)
        kernel = ops.convert_to_numpy(source.kernel).astype(np.float32)
        self.kernel_size = source.kernel_size
        self.strides = source.strides
        self.padding = source.padding
        self.filters = source.filters
        self.kernel_matrix = kernel.reshape(-1, kernel.shape[-1])
        self.bias_value = (
            None if source.bias is None else ops.convert_to_numpy(source.bias)
        )
        self.activation = source.activation

    def call(self, inputs):
        patches = _window_patches(
            inputs, self.kernel_size, self.strides, self.padding
        )
        _, height, width, depth = patches.shape
        rows = ops.reshape(patches, (-1, depth))
        distances = _negative_l1_tiles(rows, self.kernel_matrix, height * width)
        outputs = ops.reshape(distances, (-1, height, width, self.filters))
        if self.bias_value is not None:
            outputs = ops.add(outputs, self.bias_value)
        return self.activation(outputs)


class _L1DistanceDense(keras.layers.Layer):
    """Forward pass of `AddDense` in LiteRT builtin operators."""

    def __init__(self, source, **kwargs):
        super().__init__(name=source.name, **kwargs)
        self.kernel_matrix = ops.convert_to_numpy(source.kernel).astype(np.float32)
        self.bias_value = (
            None if source.bias is None else ops.convert_to_numpy(source.bias)
        )
        self.activation = source.activation

    def call(self, inputs):
        depth, units = self.kernel_matrix.shape
        leading = tuple(inputs.shape[1:-1])
        rows = ops.reshape(inputs, (-1, depth))
        positions = int(np.prod(leading)) if leading else 1
        distances = _negative_l1_tiles(rows, self.kernel_matrix, positions)
        outputs = ops.reshape(distances, (-1, *leading, units))
        if self.bias_value is not None:
            outputs = ops.add(outputs, self.bias_value)
        return self.activation(outputs)


def _power_of_two_kernel(layer):
    """Return the kernel that a Shift layer multiplies with, as NumPy."""
    return ops.convert_to_numpy(
        quantizers.power_of_two(layer.kernel.value, layer.weight_bits)
    )


def _export_shift(layer, inputs):
    """Rebuild a Shift layer as input rounding plus an ordinary layer."""
    config = layer.get_config()
    for key in _SHIFT_KEYS:
        config.pop(key)
    if isinstance(layer, ShiftDepthwiseConv2D):
        replacement = keras.layers.DepthwiseConv2D.from_config(config)
    elif isinstance(layer, ShiftConv2D):
        replacement = keras.layers.Conv2D.from_config(config)
    else:
        replacement = keras.layers.Dense.from_config(config)

    if layer.activation_bits is not None:
        inputs = _FixedPointRounding(
            layer.activation_bits,
            layer.activation_fraction_bits,
            name=f"{layer.name}_input_rounding",
        )(inputs)
    outputs = replacement(inputs)
    weights = [_power_of_two_kernel(layer)]
    if layer.use_bias:
        weights.append(ops.convert_to_numpy(layer.bias))
    replacement.set_weights(weights)
    return _FoldingBarrier(name=f"{layer.name}_folding_barrier")(outputs)


def _export_transform(step, args):
    layer = step.layer
    inputs = args[0] if len(args) == 1 else args
    kind = layer_kind(layer)
    if kind == "shift":
        return _export_shift(layer, inputs)
    if isinstance(layer, adder.AddConv2D):
        return _L1DistanceConv2D(layer)(inputs)
    if isinstance(layer, adder.AddDense):
        return _L1DistanceDense(layer)(inputs)
    copy = type(layer).from_config(layer.get_config())
    outputs = copy(inputs)
    copy.set_weights(layer.get_weights())
    return outputs


def build_export_model(model):
    """Rebuild a target model from layers that convert to builtin operators.

    The result computes the same function as `model` at inference (up to
    float summation order). It is for conversion only: training it would move
    the power-of-two kernels off their grid, and the adder kernels are
    constants.

    Raises:
        ValueError: `model` contains a layer the export cannot rebuild.
    """
    check_supported(model)
    return graph.rebuild(model, _export_transform, name=f"{model.name}_export")


# ---------------------------------------------------------------------------
# Conversion to LiteRT

# Operator types of the adder and Shift export formulations, plus the
# per-channel MUL and ADD of the BatchNormalization that follows an adder
# layer. `int8=True` keeps them in float32 so that only Mult layers are
# quantized.
_FLOAT_KEPT_OPERATORS = (
    "PAD", "STRIDED_SLICE", "CONCATENATION", "RESHAPE", "EXPAND_DIMS",
    "SUB", "ABS", "SUM", "NEG", "MUL", "ADD", "ROUND", "MINIMUM", "MAXIMUM",
)


def _check_int8(target, representative_images):
    """Raise ValueError unless int8 quantization can keep to Mult layers."""
    kinds = {layer_kind(layer) for layer in target.layers}
    if "mult" not in kinds:
        raise ValueError(
            f"Cannot quantize model '{target.name}' to int8: it has no "
            "Conv2D, DepthwiseConv2D or Dense layer, and int8 quantization "
            "applies to those Mult layers only. Export without int8."
        )
    if "shift" in kinds:
        raise ValueError(
            f"Cannot quantize model '{target.name}' to int8: it mixes Shift "
            "and Mult layers, which become the same LiteRT operators, so the "
            "Shift layers would be quantized too. Export without int8."
        )
    if representative_images is None or len(representative_images) == 0:
        raise ValueError(
            "int8 quantization needs representative images to calibrate "
            "activation ranges. Pass representative_images, for example a "
            "few hundred training images preprocessed as for training."
        )


def _convert(export_model, int8=False, representative_images=None,
             keep_float=()):
    """Convert `export_model` to a LiteRT flatbuffer with builtin ops only."""
    converter = tf.lite.TFLiteConverter.from_keras_model(export_model)
    # Builtin operators only, so that an operation without a builtin kernel
    # fails here instead of at `allocate_tensors` on the device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # The Keras SavedModel export prints its signature; keep it in the log.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        if not int8:
            content = converter.convert()
        else:
            images = np.asarray(representative_images, dtype=np.float32)

            def representative_dataset():
                for image in images:
                    yield [image[None]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(keep_float)
            )
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter,
                debug_dataset=representative_dataset,
                debug_options=options,
            )
            content = debugger.get_nondebug_quantized_model()
    logger.debug("LiteRT converter output:\n%s", printed.getvalue())
    return content


def _check_output_path(path):
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"Cannot write the LiteRT file {path}: it is a directory. Pass a "
            "file path such as model.tflite."
        )
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(
            f"Cannot write the LiteRT file {path}: the directory {parent} "
            "does not exist. Create it or choose another path."
        )
    if not os.access(parent, os.W_OK):
        raise ValueError(
            f"Cannot write the LiteRT file {path}: the directory {parent} is "
            "not writable. Choose a writable path."
        )
    return path


def _write_atomically(path, content):
    """Write `content` to a temporary file beside `path`, then rename it."""
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        # mkstemp creates the file readable by its owner only; give it the
        # permissions that open() would have given a new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def to_litert(model, path, int8=False, representative_images=None,
              multiplication_free=False):
    """Write the target of `model` as a LiteRT (.tflite) file of builtin ops.

    Args:
        model: A target model (Sequential or functional, of Shift, adder
            and ordinary layers) or a `ShiftAddAugModel`, whose
            `target_model()` is exported.
        path: Output file. It is written only when the conversion succeeds,
            so a failed export leaves any earlier file in place.
        int8: Quantize the Mult layers (Conv2D, DepthwiseConv2D, Dense and
            their BatchNormalization) to int8 by post-training
            quantization. Shift and adder layers stay float32. Inputs and
            outputs stay float32. Defaults to `False`.
        representative_images: Float images as the model takes them, used
            to calibrate the int8 activation ranges. Required with `int8`.
        multiplication_free: Raise ValueError if the target has a layer
            that multiplies activations by weights (the depthwise and dense
            layers of an Add target, or any layer of a Mult target).
            Defaults to `False`.

    Returns:
        The `pathlib.Path` of the written file.

    Raises:
        ValueError: the model has a layer the export does not support,
            `multiplication_free` is set and the target multiplies, `int8`
            cannot apply, or `path` cannot be written.
    """
    target = target_of(model)
    if multiplication_free:
        multiplying = multiplying_layers(target)
        if multiplying:
            raise ValueError(
                f"The target '{target.name}' is not multiplication-free: "
                f"layers {', '.join(multiplying)} multiply activations by "
                "weights (in Add targets the depthwise and dense layers stay "
                "multiplicative). Train with op='shift' for a "
                "multiplication-free target, or export without "
                "multiplication_free."
            )
    if int8:
        _check_int8(target, representative_images)
    path = _check_output_path(path)

    export_model = build_export_model(target)
    keep_float = ()
    if int8 and any(layer_kind(layer) == "add" for layer in target.layers):
        keep_float = _FLOAT_KEPT_OPERATORS
    content = _convert(export_model, int8, representative_images, keep_float)

    custom = [name for name in list_operators(content) if not _is_builtin(name)]
    if custom:
        raise ValueError(
            f"The LiteRT conversion of '{target.name}' produced non-builtin "
            f"operators {custom}; the file was not written."
        )
    _write_atomically(path, content)
    logger.debug("Wrote %s (%d bytes)", path, len(content))
    return path


# ---------------------------------------------------------------------------
# Inspecting and running LiteRT files


def _read_flatbuffer(model):
    from tensorflow.lite.tools import flatbuffer_utils

    if isinstance(model, (bytes, bytearray)):
        return flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    return flatbuffer_utils.read_model(str(model))


def _is_builtin(name):
    return not name.startswith("CUSTOM:")


def operator_counts(model):
    """Count the operators of a LiteRT model (a path or flatbuffer bytes).

    Builtin operators appear under their builtin name (`CONV_2D`), custom
    and Flex operators as `CUSTOM:<custom code>` (`CUSTOM:FlexConv2D`).

    Returns:
        A dict from operator name to its number of uses, over all subgraphs.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    flatbuffer = _read_flatbuffer(model)
    counts = {}
    for subgraph in flatbuffer.subgraphs:
        for operator in subgraph.operators:
            code = flatbuffer.operatorCodes[operator.opcodeIndex]
            name = flatbuffer_utils.opcode_to_name(flatbuffer, operator.opcodeIndex)
            if name == "CUSTOM":
                custom_code = code.customCode
                if isinstance(custom_code, bytes):
                    custom_code = custom_code.decode()
                name = f"CUSTOM:{custom_code}"
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def list_operators(model):
    """Return the sorted operator names of a LiteRT model, see `operator_counts`."""
    return list(operator_counts(model))


class LiteRTRunner:
    """Run a .tflite classifier with the LiteRT interpreter in batches.

    Args:
        path: The .tflite file.
        num_threads: Interpreter threads, or `None` for LiteRT's default.
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.interpreter = Interpreter(
            model_path=str(self.path), num_threads=num_threads
        )
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch_size = None

    def _resize(self, batch_size):
        if batch_size != self._batch_size:
            shape = [batch_size, *self._input["shape"][1:]]
            self.interpreter.resize_tensor_input(self._input["index"], shape)
            self.interpreter.allocate_tensors()
            self._batch_size = batch_size

    def predict(self, images, batch_size=64):
        """Return the model outputs for float32 `images` of the input shape."""
        images = np.asarray(images, dtype=np.float32)
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            self._resize(len(batch))
            self.interpreter.set_tensor(self._input["index"], batch)
            self.interpreter.invoke()
            outputs.append(np.array(self.interpreter.get_tensor(self._output["index"])))
        return np.concatenate(outputs)

    def median_latency_ms(self, image, runs=50, warmup=5):
        """Return the median time of one single-image invocation in ms."""
        image = np.asarray(image, dtype=np.float32)[None]
        self._resize(1)
        self.interpreter.set_tensor(self._input["index"], image)
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)


# ---------------------------------------------------------------------------
# Integer reference inference of Shift targets
#
# Activations are int64 arrays of fixed-point values, each with its number
# of fraction bits: the real value is `values * 2**-fraction_bits`. Shift
# layers round their input to the trained format (16 bits, 8 fraction bits by
# default) and accumulate `sign * (q << (shift + S))`, where S = 15 is the
# largest right shift of a 5-bit code, so every term and the sum are exact
# with `fraction_bits + S` fraction bits. BatchNormalization cannot be folded
# into power-of-two weights, so it runs after the accumulation as a
# per-channel integer multiplier and offset: the only multiplications of an
# activation, all by BatchNormalization constants and never by a weight.

# Fraction bits of the image after `quantize_input`: float32 has a 24-bit
# significand, so images in [0, 1] lose nothing the first Shift layer keeps.
INPUT_FRACTION_BITS = 24
# Fraction bits of BatchNormalization inputs and outputs. Fewer bits would
# move more activations across the next Shift layer's rounding boundaries
# than float32 itself does.
WIDE_FRACTION_BITS = 24
# Significant bits of a BatchNormalization multiplier. A product has at most
# 24 + 23 bits more than the real activation, so it fits in int64 for
# activations below 2**16.
# NOTE: nothing checks that bound, and a larger activation would overflow.
MULTIPLIER_BITS = 24
# Rows of the (rows, depth, channels) shift-term tensor per chunk.
_TERMS_PER_CHUNK = 2**22


@dataclasses.dataclass
class FixedPoint:
    """Integer activations: the real value is `values * 2**-fraction_bits`."""

    values: np.ndarray
    fraction_bits: int


def shift_right_rounded(values, bits):
    """Divide integers by `2**bits`, rounding half to even, with shifts only.

    Half-to-even matches `keras.ops.round` and the LiteRT ROUND operator,
    which the Shift layers use for their fixed-point rounding.
    """
    if bits <= 0:
        return np.left_shift(values, -bits)
    floor = np.right_shift(values, bits)
    remainder = np.bitwise_and(values, (1 << bits) - 1)
    half = 1 << (bits - 1)
    odd = np.bitwise_and(floor, 1) == 1
    round_up = (remainder > half) | ((remainder == half) & odd)
    return floor + round_up.astype(np.int64)


def rescale(tensor, fraction_bits):
    """Return `tensor` with `fraction_bits` fraction bits (rounded half to even)."""
    if fraction_bits == tensor.fraction_bits:
        return tensor
    values = shift_right_rounded(tensor.values, tensor.fraction_bits - fraction_bits)
    return FixedPoint(values, fraction_bits)


def saturate(values, bits):
    """Clip integers to the two's-complement range of `bits` bits."""
    return np.clip(values, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def channel_affine(values, multiplier, offset, shift):
    """Compute `((values * multiplier) >> shift) + offset` per channel.

    `multiplier` and `offset` are int64 per-channel constants broadcast over
    the last axis. Apart from `activation_product`, this is the only place
    where the integer reference multiplies an activation: by a
    BatchNormalization constant, an average-pooling divisor or the 1/6 of
    the hard sigmoid, never by a weight.
    """
    return shift_right_rounded(values * multiplier, shift) + offset


def activation_product(left, right):
    """Multiply two activations element-wise (hard-swish, squeeze-excite).

    MobileNetV3 multiplies activations by gates computed from activations.
    Neither operand is a weight, and `operation_counts` reports these
    products as `activation_multiplication`.
    """
    return FixedPoint(
        left.values * right.values, left.fraction_bits + right.fraction_bits
    )


def shift_accumulate(rows, sign, shift, offset_bits):
    """Compute `sum_d sign[d, f] * (rows[n, d] << (shift[d, f] + offset_bits))`.

    `rows` is an (N, D) int64 array, `sign` (+1 or -1) and `shift` (<= 0)
    are (D, F) weight codes. Only left shifts, negations and additions touch
    the activations. Returns (N, F) int64.
    """
    amounts = (shift.astype(np.int64) + offset_bits)[None]
    negative = (sign < 0)[None]
    depth, filters = sign.shape
    chunk = max(1, _TERMS_PER_CHUNK // max(1, depth * filters))
    outputs = []
    for start in range(0, len(rows), chunk):
        terms = np.left_shift(rows[start:start + chunk, :, None], amounts)
        terms = np.where(negative, -terms, terms)
        outputs.append(terms.sum(axis=1))
    if not outputs:
        return np.zeros((0, filters), np.int64)
    return np.concatenate(outputs)


def _integer_patches(values, kernel_size, strides, padding):
    """Integer counterpart of `_window_patches`: (B, H', W', T, C) taps."""
    kernel_height, kernel_width = kernel_size
    stride_height, stride_width = strides
    height, width = values.shape[1], values.shape[2]
    output_height = _output_length(height, kernel_height, stride_height, padding)
    output_width = _output_length(width, kernel_width, stride_width, padding)
    if padding == "same":
        pad_height = max((output_height - 1) * stride_height + kernel_height - height, 0)
        pad_width = max((output_width - 1) * stride_width + kernel_width - width, 0)
        values = np.pad(
            values,
            [
                (0, 0),
                (pad_height // 2, pad_height - pad_height // 2),
                (pad_width // 2, pad_width - pad_width // 2),
                (0, 0),
            ],
        )
    taps = []
    for u in range(kernel_height):
        for v in range(kernel_width):
            row_end = u + (output_height - 1) * stride_height + 1
            column_end = v + (output_width - 1) * stride_width + 1
            taps.append(values[:, u:row_end:stride_height, v:column_end:stride_width, :])
    return np.stack(taps, axis=3)


# Keras names of the activations that the integer reference runs.
INTEGER_ACTIVATIONS = ("linear", "relu", "relu6", "hard_sigmoid", "hard_silu")
# Fraction bits of the hard sigmoid's 1/6 multiplier: 1/6 is about 2**-2.6,
# so the multiplier has MULTIPLIER_BITS significant bits.
_SIXTH_FRACTION_BITS = MULTIPLIER_BITS + 2


def _activation_name(activation, layer_name):
    name = getattr(activation, "__name__", str(activation))
    if name not in INTEGER_ACTIVATIONS:
        raise ValueError(
            f"The integer reference does not support activation {name!r} of "
            f"layer '{layer_name}'. Supported: {', '.join(INTEGER_ACTIVATIONS)}."
        )
    return name


def _hard_sigmoid(tensor):
    """Compute `relu6(x + 3) / 6` as Keras does, by a clip and a 1/6 scale."""
    bits = tensor.fraction_bits
    clipped = np.clip(tensor.values + (3 << bits), 0, 6 << bits)
    sixth = np.int64(round(2.0**_SIXTH_FRACTION_BITS / 6))
    return FixedPoint(
        channel_affine(clipped, sixth, np.int64(0), _SIXTH_FRACTION_BITS), bits
    )


def _apply_activation(tensor, activation, layer_name):
    """Apply an activation of `INTEGER_ACTIVATIONS` to fixed-point values."""
    name = _activation_name(activation, layer_name)
    bits = tensor.fraction_bits
    if name == "relu":
        return FixedPoint(np.maximum(tensor.values, 0), bits)
    if name == "relu6":
        return FixedPoint(np.clip(tensor.values, 0, 6 << bits), bits)
    if name == "hard_sigmoid":
        return _hard_sigmoid(tensor)
    if name == "hard_silu":
        return rescale(activation_product(tensor, _hard_sigmoid(tensor)), bits)
    return tensor


def _activation_counts(activation, elements):
    """Count the scales and products of one activation over `elements`."""
    name = getattr(activation, "__name__", str(activation))
    if name == "hard_sigmoid":
        return {"activation_scale": elements}
    if name == "hard_silu":
        return {"activation_scale": elements, "activation_multiplication": elements}
    return {}


def _unsupported_integer(layer, reason):
    return ValueError(
        f"The integer reference cannot run layer '{layer.name}' "
        f"({type(layer).__name__}): {reason}"
    )


class _ShiftStep:
    """A Shift layer: input rounding, shift-and-add accumulation, bias."""

    def __init__(self, layer):
        if layer.activation_bits is None:
            raise _unsupported_integer(
                layer, "it keeps float inputs (activation_bits=None). Train "
                "with fixed-point activations to run it in integers."
            )
        if isinstance(layer, (ShiftConv2D, ShiftDepthwiseConv2D)):
            if tuple(layer.dilation_rate) != (1, 1):
                raise _unsupported_integer(layer, "dilation_rate must be 1.")
            if getattr(layer, "groups", 1) != 1:
                raise _unsupported_integer(layer, "groups must be 1.")
        self.layer = layer
        self.kernel_shape = tuple(layer.kernel.shape)
        self.sign, self.shift = quantizers.shift_codes(
            _power_of_two_kernel(layer), layer.weight_bits
        )
        min_shift, _ = quantizers.shift_range(layer.weight_bits)
        self.offset_bits = -min_shift
        self.input_bits = layer.activation_bits
        self.input_fraction_bits = layer.activation_fraction_bits
        self.output_fraction_bits = self.input_fraction_bits + self.offset_bits
        self.bias = None
        if layer.use_bias:
            bias = ops.convert_to_numpy(layer.bias).astype(np.float64)
            self.bias = np.round(np.ldexp(bias, self.output_fraction_bits)).astype(np.int64)
        _activation_name(layer.activation, layer.name)

    def run(self, inputs):
        (tensor,) = inputs
        rounded = rescale(tensor, self.input_fraction_bits)
        values = saturate(rounded.values, self.input_bits)
        layer = self.layer
        if isinstance(layer, ShiftDepthwiseConv2D):
            outputs = self._depthwise(values)
        elif isinstance(layer, ShiftConv2D):
            taps = _integer_patches(values, layer.kernel_size, layer.strides, layer.padding)
            batch, height, width, count, channels = taps.shape
            rows = taps.reshape(-1, count * channels)
            depth = count * channels
            accumulated = shift_accumulate(
                rows,
                self.sign.reshape(depth, -1),
                self.shift.reshape(depth, -1),
                self.offset_bits,
            )
            outputs = accumulated.reshape(batch, height, width, -1)
        else:
            leading = values.shape[:-1]
            accumulated = shift_accumulate(
                values.reshape(-1, values.shape[-1]), self.sign, self.shift,
                self.offset_bits,
            )
            outputs = accumulated.reshape(*leading, -1)
        if self.bias is not None:
            outputs = outputs + self.bias
        return _apply_activation(
            FixedPoint(outputs, self.output_fraction_bits), layer.activation, layer.name
        )

    def _depthwise(self, values):
        layer = self.layer
        taps = _integer_patches(values, layer.kernel_size, layer.strides, layer.padding)
        batch, height, width, count, channels = taps.shape
        multiplier = self.kernel_shape[-1]
        # (T, C, M) codes against (B, H', W', T, C, 1) taps, summed over T.
        amounts = self.shift.reshape(count, channels, multiplier).astype(np.int64)
        amounts = amounts + self.offset_bits
        negative = self.sign.reshape(count, channels, multiplier) < 0
        outputs = []
        for image in range(batch):
            terms = np.left_shift(taps[image, ..., None], amounts)
            terms = np.where(negative, -terms, terms)
            outputs.append(terms.sum(axis=2).reshape(height, width, channels * multiplier))
        return np.stack(outputs)

    def counts(self, output_shape):
        """Count the shift-and-add terms and negations of one image."""
        # Every output position uses every weight once, depthwise included.
        positions = int(np.prod(output_shape[1:-1])) if len(output_shape) > 2 else 1
        return {
            "shift_add": positions * self.sign.size,
            "negation": positions * int((self.sign < 0).sum()),
            **_activation_counts(self.layer.activation, int(np.prod(output_shape[1:]))),
        }

    def manifest(self):
        layer = self.layer
        entry = {
            "kind": {
                ShiftConv2D: "shift_conv2d",
                ShiftDepthwiseConv2D: "shift_depthwise_conv2d",
                ShiftDense: "shift_dense",
            }[type(layer)],
            "kernel_shape": list(self.kernel_shape),
            "weight_bits": layer.weight_bits,
            "input_bits": self.input_bits,
            "input_fraction_bits": self.input_fraction_bits,
            "output_fraction_bits": self.output_fraction_bits,
            "shift_offset_bits": self.offset_bits,
            "bias": None if self.bias is None else self.bias.tolist(),
            "activation": getattr(layer.activation, "__name__", "linear"),
        }
        if not isinstance(layer, ShiftDense):
            entry["strides"] = list(layer.strides)
            entry["padding"] = layer.padding
        return entry

    def codes(self):
        """Return the packed uint8 code of every weight, in kernel order."""
        return pack_codes(self.sign, self.shift, self.layer.weight_bits)


def pack_codes(sign, shift, weight_bits):
    """Pack weight signs and shifts into one uint8 code per weight.

    Bit `weight_bits - 1` is the sign (1 for negative) and the low
    `weight_bits - 1` bits hold `-shift`, so a 5-bit code `s mmmm` stands for
    `(-1)**s * 2**-m`.
    """
    sign_bit = (np.asarray(sign) < 0).astype(np.uint8)
    magnitude = (-np.asarray(shift)).astype(np.uint8)
    return np.left_shift(sign_bit, weight_bits - 1) | magnitude


def unpack_codes(codes, weight_bits):
    """Return the float weights `(-1)**s * 2**-m` of packed uint8 codes."""
    codes = np.asarray(codes, dtype=np.uint8)
    negative = np.right_shift(codes, weight_bits - 1) & 1
    magnitude = codes & ((1 << (weight_bits - 1)) - 1)
    return np.where(negative == 1, -1.0, 1.0) * np.power(2.0, -magnitude.astype(np.float64))


class _BatchNormStep:
    """Inference BatchNormalization as an integer per-channel scale and offset."""

    def __init__(self, layer):
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            raise _unsupported_integer(layer, "only the last axis is supported.")
        channels = layer.moving_mean.shape[0]
        gamma = (
            ops.convert_to_numpy(layer.gamma).astype(np.float64)
            if layer.scale else np.ones(channels)
        )
        beta = (
            ops.convert_to_numpy(layer.beta).astype(np.float64)
            if layer.center else np.zeros(channels)
        )
        mean = ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
        variance = ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
        scale = gamma / np.sqrt(variance + layer.epsilon)
        offset = beta - mean * scale
        largest = max(float(np.max(np.abs(scale))), 2.0**-60)
        self.multiplier_fraction_bits = MULTIPLIER_BITS - 1 - math.ceil(math.log2(largest))
        self.multiplier = np.round(np.ldexp(scale, self.multiplier_fraction_bits)).astype(np.int64)
        self.offset = np.round(np.ldexp(offset, WIDE_FRACTION_BITS)).astype(np.int64)
        self.layer = layer

    def run(self, inputs):
        (tensor,) = inputs
        wide = rescale(tensor, WIDE_FRACTION_BITS)
        values = channel_affine(
            wide.values, self.multiplier, self.offset, self.multiplier_fraction_bits
        )
        return FixedPoint(values, WIDE_FRACTION_BITS)

    def counts(self, output_shape):
        elements = int(np.prod(output_shape[1:]))
        return {"batch_norm_scale": elements, "batch_norm_offset": elements}

    def manifest(self):
        return {
            "kind": "batch_normalization",
            "input_fraction_bits": WIDE_FRACTION_BITS,
            "multiplier": self.multiplier.tolist(),
            "multiplier_fraction_bits": self.multiplier_fraction_bits,
            "offset": self.offset.tolist(),
            "output_fraction_bits": WIDE_FRACTION_BITS,
        }


class _ElementwiseStep:
    """Activations, merges, padding, reshapes and inference no-ops."""

    IDENTITY = (
        keras.layers.Dropout,
        keras.layers.SpatialDropout2D,
        keras.layers.GaussianNoise,
        keras.layers.GaussianDropout,
        keras.layers.Identity,
    )
    MERGES = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
              keras.layers.Maximum, keras.layers.Minimum)

    def __init__(self, layer):
        self.layer = layer
        if isinstance(layer, keras.layers.ReLU):
            if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
                raise _unsupported_integer(
                    layer, "only negative_slope=0 and threshold=0 are supported."
                )
            self.kind = "relu" if layer.max_value is None else "relu_max"
        elif isinstance(layer, keras.layers.Activation):
            _activation_name(layer.activation, layer.name)
            self.kind = "activation"
        elif isinstance(layer, self.IDENTITY):
            self.kind = "identity"
        elif isinstance(layer, self.MERGES):
            self.kind = "merge"
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            self.kind = "zero_padding"
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            self.kind = "global_average_pooling"
        elif isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
            self.kind = "reshape"
        else:
            raise _unsupported_integer(
                layer, "supported layers are Shift layers, BatchNormalization, "
                "ReLU, Activation (linear, relu, relu6, hard_sigmoid, "
                "hard_swish), Add, Subtract, Multiply, Maximum, Minimum, "
                "ZeroPadding2D, GlobalAveragePooling2D, Flatten, Reshape and "
                "inference no-ops such as Dropout."
            )

    def run(self, inputs):
        layer = self.layer
        if self.kind == "merge":
            return self._merge(inputs)
        (tensor,) = inputs
        values, bits = tensor.values, tensor.fraction_bits
        if self.kind == "relu":
            return FixedPoint(np.maximum(values, 0), bits)
        if self.kind == "relu_max":
            limit = np.int64(round(float(layer.max_value) * 2.0**bits))
            return FixedPoint(np.clip(values, 0, limit), bits)
        if self.kind == "activation":
            return _apply_activation(tensor, layer.activation, layer.name)
        if self.kind == "zero_padding":
            (top, bottom), (left, right) = layer.padding
            padded = np.pad(values, [(0, 0), (top, bottom), (left, right), (0, 0)])
            return FixedPoint(padded, bits)
        if self.kind == "global_average_pooling":
            return self._average(tensor)
        if self.kind == "reshape":
            shape = tuple(layer.output.shape[1:])
            return FixedPoint(values.reshape((len(values),) + shape), bits)
        return tensor

    def _merge(self, inputs):
        bits = max(tensor.fraction_bits for tensor in inputs)
        aligned = [rescale(tensor, bits).values for tensor in inputs]
        if isinstance(self.layer, keras.layers.Add):
            values = aligned[0]
            for other in aligned[1:]:
                values = values + other
        elif isinstance(self.layer, keras.layers.Subtract):
            values = aligned[0] - aligned[1]
        elif isinstance(self.layer, keras.layers.Multiply):
            product = FixedPoint(aligned[0], bits)
            for other in aligned[1:]:
                product = rescale(activation_product(product, FixedPoint(other, bits)), bits)
            return product
        elif isinstance(self.layer, keras.layers.Maximum):
            values = np.maximum.reduce(aligned)
        else:
            values = np.minimum.reduce(aligned)
        return FixedPoint(values, bits)

    def _average(self, tensor):
        """Average over height and width by a sum and a change of scale."""
        layer = self.layer
        count = tensor.values.shape[1] * tensor.values.shape[2]
        total = tensor.values.sum(axis=(1, 2), keepdims=layer.keepdims)
        if count & (count - 1) == 0:
            # Dividing by a power of two only moves the binary point.
            return FixedPoint(total, tensor.fraction_bits + count.bit_length() - 1)
        fraction = MULTIPLIER_BITS - 1 + math.ceil(math.log2(count))
        multiplier = np.int64(round(2.0**fraction / count))
        values = channel_affine(total, multiplier, np.int64(0), fraction)
        return FixedPoint(values, tensor.fraction_bits)

    def counts(self, output_shape):
        elements = int(np.prod(output_shape[1:]))
        if self.kind == "activation":
            return _activation_counts(self.layer.activation, elements)
        if self.kind == "merge" and isinstance(self.layer, keras.layers.Multiply):
            return {"activation_multiplication": elements * (len(self.layer.input) - 1)}
        if self.kind != "global_average_pooling":
            return {}
        count = int(np.prod(self.layer.input.shape[1:3]))
        if count & (count - 1) == 0:
            return {}
        return {"pooling_scale": int(output_shape[-1])}

    def manifest(self):
        entry = {"kind": self.kind}
        layer = self.layer
        if self.kind == "merge":
            entry["operation"] = type(layer).__name__.lower()
        elif self.kind == "relu_max":
            entry["max_value"] = float(layer.max_value)
        elif self.kind == "activation":
            entry["activation"] = getattr(layer.activation, "__name__", "linear")
        elif self.kind == "zero_padding":
            entry["padding"] = [list(pair) for pair in layer.padding]
        elif self.kind == "reshape":
            entry["shape"] = list(layer.output.shape[1:])
        return entry


class IntegerReference:
    """Run a Shift target in integer arithmetic with NumPy.

    Activations are fixed-point integers. Shift layers round their input to
    the trained format and accumulate shifted, possibly negated inputs, so
    no activation is ever multiplied by a weight. BatchNormalization runs
    after the accumulation as a per-channel integer multiplier and offset
    (`channel_affine`); `operation_counts` reports how many of those remain.

    Args:
        model: A Shift target (or a `ShiftAddAugModel` with `op="shift"`)
            of Shift layers, BatchNormalization, ReLU and the other layers
            listed by the error for an unsupported layer.

    Raises:
        ValueError: the model has a layer that multiplies (Conv2D, Dense,
            adder layers) or another unsupported layer.
    """

    def __init__(self, model):
        target = target_of(model)
        steps, functional = graph.walk(target)
        self.model = target
        self._input_ids = [id(tensor) for tensor in functional.inputs]
        self._output_ids = [id(tensor) for tensor in functional.outputs]
        self._plan = []
        for step in steps:
            if step.is_input:
                continue
            self._plan.append(
                (step, self._make_step(step.layer), [id(t) for t in step.inputs])
            )

    @staticmethod
    def _make_step(layer):
        kind = layer_kind(layer)
        if kind == "shift":
            return _ShiftStep(layer)
        if kind in ("mult", "add"):
            raise _unsupported_integer(
                layer, "only Shift targets run in integers. Conv2D, "
                "DepthwiseConv2D, Dense and adder layers are not Shift layers; "
                "export them without an integer reference (to_litert, or "
                "keras-shiftadd export without --integer-reference)."
            )
        if isinstance(layer, keras.layers.BatchNormalization):
            return _BatchNormStep(layer)
        return _ElementwiseStep(layer)

    def quantize_input(self, images):
        """Convert float images to fixed point with 24 fraction bits."""
        images = np.asarray(images, dtype=np.float64)
        return np.round(np.ldexp(images, INPUT_FRACTION_BITS)).astype(np.int64)

    def predict_integer(self, values):
        """Run the network on fixed-point inputs from `quantize_input`.

        Returns:
            The output `FixedPoint`.
        """
        tensors = {self._input_ids[0]: FixedPoint(values, INPUT_FRACTION_BITS)}
        for step, runner, input_ids in self._plan:
            tensors[id(step.output)] = runner.run([tensors[i] for i in input_ids])
        return tensors[self._output_ids[0]]

    def predict(self, images, batch_size=32):
        """Return the float outputs of the integer network for `images`."""
        outputs = []
        for start in range(0, len(images), batch_size):
            values = self.quantize_input(images[start:start + batch_size])
            result = self.predict_integer(values)
            outputs.append(np.ldexp(result.values.astype(np.float64), -result.fraction_bits))
        return np.concatenate(outputs)

    def operation_counts(self):
        """Count the arithmetic of one image, by kind.

        Returns:
            A dict with these keys:
            `shift_add`: shift-and-add terms of Shift layers, one per
            multiply-accumulate of the same layer with float weights.
            `negation`: terms with a negative weight.
            `batch_norm_scale`, `batch_norm_offset`: per-channel integer
            multiplications and additions of BatchNormalization. The
            ShiftAddAug paper's operation counts leave them out.
            `pooling_scale`: divisions by an average-pooling size that is
            not a power of two.
            `activation_scale`: the divisions by 6 of hard sigmoids.
            `activation_multiplication`: products of two activations
            (hard-swish, squeeze-excite gates).
            `weight_multiplications`: always 0.
        """
        counts = {
            "shift_add": 0,
            "negation": 0,
            "batch_norm_scale": 0,
            "batch_norm_offset": 0,
            "pooling_scale": 0,
            "activation_scale": 0,
            "activation_multiplication": 0,
            "weight_multiplications": 0,
        }
        for step, runner, _ in self._plan:
            for key, value in runner.counts(tuple(step.output.shape)).items():
                counts[key] += value
        return counts

    def save_codes(self, directory):
        """Write the packed weight codes and the integer parameters.

        `weights.bin` contains the uint8 codes of every Shift layer in graph
        order (see `pack_codes`). Each kernel is flattened in Keras order:
        `(kh, kw, in, out)` for convolutions, `(kh, kw, channels,
        multiplier)` for depthwise and `(in, out)` for dense layers.
        `manifest.json` lists every layer in graph order with its inputs,
        the offset and count of its codes, integer biases,
        BatchNormalization multipliers and offsets, and fixed-point formats.

        Returns:
            The `pathlib.Path` of the directory.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = {tensor_id: "input" for tensor_id in self._input_ids}
        layers = []
        codes = []
        offset = 0
        for step, runner, input_ids in self._plan:
            names[id(step.output)] = step.layer.name
            entry = {
                "name": step.layer.name,
                "inputs": [names[i] for i in input_ids],
                **runner.manifest(),
            }
            if isinstance(runner, _ShiftStep):
                layer_codes = runner.codes().reshape(-1)
                entry["codes_offset"] = offset
                entry["codes_count"] = int(layer_codes.size)
                offset += layer_codes.size
                codes.append(layer_codes)
            layers.append(entry)
        manifest = {
            "format": "keras-shiftadd integer reference",
            "version": 1,
            "model": self.model.name,
            "input_shape": list(self.model.input_shape[1:]),
            "input_fraction_bits": INPUT_FRACTION_BITS,
            "weights_file": "weights.bin",
            "code_layout": (
                "one uint8 per weight: bit (weight_bits - 1) is the sign "
                "(1 = negative), the low (weight_bits - 1) bits hold m, and "
                "the weight is (-1)**sign * 2**-m"
            ),
            "operation_counts": self.operation_counts(),
            "layers": layers,
        }
        all_codes = np.concatenate(codes) if codes else np.zeros(0, np.uint8)
        _write_atomically(directory / "weights.bin", all_codes.astype(np.uint8).tobytes())
        _write_atomically(
            directory / "manifest.json", json.dumps(manifest, indent=1).encode()
        )
        return directory


def integer_reference(model):
    """Return an `IntegerReference` of a Shift target or ShiftAddAugModel."""
    return IntegerReference(model)
