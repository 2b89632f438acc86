"""Count operations, parameters and memory of a Keras model, layer by layer.

Counting conventions:

- `"paper"` (the default) is ShiftAddAug's Table 3 convention: the MACs of
  every convolution (depthwise, pointwise and squeeze-and-excitation
  convolutions included) and of every dense layer; BatchNormalization is
  folded into the preceding layer; activations, bias additions, residual
  additions, other merges and pooling are not counted. A Mult MAC is one
  multiplication and one addition, and a Shift MAC one shift and one
  addition. An adder layer counts 2 additions per MAC (the subtraction and
  the accumulation) plus 2 per output element, so an output with a K-term
  window costs 2 * (K + 1) additions. ShiftAddAug does not state this
  rule, but it reproduces its Add column for all five Table 3 backbones to
  within 0.02%, for example 56.88M for MobileNetV2-w0.35, with 4.52M Mult
  in the depthwise convolutions and the classifier.
- `"full"` also counts what ShiftAddAug leaves out: BatchNormalization as one
  multiplication and one addition per element, bias additions, the
  arithmetic of merges (Add, Subtract, Average, Multiply), average pooling
  (window additions and one multiplication per output) and of hard-sigmoid
  and hard-swish activations. Comparisons (ReLU, clipping, max pooling) are
  never counted, and transcendental activations (sigmoid, tanh, softmax)
  are listed as not counted.

Parameters are always the weights and biases of convolutions and dense
layers plus BatchNormalization's gamma and beta (its moving statistics fold
away), and every weight of any other layer.
"""

import collections
import dataclasses
import math

import keras
import numpy as np

from keras_shiftadd.cost import hardware
from keras_shiftadd.cost.profile import EYERISS_45NM, OPERATORS
from keras_shiftadd.layers import adder, hybrid, shift

CONVENTIONS = ("paper", "full")

# keras.ops operations (not layers) that can appear in a functional graph,
# such as the hard-sigmoid of keras.applications.MobileNetV3, by class name:
# (multiplications, additions) per output element.
_OPERATION_ARITHMETIC = {
    "Add": (0, 1),
    "Subtract": (0, 1),
    "Multiply": (1, 0),
    "Divide": (1, 0),
    "TrueDivide": (1, 0),
}

# Element-wise layers that a deployed network runs in place (BatchNormalization
# folded or fused, activations fused), so their output reuses the memory of
# their input when nothing else reads that input.
_IN_PLACE = (
    keras.layers.BatchNormalization,
    hybrid.HybridBatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Identity,
)

# Activations by name: (multiplications, additions) per element.
_ACTIVATION_ARITHMETIC = {
    "linear": (0, 0),
    "relu": (0, 0),
    "relu6": (0, 0),
    "leaky_relu": (1, 0),
    "hard_sigmoid": (1, 1),
    "hard_silu": (2, 1),
    "hard_swish": (2, 1),
}


@dataclasses.dataclass
class LayerCost:
    """Costs of one call of a layer or operation.

    Attributes:
        name: Layer name; nested models prefix it with `model_name/`.
        class_name: The layer's class name.
        op: Operator of the layer's MACs (`"mult"`, `"shift"`, `"add"`), or
            `None` for layers without MACs.
        macs: Multiply-accumulate operations (for adder layers, the number
            of window terms).
        ops: Counted operations as `{(operation, format): count}`, for
            example `{("mult", "fp32"): 10, ("add", "fp32"): 10}`.
        params: Parameters under the counting convention.
        weight_bytes: Bytes of the parameters at the profile's bit widths.
        output_shape: Shape of the output without the batch axis.
        output_bytes: Bytes of the output activation.
        energy_pj: Energy in pJ per component: `compute`, `register_file`,
            `array`, `buffer` and `dram`.
        cycles: Latency in PE clock cycles.
        note: Why something was not counted, if anything.
    """

    name: str
    class_name: str
    op: str = None
    macs: int = 0
    ops: dict = dataclasses.field(default_factory=dict)
    params: int = 0
    weight_bytes: float = 0.0
    output_shape: tuple = ()
    output_bytes: float = 0.0
    energy_pj: dict = dataclasses.field(default_factory=dict)
    cycles: float = 0.0
    note: str = ""

    def count(self, operation):
        """Return the number of `operation` (`"mult"`, `"shift"`, `"add"`)."""
        return sum(n for (kind, _), n in self.ops.items() if kind == operation)

    @property
    def mult(self):
        return self.count("mult")

    @property
    def shift(self):
        return self.count("shift")

    @property
    def add(self):
        return self.count("add")

    @property
    def energy(self):
        """Total energy in pJ."""
        return sum(self.energy_pj.values())


