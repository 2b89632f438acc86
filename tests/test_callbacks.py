"""Tests of the between-epoch callbacks: reorder, fade, mutation, schedules."""

import json

import keras
import numpy as np
import pytest

from keras_shiftadd import augment, callbacks, cli, data, zoo
from keras_shiftadd.layers import (
    HybridBatchNormalization,
    HybridConv2D,
    ShiftConv2D,
    ShiftDense,
    ShiftDepthwiseConv2D,
)

L = keras.layers


def small_base(size=16):
    return zoo.small_cnn(input_shape=(size, size, 3), classes=10)


def mobilenet_base():
    return keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None,
    )


def randomize_batch_norm(model, seed=0):
    """Give every BN layer distinct statistics so that a wrong move shows."""
    rng = np.random.default_rng(seed)
    for layer in model.hybrid.hybrid_layers.values():
        if isinstance(layer, HybridBatchNormalization):
            layer.set_weights([
                rng.uniform(0.5, 1.5, weight.shape).astype("float32")
                for weight in layer.get_weights()
            ])


@pytest.fixture(scope="module")
def digits_train():
    """64 real training digits at 16x16 RGB with one-hot labels."""
    dataset = data.load_digits(seed=0)
    x = dataset.x_train[:64].astype("float32") / 255.0
    x = np.repeat(np.repeat(np.repeat(x, 2, axis=1), 2, axis=2), 3, axis=-1)
    y = keras.utils.to_categorical(dataset.y_train[:64], 10)
    return x, y


