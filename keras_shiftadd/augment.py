"""Rewrite a Keras CNN into hybrid target and augmented networks."""

import dataclasses
import logging
import math

import keras
import numpy as np

from keras_shiftadd import graph
from keras_shiftadd import hws as hws_lib
from keras_shiftadd.layers import adder
from keras_shiftadd.layers.hybrid import (
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
    OPS,
    TargetFade,
)
from keras_shiftadd.layers.reshape import HybridFlatten, HybridReshape
from keras_shiftadd.layers.shift import (
    ShiftConv2D,
    ShiftDense,
    ShiftDepthwiseConv2D,
)

logger = logging.getLogger(__name__)

# Channel counts of widened tensors are rounded to multiples of this, as
# NetAug and the MobileNet family do.
CHANNEL_DIVISOR = 8


def make_divisible(value, divisor=CHANNEL_DIVISOR):
    """Round `value` to the nearest multiple of `divisor`, losing <= 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def widen(channels, multiplier):
    """Return the augmented width of a tensor with `channels` target channels."""
    if multiplier == 1.0:
        return channels
    return max(channels, make_divisible(channels * multiplier))


def layer_op(layer, op):
    """Return the operator the target uses for `layer` under `op`.

    Shift models make every convolution, depthwise included, and every dense
    layer Shift. Add models make ordinary convolutions adders and keep
    depthwise convolutions and dense layers (the classifier) multiplicative.
    """
    if op == "add" and isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.Dense)
    ):
        return "mult"
    return op


@dataclasses.dataclass
class _Tensor:
    """A rebuilt tensor on both paths and its channel layout."""

    augmented: object
    target: object
    channels: int  # channels on the augmented path
    target_channels: int  # leading channels that belong to the target


@dataclasses.dataclass
class HybridGraph:
    """The two functional models that share the hybrid layers."""

    augmented: keras.Model
    target: keras.Model
    hybrid_layers: dict  # base layer name -> hybrid or cloned layer
    # block number -> TargetFade gate of the augment block inserted there
    augment_blocks: dict = dataclasses.field(default_factory=dict)


def _check_op(op):
    if op not in OPS:
        raise ValueError(
            f"Invalid `op`: expected one of {OPS}. Received: op={op!r}"
        )


def _check_multiplier(name, value):
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise ValueError(
            f"Invalid `{name}`: expected a number >= 1 (1 disables this "
            f"augmentation). Received: {name}={value!r}"
        )


def _unsupported(layer):
    return ValueError(
        f"augment() does not support layer '{layer.name}' "
        f"({type(layer).__name__}). Supported layers: "
        f"{', '.join(graph.SUPPORTED_NAMES)}."
    )


def _check_channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format != "channels_last":
        raise ValueError(
            f"Layer '{layer.name}' uses data_format={data_format!r}; only "
            "'channels_last' is supported."
        )


def residual_blocks(steps):
    """Return the steps of the residual `Add` layers in topological order.

    These define the block numbers of augment blocks and block mutation:
    block 1 is the first residual `Add` of the network, block 2 the second.
    """
    return [
        step for step in steps
        if not step.is_input and isinstance(step.layer, keras.layers.Add)
    ]


def check_blocks(name, blocks, count, model_name):
    """Return `blocks` as a sorted tuple of block numbers, or raise ValueError."""
    blocks = tuple(sorted(set(blocks or ())))
    for block in blocks:
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
            raise ValueError(
                f"Invalid `{name}`: expected block numbers (integers). "
                f"Received: {name}={blocks!r}"
            )
        if not 1 <= block <= count:
            if count == 0:
                valid = "it has no residual Add layer, so no block exists"
            else:
                valid = f"valid block numbers are 1 to {count}"
            noun = "block" if count == 1 else "blocks"
            raise ValueError(
                f"Invalid block {block} in `{name}`: model '{model_name}' has "
                f"{count} residual {noun} (residual Add layers); {valid}."
            )
    return tuple(int(block) for block in blocks)


def block_branch_layers(steps, add_step):
    """Return names of the layers on the residual branches of `add_step`.

    These are the layers that feed some but not all inputs of the `Add`: the
    body of the block, without the shortcut and what comes before the block.
    """
    producers = {id(step.output): step for step in steps}

    def ancestors(tensor):
        names = set()
        stack = [tensor]
        while stack:
            step = producers.get(id(stack.pop()))
            if step is None or step.is_input or step.layer.name in names:
                continue
            names.add(step.layer.name)
            stack.extend(step.inputs)
        return names

    sets = [ancestors(tensor) for tensor in add_step.inputs]
    return set.union(*sets) - set.intersection(*sets)


def _frozen_tensors(steps, functional):
    """Return ids of tensors whose width must stay as in the base model.

    Model outputs keep their width (a classifier's units are the classes),
    and so does everything that reaches an output through layers that keep
    the channel layout.
    """
    frozen = {id(tensor) for tensor in functional.outputs}
    for step in reversed(steps):
        if id(step.output) not in frozen:
            continue
        if isinstance(step.layer, graph.PASS_THROUGH + graph.MERGES) or (
            isinstance(step.layer, keras.layers.BatchNormalization)
        ):
            frozen.update(id(tensor) for tensor in step.inputs)
    return frozen


def _expansion_tensors(steps):
    """Return ids of 1x1 convolution outputs that feed a depthwise layer.

    These are the expanded tensors of inverted residual blocks, which expand
    augmentation widens further.
    """
    readers = graph.consumers(steps)
    expanded = set()
    for step in steps:
        layer = step.layer
        if not isinstance(layer, keras.layers.Conv2D) or isinstance(
            layer, keras.layers.DepthwiseConv2D
        ):
            continue
        if tuple(layer.kernel_size) != (1, 1):
            continue
        frontier = [step.output]
        while frontier:
            tensor = frontier.pop()
            for reader in readers.get(id(tensor), []):
                if isinstance(reader.layer, keras.layers.DepthwiseConv2D):
                    expanded.add(id(step.output))
                elif isinstance(
                    reader.layer,
                    graph.PASS_THROUGH + (keras.layers.BatchNormalization,),
                ):
                    frontier.append(reader.output)
    return expanded


def _producer_widths(steps, frozen, expanded, width_mult, expand_mult):
    """Return the augmented width of every Conv2D and Dense output tensor.

    Tensors joined by an element-wise merge (a residual Add, the Multiply of
    a squeeze-and-excitation gate) must have one width, and so must tensors
    linked by layers that keep the channel layout. Such tensors form a group,
    and every producer in the group gets the widest width its rules ask for.
    A group that reaches a model output keeps its base width.
    """
    parent = {}

    def find(key):
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(first, second):
        parent[find(first)] = find(second)

    keeps_layout = graph.PASS_THROUGH + graph.MERGES + (
        keras.layers.BatchNormalization,
    )
    for step in steps:
        layer = step.layer
        joins = isinstance(layer, keeps_layout) or (
            isinstance(layer, keras.layers.DepthwiseConv2D)
            and layer.depth_multiplier == 1
        )
        if joins:
            for tensor in step.inputs:
                union(id(tensor), id(step.output))

    producers = [
        step for step in steps
        if isinstance(step.layer, (keras.layers.Conv2D, keras.layers.Dense))
        and not isinstance(step.layer, keras.layers.DepthwiseConv2D)
    ]
    frozen_groups = {find(key) for key in frozen}
    group_width = {}
    for step in producers:
        group = find(id(step.output))
        channels = (step.layer.filters
                    if isinstance(step.layer, keras.layers.Conv2D)
                    else step.layer.units)
        if group in frozen_groups:
            width = channels
        else:
            multiplier = width_mult
            if id(step.output) in expanded:
                multiplier *= expand_mult
            width = widen(channels, multiplier)
        group_width[group] = max(group_width.get(group, 0), width)
    return {id(step.output): group_width[find(id(step.output))]
            for step in producers}


class _Rewriter:
    """Build the hybrid augmented and target graphs from a base model."""

    def __init__(self, base, op, width_mult, expand_mult, bn_momentum, shift_args,
                 adder_args, augment_blocks=(), mutate_blocks=(),
                 hws_spec=None, augmented_op="mult"):
        self.base = base
        self.hws_spec = hws_spec
        self.augmented_op = augmented_op
        self.augment_blocks = augment_blocks
        self.mutate_blocks = mutate_blocks
        self.op = op
        self.width_mult = width_mult
        self.expand_mult = expand_mult
        self.bn_momentum = bn_momentum
        self.shift_args = shift_args
        self.adder_args = adder_args
        self.layers = {}

    def build(self):
        steps, functional = graph.walk(self.base)
        self.frozen = _frozen_tensors(steps, functional)
        self.expanded = _expansion_tensors(steps)
        self.widths = _producer_widths(steps, self.frozen, self.expanded,
                                       self.width_mult, self.expand_mult)

        blocks = residual_blocks(steps)
        augment_blocks = check_blocks("augment_blocks", self.augment_blocks,
                                      len(blocks), self.base.name)
        mutate_blocks = check_blocks("mutate_blocks", self.mutate_blocks,
                                     len(blocks), self.base.name)
        self.mutated = set()
        for block in mutate_blocks:
            self.mutated |= block_branch_layers(steps, blocks[block - 1])
        augment_at = {id(blocks[block - 1].output): block
                      for block in augment_blocks}
        self.fades = {}

        tensors = {}
        augmented_inputs, target_inputs = [], []
        for tensor in functional.inputs:
            shape = tuple(tensor.shape)
            augmented = keras.Input(batch_shape=shape, dtype=tensor.dtype,
                                    name=tensor.name)
            target = keras.Input(batch_shape=shape, dtype=tensor.dtype,
                                 name=tensor.name)
            channels = shape[-1]
            tensors[id(tensor)] = _Tensor(augmented, target, channels, channels)
            augmented_inputs.append(augmented)
            target_inputs.append(target)

        for step in steps:
            if step.is_input:
                continue
            inputs = [tensors[id(tensor)] for tensor in step.inputs]
            output = self._rewrite(step, inputs)
            if id(step.output) in augment_at:
                output = self._augment_block(augment_at[id(step.output)],
                                             step, output)
            tensors[id(step.output)] = output

        outputs = [tensors[id(tensor)] for tensor in functional.outputs]
        for output, tensor in zip(outputs, functional.outputs):
            if output.channels != output.target_channels:
                raise ValueError(
                    f"Output '{tensor.name}' was widened; this is a bug in "
                    "the width rules, please report it."
                )

        def unpack(items):
            return items[0] if len(items) == 1 else items

        augmented = keras.Model(
            unpack(augmented_inputs),
            unpack([o.augmented for o in outputs]),
            name=f"{self.base.name}_augmented",
        )
        target = keras.Model(
            unpack(target_inputs),
            unpack([o.target for o in outputs]),
            name=f"{self.base.name}_target",
        )
        return HybridGraph(augmented, target, self.layers, self.fades)

    def _out_width(self, step, target_channels):
        return self.widths.get(id(step.output), target_channels)

    def _register(self, base_layer, layer):
        self.layers[base_layer.name] = layer
        return layer

    def _rewrite(self, step, inputs):
        layer = step.layer
        if isinstance(layer, graph.WEIGHTED):
            _check_channels_last(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return self._depthwise(step, inputs[0])
        if isinstance(layer, keras.layers.Conv2D):
            return self._conv(step, inputs[0])
        if isinstance(layer, keras.layers.Dense):
            return self._dense(step, inputs[0])
        if isinstance(layer, keras.layers.BatchNormalization):
            return self._batch_norm(step, inputs[0])
        if isinstance(layer, graph.PASS_THROUGH):
            _check_channels_last(layer)
            return self._pass_through(layer, inputs[0])
        if isinstance(layer, graph.MERGES):
            return self._merge(layer, inputs)
        if isinstance(layer, keras.layers.Flatten):
            return self._flatten(layer, inputs[0])
        if isinstance(layer, keras.layers.Reshape):
            return self._reshape(layer, inputs[0])
        raise _unsupported(layer)

    def _augment_block(self, block, step, x):
        """Insert a multiplicative block after the `Add` of residual `block`.

        It computes `x + fade * ReLU(BN(Conv1x1(x)))` on the target path and
        `x + ReLU(BN(Conv1x1(x)))` on the augmented path. Its layers are
        multiplicative hybrids, so the target path reads the target slice of
        their weights.
        """
        if len(step.output.shape) != 4:
            raise ValueError(
                f"Cannot insert an augment block after block {block} "
                f"('{step.layer.name}'): its output has shape "
                f"{tuple(step.output.shape)}, but augment blocks need a 4D "
                "(batch, rows, cols, channels) tensor."
            )
        prefix = f"augment_block{block}"
        conv = HybridConv2D(
            filters=x.channels,
            target_filters=x.target_channels,
            kernel_size=1,
            input_channels=x.channels,
            target_input_channels=x.target_channels,
            op="mult",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"{prefix}_conv",
        )
        norm = HybridBatchNormalization(
            channels=x.channels,
            target_channels=x.target_channels,
            momentum=self._block_momentum(),
            name=f"{prefix}_bn",
        )
        relu = keras.layers.ReLU(name=f"{prefix}_relu")
        fade = TargetFade(name=f"{prefix}_fade")
        add = keras.layers.Add(name=f"{prefix}_add")
        for layer in (conv, norm, relu, fade, add):
            self.layers[layer.name] = layer
        self.fades[block] = fade

        augmented = add([x.augmented, fade(relu(norm(conv(x.augmented))))])
        target = conv(x.target, target=True)
        target = fade(relu(norm(target, target=True)), target=True)
        target = add([x.target, target])
        return _Tensor(augmented, target, x.channels, x.target_channels)

    def _block_momentum(self):
        """Return the momentum for augment block BatchNormalization layers.

        The `bn_momentum` setting, else the base model's first
        BatchNormalization momentum, else the Keras default 0.99.
        """
        if self.bn_momentum is not None:
            return self.bn_momentum
        for layer in self.base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                return layer.momentum
        return 0.99

    def _weighted_common(self, layer):
        config = layer.get_config()
        target_op = layer_op(layer, self.op)
        mutate = layer.name in self.mutated and target_op != "mult"
        return {
            "name": layer.name,
            "activation": config.get("activation"),
            "use_bias": config.get("use_bias", True),
            "kernel_initializer": config.get("kernel_initializer",
                                             "glorot_uniform"),
            "bias_initializer": config.get("bias_initializer", "zeros"),
            "kernel_regularizer": config.get("kernel_regularizer"),
            "bias_regularizer": config.get("bias_regularizer"),
            "kernel_constraint": config.get("kernel_constraint"),
            "bias_constraint": config.get("bias_constraint"),
            "dtype": layer.dtype_policy.name,
            "mutate": mutate,
            "remap": self._remap(layer),
            # Layers whose target stays multiplicative (depthwise and dense
            # layers of Add models) have a single operator either way.
            "augmented_op": "mult" if target_op == "mult" else self.augmented_op,
            **self.shift_args,
            **self.adder_args,
        }

    def _remap(self, layer):
        """Return the HWS remap for `layer`'s target operator, or None."""
        if self.hws_spec is None or layer_op(layer, self.op) == "mult":
            return None
        if isinstance(layer, keras.layers.Dense):
            kernel_shape = (1, 1)
        else:
            kernel_shape = tuple(layer.kernel_size) + (1, 1)
        return hws_lib.remap_for_kernel(self.hws_spec, kernel_shape,
                                        name=f"{layer.name}_remap")

    def _depthwise_common(self, layer):
        config = layer.get_config()
        common = self._weighted_common(layer)
        common["kernel_initializer"] = config.get("depthwise_initializer",
                                                  "glorot_uniform")
        common["kernel_regularizer"] = config.get("depthwise_regularizer")
        common["kernel_constraint"] = config.get("depthwise_constraint")
        return common

    def _conv(self, step, x):
        layer = step.layer
        if layer.groups != 1:
            raise ValueError(
                f"Layer '{layer.name}' is a grouped convolution "
                f"(groups={layer.groups}); only groups=1 is supported."
            )
        filters = self._out_width(step, layer.filters)
        hybrid = HybridConv2D(
            filters=filters,
            target_filters=layer.filters,
            kernel_size=tuple(layer.kernel_size),
            input_channels=x.channels,
            target_input_channels=x.target_channels,
            strides=tuple(layer.strides),
            padding=layer.padding,
            dilation_rate=tuple(layer.dilation_rate),
            op=layer_op(layer, self.op),
            **self._weighted_common(layer),
        )
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       filters, layer.filters)

    def _depthwise(self, step, x):
        layer = step.layer
        multiplier = layer.depth_multiplier
        hybrid = HybridDepthwiseConv2D(
            kernel_size=tuple(layer.kernel_size),
            input_channels=x.channels,
            target_input_channels=x.target_channels,
            depth_multiplier=multiplier,
            strides=tuple(layer.strides),
            padding=layer.padding,
            dilation_rate=tuple(layer.dilation_rate),
            op=layer_op(layer, self.op),
            **self._depthwise_common(layer),
        )
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       x.channels * multiplier, x.target_channels * multiplier)

    def _dense(self, step, x):
        layer = step.layer
        if len(step.inputs[0].shape) != 2:
            raise ValueError(
                f"Dense layer '{layer.name}' receives a tensor of shape "
                f"{tuple(step.inputs[0].shape)}; only (batch, features) "
                "inputs are supported. Add a Flatten or global pooling layer "
                "before it."
            )
        units = self._out_width(step, layer.units)
        hybrid = HybridDense(
            units=units,
            target_units=layer.units,
            input_dim=x.channels,
            target_input_dim=x.target_channels,
            op=layer_op(layer, self.op),
            **self._weighted_common(layer),
        )
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       units, layer.units)

    def _batch_norm(self, step, x):
        layer = step.layer
        rank = len(step.inputs[0].shape)
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
        if axis not in (-1, rank - 1):
            raise ValueError(
                f"BatchNormalization '{layer.name}' normalizes axis {axis}; "
                "only the last (channel) axis is supported."
            )
        config = layer.get_config()
        momentum = layer.momentum if self.bn_momentum is None else self.bn_momentum
        hybrid = HybridBatchNormalization(
            channels=x.channels,
            target_channels=x.target_channels,
            momentum=momentum,
            epsilon=layer.epsilon,
            center=layer.center,
            scale=layer.scale,
            beta_initializer=config["beta_initializer"],
            gamma_initializer=config["gamma_initializer"],
            moving_mean_initializer=config["moving_mean_initializer"],
            moving_variance_initializer=config["moving_variance_initializer"],
            beta_regularizer=config["beta_regularizer"],
            gamma_regularizer=config["gamma_regularizer"],
            beta_constraint=config["beta_constraint"],
            gamma_constraint=config["gamma_constraint"],
            name=layer.name,
            dtype=layer.dtype_policy.name,
        )
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       x.channels, x.target_channels)

    def _pass_through(self, layer, x):
        clone = self._register(layer, type(layer).from_config(layer.get_config()))
        return _Tensor(clone(x.augmented), clone(x.target), x.channels,
                       x.target_channels)

    def _merge(self, layer, inputs):
        layouts = {(x.channels, x.target_channels) for x in inputs}
        if len(layouts) != 1:
            raise ValueError(
                f"Merge layer '{layer.name}' joins tensors whose augmented "
                f"channel layouts differ: {sorted(layouts)} as (channels, "
                "target channels). Both branches must come from layers with "
                "the same number of filters."
            )
        clone = self._register(layer, type(layer).from_config(layer.get_config()))
        first = inputs[0]
        return _Tensor(
            clone([x.augmented for x in inputs]),
            clone([x.target for x in inputs]),
            first.channels,
            first.target_channels,
        )

    def _flatten(self, layer, x):
        shape = x.target.shape
        spatial = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
        if x.channels == x.target_channels:
            return self._pass_through(layer, x)
        hybrid = HybridFlatten(target_channels=x.target_channels, name=layer.name)
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       spatial * x.channels, spatial * x.target_channels)

    def _reshape(self, layer, x):
        target_shape = tuple(layer.target_shape)
        if target_shape[-1] != x.target_channels:
            raise ValueError(
                f"Reshape '{layer.name}' to {target_shape} changes the channel "
                f"axis ({x.target_channels} channels in). Only reshapes that "
                "keep the last axis, such as (1, 1, C), are supported."
            )
        hybrid = HybridReshape(target_shape=target_shape, name=layer.name)
        self._register(layer, hybrid)
        return _Tensor(hybrid(x.augmented), hybrid(x.target, target=True),
                       x.channels, x.target_channels)


