"""ShiftAddAugModel: joint training of a target network and its augmentation."""

import keras
from keras import ops

from keras_shiftadd import augment as rewrite
from keras_shiftadd import hws as hws_lib
from keras_shiftadd.layers.hybrid import OPS

# The six methods of the ShiftAddAug paper as (op, augmentation).
METHODS = {
    "base": ("mult", False),
    "netaug": ("mult", True),
    "shift": ("shift", False),
    "augshift": ("shift", True),
    "add": ("add", False),
    "augadd": ("add", True),
}


def method_name(op, augmentation):
    """Return the ShiftAddAug paper's name of a method.

    For example `AugShift` for `op="shift"` with augmentation.
    """
    plain = {"mult": "Base", "shift": "Shift", "add": "Add"}[op]
    if not augmentation:
        return plain
    return "NetAug" if op == "mult" else f"Aug{plain}"


def _argmax_matches(y_true, y_pred):
    """Return 1.0 where the top class of `y_pred` is the label, else 0.0."""
    predicted = ops.argmax(y_pred, axis=-1)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1:
        labels = ops.argmax(y_true, axis=-1)
    else:
        labels = ops.reshape(y_true, ops.shape(predicted))
    return ops.cast(
        ops.equal(ops.cast(labels, "int64"), ops.cast(predicted, "int64")),
        "float32",
    )


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class ShiftAddAugModel(keras.Model):
    """A target network trained inside a wider network that shares its weights.

    The model rewrites `base` into two functional networks built from the
    same hybrid layers: the *target*, which has the base architecture and
    uses the multiplication-free operator `op`, and the *augmented* network,
    whose layers are `width_mult` times wider (inverted-residual expansions
    `width_mult * expand_mult` times) and compute the extra channels by
    ordinary multiplication. Each training step minimizes
    `L(target) + alpha * L(augmented)` in one optimizer step, so gradients
    from both reach the shared weights. `call`, `evaluate` and `predict` run
    the target alone; `target_model()` exports it as a standalone model.

    Use `keras_shiftadd.augment(base, ...)` to create one.

    Args:
        base: The network to train, a Sequential or functional
            `keras.Model`, or its serialized config. Only its architecture
            is used.
        op: Operator of the target, `"shift"`, `"add"` or `"mult"`.
            Defaults to `"shift"`.
        width_mult: Width multiple of the augmented network. Defaults to
            `2.0`.
        expand_mult: Extra multiple of the expanded channels of inverted
            residual blocks (1x1 convolutions that feed a depthwise layer).
            Defaults to `2.0`.
        alpha: Weight of the augmented loss. Defaults to `1.0`.
        augmentation: Whether to train with the augmented network. With
            `False` the target trains alone (the paper's Base, Shift and Add
            methods). Defaults to `True`.
        bn_momentum: Momentum for every BatchNormalization layer, or `None`
            to keep the base model's. Defaults to `None`.
        weight_bits, activation_bits, activation_fraction_bits: Shift
            formats, see `ShiftConv2D`. Default to `5`, `16` and `8`.
        eta: Adder gradient scale, see `AddConv2D`. Defaults to `0.2`.
        chunk_size: Rows per adder chunk, `None` for automatic. Defaults to
            `None`.
        augment_blocks: Residual block numbers (1 = the first residual
            `Add` of `base`) after which to insert an augment block: a
            multiplicative 1x1 Conv + BatchNormalization + ReLU residual
            branch that reaches the target scaled by a fade factor. Move the
            factor from 1 to 0 with `callbacks.BlockFade`; the exported
            target never contains the block. Defaults to none.
        mutate_blocks: Residual block numbers whose layers (those on the
            residual branch whose target operator is not multiplicative)
            start multiplicative and mutate into `op`. Drive the blend with
            `callbacks.BlockMutation`. Defaults to none.
        hws: Heterogeneous weight sharing: Shift layers read `W + R(W)` and
            adder layers `R(W)` of the shared weights `W`, with the frozen
            remap `R` of `keras_shiftadd.hws` (the Add remap passes
            gradients straight through). `"auto"` and `True` use the remap
            shipped for `op` whenever a multiplication-free target shares
            weights with multiplication (`augmentation=True` and
            `augmented_op="mult"`; `True` with `augmented_op=op` raises);
            `False` turns HWS off
            (ablations); a remap spec dict (from `hws.fit_remap` or
            `hws.load_remap`) is used as given, with or without
            augmentation. Defaults to `"auto"`.
        augmented_op: Operator of the channels outside the target:
            `"mult"` (hybrid computation, the method of the paper) or `op`,
            which makes the augmented network multiplication-free too (the
            "Aug. with Shift" row of the paper's Table 6, for ablations;
            no HWS and no mutation then). Defaults to `"mult"`.
    """

    def __init__(self, base, op="shift", width_mult=2.0, expand_mult=2.0,
                 alpha=1.0, augmentation=True, bn_momentum=None, weight_bits=5,
                 activation_bits=16, activation_fraction_bits=8, eta=0.2,
                 chunk_size=None, augment_blocks=(), mutate_blocks=(),
                 hws="auto", augmented_op="mult", **kwargs):
        if op not in OPS:
            raise ValueError(
                f"Invalid `op`: expected one of {OPS}. Received: op={op!r}"
            )
        if augmented_op not in ("mult", op):
            raise ValueError(
                "Invalid `augmented_op`: expected 'mult' (hybrid computation, "
                f"the default) or the target operator op={op!r}. Received: "
                f"augmented_op={augmented_op!r}"
            )
        single_operator = augmented_op != "mult" and op != "mult"
        if single_operator and mutate_blocks:
            raise ValueError(
                f"Invalid `mutate_blocks` for augmented_op={augmented_op!r}: "
                "block mutation starts from multiplicative blocks, which this "
                "augmentation does not have. Pass augmented_op='mult' or no "
                f"mutate_blocks. Received: mutate_blocks={mutate_blocks!r}"
            )
        if single_operator and hws not in (False, None, "auto"):
            raise ValueError(
                f"Invalid `hws` for augmented_op={augmented_op!r}: every "
                "channel uses one operator, so nothing is shared between "
                "operators and no remap applies. Pass hws=False or 'auto'. "
                f"Received: hws={hws!r}"
            )
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(
                "Invalid `alpha`: expected a number >= 0. "
                f"Received: alpha={alpha!r}"
            )
        if mutate_blocks and op == "mult":
            raise ValueError(
                "Invalid `mutate_blocks` for op='mult': block mutation turns "
                "multiplicative blocks into Shift or Add, so it needs "
                f"op='shift' or op='add'. Received: mutate_blocks="
                f"{mutate_blocks!r}"
            )
        if isinstance(base, dict):
            base = keras.saving.deserialize_keras_object(base)
        kwargs.setdefault("name", f"{base.name}_{method_name(op, augmentation).lower()}")
        super().__init__(**kwargs)

        # Bypass Keras attribute tracking: the base model's own weights are
        # never trained, so they must not join this model's weights.
        object.__setattr__(self, "base", base)
        self.op = op
        self.width_mult = float(width_mult) if augmentation else 1.0
        self.expand_mult = float(expand_mult) if augmentation else 1.0
        self.augmentation = bool(augmentation)
        self.bn_momentum = bn_momentum
        self.shift_args = {
            "weight_bits": weight_bits,
            "activation_bits": activation_bits,
            "activation_fraction_bits": activation_fraction_bits,
        }
        self.adder_args = {"eta": eta, "chunk_size": chunk_size}
        self.augment_blocks = tuple(augment_blocks or ())
        self.mutate_blocks = tuple(mutate_blocks or ())
        # A target trained alone shares no weights, so hws=True leaves it
        # as the plain Shift or Add baseline.
        if hws in (True, "auto") and (not augmentation or single_operator):
            hws = False
        if hws == "auto":
            hws = True
        self.hws_spec = hws_lib.resolve_hws(hws, op)
        self.augmented_op = augmented_op
        self._init_config = {
            "width_mult": width_mult,
            "expand_mult": expand_mult,
            "alpha": float(alpha),
        }

        self.hybrid = rewrite.build_hybrid_graph(
            base,
            op=op,
            width_mult=self.width_mult,
            expand_mult=self.expand_mult,
            bn_momentum=bn_momentum,
            augment_blocks=self.augment_blocks,
            mutate_blocks=self.mutate_blocks,
            hws=self.hws_spec or False,
            augmented_op=augmented_op,
            **self.shift_args,
            **self.adder_args,
        )
        self.target_network = self.hybrid.target
        self.augmented_network = self.hybrid.augmented if augmentation else None

        # A variable, so that schedules can change it during training.
        self.alpha = keras.Variable(
            float(alpha), trainable=False, name="alpha", dtype="float32"
        )
        self.target_loss_tracker = keras.metrics.Mean(name="target_loss")
        self.augmented_loss_tracker = keras.metrics.Mean(name="augmented_loss")
        self.augmented_accuracy_tracker = keras.metrics.Mean(
            name="augmented_accuracy"
        )
        self.built = True

    def call(self, inputs, training=None):
        return self.target_network(inputs, training=training)

    def compile(self, *args, **kwargs):
        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise RuntimeError(
                "ShiftAddAugModel trains with the TensorFlow backend only; "
                f"the active Keras backend is {backend!r}. Set the "
                "environment variable KERAS_BACKEND=tensorflow before "
                "importing keras."
            )
        super().compile(*args, **kwargs)

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_target = self.target_network(x, training=True)
            # compute_loss adds the regularization losses, once.
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_target, sample_weight=sample_weight,
                training=True,
            )
            target_loss = self._compile_loss(y, y_target, sample_weight)
            if self.augmented_network is not None:
                y_augmented = self.augmented_network(x, training=True)
                augmented_loss = self._compile_loss(y, y_augmented, sample_weight)
                loss = loss + self.alpha * augmented_loss
            scaled_loss = self.optimizer.scale_loss(loss)

        trainable = self.trainable_weights
        gradients = tape.gradient(scaled_loss, trainable)
        self.optimizer.apply_gradients(zip(gradients, trainable))

        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        self._loss_tracker.update_state(loss, sample_weight=batch_size)
        self.target_loss_tracker.update_state(target_loss, sample_weight=batch_size)
        if self.augmented_network is not None:
            self.augmented_loss_tracker.update_state(
                augmented_loss, sample_weight=batch_size
            )
            self.augmented_accuracy_tracker.update_state(
                _argmax_matches(y, y_augmented)
            )
        logs = self.compute_metrics(x, y, y_target, sample_weight=sample_weight)
        if self.augmented_network is None:
            logs.pop("augmented_loss", None)
            logs.pop("augmented_accuracy", None)
        return logs

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.target_network(x, training=False)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        self._loss_tracker.update_state(loss, sample_weight=ops.shape(y_pred)[0])
        self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

        # Report the target's metrics only: the training-only trackers would
        # show stale values here.
        logs = {"loss": self._loss_tracker.result()}
        if self._compile_metrics is not None:
            logs.update(self._compile_metrics.result())
        return logs

    def mutating_layers(self):
        """Return the hybrid layers that take part in block mutation."""
        return [
            layer for layer in self.hybrid.hybrid_layers.values()
            if getattr(layer, "mutate", False)
        ]

    def unfinished_schedules(self):
        """Return messages naming the fades and mutations not yet finished.

        An augment block is finished when its fade factor is 0, a mutating
        layer when its blend is 1. The list is empty when the target path
        computes exactly what `target_model()` exports.
        """
        messages = []
        for block, gate in sorted(self.hybrid.augment_blocks.items()):
            fade = float(gate.fade.numpy())
            if fade != 0.0:
                messages.append(f"augment block {block} has fade {fade:g}")
        for layer in self.mutating_layers():
            blend = float(layer.mutation.numpy())
            if blend != 1.0:
                messages.append(f"layer '{layer.name}' has mutation {blend:g}")
        return messages

    def target_model(self, name=None, allow_unfinished=False):
        """Export the target as a standalone Keras model.

        The model has the base architecture, each layer replaced by the one
        the op keeps (`ShiftConv2D`, `AddConv2D`, or the ordinary layer), and
        contains exactly the weights the target path uses, including the
        target's own BatchNormalization statistics. Augment blocks are left
        out and mutating layers use `op` alone: the target as it is once the
        `BlockFade` and `BlockMutation` schedules have finished.

        Raises:
            ValueError: a fade or mutation schedule has not finished, so the
                export would differ from the target path. Pass
                `allow_unfinished=True` to export the finished architecture
                anyway.
        """
        unfinished = self.unfinished_schedules()
        if unfinished and not allow_unfinished:
            raise ValueError(
                "Cannot export the target before its schedules finish: "
                f"{'; '.join(unfinished)}. Train until BlockFade and "
                "BlockMutation reach their end epochs, or pass "
                "allow_unfinished=True to export the architecture the "
                "target will have after them."
            )
        return rewrite.export_target(
            self.base,
            self.hybrid,
            self.op,
            self.shift_args,
            self.adder_args,
            name=name,
        )

    def augmented_model(self):
        """Return the augmented network, a functional model of hybrid layers.

        It shares its layers (and so its weights) with this model.
        """
        return self.hybrid.augmented

    def get_config(self):
        return {
            "name": self.name,
            "base": keras.saving.serialize_keras_object(self.base),
            "op": self.op,
            "width_mult": self._init_config["width_mult"],
            "expand_mult": self._init_config["expand_mult"],
            "alpha": self._init_config["alpha"],
            "augmentation": self.augmentation,
            "bn_momentum": self.bn_momentum,
            "augment_blocks": list(self.augment_blocks),
            "mutate_blocks": list(self.mutate_blocks),
            # The remap itself, so a reloaded model keeps the one it trained
            # with even if the shipped remap changes.
            "hws": self.hws_spec if self.hws_spec is not None else False,
            "augmented_op": self.augmented_op,
            **self.shift_args,
            **self.adder_args,
        }