def compile_small(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


# ---------------------------------------------------------------------------
# Channel reordering.


@pytest.mark.parametrize("builder, size", [(small_base, 16), (mobilenet_base, 32)])
def test_mult_reorder_preserves_augmented_function(builder, size, digits_images):
    images = np.repeat(np.repeat(digits_images, size // 16, 1), size // 16, 2)
    model = augment(builder(), op="mult")
    randomize_batch_norm(model)
    before_augmented = model.augmented_network(images, training=False)
    before_target = model.predict(images, verbose=0)

    applied = callbacks.reorder_channels(model)

    assert len(applied) > 0
    np.testing.assert_allclose(
        model.augmented_network(images, training=False), before_augmented,
        rtol=1e-4, atol=1e-5,
    )
    # The target now reads other channels, so its function changes.
    assert not np.allclose(model.predict(images, verbose=0), before_target,
                           atol=1e-3)


@pytest.mark.parametrize("op", ["shift", "add"])
def test_within_slice_permutation_preserves_both_paths(op, digits_images):
    # With Shift and Add targets the operator depends on the slice, so only
    # a permutation that keeps every channel on its side of the target
    # boundary leaves the augmented function unchanged.
    digits_images = digits_images[:4]
    model = augment(small_base(), op=op)
    randomize_batch_norm(model)
    before_augmented = model.augmented_network(digits_images, training=False)
    before_target = model.predict(digits_images, verbose=0)

    rng = np.random.default_rng(1)
    permutations = []
    for group in callbacks.channel_groups(model):
        if not group.reorderable:
            permutations.append(None)
            continue
        k = group.target_channels
        permutations.append(np.concatenate([
            rng.permutation(k), k + rng.permutation(group.channels - k)
        ]))
    applied = callbacks.reorder_channels(model, permutations)

    assert len(applied) == sum(p is not None for p in permutations)
    # Shift rounds activations to steps of 2**-8, and a permuted summation
    # order can flip a rounding: that moves outputs by about 1e-3. A wrong
    # permutation moves them by 0.1 or more.
    atol = 5e-3 if op == "shift" else 1e-4
    np.testing.assert_allclose(
        model.augmented_network(digits_images, training=False),
        before_augmented, rtol=1e-4, atol=atol,
    )
    # The target path computes the same function on permuted channels, and
    # its own BN statistics move with the channels, so it matches too.
    np.testing.assert_allclose(model.predict(digits_images, verbose=0),
                               before_target, rtol=1e-4, atol=atol)


def test_residual_add_joins_channel_groups():
    model = augment(small_base(), op="shift", augment_blocks=[1])
    groups = callbacks.channel_groups(model)
    joined = [g for g in groups if any(p.name == "ir_project_conv"
                                       for p in g.producers)]

    assert len(joined) == 1
    group = joined[0]
    producers = {layer.name for layer in group.producers}
    assert producers == {"down_conv", "ir_project_conv", "augment_block1_conv"}
    readers = {layer.name for layer in group.readers}
    assert readers == {"ir_expand_conv", "head_conv", "augment_block1_conv"}
    per_channel = {layer.name for layer in group.per_channel}
    assert per_channel == {"down_bn", "ir_project_bn", "augment_block1_bn"}
    assert group.reorderable


def test_input_and_output_groups_stay_fixed():
    model = augment(small_base(), op="shift")
    reasons = [g.fixed_reason for g in callbacks.channel_groups(model)]

    assert "it contains the model input" in reasons
    assert "it contains a model output" in reasons


def test_flatten_group_is_left_in_place():
    base = keras.Sequential([
        keras.Input((8, 8, 3)),
        L.Conv2D(4, 3, name="conv"),
        L.Flatten(name="flatten"),
        L.Dense(5, name="classifier"),
    ])
    model = augment(base, op="shift")
    groups = callbacks.channel_groups(model)
    conv_group = [g for g in groups if g.producers
                  and g.producers[0].name == "conv"][0]

    assert conv_group.fixed_reason == "it reaches flatten layer 'flatten'"
    assert callbacks.reorder_channels(model) == []


def test_target_slice_holds_top_l1_channels():
    model = augment(small_base(), op="shift")
    rng = np.random.default_rng(2)
    for layer in model.hybrid.hybrid_layers.values():
        if isinstance(layer, HybridConv2D):
            layer.kernel.assign(rng.normal(size=layer.kernel.shape))
    before = {
        id(g.producers[0]): callbacks.channel_importance(g)
        for g in callbacks.channel_groups(model) if g.reorderable
    }

    callbacks.reorder_channels(model)

    for group in callbacks.channel_groups(model):
        if not group.reorderable:
            continue
        k = group.target_channels
        old = before[id(group.producers[0])]
        new = callbacks.channel_importance(group)
        np.testing.assert_allclose(np.sort(new[:k]), np.sort(old)[-k:],
                                   rtol=1e-6)
        assert new[:k].min() >= new[k:].max()


def test_top_channel_permutation_keeps_order():
    importance = np.array([0.1, 5.0, 0.3, 4.0, 0.2, 3.0])

    permutation = callbacks.top_channel_permutation(importance, 3)

    np.testing.assert_array_equal(permutation, [1, 3, 5, 0, 2, 4])


def test_reorder_moves_target_statistics():
    model = augment(small_base(), op="shift")
    randomize_batch_norm(model)
    norm = model.hybrid.hybrid_layers["sep_pw_bn"]
    old_target = norm.target_moving_mean.numpy().copy()
    old_augmented = norm.moving_mean.numpy().copy()
    k = norm.target_channels

    applied = callbacks.reorder_channels(model)

    permutation = [p for g, p in applied if norm in g.per_channel][0]
    expected = [old_target[c] if c < k else old_augmented[c]
                for c in permutation[:k]]
    np.testing.assert_allclose(norm.target_moving_mean.numpy(), expected)
    np.testing.assert_allclose(norm.moving_mean.numpy(),
                               old_augmented[permutation])


def test_reorder_moves_optimizer_momentum(digits_images):
    model = augment(small_base(), op="mult")
    randomize_batch_norm(model)
    compile_small(model)
    model.optimizer.build(model.trainable_variables)
    conv = model.hybrid.hybrid_layers["sep_pw_conv"]
    slot = model.optimizer.momentums[
        model.optimizer._get_variable_index(conv.kernel)
    ]
    slot.assign(np.random.default_rng(3).normal(size=slot.shape))
    old_slot = slot.numpy().copy()
    before = model.augmented_network(digits_images, training=False)

    applied = callbacks.reorder_channels(model)

    # Each variable moves once, even though the optimizer also lists it.
    np.testing.assert_allclose(
        model.augmented_network(digits_images, training=False), before,
        rtol=1e-4, atol=1e-5,
    )

    # The kernel reads one permuted group and writes another.
    outputs = [p for g, p in applied if conv in g.producers][0]
    inputs = [p for g, p in applied if conv in g.readers][0]
    expected = old_slot[:, :, inputs, :][..., outputs]
    np.testing.assert_allclose(slot.numpy(), expected)


def test_invalid_permutation_is_rejected():
    model = augment(small_base(), op="shift")
    groups = callbacks.channel_groups(model)
    permutations = [None if not g.reorderable else np.zeros(g.channels, int)
                    for g in groups]

    with pytest.raises(ValueError, match="expected a permutation of 0"):
        callbacks.reorder_channels(model, permutations)


def test_recalibration_uses_target_batch_statistics(digits_images):
    model = augment(small_base(), op="shift")
    randomize_batch_norm(model)

    used = callbacks.recalibrate_batch_norm(model, [digits_images[:6],
                                                    digits_images[6:]])

    assert used == 2
    stem = model.hybrid.hybrid_layers["stem_conv"]
    norm = model.hybrid.hybrid_layers["stem_bn"]
    means = [np.mean(stem(part, target=True).numpy(), axis=(0, 1, 2))
             for part in (digits_images[:6], digits_images[6:])]
    np.testing.assert_allclose(norm.target_moving_mean.numpy(),
                               np.mean(means, axis=0), rtol=1e-4, atol=1e-5)
    assert norm.momentum == pytest.approx(0.9)


# ---------------------------------------------------------------------------
# Augment blocks, mutation and schedules.


def test_fade_and_mutation_end_states(digits_train):
    x, y = digits_train
    model = augment(small_base(), op="shift", augment_blocks=[1],
                    mutate_blocks=[1])
    compile_small(model)
    gate = model.hybrid.augment_blocks[1]
    names = {layer.name for layer in model.mutating_layers()}
    assert names == {"ir_expand_conv", "ir_dw", "ir_project_conv"}
    assert float(gate.fade.numpy()) == 1.0
    with pytest.raises(ValueError, match="augment block 1 has fade 1"):
        model.target_model()

    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[
        callbacks.BlockFade(end_epoch=2), callbacks.BlockMutation(end_epoch=1)
    ])

    assert float(gate.fade.numpy()) == 0.0
    assert all(float(layer.mutation.numpy()) == 1.0
               for layer in model.mutating_layers())
    target = model.target_model()
    # The fade leaves no trace in the target, but the augmented model keeps it.
    assert not any("augment_block" in layer.name for layer in target.layers)
    assert any(layer.name == "augment_block1_conv"
               for layer in model.augmented_network.layers)
    # Every mutated layer is Shift, and so is everything else.
    multiplicative = [
        layer.name for layer in target.layers
        if type(layer) in (L.Conv2D, L.DepthwiseConv2D, L.Dense)
    ]
    assert multiplicative == []
    assert isinstance(target.get_layer("ir_dw"), ShiftDepthwiseConv2D)
    assert isinstance(target.get_layer("ir_expand_conv"), ShiftConv2D)
    assert isinstance(target.get_layer("classifier"), ShiftDense)
    np.testing.assert_allclose(target.predict(x[:16], verbose=0),
                               model.predict(x[:16], verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_schedules_set_values_per_epoch():
    model = augment(small_base(), op="shift", augment_blocks=[1],
                    mutate_blocks=[1])
    fade = callbacks.BlockFade(start_epoch=1, end_epoch=3)
    mutation = callbacks.BlockMutation()  # ends at half of 4 epochs
    fades, blends = [], []
    for callback in (fade, mutation):
        callback.set_model(model)
        callback.set_params({"epochs": 4})
        callback.on_train_begin()
    for epoch in range(4):
        fade.on_epoch_begin(epoch)
        mutation.on_epoch_begin(epoch)
        fades.append(float(model.hybrid.augment_blocks[1].fade.numpy()))
        blends.append(float(model.mutating_layers()[0].mutation.numpy()))

    assert fades == [1.0, 1.0, 0.5, 0.0]
    assert blends == [0.0, 0.5, 1.0, 1.0]
    assert callbacks.BlockFade().resolved_end_epoch(1) == 0
    assert callbacks.BlockFade(end_fraction=1.0).resolved_end_epoch(6) == 5


def test_mutation_blend_rule(digits_images):
    layer = HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                         padding="same", op="shift", mutate=True)
    plain = HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                         padding="same", op="mult")
    x = digits_images[:4]
    layer(x, target=True)
    plain(x, target=True)
    # The mutating layer's weights are kernel, bias and the blend.
    plain.set_weights(layer.get_weights()[:2])
    pure = HybridConv2D(8, 4, 3, input_channels=6, target_input_channels=3,
                        padding="same", op="shift")
    pure(x, target=True)
    pure.set_weights(plain.get_weights())
    mult_output = plain(x, target=True).numpy()
    shift_output = pure(x, target=True).numpy()

    assert float(layer.mutation.numpy()) == 0.0
    np.testing.assert_allclose(layer(x, target=True), mult_output, atol=1e-5)
    layer.mutation.assign(0.25)
    np.testing.assert_allclose(layer(x, target=True),
                               0.75 * mult_output + 0.25 * shift_output,
                               atol=1e-5)
    layer.mutation.assign(1.0)
    np.testing.assert_allclose(layer(x, target=True), shift_output, atol=1e-5)


def test_add_mutation_keeps_depthwise_multiplicative():
    model = augment(small_base(), op="add", mutate_blocks=[1])

    names = {layer.name for layer in model.mutating_layers()}

    assert names == {"ir_expand_conv", "ir_project_conv"}


def test_unfinished_export_is_allowed_on_request():
    model = augment(small_base(), op="shift", mutate_blocks=[1])

    with pytest.raises(ValueError, match="ir_expand_conv' has mutation 0"):
        model.target_model()
    target = model.target_model(allow_unfinished=True)

    assert isinstance(target.get_layer("ir_project_conv"), ShiftConv2D)


def test_alpha_scheduler_stops_augmentation():
    model = augment(small_base(), op="shift", alpha=0.5)
    scheduler = callbacks.AlphaScheduler(
        schedule=lambda epoch, alpha: alpha * (epoch + 1), stop_fraction=0.5
    )
    scheduler.set_model(model)
    scheduler.set_params({"epochs": 4})
    scheduler.on_train_begin()
    seen = []
    for epoch in range(4):
        scheduler.on_epoch_begin(epoch)
        seen.append(float(model.alpha.numpy()))

    assert seen == [0.5, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------------------
# Resuming with BackupAndRestore.


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted for the test")


def small_base_without_dropout():
    # NOTE: Keras 3.15's BackupAndRestore does not checkpoint the state of
    # Dropout's seed generator, so a resumed run draws other dropout masks.
    # The resume test sets the rate to 0 to compare everything else exactly.
    config = small_base().get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["rate"] = 0.0
    return keras.Model.from_config(config)


def _mechanism_run(x, y, extra_callbacks, epochs=3):
    keras.utils.set_random_seed(0)
    model = augment(small_base_without_dropout(), op="shift",
                    augment_blocks=[1], mutate_blocks=[1])
    compile_small(model)
    schedule = [
        callbacks.ChannelReorder(),
        callbacks.BlockFade(end_epoch=1),
        callbacks.BlockMutation(end_epoch=2),
        callbacks.AlphaScheduler(stop_epoch=2),
    ]
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0,
              callbacks=extra_callbacks + schedule)
    return model


def test_resumed_run_matches_uninterrupted(digits_train, tmp_path):
    x, y = digits_train
    reference = _mechanism_run(x, y, [])

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        _mechanism_run(x, y, [backup, _Interrupt(epoch=1)])
    resumed = _mechanism_run(x, y, [backup])

    names = [v.path for v in reference.weights]
    assert names == [v.path for v in resumed.weights]
    assert float(resumed.hybrid.augment_blocks[1].fade.numpy()) == 0.0
    assert float(resumed.alpha.numpy()) == 0.0
    for name, expected, actual in zip(names, reference.get_weights(),
                                      resumed.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6,
                                   err_msg=name)


# ---------------------------------------------------------------------------
# Errors and the command line.


@pytest.mark.parametrize("argument", ["augment_blocks", "mutate_blocks"])
def test_missing_block_is_rejected(argument):
    with pytest.raises(ValueError, match=r"Invalid block 2 .*has 1 residual "
                                         r"block .*valid block numbers are "
                                         r"1 to 1"):
        augment(small_base(), op="shift", **{argument: [2]})


def test_model_without_blocks_is_rejected():
    base = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3),
                             L.GlobalAveragePooling2D(), L.Dense(3)])

    with pytest.raises(ValueError, match="no residual Add layer"):
        augment(base, op="shift", augment_blocks=[1])