def build_hybrid_graph(base, op="shift", width_mult=2.0, expand_mult=2.0,
                       bn_momentum=None, weight_bits=5, activation_bits=16,
                       activation_fraction_bits=8, eta=0.2, chunk_size=None,
                       augment_blocks=(), mutate_blocks=(), hws=False,
                       augmented_op="mult"):
    """Rewrite `base` into hybrid augmented and target functional models.

    See `augment` for the arguments. `augment_blocks` and `mutate_blocks`
    are residual block numbers (see `residual_blocks`). `hws` is `True` (the
    shipped remap of `op`), `False` (no remap, the default here) or a remap
    spec from `keras_shiftadd.hws`. The remap applies only to layers whose
    target operator is Shift or Add. `augmented_op` is `"mult"` (hybrid
    computation) or `op` (every channel of a Shift or Add layer uses `op`).

    Returns:
        A `HybridGraph`.
    """
    _check_op(op)
    if augmented_op not in ("mult", op):
        raise ValueError(
            "Invalid `augmented_op`: expected 'mult' (hybrid computation) or "
            f"the target operator op={op!r}. Received: "
            f"augmented_op={augmented_op!r}"
        )
    _check_multiplier("width_mult", width_mult)
    _check_multiplier("expand_mult", expand_mult)
    if bn_momentum is not None and not 0.0 <= bn_momentum < 1.0:
        raise ValueError(
            "Invalid `bn_momentum`: expected a number in [0, 1). "
            f"Received: bn_momentum={bn_momentum!r}"
        )
    rewriter = _Rewriter(
        base,
        op,
        float(width_mult),
        float(expand_mult),
        bn_momentum,
        shift_args={
            "weight_bits": weight_bits,
            "activation_bits": activation_bits,
            "activation_fraction_bits": activation_fraction_bits,
        },
        adder_args={"eta": eta, "chunk_size": chunk_size},
        augment_blocks=augment_blocks,
        mutate_blocks=mutate_blocks,
        hws_spec=hws_lib.resolve_hws(hws, op),
        augmented_op=augmented_op,
    )
    return rewriter.build()


