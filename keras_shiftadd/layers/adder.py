"""Adder layers: outputs are negative L1 distances instead of dot products.

An adder convolution (AdderNet: H. Chen et al., "AdderNet: Do We Really Need
Multiplications in Deep Learning?", CVPR 2020) computes

    Y[b, i, j, f] = -sum_{u, v, c} |X[b, i*s + u, j*s + v, c] - F[u, v, c, f]|

where the zero padding of "same" is part of X. Training uses AdderNet's
gradients in place of the true derivative:

    dY/dF = X - F                                  (full precision)
    dY/dX = HardTanh(F - X) = clip(F - X, -1, 1)

and adaptive gradient scaling multiplies each layer's weight gradient by
`eta * sqrt(numel(F)) / max(||dL/dF||_2, 1e-12)`.

The L1 core is a TensorFlow function with `tf.custom_gradient`, so these
layers run only on the TensorFlow backend. It has two implementations: the
native CPU kernels of `keras_shiftadd.kernels` (compiled on first use, for
float32 on the CPU), and a pure TensorFlow one that works on chunks of rows,
used where the native kernels do not build, for other dtypes and on GPUs.
The `KERAS_SHIFTADD_ADDER` environment variable or the `implementation`
argument of `adder_conv2d` and `adder_dense` chooses between them.

NOTE: a graph traced with the native kernels, such as a SavedModel from
`model.export()`, contains their custom operations. Call
`keras_shiftadd.kernels.load()` before `tf.saved_model.load`, or export with
`KERAS_SHIFTADD_ADDER=tensorflow` for a graph of standard operations.
(`keras_shiftadd.export.to_litert` writes its own builtin operations.)
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import activations, constraints, initializers, ops, regularizers

from keras_shiftadd import kernels

# The forward pass and the input gradient process the rows of the patch
# matrix in chunks whose (rows, depth, filters) difference tensor contains
# about this many floats (8 MiB in float32), so memory stays bounded for any
# batch size.
# NOTE: the value is a CPU measurement, not a tuned constant. In a
# forward+backward benchmark of a 3x3, 32->64 channel layer at batch 64
# (TensorFlow 2.21, 2 shared AMD EPYC vCPUs), 2**20 to 2**22 floats ran at
# about the same speed and 2**23 or 2**24 floats took about twice as long,
# probably because such chunks no longer fit in the cache.
CHUNK_FLOATS = 2**21

# Lower bound on the weight-gradient norm in adaptive gradient scaling, so
# that a zero gradient stays zero instead of becoming NaN.
_NORM_EPSILON = 1e-12


def default_chunk_size(depth, filters):
    """Return the rows per chunk for a (depth, filters) weight matrix.

    The chunk's (rows, depth, filters) difference tensor contains about
    `CHUNK_FLOATS` floats, and a chunk has at least one row.
    """
    return max(1, CHUNK_FLOATS // (depth * filters))


def _check_tensorflow_backend(caller):
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{caller} requires the TensorFlow backend because its gradient "
            "is a TensorFlow custom gradient, but the Keras backend is "
            f"'{backend}'. Set the environment variable "
            "KERAS_BACKEND=tensorflow before importing keras."
        )


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(value, name):
    if not _is_integer(value) or value < 1:
        raise ValueError(
            f"Invalid `{name}`: expected a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def _normalize_pair(value, name):
    """Return `value` (an int or a pair of ints) as a pair of positive ints."""
    if _is_integer(value):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        pair = None
    if pair is None or not all(_is_integer(v) and v >= 1 for v in pair):
        raise ValueError(
            f"Invalid `{name}`: expected a positive integer or a tuple of "
            f"2 positive integers. Received: {name}={value!r}"
        )
    return (int(pair[0]), int(pair[1]))


def _normalize_padding(padding):
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(
            "Invalid `padding`: expected 'valid' or 'same' (case-insensitive). "
            f"Received: padding={padding!r}"
        )
    return padding.lower()


def _check_eta(eta):
    if eta is None:
        return None
    valid_number = isinstance(eta, (int, float, np.number)) and not isinstance(
        eta, bool
    )
    if not valid_number or not math.isfinite(eta) or eta <= 0:
        raise ValueError(
            "Invalid `eta`: expected None (no adaptive gradient scaling) or "
            f"a finite number > 0. Received: eta={eta!r}"
        )
    return float(eta)


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    return _check_positive_int(chunk_size, "chunk_size")


def _map_row_chunks(chunk_fn, matrices, chunk_size, output_width):
    """Apply `chunk_fn` to row chunks of `matrices` and concatenate the results.

    `matrices` is a tuple of 2-D tensors with the same number of rows N.
    `chunk_fn` receives a tuple of (rows, width) chunks and returns a
    (rows, output_width) tensor. The N rows are split into equal chunks of at
    most `chunk_size` rows, zero-padding the last one, and the chunks run one
    after another (`parallel_iterations=1`) so that only one chunk's
    intermediates are alive at a time.
    """
    rows = tf.shape(matrices[0])[0]
    num_chunks = tf.maximum((rows + chunk_size - 1) // chunk_size, 1)
    # Spreading the rows evenly keeps the padding below one row per chunk,
    # which matters when N is much smaller than `chunk_size`.
    chunk_rows = tf.maximum((rows + num_chunks - 1) // num_chunks, 1)
    padded_rows = num_chunks * chunk_rows

    chunked = []
    for matrix in matrices:
        padded = tf.pad(matrix, [[0, padded_rows - rows], [0, 0]])
        chunked.append(
            tf.reshape(padded, [num_chunks, chunk_rows, matrix.shape[-1]])
        )

    outputs = tf.map_fn(
        chunk_fn,
        tuple(chunked),
        fn_output_signature=tf.TensorSpec(
            (None, output_width), matrices[0].dtype
        ),
        parallel_iterations=1,
    )
    outputs = tf.reshape(outputs, [padded_rows, output_width])
    return outputs[:rows]


def _scale_adaptive(weights_gradient, eta):
    """Rescale a weight gradient to norm `eta * sqrt(numel)` (AdderNet)."""
    numel = float(np.prod(weights_gradient.shape))
    norm = tf.maximum(tf.norm(weights_gradient), _NORM_EPSILON)
    return weights_gradient * (eta * math.sqrt(numel) / norm)


def _negative_l1_distance(patches, weights, eta, chunk_size):
    """Compute `-sum_d |patches[n, d] - weights[d, f]|` with AdderNet gradients.

    `patches` is (N, D) and `weights` is (D, F), and the result is (N, F).
    The forward pass and the input gradient run over chunks of at most
    `chunk_size` rows (default: `default_chunk_size(D, F)`), so the whole
    (N, D, F) difference tensor never exists at once.
    """
    depth, filters = weights.shape
    if depth is None or filters is None:
        raise ValueError(
            "Invalid `kernel`: its shape must be fully known when the layer "
            f"is traced. Received: kernel.shape={weights.shape}"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(depth, filters)

    @tf.custom_gradient
    def distance(patches, weights):
        def distance_chunk(chunk):
            (patch_chunk,) = chunk
            difference = patch_chunk[:, :, None] - weights[None, :, :]
            return -tf.reduce_sum(tf.abs(difference), axis=1)

        outputs = _map_row_chunks(distance_chunk, (patches,), chunk_size, filters)

        def gradient(upstream):
            def input_gradient_chunk(chunk):
                patch_chunk, upstream_chunk = chunk
                hardtanh = tf.clip_by_value(
                    weights[None, :, :] - patch_chunk[:, :, None], -1.0, 1.0
                )
                return tf.reduce_sum(hardtanh * upstream_chunk[:, None, :], axis=2)

            patches_gradient = _map_row_chunks(
                input_gradient_chunk, (patches, upstream), chunk_size, depth
            )

            # sum_n g[n, f] * (p[n, d] - w[d, f]) needs no broadcast tensor.
            # It sums over all N rows, so it is computed in float32 even
            # under mixed precision, where float16 could overflow.
            patches32 = tf.cast(patches, tf.float32)
            upstream32 = tf.cast(upstream, tf.float32)
            weights_gradient = tf.matmul(
                patches32, upstream32, transpose_a=True
            ) - tf.cast(weights, tf.float32) * tf.reduce_sum(upstream32, axis=0)
            if eta is not None:
                weights_gradient = _scale_adaptive(weights_gradient, eta)
            return patches_gradient, tf.cast(weights_gradient, weights.dtype)

        return outputs, gradient

    return distance(patches, weights)


def _check_implementation(implementation):
    if implementation is None:
        return kernels.implementation_setting()
    if implementation not in kernels.IMPLEMENTATIONS:
        raise ValueError(
            "Invalid `implementation`: expected None (the "
            "KERAS_SHIFTADD_ADDER setting) or one of "
            f"{kernels.IMPLEMENTATIONS}. Received: "
            f"implementation={implementation!r}"
        )
    return implementation


# Plain Python (file checks, a compiler run) that must not be converted by
# AutoGraph when the first call happens while a tf.function is traced.
@tf.autograph.experimental.do_not_convert
def _native_library(implementation, dtype):
    """Return the native kernel module for this call, or None for TensorFlow.

    `implementation` is checked by `_check_implementation`. The native
    kernels compute in float32 on the CPU only.
    """
    if implementation == "tensorflow":
        return None
    on_cpu = not tf.config.list_logical_devices("GPU")
    # XLA cannot compile a custom operation, so jit-compiled functions
    # (`jit_compile=True`) take the TensorFlow implementation.
    in_xla = _in_xla_function()
    if dtype != tf.float32 or not on_cpu or in_xla:
        if implementation == "native":
            raise ValueError(
                "The native adder kernels need float32 inputs on a machine "
                "without a GPU, outside XLA-compiled functions. Pass "
                "implementation='auto' or 'tensorflow', or set "
                "KERAS_SHIFTADD_ADDER=auto. Received: "
                f"dtype={dtype.name}, GPUs visible: {not on_cpu}, inside "
                f"XLA: {in_xla}"
            )
        return None
    # With "native", raises NativeKernelError with the reason when the
    # kernels do not load.
    return kernels.load(required=implementation == "native")


def _in_xla_function():
    """Return True while tracing a function compiled with XLA."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # A private module; without it, assume no XLA.
        return False
    return control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def _native_adder_conv2d(library, inputs, kernel, strides, padding, eta):
    """Adder convolution with the native kernels and AdderNet gradients.

    The kernel gradient sum_n g * (p - w) is a backprop-filter convolution
    of the inputs with the upstream gradient minus `kernel` times the summed
    upstream gradient, so it runs on TensorFlow's optimized convolution.
    """
    attributes = {"strides": list(strides), "padding": padding.upper()}

    @tf.custom_gradient
    def distance(inputs, kernel):
        outputs = library.keras_shiftadd_adder_conv2d(inputs, kernel, **attributes)

        def gradient(upstream):
            inputs_gradient = library.keras_shiftadd_adder_conv2d_input_grad(
                inputs, kernel, upstream, **attributes
            )
            products = tf.raw_ops.Conv2DBackpropFilter(
                input=inputs,
                filter_sizes=tf.shape(kernel),
                out_backprop=upstream,
                strides=[1, strides[0], strides[1], 1],
                padding=padding.upper(),
            )
            kernel_gradient = products - kernel * tf.reduce_sum(
                upstream, axis=[0, 1, 2]
            )
            if eta is not None:
                kernel_gradient = _scale_adaptive(kernel_gradient, eta)
            return inputs_gradient, kernel_gradient

        return outputs, gradient

    return distance(inputs, kernel)


