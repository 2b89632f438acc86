"""Train one ShiftAddAug method on a dataset and record its results."""

import dataclasses
import json
import logging
import math
import os
import statistics
import time

import keras

from keras_shiftadd import callbacks as callbacks_lib
from keras_shiftadd import data as data_lib
from keras_shiftadd import graph, zoo
from keras_shiftadd.augment import residual_blocks
from keras_shiftadd.model import augment, method_name

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the CLI's options map onto these."""

    model: str = "small-cnn"
    op: str = "shift"
    augmentation: bool = True
    width_mult: float = 2.0
    expand_mult: float = 2.0
    alpha: float = 1.0
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 0.05
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    image_size: int = 32
    seed: int = 0
    verbose: object = "auto"
    # Between-epoch mechanisms (keras_shiftadd.callbacks). Block numbers
    # count residual Add layers from 1; mutate_blocks may also be "all".
    reorder: bool = False
    augment_blocks: tuple = ()
    mutate_blocks: object = ()
    fade_end: float = 0.5  # fraction of the epochs at which fades reach 0
    mutation_end: float = 0.5  # fraction at which mutations reach 1
    augmentation_end: float = None  # fraction from which alpha is 0
    # Training batches on which the target's BatchNormalization statistics
    # are re-estimated before testing. The moving averages lag behind the
    # weights in short runs (a 35-step digits run tested at 28% without and
    # 70% with recalibration), so it is on by default; 0 turns it off.
    recalibration_batches: int = 20
    # Heterogeneous weight sharing ("auto", True or False) and the operator
    # of the augmented channels ("mult", or `op` for the ablation of the
    # paper's Table 6); see `ShiftAddAugModel`.
    hws: object = "auto"
    augmented_op: str = "mult"


