"""Walk a Keras functional or Sequential model layer by layer."""

import dataclasses

import keras

# Layers without weights that act on each channel alone (or leave the channel
# axis untouched), so they can run unchanged on widened tensors.
PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Identity,
)

# Element-wise merges: every input must have the same channel layout.
MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)

WEIGHTED = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
    keras.layers.BatchNormalization,
)

RESHAPES = (keras.layers.Flatten, keras.layers.Reshape)

SUPPORTED_NAMES = sorted(
    {cls.__name__ for cls in PASS_THROUGH + MERGES + WEIGHTED + RESHAPES}
    | {"InputLayer"}
)


@dataclasses.dataclass
class Step:
    """One call of a layer in the graph, in topological order."""

    layer: keras.layers.Layer
    inputs: list  # KerasTensor inputs of this call
    output: object  # the KerasTensor it produced
    is_input: bool


def as_functional(model):
    """Return `model` as a functional model, or raise a clear error."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected a keras.Model (Sequential or functional). "
            f"Received: {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(
                f"Sequential model '{model.name}' has no known input shape. "
                "Start it with keras.Input(shape=...) or call build() first."
            )
        return functional
    if not hasattr(model, "_nodes_by_depth"):
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) is a subclassed "
            "model without a layer graph. Build it with the functional API "
            "or as a keras.Sequential model."
        )
    return model


def walk(model):
    """Return the layer calls of `model` as `Step`s in topological order.

    Raises:
        ValueError: a layer is called more than once (shared layers), a call
            has several outputs, or the graph contains an operation that is
            not a layer (for example `keras.ops.add` on symbolic tensors).
    """
    functional = as_functional(model)
    steps = []
    seen = set()
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            layer = node.operation
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(
                    f"Model '{model.name}' applies the operation "
                    f"'{layer.name}' ({type(layer).__name__}), which is not a "
                    "layer. Replace it by the matching Keras layer (for "
                    "example keras.layers.Add for keras.ops.add)."
                )
            if id(layer) in seen:
                raise ValueError(
                    f"Layer '{layer.name}' is called more than once in model "
                    f"'{model.name}'. Shared layers are not supported: give "
                    "each call its own layer."
                )
            seen.add(id(layer))
            if len(node.outputs) != 1:
                raise ValueError(
                    f"Layer '{layer.name}' has {len(node.outputs)} outputs; "
                    "only single-output layers are supported."
                )
            steps.append(
                Step(
                    layer=layer,
                    inputs=list(node.arguments.keras_tensors),
                    output=node.outputs[0],
                    is_input=node.is_input,
                )
            )
    return steps, functional


def consumers(steps):
    """Map `id(tensor)` to the steps that read that tensor."""
    readers = {}
    for step in steps:
        for tensor in step.inputs:
            readers.setdefault(id(tensor), []).append(step)
    return readers


def rebuild(model, transform, name=None):
    """Build a new functional model by replaying `model` through `transform`.

    Args:
        model: Sequential or functional model to replay.
        transform: `transform(step, new_inputs) -> new_output`, called for
            every non-input step in topological order with the already
            rebuilt input tensors.
        name: Name of the new model. Defaults to the model's name.

    Returns:
        A functional `keras.Model` with fresh `keras.Input`s of the same
        shapes and names.
    """
    steps, functional = walk(model)
    rebuilt = {}
    new_inputs = []
    for tensor in functional.inputs:
        new = keras.Input(
            batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name
        )
        rebuilt[id(tensor)] = new
        new_inputs.append(new)

    for step in steps:
        if step.is_input:
            continue
        args = [rebuilt[id(tensor)] for tensor in step.inputs]
        rebuilt[id(step.output)] = transform(step, args)

    outputs = [rebuilt[id(tensor)] for tensor in functional.outputs]
    return keras.Model(
        inputs=new_inputs[0] if len(new_inputs) == 1 else new_inputs,
        outputs=outputs[0] if len(outputs) == 1 else outputs,
        name=name or model.name,
    )