def test_mutation_with_mult_is_rejected():
    with pytest.raises(ValueError, match="needs op='shift' or op='add'"):
        augment(small_base(), op="mult", mutate_blocks=[1])


def test_fade_without_blocks_is_rejected(digits_train):
    x, y = digits_train
    model = augment(small_base(), op="shift")
    compile_small(model)

    with pytest.raises(ValueError, match="has no augment block"):
        model.fit(x[:8], y[:8], epochs=1, verbose=0,
                  callbacks=[callbacks.BlockFade()])


def test_cli_trains_with_all_mechanisms(tmp_path):
    output = tmp_path / "run"

    status = cli.main([
        "train", "--epochs", "2", "--image-size", "16", "--quiet",
        "--limit", "128", "--test-limit", "64",
        "--reorder", "--augment-blocks", "1", "--mutate",
        "--augmentation-end", "0.5", "--recalibrate", "2",
        "--output", str(output),
    ])

    assert status == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["config"]["reorder"] is True
    assert metrics["config"]["augment_blocks"] == [1]
    assert metrics["config"]["mutate_blocks"] == "all"
    target = keras.saving.load_model(output / "target.keras", safe_mode=True)
    assert not any("augment_block" in layer.name for layer in target.layers)


def test_cli_reports_missing_block(tmp_path, capsys):
    status = cli.main(["train", "--epochs", "1", "--image-size", "16",
                       "--quiet", "--augment-blocks", "3",
                       "--output", str(tmp_path / "run")])

    assert status == 2
    assert "Invalid block 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
