"""The keras-shiftadd command."""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile

# Keep TensorFlow's C++ start-up chatter out of the terminal unless the user
# asked for it; Python-side warnings still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_shiftadd.argtypes import (  # noqa: E402
    fraction as _fraction,
    multiple as _multiple,
    non_negative as _non_negative,
    non_negative_int as _non_negative_int,
    positive_int as _positive_int,
)

logger = logging.getLogger("keras_shiftadd")


def _block_list(text):
    """Parse comma-separated residual block numbers, or 'all'."""
    if text == "all":
        return "all"
    try:
        blocks = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected block numbers such as 1 or "
            "1,3, or 'all'"
        ) from None
    if any(block < 1 for block in blocks):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: block numbers start at 1"
        )
    return blocks


def _add_mechanism_arguments(parser):
    group = parser.add_argument_group(
        "between-epoch mechanisms",
        "Blocks are numbered by the residual Add layers of the backbone, "
        "from 1 in topological order (small-cnn has one).",
    )
    group.add_argument(
        "--reorder", action="store_true",
        help="at each epoch boundary, move the channels with the largest L1 "
             "norm into the target slice of the shared weights",
    )
    group.add_argument(
        "--augment-blocks", type=_block_list, default=(), metavar="BLOCKS",
        help="insert a multiplicative augment block after these blocks "
             "(e.g. 1 or 1,3, or 'all'); it fades out of the target by "
             "--fade-end and stays in the augmented network",
    )
    group.add_argument(
        "--mutate", type=_block_list, nargs="?", const="all", default=(),
        metavar="BLOCKS",
        help="start these blocks (all when no value is given) "
             "multiplicative and blend them linearly into --op by "
             "--mutation-end; needs --op shift or add",
    )
    group.add_argument(
        "--fade-end", type=_fraction, default=0.5, metavar="FRACTION",
        help="fraction of the epochs after which augment blocks are gone "
             "from the target (default: 0.5)",
    )
    group.add_argument(
        "--mutation-end", type=_fraction, default=0.5, metavar="FRACTION",
        help="fraction of the epochs after which mutated blocks are pure "
             "--op (default: 0.5)",
    )
    group.add_argument(
        "--augmentation-end", type=_fraction, default=None,
        metavar="FRACTION",
        help="fraction of the epochs after which the augmented loss weight "
             "is 0, so the target trains alone (default: never)",
    )
    group.add_argument(
        "--recalibrate", type=_non_negative_int, default=20, metavar="BATCHES",
        help="re-estimate the target's BatchNormalization statistics on "
             "this many training batches before testing and saving; 0 turns "
             "it off (default: 20)",
    )