@dataclasses.dataclass
class ModelCost:
    """Per-layer and total costs of a model under one convention and profile."""

    name: str
    convention: str
    profile: object
    layers: list
    peak_activation_bytes: float

    def _total(self, attribute):
        return sum(getattr(layer, attribute) for layer in self.layers)

    @property
    def macs(self):
        return self._total("macs")

    @property
    def mult(self):
        return self._total("mult")

    @property
    def shift(self):
        return self._total("shift")

    @property
    def add(self):
        return self._total("add")

    @property
    def params(self):
        return self._total("params")

    @property
    def weight_bytes(self):
        return self._total("weight_bytes")

    @property
    def ops_by_precision(self):
        """Operation counts as `{operation: {format: count}}`."""
        table = collections.defaultdict(lambda: collections.defaultdict(int))
        for layer in self.layers:
            for (operation, fmt), count in layer.ops.items():
                table[operation][fmt] += count
        return {op: dict(formats) for op, formats in sorted(table.items())}

    @property
    def energy_breakdown_pj(self):
        """Energy in pJ per component, summed over layers."""
        totals = collections.defaultdict(float)
        for layer in self.layers:
            for part, value in layer.energy_pj.items():
                totals[part] += value
        return dict(totals)

    @property
    def energy_mj(self):
        """Estimated energy of one inference in mJ."""
        return sum(self.energy_breakdown_pj.values()) * 1e-9

    @property
    def cycles(self):
        return self._total("cycles")

    @property
    def latency_ms(self):
        """Estimated latency of one inference in ms."""
        return self.cycles / (self.profile.clock_mhz * 1e3)

    def totals(self):
        """Return the totals as a JSON-serializable dict."""
        return {
            "model": self.name,
            "convention": self.convention,
            "profile": self.profile.name,
            "params": int(self.params),
            "macs": int(self.macs),
            "mult": int(self.mult),
            "shift": int(self.shift),
            "add": int(self.add),
            "ops_by_precision": self.ops_by_precision,
            "weight_bytes": float(self.weight_bytes),
            "peak_activation_bytes": float(self.peak_activation_bytes),
            "energy_mj": self.energy_mj,
            "energy_breakdown_mj": {
                part: value * 1e-9
                for part, value in self.energy_breakdown_pj.items()
            },
            "latency_ms": self.latency_ms,
        }


def _size(shape):
    return int(np.prod([int(d) for d in shape])) if len(shape) else 1


def _per_sample(shape):
    """Drop the batch axis of a tensor shape."""
    return tuple(int(d) for d in shape[1:])


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


@dataclasses.dataclass
class _MacPart:
    """A block of MACs that one operator computes, with its kernel size."""

    op: str
    macs: int
    kernel_params: int
    outputs: int


@dataclasses.dataclass
class _Tensor:
    """Precision and operator domain of a symbolic tensor during the walk."""

    bits: int
    domain: str  # operator of the last layer with MACs before it