def _target_layer(base_layer, hybrid, op, shift_args, adder_args):
    """Create the standalone layer the target uses for `base_layer`."""
    config = base_layer.get_config()
    for key in ("weight_bits", "activation_bits", "activation_fraction_bits"):
        config.pop(key, None)
    kind = layer_op(base_layer, op)

    if isinstance(base_layer, keras.layers.DepthwiseConv2D):
        if kind == "shift":
            return ShiftDepthwiseConv2D(**config, **shift_args)
        return keras.layers.DepthwiseConv2D(**config)

    if isinstance(base_layer, keras.layers.Conv2D):
        if kind == "shift":
            return ShiftConv2D(**config, **shift_args)
        if kind == "add":
            return adder.AddConv2D(
                filters=config["filters"],
                kernel_size=config["kernel_size"],
                strides=config["strides"],
                padding=config["padding"],
                activation=config["activation"],
                use_bias=config["use_bias"],
                kernel_initializer=config["kernel_initializer"],
                bias_initializer=config["bias_initializer"],
                kernel_regularizer=config["kernel_regularizer"],
                bias_regularizer=config["bias_regularizer"],
                kernel_constraint=config["kernel_constraint"],
                bias_constraint=config["bias_constraint"],
                name=config["name"],
                **adder_args,
            )
        return keras.layers.Conv2D(**config)

    if isinstance(base_layer, keras.layers.Dense):
        if kind == "shift":
            return ShiftDense(**config, **shift_args)
        return keras.layers.Dense(**config)

    if isinstance(base_layer, keras.layers.BatchNormalization):
        return keras.layers.BatchNormalization(**config)

    return type(base_layer).from_config(config)