def _conv_output_length(length, kernel_length, stride, padding):
    """Return the output length of `keras.layers.Conv2D` (int, tensor or None)."""
    if length is None:
        return None
    if padding == "same":
        return (length + stride - 1) // stride
    return (length - kernel_length) // stride + 1


def _one_hot_patch_kernel(kernel_height, kernel_width, channels, dtype):
    """Return the (kh, kw, C, kh*kw) depthwise kernel that extracts patches.

    Depthwise output channel `c * kh * kw + u * kw + v` copies input channel
    `c` at kernel offset (u, v).
    """
    taps = kernel_height * kernel_width
    one_hot = np.eye(taps).reshape(kernel_height, kernel_width, 1, taps)
    one_hot = np.tile(one_hot, (1, 1, channels, 1))
    return tf.constant(one_hot, dtype=dtype)


def _extract_patches(inputs, kernel_size, strides, padding):
    """Return the (B, H', W', C*kh*kw) patches of `inputs`.

    Padding and output size follow `keras.layers.Conv2D`. The depth index is
    `c * kh * kw + u * kw + v`, which `_kernel_matrix` matches.
    """
    kernel_height, kernel_width = kernel_size
    if kernel_size == (1, 1):
        # A 1x1 window needs no padding for either mode, so the patches
        # are the strided input itself.
        return inputs[:, :: strides[0], :: strides[1], :]

    one_hot = _one_hot_patch_kernel(
        kernel_height, kernel_width, inputs.shape[-1], inputs.dtype
    )
    # NOTE: the copy is exact for finite inputs only. An inf input makes
    # inf * 0 = NaN in the other channels of its window.
    return ops.depthwise_conv(inputs, one_hot, strides=strides, padding=padding)