def _add_train_parser(subparsers):
    from keras_shiftadd import zoo

    parser = subparsers.add_parser(
        "train",
        help="train a target network with ShiftAddAug and export it",
        description=(
            "Train a multiplication-free target network inside a wider "
            "multiplicative network, evaluate it on the test split and write "
            "target.keras, history.csv and metrics.json. Without --data or "
            "--dataset it uses scikit-learn's bundled 8x8 digits, which need "
            "no download."
        ),
    )
    source = parser.add_argument_group("data")
    source.add_argument(
        "--data", metavar="PATH",
        help="image folder (one subfolder per class, optionally under train/ "
             "and test/), a folder with train.npz and test.npz, or one .npz "
             "file with arrays x and y",
    )
    source.add_argument(
        "--dataset", metavar="NAME",
        help="'digits' (the default) or a TensorFlow Datasets name such as "
             "cifar10",
    )
    source.add_argument("--data-dir", metavar="DIR",
                        help="TensorFlow Datasets data directory")
    source.add_argument("--limit", type=_positive_int, metavar="N",
                        help="use a random subset of N training images")
    source.add_argument("--test-limit", type=_positive_int, metavar="N",
                        help="use a random subset of N test images")
    source.add_argument("--image-size", type=_positive_int, default=32,
                        metavar="PIXELS",
                        help="side of the square network input in pixels "
                             "(default: 32)")

    net = parser.add_argument_group("model")
    net.add_argument("--model", default="small-cnn",
                     choices=list(zoo.MODELS),
                     help="backbone (default: small-cnn)")
    net.add_argument("--op", default="shift", choices=["shift", "add", "mult"],
                     help="operator of the target network (default: shift)")
    net.add_argument("--augmentation", action=argparse.BooleanOptionalAction,
                     default=True,
                     help="train inside the augmented network (default: on)")
    net.add_argument("--width-mult", type=_multiple, default=2.0,
                     help="width multiple of the augmented network "
                          "(default: 2.0)")
    net.add_argument("--expand-mult", type=_multiple, default=2.0,
                     help="extra multiple of inverted-residual expansions "
                          "(default: 2.0)")
    net.add_argument("--alpha", type=_non_negative, default=1.0,
                     help="weight of the augmented loss (default: 1.0)")
    net.add_argument("--hws", default="auto", choices=["auto", "on", "off"],
                     help="heterogeneous weight sharing: auto or on (the "
                          "shipped remap of --op where the target shares "
                          "weights with multiplication), or off for "
                          "ablations (default: auto)")
    net.add_argument("--augmented-op", default="mult",
                     choices=["mult", "same"],
                     help="operator of the augmented channels: mult (hybrid "
                          "computation) or same as --op, for the ablation "
                          "of the paper's Table 6 (default: mult)")
    net.add_argument("--compare", action="store_true",
                     help="also train the same op without augmentation, same "
                          "seed and budget, and print both rows")

    fit = parser.add_argument_group("training")
    fit.add_argument("--epochs", type=_positive_int, default=10,
                     help="training epochs (default: 10)")
    fit.add_argument("--batch-size", type=_positive_int, default=64,
                     help="images per batch (default: 64)")
    fit.add_argument("--lr", type=float, default=0.05,
                     help="initial learning rate of the cosine schedule "
                          "(default: 0.05)")
    fit.add_argument("--weight-decay", type=_non_negative, default=4e-5,
                     help="decoupled weight decay (default: 4e-5)")
    fit.add_argument("--seed", type=int, default=0,
                     help="random seed for data split, augmentation and "
                          "initialization (default: 0)")
    fit.add_argument("--output", default="runs/train", metavar="DIR",
                     help="output directory; must not exist or be empty "
                          "unless --overwrite (default: runs/train)")
    fit.add_argument("--overwrite", action="store_true",
                     help="replace an existing output directory")
    fit.add_argument("--quiet", action="store_true",
                     help="no progress bars")
    _add_mechanism_arguments(parser)
    parser.set_defaults(handler=_run_train)
    return parser


def _first_missing_ancestor(path):
    """Return the highest directory of `path` that does not exist, or None."""
    missing = None
    while path and not os.path.exists(path):
        missing = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _prepare_output(path, overwrite):
    """Check the output directory and return a fresh staging directory.

    Returns:
        `(staging, created)`: the staging directory, and the highest parent
        directory this call created (None if it created none), which
        `_discard` removes again when training fails.
    """
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"Output path exists and is not a directory: {path}")
        if os.listdir(path) and not overwrite:
            raise ValueError(
                f"Output directory is not empty: {path}. Choose another "
                "--output or pass --overwrite."
            )
    parent = os.path.dirname(os.path.abspath(path))
    created = _first_missing_ancestor(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=".keras-shiftadd-", dir=parent), created
    except OSError as error:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise ValueError(
            f"Cannot create the output directory {path}: {error.strerror}. "
            "Choose a writable --output."
        ) from error


def _discard(staging, created):
    """Remove the staging directory and any parent `_prepare_output` made."""
    shutil.rmtree(created or staging, ignore_errors=True)


def _publish(staging, path):
    """Move the finished staging directory to `path`."""
    # mkdtemp makes a directory only its owner can read; give the result
    # the permissions of a directory made with mkdir.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(staging, path)


def _check_train_flags(args):
    """Reject flag combinations that name nothing to train, by flag name."""
    if args.augmented_op == "same" and args.op == "mult":
        raise ValueError(
            "--augmented-op same needs --op shift or --op add: with --op mult "
            "every channel multiplies already. Received: --op mult"
        )
    if args.augmented_op == "same" and args.hws == "on":
        raise ValueError(
            "--hws on cannot be combined with --augmented-op same: every "
            "channel then uses one operator, so there is no sharing between "
            "operators to remap. Use --hws auto or --hws off."
        )
    if args.augmented_op == "same" and args.mutate:
        raise ValueError(
            "--mutate cannot be combined with --augmented-op same: mutation "
            "starts from multiplicative blocks, which that augmentation does "
            "not have. Use --augmented-op mult."
        )
    if args.mutate and args.op == "mult":
        raise ValueError(
            "--mutate needs --op shift or --op add: mutation turns "
            "multiplicative blocks into the target's operator. Received: "
            "--op mult"
        )
    if args.hws == "on" and not args.augmentation and not args.compare:
        raise ValueError(
            "--hws on needs augmentation: without it the target shares no "
            "weights. Drop --no-augmentation or use --hws auto."
        )
    if args.hws == "on" and args.op == "mult":
        raise ValueError(
            "--hws on needs --op shift or --op add: a multiplicative target "
            "reads the shared weights as they are. Received: --op mult"
        )