class _Counter:
    """Walk a functional graph and build `LayerCost`s."""

    def __init__(self, convention, profile, op):
        self.convention = convention
        self.profile = profile
        self.op = op
        self.layers = []

    # -- operator and bit widths ------------------------------------------

    def _converted_op(self, layer):
        """Return the operator `layer` gets when `op` converts a plain model."""
        if self.op is None:
            return "mult"
        from keras_shiftadd.augment import layer_op

        return layer_op(layer, self.op)

    def _weight_bits(self, op, layer=None):
        bits = self.profile.weight_bits[op]
        if bits is None:
            bits = getattr(layer, "weight_bits", None) or 5
        return bits

    # -- per-layer costs -------------------------------------------------------

    def _mac_parts(self, layer, node, in_shape, out_shape):
        """Return `(parts, bias_params)` for layers with MACs, else `None`."""
        kwargs = node.arguments.kwargs
        outputs = _size(out_shape)
        spatial = _size(out_shape[:-1])

        if isinstance(layer, (hybrid.HybridConv2D, hybrid.HybridDepthwiseConv2D,
                              hybrid.HybridDense)):
            return self._hybrid_parts(layer, bool(kwargs.get("target", False)),
                                      in_shape, out_shape)

        if isinstance(layer, adder.AddConv2D):
            kh, kw = _pair(layer.kernel_size)
            kernel = kh * kw * in_shape[-1] * layer.filters
            part = _MacPart("add", kernel * spatial, kernel, outputs)
            return [part], layer.filters if layer.use_bias else 0
        if isinstance(layer, adder.AddDense):
            kernel = in_shape[-1] * layer.units
            part = _MacPart("add", kernel * _size(out_shape[:-1]), kernel,
                            outputs)
            return [part], layer.units if layer.use_bias else 0

        if isinstance(layer, (shift.ShiftConv2D, shift.ShiftDepthwiseConv2D,
                              shift.ShiftDense)):
            op = "shift"
        else:
            op = None

        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = _pair(layer.kernel_size)
            kernel = kh * kw * in_shape[-1] * layer.depth_multiplier
            part = _MacPart(op or self._converted_op(layer),
                            kh * kw * outputs, kernel, outputs)
            return [part], out_shape[-1] if layer.use_bias else 0
        if isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw = _pair(layer.kernel_size)
            depth = in_shape[-1] * layer.depth_multiplier
            dw_kernel = kh * kw * depth
            pw_kernel = depth * layer.filters
            parts = [
                _MacPart("mult", dw_kernel * spatial, dw_kernel, spatial * depth),
                _MacPart("mult", pw_kernel * spatial, pw_kernel, outputs),
            ]
            return parts, layer.filters if layer.use_bias else 0
        if isinstance(layer, keras.layers.Conv2DTranspose) or isinstance(
            layer, keras.layers.Conv1DTranspose
        ) or isinstance(layer, keras.layers.Conv3DTranspose):
            kernel = _size(layer.kernel.shape)
            part = _MacPart(op or "mult", kernel * _size(in_shape[:-1]),
                            kernel, outputs)
            return [part], layer.filters if layer.use_bias else 0
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D,
                              keras.layers.Conv3D)):
            groups = getattr(layer, "groups", 1)
            kernel = _size(layer.kernel_size) * in_shape[-1] // groups * layer.filters
            part = _MacPart(op or self._converted_op(layer), kernel * spatial,
                            kernel, outputs)
            return [part], layer.filters if layer.use_bias else 0
        if isinstance(layer, keras.layers.Dense):
            kernel = in_shape[-1] * layer.units
            part = _MacPart(op or self._converted_op(layer),
                            kernel * _size(out_shape[:-1]), kernel, outputs)
            return [part], layer.units if layer.use_bias else 0
        return None

    def _hybrid_parts(self, layer, target, in_shape, out_shape):
        """Split a hybrid layer into its multiplication-free and Mult blocks."""
        if isinstance(layer, hybrid.HybridDense):
            rows = _size(out_shape[:-1])
            full = layer.input_dim * layer.units
            block = layer.target_input_dim * layer.target_units
            target_outputs = rows * layer.target_units
            bias = layer.target_units if target else layer.units
            outputs_per_kernel = rows
        elif isinstance(layer, hybrid.HybridDepthwiseConv2D):
            kh, kw = layer.kernel_size
            spatial = _size(out_shape[:-1])
            full = kh * kw * layer.input_channels * layer.depth_multiplier
            block = kh * kw * layer.target_input_channels * layer.depth_multiplier
            target_outputs = (spatial * layer.target_input_channels
                              * layer.depth_multiplier)
            bias = (layer.target_input_channels if target
                    else layer.input_channels) * layer.depth_multiplier
            outputs_per_kernel = spatial
        else:
            kh, kw = layer.kernel_size
            spatial = _size(out_shape[:-1])
            full = kh * kw * layer.input_channels * layer.filters
            block = kh * kw * layer.target_input_channels * layer.target_filters
            target_outputs = spatial * layer.target_filters
            bias = layer.target_filters if target else layer.filters
            outputs_per_kernel = spatial
        if not layer.use_bias:
            bias = 0

        # Depthwise kernels contain one window per channel, so for every
        # layer type here a MAC count is kernel entries times output positions.
        parts = [_MacPart(layer.op, block * outputs_per_kernel, block,
                          target_outputs)]
        if not target and full > block:
            rest_outputs = _size(out_shape) - target_outputs
            parts.append(_MacPart("mult", (full - block) * outputs_per_kernel,
                                  full - block, max(rest_outputs, 0)))
        return parts, bias

    def _mac_layer(self, name, layer, parts, bias_params, out_shape):
        profile = self.profile
        ops = collections.Counter()
        weight_bytes = bias_params * profile.bias_bits / 8
        for part in parts:
            formats = profile.formats[part.op]
            if part.op == "mult":
                ops[("mult", formats["mult"])] += part.macs
                ops[("add", formats["add"])] += part.macs
            elif part.op == "shift":
                ops[("shift", formats["shift"])] += part.macs
                ops[("add", formats["add"])] += part.macs
            else:
                ops[("add", formats["add"])] += 2 * (part.macs + part.outputs)
            weight_bytes += part.kernel_params * self._weight_bits(part.op, layer) / 8

        main = max(parts, key=lambda part: part.macs).op
        output_bits = profile.activation_bits[main]
        mac_ops = sum(ops.values())
        if self.convention == "full" and bias_params:
            fmt = profile.elementwise_formats[main]["add"]
            ops[("add", fmt)] += _size(out_shape)
        note = self._activation_ops(layer, out_shape, main, ops)

        cost = LayerCost(
            name=name,
            class_name=type(layer).__name__,
            op=main,
            macs=sum(part.macs for part in parts),
            ops=dict(ops),
            params=sum(part.kernel_params for part in parts) + bias_params,
            weight_bytes=weight_bytes,
            output_shape=out_shape,
            output_bytes=_size(out_shape) * output_bits / 8,
            note=note,
        )
        weight_bits = {part.op: self._weight_bits(part.op, layer) for part in parts}
        hardware.price_mac_layer(
            cost, parts, weight_bits, self._input_elements,
            extra_ops=sum(ops.values()) - mac_ops, profile=profile,
        )
        return cost, _Tensor(output_bits, main)

    def _activation_ops(self, layer, out_shape, domain, ops, name=None):
        """Add the arithmetic of `layer`'s activation under the full convention."""
        if self.convention != "full":
            return ""
        if name is None:
            activation = getattr(layer, "activation", None)
            if activation is None:
                return ""
            name = getattr(activation, "__name__", str(activation))
        if name not in _ACTIVATION_ARITHMETIC:
            return f"activation '{name}' not counted"
        mults, adds = _ACTIVATION_ARITHMETIC[name]
        formats = self.profile.elementwise_formats[domain]
        elements = _size(out_shape)
        if mults:
            ops[("mult", formats["mult"])] += mults * elements
        if adds:
            ops[("add", formats["add"])] += adds * elements
        return ""

    def _other_layer(self, name, operation, inputs, out_shape):
        """Cost a layer or operation without MACs."""
        profile = self.profile
        domain = inputs[0].domain if inputs else "mult"
        bits = inputs[0].bits if inputs else profile.input_bits
        formats = profile.elementwise_formats[domain]
        elements = _size(out_shape)
        ops = collections.Counter()
        params = 0
        weight_bytes = 0.0
        note = ""
        full = self.convention == "full"
        is_layer = isinstance(operation, keras.layers.Layer)

        if isinstance(operation, keras.layers.BatchNormalization) or isinstance(
            operation, hybrid.HybridBatchNormalization
        ):
            channels = out_shape[-1]
            params = channels * (int(operation.scale) + int(operation.center))
            weight_bytes = params * profile.bias_bits / 8
            if full:
                ops[("mult", formats["mult"])] += elements
                ops[("add", formats["add"])] += elements
        elif is_layer and isinstance(operation, (keras.layers.Add,
                                                 keras.layers.Subtract,
                                                 keras.layers.Average)):
            if full:
                ops[("add", formats["add"])] += (len(inputs) - 1) * elements
                if isinstance(operation, keras.layers.Average):
                    ops[("mult", formats["mult"])] += elements
        elif is_layer and isinstance(operation, keras.layers.Multiply):
            if full:
                ops[("mult", formats["mult"])] += (len(inputs) - 1) * elements
        elif is_layer and isinstance(operation, (
            keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
            keras.layers.AveragePooling3D,
        )):
            if full:
                window = _size(operation.pool_size)
                ops[("add", formats["add"])] += (window - 1) * elements
                ops[("mult", formats["mult"])] += elements
        elif is_layer and isinstance(operation, (
            keras.layers.GlobalAveragePooling1D,
            keras.layers.GlobalAveragePooling2D,
            keras.layers.GlobalAveragePooling3D,
        )):
            if full:
                window = self._input_elements // max(elements, 1)
                ops[("add", formats["add"])] += (window - 1) * elements
                ops[("mult", formats["mult"])] += elements
        elif is_layer and isinstance(operation, keras.layers.Activation):
            note = self._activation_ops(operation, out_shape, domain, ops)
        elif is_layer and isinstance(operation, (keras.layers.Softmax,)):
            note = "softmax not counted" if full else ""
        elif not is_layer:
            arithmetic = _OPERATION_ARITHMETIC.get(type(operation).__name__)
            if full and arithmetic is not None:
                mults, adds = arithmetic
                ops[("mult", formats["mult"])] += mults * elements
                ops[("add", formats["add"])] += adds * elements
            elif full:
                note = f"operation {type(operation).__name__} not counted"
        elif is_layer and operation.weights:
            params = sum(_size(weight.shape) for weight in operation.weights)
            weight_bytes = params * profile.bias_bits / 8
            note = "weights counted, operations not counted"

        ops = {key: value for key, value in ops.items() if value}
        cost = LayerCost(
            name=name,
            class_name=type(operation).__name__,
            ops=ops,
            params=params,
            weight_bytes=weight_bytes,
            output_shape=out_shape,
            output_bytes=elements * bits / 8,
            note=note,
        )
        if ops:
            hardware.price_elementwise(cost, self._input_bytes, profile)
        return cost, _Tensor(bits, domain)

    # -- graph walk ------------------------------------------------------------

    def walk(self, functional, prefix="", input_tensors=None):
        """Cost every node of `functional`.

        Returns:
            `(peak, outputs)`: the peak activation bytes held at once while
            the graph runs node by node (inputs, outputs and every tensor that
            a later node still reads, with element-wise layers in place), and
            the `_Tensor` of each model output.
        """
        tensors = {}
        for index, tensor in enumerate(functional.inputs):
            outer = input_tensors[index] if input_tensors else None
            tensors[id(tensor)] = outer or _Tensor(self.profile.input_bits, "mult")

        nodes = []
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            nodes.extend(functional._nodes_by_depth[depth])

        # Readers per tensor, to free activations once their last reader ran.
        readers = collections.Counter()
        for node in nodes:
            if node.is_input:
                continue
            for tensor in node.arguments.keras_tensors:
                readers[id(tensor)] += 1
        output_ids = {id(tensor) for tensor in functional.outputs}

        def nbytes(tensor):
            return _size(_per_sample(tensor.shape)) * tensors[id(tensor)].bits / 8

        live = {id(t): nbytes(t) for t in functional.inputs}
        peak = sum(live.values())

        for node in nodes:
            if node.is_input:
                continue
            operation = node.operation
            inputs = list(node.arguments.keras_tensors)
            input_info = [tensors[id(tensor)] for tensor in inputs]
            name = prefix + operation.name

            if isinstance(operation, keras.Model):
                # A nested model: cost its own layers. Its internal peak
                # already includes its inputs and outputs, so it replaces
                # them on top of everything else the outer graph keeps alive.
                inner_peak, infos = self.walk(
                    _as_graph(operation), prefix=f"{name}/",
                    input_tensors=input_info,
                )
                input_ids = {id(tensor) for tensor in inputs}
                others = sum(size for key, size in live.items()
                             if key not in input_ids)
                step_total = others + inner_peak
            else:
                out_shape = _per_sample(node.outputs[0].shape)
                in_shape = _per_sample(inputs[0].shape) if inputs else ()
                self._input_elements = sum(
                    _size(_per_sample(tensor.shape)) for tensor in inputs
                )
                self._input_bytes = sum(nbytes(tensor) for tensor in inputs)
                parts = None
                if isinstance(operation, keras.layers.Layer):
                    parts = self._mac_parts(operation, node, in_shape, out_shape)
                if parts is not None:
                    cost, info = self._mac_layer(name, operation, parts[0],
                                                 parts[1], out_shape)
                else:
                    cost, info = self._other_layer(name, operation, input_info,
                                                   out_shape)
                self.layers.append(cost)
                infos = [info for _ in node.outputs]
                step_peak = sum(live.values())
                in_place = (
                    isinstance(operation, _IN_PLACE)
                    and len(inputs) == 1
                    and readers[id(inputs[0])] == 1
                    and id(inputs[0]) not in output_ids
                )
                if in_place:
                    step_peak -= live.get(id(inputs[0]), 0.0)

            for tensor, info in zip(node.outputs, infos):
                tensors[id(tensor)] = info
            if not isinstance(operation, keras.Model):
                produced = sum(nbytes(tensor) for tensor in node.outputs)
                step_total = step_peak + produced
            peak = max(peak, step_total)
            for tensor in node.outputs:
                live[id(tensor)] = nbytes(tensor)
            for tensor in inputs:
                readers[id(tensor)] -= 1
                if readers[id(tensor)] <= 0 and id(tensor) not in output_ids:
                    live.pop(id(tensor), None)
        return peak, [tensors[id(tensor)] for tensor in functional.outputs]