def _kernel_matrix(kernel):
    """Reshape a (kh, kw, C, F) kernel to the (C*kh*kw, F) patch layout."""
    kernel_height, kernel_width, channels, filters = kernel.shape
    kernel = tf.transpose(kernel, [2, 0, 1, 3])
    return tf.reshape(kernel, [channels * kernel_height * kernel_width, filters])


def _tensorflow_adder_conv2d(inputs, kernel, strides, padding, eta, chunk_size):
    """Adder convolution as patch extraction plus the chunked L1 distance."""
    kernel_height, kernel_width, channels, filters = kernel.shape
    patches = _extract_patches(
        inputs, (kernel_height, kernel_width), strides, padding
    )

    distances = _negative_l1_distance(
        tf.reshape(patches, [-1, kernel_height * kernel_width * channels]),
        _kernel_matrix(kernel),
        eta,
        chunk_size,
    )

    # The output size comes from the input shape, not from the patches,
    # because TensorFlow's depthwise convolution returns an empty batch
    # unchanged instead of with the output height and width.
    input_shape = tf.shape(inputs)
    output_height = _conv_output_length(
        input_shape[1], kernel_height, strides[0], padding
    )
    output_width = _conv_output_length(
        input_shape[2], kernel_width, strides[1], padding
    )
    outputs = tf.reshape(
        distances, [input_shape[0], output_height, output_width, filters]
    )
    return outputs


