"""Callbacks that act between epochs of ShiftAddAug training.

- `ChannelReorder` moves the channels with the largest L1 norm into the
  target slice of the shared weights (NetAug's channel sorting).
- `BlockFade` fades augment blocks out of the target path.
- `BlockMutation` turns multiplicative target blocks into Shift or Add.
- `AlphaScheduler` sets the weight of the augmented loss per epoch and can
  end width augmentation for the last part of training.
- `BatchNormRecalibration` re-estimates the target path's BatchNormalization
  statistics on training data.

All of them work with `ShiftAddAugModel.fit`. Their state is stored in the
model's weights (the permuted weights, the `fade`, `mutation` and `alpha`
variables) or computed from the epoch number. The schedules set their
variables at the start of each epoch, and a reorder also runs at the start
of an epoch, after the previous epoch's checkpoint. So
`keras.callbacks.BackupAndRestore` resumes an interrupted run exactly.
"""

import dataclasses
import logging
import math

import keras
import numpy as np

from keras_shiftadd import graph
from keras_shiftadd.layers.hybrid import (
    HybridBatchNormalization,
    HybridConv2D,
    HybridDense,
    HybridDepthwiseConv2D,
    TargetFade,
)
from keras_shiftadd.layers.reshape import HybridFlatten, HybridReshape

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Channel groups and reordering.


@dataclasses.dataclass
class ChannelGroup:
    """Channels shared by every tensor that one permutation must move together.

    A group starts at the output of a convolution or dense layer. It follows
    the channels through layers that act on each channel alone
    (BatchNormalization, activations, padding, pooling, depthwise
    convolutions with `depth_multiplier=1`). Element-wise merges, such as a
    residual `Add`, join the groups of their inputs into one.
    """

    channels: int  # width on the augmented path
    target_channels: int  # leading channels that belong to the target
    producers: list  # HybridConv2D / HybridDense writing the channels
    readers: list  # HybridConv2D / HybridDense reading them as input channels
    per_channel: list  # HybridBatchNormalization / HybridDepthwiseConv2D
    fixed_reason: str = None  # why the group must keep its order, if it must
    tensor_names: list = dataclasses.field(default_factory=list)

    @property
    def reorderable(self):
        """Whether a reorder may permute this group."""
        return self.fixed_reason is None


class _UnionFind:
    def __init__(self):
        self.parent = {}

    def find(self, key):
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, first, second):
        self.parent[self.find(first)] = self.find(second)


# Layers of the augmented graph that keep each channel where it is.
_CHANNEL_PRESERVING = graph.PASS_THROUGH + (HybridReshape, TargetFade)