def _target_weights(base_layer, hybrid):
    """Return the target slice of `hybrid`'s weights, in `base_layer` order."""
    if isinstance(hybrid, HybridBatchNormalization):
        weights = []
        width = hybrid.target_channels
        if hybrid.scale:
            weights.append(hybrid.gamma.numpy()[:width])
        if hybrid.center:
            weights.append(hybrid.beta.numpy()[:width])
        weights.append(hybrid.target_moving_mean.numpy())
        weights.append(hybrid.target_moving_variance.numpy())
        return weights

    kernel = hybrid.mf_target_kernel()
    weights = [kernel]
    if hybrid.use_bias:
        if isinstance(hybrid, HybridConv2D):
            size = hybrid.target_filters
        elif isinstance(hybrid, HybridDepthwiseConv2D):
            size = hybrid.target_input_channels * hybrid.depth_multiplier
        else:
            size = hybrid.target_units
        weights.append(hybrid.bias.numpy()[:size])
    return weights


def export_target(base, hybrid_graph, op, shift_args, adder_args, name=None):
    """Build the standalone target model of `base` from trained hybrid layers.

    The result has the base architecture, with each layer replaced by the one
    `op` keeps (Shift, adder or ordinary), and contains exactly the weights the
    target path uses, so it needs no hybrid layer at inference.
    """
    layers = hybrid_graph.hybrid_layers

    def transform(step, args):
        base_layer = step.layer
        layer = _target_layer(base_layer, layers.get(base_layer.name), op,
                              shift_args, adder_args)
        output = layer(args[0] if len(args) == 1 else args)
        hybrid = layers.get(base_layer.name)
        if isinstance(base_layer, graph.WEIGHTED):
            layer.set_weights(_target_weights(base_layer, hybrid))
        return output

    return graph.rebuild(base, transform, name=name or f"{base.name}_target")