def adder_conv2d(
    inputs, kernel, strides=1, padding="valid", eta=0.2, chunk_size=None,
    implementation=None,
):
    """Compute the adder convolution of `inputs` with `kernel`.

    Args:
        inputs: (B, H, W, C) float tensor.
        kernel: (kh, kw, C, F) tensor with a fully known shape. A variable or
            any tensor derived from one, such as a slice, receives a gradient.
        strides: int or pair of ints.
        padding: "valid" or "same", as in `keras.layers.Conv2D`.
        eta: adaptive gradient scaling factor, or None to disable it.
        chunk_size: maximum patch rows per chunk of the TensorFlow
            implementation, or None for `default_chunk_size(kh * kw * C, F)`.
        implementation: `"auto"` (the native kernels for float32 on the
            CPU where they build, else TensorFlow), `"native"` (raise if
            they cannot be used), `"tensorflow"`, or None for the
            `KERAS_SHIFTADD_ADDER` environment variable (default `"auto"`).

    Returns:
        (B, H', W', F) tensor of `-sum |patch - kernel|` over each window.
    """
    _check_tensorflow_backend("adder_conv2d")
    strides = _normalize_pair(strides, "strides")
    padding = _normalize_padding(padding)
    eta = _check_eta(eta)
    chunk_size = _check_chunk_size(chunk_size)
    implementation = _check_implementation(implementation)

    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.cast(tf.convert_to_tensor(kernel), inputs.dtype)
    if kernel.shape.rank != 4 or inputs.shape.rank != 4:
        raise ValueError(
            "Invalid shapes: expected inputs of rank 4 (B, H, W, C) and a "
            f"kernel of rank 4 (kh, kw, C, F). Received: "
            f"inputs.shape={inputs.shape}, kernel.shape={kernel.shape}"
        )
    if inputs.shape[-1] != kernel.shape[2]:
        raise ValueError(
            "Invalid `kernel`: its input channels (axis 2) must equal the "
            f"input channels. Received: inputs.shape={inputs.shape}, "
            f"kernel.shape={kernel.shape}"
        )

    kernel_height, kernel_width, channels, filters = kernel.shape
    if padding == "valid":
        for axis, size in ((1, kernel_height), (2, kernel_width)):
            length = inputs.shape[axis]
            if length is not None and length < size:
                raise ValueError(
                    "Invalid input shape: the input is smaller than the "
                    "kernel, so the 'valid' output would be empty. Expected "
                    f"height >= {kernel_height} and width >= {kernel_width}. "
                    f"Received: inputs.shape={inputs.shape}"
                )
    library = _native_library(implementation, inputs.dtype)
    if library is not None:
        outputs = _native_adder_conv2d(
            library, inputs, kernel, strides, padding, eta
        )
    else:
        outputs = _tensorflow_adder_conv2d(
            inputs, kernel, strides, padding, eta, chunk_size
        )
    outputs.set_shape(
        [
            inputs.shape[0],
            _conv_output_length(inputs.shape[1], kernel_height, strides[0], padding),
            _conv_output_length(inputs.shape[2], kernel_width, strides[1], padding),
            filters,
        ]
    )
    return outputs