class EpochTimer(keras.callbacks.Callback):
    """Record the training time of each epoch, validation excluded, in seconds."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        # Validation at the end of an epoch: stop the clock before it.
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)
            self._start = None

    def on_epoch_end(self, epoch, logs=None):
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)
            self._start = None


def check_config(config):
    """Raise ValueError for settings that cannot train."""
    # (name, value, valid, expected range)
    checks = [
        ("epochs", config.epochs,
         isinstance(config.epochs, int) and config.epochs >= 1, "an integer >= 1"),
        ("batch_size", config.batch_size,
         isinstance(config.batch_size, int) and config.batch_size >= 1,
         "an integer >= 1"),
        ("learning_rate", config.learning_rate,
         math.isfinite(config.learning_rate) and config.learning_rate > 0,
         "a finite number > 0"),
        ("weight_decay", config.weight_decay, config.weight_decay >= 0,
         "a number >= 0"),
        ("label_smoothing", config.label_smoothing,
         0 <= config.label_smoothing < 1, "a number in [0, 1)"),
        ("image_size", config.image_size,
         isinstance(config.image_size, int) and config.image_size >= 8,
         "an integer >= 8 (>= 32 for MobileNet backbones)"),
        ("alpha", config.alpha, config.alpha >= 0, "a number >= 0"),
        ("width_mult", config.width_mult, config.width_mult >= 1,
         "a number >= 1"),
        ("expand_mult", config.expand_mult, config.expand_mult >= 1,
         "a number >= 1"),
        ("fade_end", config.fade_end, 0 <= config.fade_end <= 1,
         "a number in [0, 1]"),
        ("mutation_end", config.mutation_end, 0 <= config.mutation_end <= 1,
         "a number in [0, 1]"),
        ("augmentation_end", config.augmentation_end,
         config.augmentation_end is None or 0 <= config.augmentation_end <= 1,
         "None or a number in [0, 1]"),
        ("recalibration_batches", config.recalibration_batches,
         isinstance(config.recalibration_batches, int)
         and config.recalibration_batches >= 0, "an integer >= 0"),
    ]
    for name, value, valid, expected in checks:
        if not valid:
            raise ValueError(
                f"Invalid {name}: {value!r}. Expected {expected}."
            )
    if config.model not in zoo.MODELS:
        raise ValueError(
            f"Unknown model {config.model!r}. Available models: "
            f"{', '.join(zoo.MODELS)}."
        )
    if config.op not in ("shift", "add", "mult"):
        raise ValueError(
            f"Invalid op {config.op!r}: expected 'shift', 'add' or 'mult'."
        )
    if config.mutate_blocks and config.op == "mult":
        raise ValueError(
            "Block mutation needs op 'shift' or 'add': it turns "
            "multiplicative blocks into the target operator."
        )


def mechanism_callbacks(config, model):
    """Return the callbacks of the between-epoch mechanisms `config` enables."""
    callbacks = []
    if config.reorder:
        callbacks.append(callbacks_lib.ChannelReorder())
    if model.hybrid.augment_blocks:
        callbacks.append(callbacks_lib.BlockFade(end_fraction=config.fade_end))
    if model.mutating_layers():
        callbacks.append(
            callbacks_lib.BlockMutation(end_fraction=config.mutation_end)
        )
    if config.augmentation_end is not None:
        callbacks.append(
            callbacks_lib.AlphaScheduler(stop_fraction=config.augmentation_end)
        )
    return callbacks


def _resolve_blocks(blocks, base):
    """Return `blocks` as block numbers, expanding "all" for `base`."""
    if blocks == "all":
        steps, _ = graph.walk(base)
        return tuple(range(1, len(residual_blocks(steps)) + 1))
    return tuple(blocks or ())


def compile_for_training(model, config, steps_per_epoch):
    """Compile `model` with the ShiftAddAug paper's recipe for `config.epochs`.

    SGD with Nesterov momentum 0.9, a cosine learning rate from
    `config.learning_rate` to 0, decoupled weight decay and label smoothing.
    """
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate,
        decay_steps=max(1, steps_per_epoch * config.epochs),
        alpha=0.0,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay or None,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )


def train(dataset, config, output_dir=None):
    """Train one method on `dataset` and evaluate its target on the test split.

    Args:
        dataset: A `keras_shiftadd.data.ImageDataset`.
        config: A `TrainConfig`.
        output_dir: Directory for `target.keras`, `history.csv` and
            `metrics.json`, or `None` to write nothing. It must exist.

    Returns:
        A dict of results: method, target test accuracy and loss, target
        parameters, median epoch time in seconds and the settings used.
    """
    check_config(config)
    keras.utils.set_random_seed(config.seed)

    shape = (config.image_size, config.image_size, dataset.image_shape[-1])
    base = zoo.build(config.model, shape, dataset.num_classes)
    model = augment(
        base,
        op=config.op,
        width_mult=config.width_mult,
        expand_mult=config.expand_mult,
        alpha=config.alpha,
        augmentation=config.augmentation,
        augment_blocks=_resolve_blocks(config.augment_blocks, base),
        mutate_blocks=_resolve_blocks(config.mutate_blocks, base),
        hws=config.hws,
        augmented_op=config.augmented_op,
    )
    method = method_name(config.op, config.augmentation)
    # Name the ablation variants, so their rows differ from the method's.
    if model.augmented_op != "mult" and config.op != "mult" and config.augmentation:
        method += f" (all {config.op})"
    elif config.hws is False and config.op != "mult" and config.augmentation:
        method += " (no HWS)"

    augmentation = data_lib.default_augmentation(dataset)
    train_data = data_lib.make_pipeline(
        dataset.x_train, dataset.y_train, config.image_size, config.batch_size,
        training=True, num_classes=dataset.num_classes, seed=config.seed,
        one_hot=True, **augmentation,
    )
    test_data = data_lib.make_pipeline(
        dataset.x_test, dataset.y_test, config.image_size, config.batch_size,
        training=False, num_classes=dataset.num_classes, one_hot=True,
    )
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    compile_for_training(model, config, steps_per_epoch)

    timer = EpochTimer()
    callbacks = [timer] + mechanism_callbacks(config, model)
    if output_dir is not None:
        callbacks.append(
            keras.callbacks.CSVLogger(os.path.join(output_dir, "history.csv"))
        )
    logger.info("training %s (%s) for %d epochs", method, config.model, config.epochs)
    history = model.fit(
        train_data,
        epochs=config.epochs,
        validation_data=test_data,
        callbacks=callbacks,
        verbose=config.verbose,
    )

    if config.recalibration_batches:
        # Shuffled and augmented like training, so the batches cover every
        # class whatever the order of the training images.
        recalibration_data = data_lib.make_pipeline(
            dataset.x_train, dataset.y_train, config.image_size,
            config.batch_size, training=True,
            num_classes=dataset.num_classes, seed=config.seed, one_hot=True,
            **data_lib.default_augmentation(dataset),
        )
        callbacks_lib.recalibrate_batch_norm(
            model, recalibration_data, steps=config.recalibration_batches
        )

    # Evaluate the exported standalone target: that is what gets deployed.
    target = model.target_model()
    compile_for_training(target, config, steps_per_epoch)
    test_loss, test_accuracy = target.evaluate(test_data, verbose=0)

    result = {
        "method": method,
        "model": config.model,
        "dataset": dataset.name,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "params": int(target.count_params()),
        "hws_used": model.hws_spec is not None,
        "epoch_time_s": float(statistics.median(timer.times)),
        "epoch_times_s": [float(t) for t in timer.times],
        "train_images": int(len(dataset.x_train)),
        "test_images": int(len(dataset.x_test)),
        "config": dataclasses.asdict(config),
    }
    if config.augmentation:
        result["augmented_train_accuracy"] = float(
            history.history["augmented_accuracy"][-1]
        )
    result["config"].pop("verbose")

    if output_dir is not None:
        target.save(os.path.join(output_dir, "target.keras"))
        with open(os.path.join(output_dir, "metrics.json"), "w") as file:
            json.dump(result, file, indent=2)
    return result


def format_table(results):
    """Format results as a plain-text table, one row per method."""
    header = ("method", "test acc (%)", "params", "epoch time (s)")
    rows = [
        (
            r["method"],
            f"{100 * r['test_accuracy']:.2f}",
            f"{r['params']:,}",
            f"{r['epoch_time_s']:.1f}",
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(4)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)))
    return "\n".join(lines)