def channel_groups(model):
    """Return the `ChannelGroup`s of the augmented network of `model`.

    Args:
        model: A `ShiftAddAugModel`.

    Groups that touch the model input or output, a flatten, a depthwise
    convolution with `depth_multiplier > 1`, or an unsupported layer keep
    their order, and `fixed_reason` gives the reason.
    """
    steps, functional = graph.walk(model.hybrid.augmented)
    sets = _UnionFind()
    producers, per_channel, fixed = {}, {}, {}

    def mark_fixed(tensor, reason):
        fixed.setdefault(id(tensor), reason)

    for step in steps:
        layer = step.layer
        output = step.output
        sets.find(id(output))
        if step.is_input:
            mark_fixed(output, "it contains the model input")
            continue
        inputs = step.inputs
        if isinstance(layer, (HybridConv2D, HybridDense)):
            producers.setdefault(id(output), []).append(layer)
        elif isinstance(layer, HybridDepthwiseConv2D):
            if layer.depth_multiplier == 1:
                sets.union(id(inputs[0]), id(output))
                per_channel.setdefault(id(output), []).append(layer)
            else:
                reason = f"depthwise layer '{layer.name}' has depth_multiplier > 1"
                mark_fixed(inputs[0], reason)
                mark_fixed(output, reason)
        elif isinstance(layer, HybridBatchNormalization):
            sets.union(id(inputs[0]), id(output))
            per_channel.setdefault(id(output), []).append(layer)
        elif isinstance(layer, _CHANNEL_PRESERVING):
            sets.union(id(inputs[0]), id(output))
        elif isinstance(layer, graph.MERGES):
            for tensor in inputs:
                sets.union(id(tensor), id(output))
        elif isinstance(layer, (HybridFlatten, keras.layers.Flatten)):
            # NOTE: a flatten interleaves positions and channels, so the
            # dense layer after it reads each channel at many rows. Such
            # groups stay in place; they are not permuted in spatial blocks.
            reason = f"it reaches flatten layer '{layer.name}'"
            mark_fixed(inputs[0], reason)
            mark_fixed(output, reason)
        else:
            reason = f"layer '{layer.name}' ({type(layer).__name__}) is not supported"
            for tensor in inputs:
                mark_fixed(tensor, reason)
            mark_fixed(output, reason)
    for tensor in functional.outputs:
        mark_fixed(tensor, "it contains a model output")

    groups = {}
    for step in steps:
        root = sets.find(id(step.output))
        group = groups.get(root)
        if group is None:
            # A flattened tensor has no static channel count; it is fixed.
            channels = int(step.output.shape[-1] or 0)
            group = ChannelGroup(channels, channels, [], [], [])
            groups[root] = group
        group.tensor_names.append(step.output.name)
        key = id(step.output)
        group.producers.extend(producers.get(key, []))
        group.per_channel.extend(per_channel.get(key, []))
        if key in fixed and group.fixed_reason is None:
            group.fixed_reason = fixed[key]
        for tensor in step.inputs:
            group_of_input = groups.get(sets.find(id(tensor)))
            if group_of_input is not None and isinstance(
                step.layer, (HybridConv2D, HybridDense)
            ):
                group_of_input.readers.append(step.layer)

    for group in groups.values():
        widths = {_target_width(layer) for layer in group.producers + group.per_channel}
        if len(widths) > 1:
            raise ValueError(
                "Layers that share channels disagree on the target width: "
                f"{sorted(widths)} in the group of tensors {group.tensor_names}."
            )
        if widths:
            group.target_channels = widths.pop()
        if group.fixed_reason is None and not group.producers:
            group.fixed_reason = "no convolution or dense layer produces it"
    return list(groups.values())


def _target_width(layer):
    if isinstance(layer, HybridConv2D):
        return layer.target_filters
    if isinstance(layer, HybridDense):
        return layer.target_units
    if isinstance(layer, HybridDepthwiseConv2D):
        return layer.target_input_channels
    return layer.target_channels


def channel_importance(group):
    """Return the L1 importance of each channel of `group`.

    The importance of a channel is the sum, over every layer that produces
    the group, of the L1 norm of that channel's output slice of the kernel.
    """
    importance = np.zeros(group.channels, dtype="float64")
    for layer in group.producers:
        kernel = np.abs(keras.ops.convert_to_numpy(layer.kernel))
        importance += kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
    return importance


def top_channel_permutation(importance, target_channels):
    """Return the permutation that moves the top-L1 channels to the front.

    Entry `i` is the old index of the channel placed at index `i`. The first
    `target_channels` entries are the channels with the largest importance,
    in their old order, and ties go to the lower index. The remaining
    channels follow, also in their old order.
    """
    ranking = np.argsort(-np.asarray(importance), kind="stable")
    chosen = np.sort(ranking[:target_channels])
    rest = np.setdiff1d(np.arange(len(importance)), chosen)
    return np.concatenate([chosen, rest]).astype("int64")


def _variable_moves(group, permutation):
    """Return `(variable, axis)` pairs that `permutation` reorders."""
    moves = []
    for layer in group.producers:
        moves.append((layer.kernel, layer.kernel.ndim - 1))
        if layer.bias is not None:
            moves.append((layer.bias, 0))
    for layer in group.readers:
        axis = 2 if isinstance(layer, HybridConv2D) else 0
        moves.append((layer.kernel, axis))
    for layer in group.per_channel:
        if isinstance(layer, HybridDepthwiseConv2D):
            moves.append((layer.kernel, 2))
            if layer.bias is not None:
                moves.append((layer.bias, 0))
            continue
        for variable in (layer.gamma, layer.beta, layer.moving_mean,
                         layer.moving_variance):
            if variable is not None:
                moves.append((variable, 0))
    return moves