def adder_dense(inputs, kernel, eta=0.2, chunk_size=None, implementation=None):
    """Compute `-sum_d |inputs[..., d] - kernel[d, f]|`.

    Args:
        inputs: (..., D) float tensor, usually (B, D).
        kernel: (D, F) tensor with a fully known shape. A variable or any
            tensor derived from one receives a gradient.
        eta: adaptive gradient scaling factor, or None to disable it.
        chunk_size: maximum rows per chunk of the TensorFlow
            implementation, or None for `default_chunk_size(D, F)`.
        implementation: as in `adder_conv2d`.

    Returns:
        (..., F) tensor.
    """
    _check_tensorflow_backend("adder_dense")
    eta = _check_eta(eta)
    chunk_size = _check_chunk_size(chunk_size)
    implementation = _check_implementation(implementation)

    inputs = tf.convert_to_tensor(inputs)
    kernel = tf.cast(tf.convert_to_tensor(kernel), inputs.dtype)
    if kernel.shape.rank != 2 or inputs.shape[-1] != kernel.shape[0]:
        raise ValueError(
            "Invalid shapes: expected inputs (..., D) and a kernel (D, F). "
            f"Received: inputs.shape={inputs.shape}, kernel.shape={kernel.shape}"
        )

    depth, units = kernel.shape
    library = _native_library(implementation, inputs.dtype)
    if library is not None:
        # A dense adder layer is a 1x1 adder convolution of a 1x1 image.
        distances = _native_adder_conv2d(
            library,
            tf.reshape(inputs, [-1, 1, 1, depth]),
            tf.reshape(kernel, [1, 1, depth, units]),
            (1, 1),
            "valid",
            eta,
        )
        distances = tf.reshape(distances, [-1, units])
    else:
        distances = _negative_l1_distance(
            tf.reshape(inputs, [-1, depth]), kernel, eta, chunk_size
        )
    outputs = tf.reshape(
        distances, tf.concat([tf.shape(inputs)[:-1], [units]], 0)
    )
    outputs.set_shape(inputs.shape[:-1].concatenate([units]))
    return outputs


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class AddConv2D(keras.layers.Layer):
    """2D adder convolution (AdderNet): negative L1 distance per window.

    Each output is `-sum |patch - filter|` over a (kh, kw, C) window. The
    output is a large negative number that grows with the window size, so in
    practice every adder layer needs a `BatchNormalization` after it. Training
    uses AdderNet's gradients: X - F for the kernel, clip(F - X, -1, 1) for
    the input, and adaptive gradient scaling of the kernel gradient to norm
    `eta * sqrt(kernel.size)`. Requires the TensorFlow backend. On the CPU,
    float32 layers run on the native kernels of `keras_shiftadd.kernels`,
    compiled on first use; see `adder_conv2d` for the choice.

    Args:
        filters: int, the number of output channels.
        kernel_size: int or tuple of 2 ints, the window height and width.
        strides: int or tuple of 2 ints. Defaults to `(1, 1)`.
        padding: `"valid"` or `"same"` (case-insensitive), with the zero
            padding of `keras.layers.Conv2D`. Padded zeros count in the
            distance.
        activation: activation applied to the output. Defaults to none.
        use_bias: whether to add a bias. Defaults to `False` because the
            following `BatchNormalization` supplies one.
        kernel_initializer: initializer of the (kh, kw, C, filters) kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the bias.
        activity_regularizer: regularizer of the output.
        kernel_constraint: constraint of the kernel.
        bias_constraint: constraint of the bias.
        eta: adaptive gradient scaling factor (AdderNet uses 0.2), or `None`
            to use the unscaled X - F gradient.
        chunk_size: maximum number of output positions (rows of the patch
            matrix) processed at once, or `None` for a chunk whose
            (rows, kh*kw*C, filters) difference tensor contains about 2**21
            floats. It bounds the memory of the TensorFlow implementation
            (the native kernels need no chunks) and does not change the
            result.

    Input shape:
        4D tensor `(batch, height, width, channels)`.

    Output shape:
        4D tensor `(batch, new_height, new_width, filters)`, sized as in
        `keras.layers.Conv2D`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     AddConv2D(16, 3, padding="same"),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ... ])
    >>> model(np.zeros((2, 32, 32, 3), "float32")).shape
    TensorShape([2, 32, 32, 16])
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        activation=None,
        use_bias=False,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        eta=0.2,
        chunk_size=None,
        **kwargs,
    ):
        _check_tensorflow_backend(type(self).__name__)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _check_positive_int(filters, "filters")
        self.kernel_size = _normalize_pair(kernel_size, "kernel_size")
        self.strides = _normalize_pair(strides, "strides")
        self.padding = _normalize_padding(padding)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.eta = _check_eta(eta)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "Invalid input shape: the channel dimension (last axis) must "
                f"be known. Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

    def call(self, inputs):
        outputs = adder_conv2d(
            inputs,
            self.kernel,
            strides=self.strides,
            padding=self.padding,
            eta=self.eta,
            chunk_size=self.chunk_size,
        )
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        output_height = _conv_output_length(
            height, self.kernel_size[0], self.strides[0], self.padding
        )
        output_width = _conv_output_length(
            width, self.kernel_size[1], self.strides[1], self.padding
        )
        for length in (output_height, output_width):
            if length is not None and length < 1:
                raise ValueError(
                    "Invalid input shape: the input is smaller than the "
                    "kernel, so the 'valid' output would be empty. Expected "
                    f"height >= {self.kernel_size[0]} and width >= "
                    f"{self.kernel_size[1]}. Received: input_shape={input_shape}"
                )
        return (batch, output_height, output_width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "eta": self.eta,
                "chunk_size": self.chunk_size,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class AddDense(keras.layers.Layer):
    """Fully connected adder layer (AdderNet): `-sum_d |x_d - w_df|`.

    The output is a large negative number that grows with the input size, so
    in practice every adder layer needs a `BatchNormalization` after it.
    Training uses AdderNet's gradients: x - w for the kernel,
    clip(w - x, -1, 1) for the input, and adaptive gradient scaling of the
    kernel gradient to norm `eta * sqrt(kernel.size)`. Requires the
    TensorFlow backend.

    Args:
        units: int, the number of outputs.
        activation: activation applied to the output. Defaults to none.
        use_bias: whether to add a bias. Defaults to `False` because the
            following `BatchNormalization` supplies one.
        kernel_initializer: initializer of the (input_dim, units) kernel.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer of the kernel.
        bias_regularizer: regularizer of the bias.
        activity_regularizer: regularizer of the output.
        kernel_constraint: constraint of the kernel.
        bias_constraint: constraint of the bias.
        eta: adaptive gradient scaling factor (AdderNet uses 0.2), or `None`
            to use the unscaled x - w gradient.
        chunk_size: maximum number of input rows processed at once, or
            `None` for a chunk whose (rows, input_dim, units) difference
            tensor contains about 2**21 floats. It bounds the memory of the
            TensorFlow implementation and does not change the result.

    Input shape:
        N-D tensor `(batch, ..., input_dim)`, usually `(batch, input_dim)`.

    Output shape:
        N-D tensor `(batch, ..., units)`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((64,)),
    ...     AddDense(10),
    ...     keras.layers.BatchNormalization(),
    ... ])
    >>> model(np.zeros((2, 64), "float32")).shape
    TensorShape([2, 10])
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=False,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        eta=0.2,
        chunk_size=None,
        **kwargs,
    ):
        _check_tensorflow_backend(type(self).__name__)
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = _check_positive_int(units, "units")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.eta = _check_eta(eta)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "Invalid input shape: the last axis must be known. "
                f"Received: input_shape={input_shape}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        outputs = adder_dense(
            inputs, self.kernel, eta=self.eta, chunk_size=self.chunk_size
        )
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "eta": self.eta,
                "chunk_size": self.chunk_size,
            }
        )
        return config