def _run_train(args):
    from keras_shiftadd import data as data_lib
    from keras_shiftadd import training

    # Settings first, so a bad combination fails before the data loads.
    _check_train_flags(args)
    base_config = training.TrainConfig(
        model=args.model, op=args.op, augmentation=args.augmentation,
        width_mult=args.width_mult, expand_mult=args.expand_mult,
        alpha=args.alpha, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, weight_decay=args.weight_decay,
        image_size=args.image_size, seed=args.seed,
        verbose=0 if args.quiet else "auto",
        reorder=args.reorder, augment_blocks=args.augment_blocks,
        mutate_blocks=args.mutate, fade_end=args.fade_end,
        mutation_end=args.mutation_end,
        augmentation_end=args.augmentation_end,
        recalibration_batches=args.recalibrate,
        hws={"auto": "auto", "on": True, "off": False}[args.hws],
        augmented_op="mult" if args.augmented_op == "mult" else args.op,
    )
    configs = [base_config]
    if args.compare:
        plain = training.TrainConfig(**{**base_config.__dict__, "augmentation": False})
        augmented = training.TrainConfig(**{**base_config.__dict__, "augmentation": True})
        configs = [plain, augmented]
    for config in configs:
        training.check_config(config)

    dataset = data_lib.load(
        data=args.data, dataset=args.dataset, limit=args.limit,
        test_limit=args.test_limit, seed=args.seed, data_dir=args.data_dir,
    )
    print(
        f"Data: {dataset.name}, {len(dataset.x_train)} training and "
        f"{len(dataset.x_test)} test images of {dataset.image_shape}, "
        f"{dataset.num_classes} classes"
    )

    staging, created = _prepare_output(args.output, args.overwrite)
    try:
        results = []
        for config in configs:
            directory = staging
            if len(configs) > 1:
                name = "augmented" if config.augmentation else "plain"
                directory = os.path.join(staging, name)
                os.makedirs(directory)
            results.append(training.train(dataset, config, output_dir=directory))
        with open(os.path.join(staging, "summary.json"), "w") as file:
            json.dump(results, file, indent=2)
        _publish(staging, args.output)
    except BaseException:
        _discard(staging, created)
        raise

    print()
    print(training.format_table(results))
    print(f"\nWrote {args.output}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-shiftadd",
        description="Train multiplication-free tiny CNNs with ShiftAddAug.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_train_parser(subparsers)

    # Each of these modules adds its subcommands and sets its handler.
    from keras_shiftadd import export_command, hws_command
    from keras_shiftadd.cost import command as cost_command

    cost_command.add_parser(subparsers)
    export_command.add_parser(subparsers)
    hws_command.add_parser(subparsers)
    _add_build_kernels_parser(subparsers)
    return parser


def _add_build_kernels_parser(subparsers):
    parser = subparsers.add_parser(
        "build-kernels",
        help="compile the native adder kernels now instead of on first use",
        description=(
            "Compile the native CPU kernels of the adder layers with the C++ "
            "compiler of this machine (CXX, else c++, g++ or clang++) and "
            "cache them (KERAS_SHIFTADD_CACHE_DIR, else "
            "~/.cache/keras_shiftadd), then load them once as a check. Adder "
            "layers do this by themselves on first use; run it ahead, for "
            "example in a container build, to keep the compile time (about "
            "8 seconds) out of training."
        ),
    )
    parser.add_argument("--force", action="store_true",
                        help="compile even if a cached library exists")
    parser.set_defaults(handler=_run_build_kernels)


def _run_build_kernels(args):
    import time

    from keras_shiftadd import kernels

    # A bad KERAS_SHIFTADD_ADDER would make the layers fail later, so check
    # it here.
    kernels.implementation_setting()
    start = time.perf_counter()
    try:
        path = kernels.build(force=args.force)
        kernels.load(required=True)
    except kernels.NativeKernelError as error:
        print(f"keras-shiftadd: error: {error}", file=sys.stderr)
        return 1
    print(f"Native adder kernels ready in {time.perf_counter() - start:.1f} s: "
          f"{path}")
    return 0


def main(argv=None):
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from keras_shiftadd.data import DataError

    try:
        return args.handler(args)
    except (DataError, ValueError, OSError) as error:
        print(f"keras-shiftadd: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-shiftadd: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