def _optimizer_slots(model):
    """Map each trainable variable's id to the optimizer slots of its shape.

    Finds every optimizer attribute that is a list with one variable per
    trained variable (SGD momentums, Adam moments, moving averages).
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False):
        return {}
    trained = list(getattr(optimizer, "_trainable_variables", []))
    slots = {}
    for value in vars(optimizer).values():
        if not isinstance(value, (list, tuple)) or len(value) != len(trained):
            continue
        if not all(isinstance(item, keras.Variable) for item in value):
            continue
        for variable, slot in zip(trained, value):
            # The list of trained variables itself matches too: skip it.
            if slot is variable or tuple(slot.shape) != tuple(variable.shape):
                continue
            slots.setdefault(id(variable), []).append(slot)
    return slots


def reorder_channels(model, permutations=None):
    """Permute the shared weights so that important channels form the target.

    One permutation per `ChannelGroup` is applied to every tensor that
    contains those channels: producing kernels and biases (output axis), reading
    kernels (input axis), depthwise kernels, BatchNormalization `gamma`,
    `beta` and moving statistics, and the optimizer's slots of those
    variables (momentum). The augmented network's function is unchanged
    wherever the operator does not depend on the slice: for `op="mult"`, or
    when no channel crosses the target boundary. With Shift or Add targets, a
    channel that moves into the target slice is from then on computed by
    the multiplication-free operator, as the method intends.

    The target path's own BatchNormalization statistics move with channels
    that stay in the target slice. A channel that enters the slice starts
    from the augmented path's statistics of that channel, an estimate until
    training or `recalibrate_batch_norm` updates them.

    Args:
        model: A `ShiftAddAugModel`.
        permutations: Optional list with one permutation (or `None`, to
            skip) per group of `channel_groups(model)`, in that order.
            Defaults to the top-L1 permutation of every reorderable group.

    Returns:
        A list of `(group, permutation)` for the groups that were permuted.
    """
    groups = channel_groups(model)
    if permutations is not None and len(permutations) != len(groups):
        raise ValueError(
            f"Expected one permutation per channel group ({len(groups)} "
            f"groups). Received: {len(permutations)} permutations."
        )
    slots = _optimizer_slots(model)
    values = {}  # id(variable) -> (variable, NumPy value being permuted)

    def permute(variable, axis, permutation):
        key = id(variable)
        if key not in values:
            values[key] = (variable, keras.ops.convert_to_numpy(variable))
        values[key] = (variable, np.take(values[key][1], permutation, axis=axis))

    applied = []
    for index, group in enumerate(groups):
        if permutations is None:
            if not group.reorderable or group.channels == group.target_channels:
                continue
            permutation = top_channel_permutation(
                channel_importance(group), group.target_channels
            )
        else:
            permutation = permutations[index]
            if permutation is None:
                continue
            permutation = np.asarray(permutation, dtype="int64")
            if not group.reorderable:
                raise ValueError(
                    f"Channel group of {group.tensor_names[0]} cannot be "
                    f"permuted: {group.fixed_reason}."
                )
            if sorted(permutation.tolist()) != list(range(group.channels)):
                raise ValueError(
                    f"Invalid permutation for the channel group of "
                    f"{group.tensor_names[0]}: expected a permutation of "
                    f"0..{group.channels - 1}."
                )
        if np.array_equal(permutation, np.arange(group.channels)):
            continue

        target_statistics = _moved_target_statistics(group, permutation)
        for variable, axis in _variable_moves(group, permutation):
            permute(variable, axis, permutation)
            for slot in slots.get(id(variable), []):
                permute(slot, axis, permutation)
        for variable, value in target_statistics:
            values[id(variable)] = (variable, value)
        applied.append((group, permutation))

    for variable, value in values.values():
        variable.assign(value)
    return applied


def _moved_target_statistics(group, permutation):
    """Return the target path's BatchNormalization statistics after a move."""
    updates = []
    width = group.target_channels
    chosen = permutation[:width]
    for layer in group.per_channel:
        if not isinstance(layer, HybridBatchNormalization):
            continue
        pairs = (
            (layer.target_moving_mean, layer.moving_mean),
            (layer.target_moving_variance, layer.moving_variance),
        )
        for target_variable, augmented_variable in pairs:
            target_value = keras.ops.convert_to_numpy(target_variable)
            augmented_value = keras.ops.convert_to_numpy(augmented_variable)
            stayed = chosen < width
            moved = np.where(
                stayed,
                target_value[np.minimum(chosen, width - 1)],
                augmented_value[chosen],
            )
            updates.append((target_variable, moved.astype(target_value.dtype)))
    return updates