def _as_graph(model):
    """Return the functional graph of `model`, or raise a clear error."""
    from keras_shiftadd import graph

    return graph.as_functional(model)


def count(model, convention="paper", profile=None, op=None):
    """Count the operations, parameters, memory, energy and latency of `model`.

    Args:
        model: A functional or Sequential Keras model (plain, a target model,
            or an augmented model of hybrid layers), or a `ShiftAddAugModel`,
            which is costed as its deployed target (`model.target_model()`).
        convention: `"paper"` (ShiftAddAug's Table 3 counting) or `"full"`
            (also BatchNormalization, bias, merges, pooling and hard
            activations). See the module docstring.
        profile: A `HardwareProfile`. Defaults to `EYERISS_45NM`.
        op: Cost a plain model as if converted to this operator
            (`"mult"`, `"shift"` or `"add"`) with `augment()`'s rules: Shift
            makes every convolution and dense layer Shift, Add makes
            ordinary convolutions adders and keeps depthwise convolutions and
            dense layers multiplicative. Layers that already are Shift, adder
            or hybrid layers keep their operator. `None` costs ordinary
            layers as Mult.

    Returns:
        A `ModelCost`.

    Raises:
        ValueError: `convention` or `op` is invalid, or the model has no
            known input shape.
        TypeError: `model` is not a Keras model with a layer graph.
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"Invalid `convention`: expected one of {CONVENTIONS}. "
            f"Received: convention={convention!r}"
        )
    if op is not None and op not in OPERATORS:
        raise ValueError(
            f"Invalid `op`: expected one of {OPERATORS} or None. "
            f"Received: op={op!r}"
        )
    profile = profile or EYERISS_45NM

    from keras_shiftadd.model import ShiftAddAugModel

    if isinstance(model, ShiftAddAugModel):
        # Cost the target as it will be after fade and mutation schedules
        # finish: the exported target never contains augment blocks.
        model = model.target_model(allow_unfinished=True)
    functional = _as_graph(model)

    counter = _Counter(convention, profile, op)
    peak, _ = counter.walk(functional)
    return ModelCost(
        name=model.name,
        convention=convention,
        profile=profile,
        layers=counter.layers,
        peak_activation_bytes=peak,
    )


def relative_difference(ours, reference):
    """Return `(ours - reference) / reference`, or NaN for a zero reference."""
    if reference == 0:
        return 0.0 if ours == 0 else math.nan
    return (ours - reference) / reference