def augment(base, op="shift", width_mult=2.0, expand_mult=2.0, alpha=1.0,
            augmentation=True, hws="auto", **kwargs):
    """Wrap `base` for ShiftAddAug training.

    Args:
        base: A Sequential or functional Keras model built from Conv2D,
            DepthwiseConv2D, Dense, BatchNormalization, activations,
            element-wise merges, padding, pooling, dropout, Flatten and
            Reshape layers.
        op: `"shift"` (every convolution, depthwise and dense layer becomes
            Shift), `"add"` (convolutions become adders; depthwise and dense
            layers stay multiplicative) or `"mult"` (NetAug). Defaults to
            `"shift"`.
        width_mult: Width multiple of the augmented network. Defaults to
            `2.0`.
        expand_mult: Extra multiple of inverted-residual expansions.
            Defaults to `2.0`.
        alpha: Weight of the augmented loss. Defaults to `1.0`.
        augmentation: `False` trains the target alone (Base, Shift, Add).
            Defaults to `True`.
        hws: Heterogeneous weight sharing: `"auto"` (the shipped remap of
            `op` where weights are shared across operators), `True`,
            `False` (none, for ablations) or a remap spec dict; see
            `ShiftAddAugModel`. Defaults to `"auto"`.
        **kwargs: Passed to `ShiftAddAugModel`.

    Returns:
        A `ShiftAddAugModel`; compile it and call `fit`.

    Example:

    ```python
    base = keras.applications.MobileNetV2(
        alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10
    )
    model = augment(base, op="shift")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_data, epochs=10)
    target = model.target_model()
    ```
    """
    return ShiftAddAugModel(
        base,
        op=op,
        width_mult=width_mult,
        expand_mult=expand_mult,
        alpha=alpha,
        augmentation=augmentation,
        hws=hws,
        **kwargs,
    )