def recalibrate_batch_norm(model, data, steps=None):
    """Re-estimate the target path's BatchNormalization statistics on `data`.

    Runs the target network in training mode, without gradients, and sets
    every `target_moving_mean` and `target_moving_variance` to the average
    of the batch statistics over the batches seen. Only the target path's
    statistics change. Dropout is active during these passes.

    Args:
        model: A `ShiftAddAugModel`.
        data: A `tf.data.Dataset` or other iterable of batches, each an input
            array or an `(x, y)` / `(x, y, sample_weight)` tuple, or a NumPy
            array of inputs (split into batches of 128).
        steps: Maximum number of batches, `None` for all.

    Returns:
        The number of batches used.
    """
    norms = [
        layer for layer in model.hybrid.hybrid_layers.values()
        if isinstance(layer, HybridBatchNormalization)
    ]
    if isinstance(data, np.ndarray):
        data = np.array_split(data, max(1, math.ceil(len(data) / 128)))
    momentums = [layer.momentum for layer in norms]
    count = 0
    try:
        for batch in data:
            if steps is not None and count >= steps:
                break
            x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
            count += 1
            # Momentum (n - 1) / n turns the moving average into the running
            # mean of the batch statistics.
            for layer in norms:
                layer.momentum = (count - 1) / count
            model.target_network(x, training=True)
    finally:
        for layer, momentum in zip(norms, momentums):
            layer.momentum = momentum
    if count == 0:
        raise ValueError(
            "Cannot recalibrate BatchNormalization statistics: `data` "
            "yielded no batch."
        )
    return count


class ChannelReorder(keras.callbacks.Callback):
    """Reorder channels by L1 importance at epoch boundaries.

    At the start of every `frequency`-th epoch after the first, calls
    `reorder_channels` on the model, so that the channels with the largest
    L1 norm form the target slice. Running at the start of an epoch (rather
    than the end of the previous one) keeps `BackupAndRestore` exact in any
    callback order, and means no reorder follows the last epoch.

    Args:
        frequency: Reorder every this many epochs. Defaults to `1`.
        recalibration_data: Optional training data for
            `recalibrate_batch_norm` after each reorder. Without it, the
            target statistics of channels that enter the target slice start
            from the augmented ones and adapt during the epoch.
        recalibration_steps: Batches for the recalibration. Defaults to
            `None` (all).
    """

    def __init__(self, frequency=1, recalibration_data=None,
                 recalibration_steps=None):
        super().__init__()
        if not isinstance(frequency, int) or frequency < 1:
            raise ValueError(
                "Invalid `frequency`: expected a positive integer. "
                f"Received: frequency={frequency!r}"
            )
        self.frequency = frequency
        self.recalibration_data = recalibration_data
        self.recalibration_steps = recalibration_steps

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0 or epoch % self.frequency:
            return
        applied = reorder_channels(self.model)
        moved = sum(
            int(np.sum(permutation[: group.target_channels] >= group.target_channels))
            for group, permutation in applied
        )
        logger.info("epoch %d: %d channels entered the target slice "
                    "(channel groups permuted: %d)", epoch + 1, moved,
                    len(applied))
        if self.recalibration_data is not None:
            recalibrate_batch_norm(self.model, self.recalibration_data,
                                   self.recalibration_steps)


# ---------------------------------------------------------------------------
# Epoch schedules.


def linear_ramp(epoch, start_epoch, end_epoch):
    """Return 0 up to `start_epoch`, 1 from `end_epoch`, linear in between."""
    if epoch >= end_epoch:
        return 1.0
    if epoch <= start_epoch:
        return 0.0
    return (epoch - start_epoch) / (end_epoch - start_epoch)


class _EpochSchedule(keras.callbacks.Callback):
    """A value that ramps linearly from `start_epoch` to `end_epoch`.

    `end_epoch=None` resolves to `end_fraction` of the epochs passed to
    `fit`, at most the last epoch, so the final value holds for at least one
    whole epoch.
    """

    def __init__(self, start_epoch=0, end_epoch=None, end_fraction=0.5):
        super().__init__()
        if not isinstance(start_epoch, int) or start_epoch < 0:
            raise ValueError(
                "Invalid `start_epoch`: expected an integer >= 0. "
                f"Received: start_epoch={start_epoch!r}"
            )
        if end_epoch is not None and (
            not isinstance(end_epoch, int) or end_epoch < start_epoch
        ):
            raise ValueError(
                "Invalid `end_epoch`: expected an integer >= start_epoch "
                f"({start_epoch}). Received: end_epoch={end_epoch!r}"
            )
        if not 0.0 <= end_fraction <= 1.0:
            raise ValueError(
                "Invalid `end_fraction`: expected a number in [0, 1]. "
                f"Received: end_fraction={end_fraction!r}"
            )
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.end_fraction = float(end_fraction)

    def resolved_end_epoch(self, epochs):
        """Return the end epoch for a `fit` call of `epochs` epochs."""
        if self.end_epoch is not None:
            return self.end_epoch
        end = math.ceil(self.end_fraction * epochs)
        return max(self.start_epoch, min(end, epochs - 1))

    def on_train_begin(self, logs=None):
        epochs = self.params.get("epochs")
        self._end = self.resolved_end_epoch(epochs)
        if self._end > epochs - 1:
            logger.warning(
                "%s ends at epoch %d, after the last epoch of this fit (%d): "
                "the target will not reach its final form.",
                type(self).__name__, self._end + 1, epochs,
            )
        self._check_model(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._apply(linear_ramp(epoch, self.start_epoch, self._end))

    def _check_model(self, model):
        raise NotImplementedError

    def _apply(self, progress):
        raise NotImplementedError


class BlockFade(_EpochSchedule):
    """Fade augment blocks out of the target path.

    Each epoch starts by setting the `fade` factor of every augment block to
    `1 - linear_ramp(epoch, start_epoch, end_epoch)`: 1 (the block reaches
    the target in full) until `start_epoch`, then linearly down to 0 at
    `end_epoch`. The augmented network keeps the block throughout. From
    `end_epoch` on the target path equals `target_model()`, which has no
    trace of the blocks.

    Args:
        start_epoch: Last epoch (0-based) with fade 1. Defaults to `0`.
        end_epoch: First epoch with fade 0. Defaults to `None`:
            `end_fraction` of the epochs, at most the last one.
        end_fraction: Defaults to `0.5`.
    """

    def _check_model(self, model):
        if not model.hybrid.augment_blocks:
            raise ValueError(
                f"BlockFade has nothing to fade: model '{model.name}' has no "
                "augment block. Pass augment_blocks=[...] to augment()."
            )

    def _apply(self, progress):
        for gate in self.model.hybrid.augment_blocks.values():
            gate.fade.assign(1.0 - progress)


class BlockMutation(_EpochSchedule):
    """Mutate multiplicative target blocks into the target operator.

    Each epoch starts by setting the `mutation` blend of every mutating
    layer to `linear_ramp(epoch, start_epoch, end_epoch)`. A mutating layer
    computes its target block as `(1 - m) * Mult(X_t) + m * MF(X_t)`, so
    the block is multiplicative until `start_epoch` and pure Shift or Add
    from `end_epoch` on.

    Args:
        start_epoch: Last epoch (0-based) with blend 0. Defaults to `0`.
        end_epoch: First epoch with blend 1. Defaults to `None`:
            `end_fraction` of the epochs, at most the last one.
        end_fraction: Defaults to `0.5`.
    """

    def _check_model(self, model):
        if not model.mutating_layers():
            raise ValueError(
                f"BlockMutation has nothing to mutate: model '{model.name}' "
                "has no mutating layer. Pass mutate_blocks=[...] to augment()."
            )

    def _apply(self, progress):
        for layer in self.model.mutating_layers():
            layer.mutation.assign(progress)


class AlphaScheduler(keras.callbacks.Callback):
    """Set the weight of the augmented loss at the start of each epoch.

    Args:
        schedule: Optional function `schedule(epoch, alpha) -> alpha`, where
            `alpha` is the value given to `augment()`. Defaults to keeping
            that value.
        stop_epoch: First epoch (0-based) trained without width
            augmentation: from it on alpha is 0, so only the target loss
            trains the weights. NetAug ends augmentation like this for the
            last part of training. Defaults to `None` (never).
        stop_fraction: `stop_epoch` as a fraction of the epochs passed to
            `fit`, used when `stop_epoch` is `None`. Defaults to `None`.

    NOTE: with alpha 0 each step still computes the augmented network, so
    the epochs after `stop_epoch` take as long as the others.
    """

    def __init__(self, schedule=None, stop_epoch=None, stop_fraction=None):
        super().__init__()
        if schedule is not None and not callable(schedule):
            raise ValueError(
                "Invalid `schedule`: expected a function (epoch, alpha) -> "
                f"alpha. Received: {schedule!r}"
            )
        if stop_epoch is not None and (
            not isinstance(stop_epoch, int) or stop_epoch < 0
        ):
            raise ValueError(
                "Invalid `stop_epoch`: expected an integer >= 0. "
                f"Received: stop_epoch={stop_epoch!r}"
            )
        if stop_fraction is not None and not 0.0 <= stop_fraction <= 1.0:
            raise ValueError(
                "Invalid `stop_fraction`: expected a number in [0, 1]. "
                f"Received: stop_fraction={stop_fraction!r}"
            )
        self.schedule = schedule
        self.stop_epoch = stop_epoch
        self.stop_fraction = stop_fraction

    def on_train_begin(self, logs=None):
        self._initial_alpha = float(self.model.get_config()["alpha"])
        self._stop = self.stop_epoch
        if self._stop is None and self.stop_fraction is not None:
            self._stop = round(self.stop_fraction * self.params.get("epochs"))

    def on_epoch_begin(self, epoch, logs=None):
        alpha = self._initial_alpha
        if self.schedule is not None:
            alpha = float(self.schedule(epoch, alpha))
        if self._stop is not None and epoch >= self._stop:
            alpha = 0.0
        if not alpha >= 0.0:
            raise ValueError(
                f"AlphaScheduler: the schedule returned alpha={alpha!r} for "
                f"epoch {epoch}; expected a number >= 0."
            )
        self.model.alpha.assign(alpha)


class BatchNormRecalibration(keras.callbacks.Callback):
    """Recalibrate the target's BatchNormalization statistics on training data.

    Calls `recalibrate_batch_norm` at the end of training, so that
    `evaluate` and `target_model()` afterwards use statistics of the final
    target, and with `before_validation=True` also before each validation
    during `fit`.

    Args:
        data: Training data, as for `recalibrate_batch_norm`. Iterate it in
            a fixed order if runs must resume exactly.
        steps: Batches per recalibration. Defaults to `None` (all).
        before_validation: Defaults to `False`.
    """

    def __init__(self, data, steps=None, before_validation=False):
        super().__init__()
        self.data = data
        self.steps = steps
        self.before_validation = before_validation
        self._training = False

    def on_train_begin(self, logs=None):
        self._training = True

    def on_test_begin(self, logs=None):
        if self._training and self.before_validation:
            recalibrate_batch_norm(self.model, self.data, self.steps)

    def on_train_end(self, logs=None):
        self._training = False
        recalibrate_batch_norm(self.model, self.data, self.steps)
