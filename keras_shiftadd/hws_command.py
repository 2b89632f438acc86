"""The `fit-remap` and `plot-weights` subcommands of keras-shiftadd."""

import argparse
import json
import os

from keras_shiftadd.argtypes import positive_int as _positive_int


def add_parser(subparsers):
    """Add the `fit-remap` and `plot-weights` subcommands to `subparsers`."""
    _add_fit_parser(subparsers)
    _add_plot_parser(subparsers)


def _add_fit_parser(subparsers):
    parser = subparsers.add_parser(
        "fit-remap",
        help="fit the heterogeneous weight sharing remap on trained kernels",
        description=(
            "Train a Mult model from scratch, a Shift model fine-tuned from "
            "it and an Add model from scratch, all directly (no "
            "augmentation), then fit the remap R(W) = "
            "ppf_laplace(cdf_gauss(FC(W))) per kernel size so that remapped "
            "Mult weights follow the Shift and Add weight distributions "
            "(quantile matching). Writes hws_shift.json and/or hws_add.json "
            "(pass either to augment(..., hws=spec)), kernels.npz and "
            "fit.json to --output."
        ),
    )
    source = parser.add_argument_group("data")
    source.add_argument(
        "--data", metavar="PATH",
        help="image folder (one subfolder per class, optionally under "
             "train/ and test/), a folder with train.npz and test.npz, or a "
             ".npz file",
    )
    source.add_argument("--dataset", metavar="NAME",
                        help="'digits' or a TensorFlow Datasets name")
    source.add_argument("--limit", type=_positive_int, metavar="N",
                        help="use a random subset of N training images")
    source.add_argument("--test-limit", type=_positive_int, metavar="N",
                        help="use a random subset of N test images")
    source.add_argument(
        "--kernels", metavar="NPZ",
        help="fit on the kernels of an earlier run (its kernels.npz) instead "
             "of training; the data options are then ignored",
    )

    settings = parser.add_argument_group("training and fit")
    settings.add_argument("--op", choices=["shift", "add", "both"],
                          default="both",
                          help="operator(s) to fit a remap for (default: both)")
    settings.add_argument("--model", default="small-cnn",
                          choices=["small-cnn", "mobilenetv2-w0.35"],
                          help="architecture of the trained models "
                               "(default: small-cnn)")
    settings.add_argument("--epochs", type=_positive_int, default=6,
                          help="epochs of the Mult and Add models (default: 6)")
    settings.add_argument("--shift-epochs", type=_positive_int, default=3,
                          help="epochs of Shift fine-tuning from the Mult "
                               "weights (default: 3)")
    settings.add_argument("--batch-size", type=_positive_int, default=64,
                          help="images per batch (default: 64)")
    settings.add_argument("--image-size", type=_positive_int, default=32,
                          metavar="PIXELS",
                          help="side of the network input in pixels "
                               "(default: 32)")
    settings.add_argument("--lr", type=float, default=0.05,
                          help="initial learning rate of the cosine schedule "
                               "(default: 0.05)")
    settings.add_argument("--fit-steps", type=_positive_int, default=400,
                          help="Adam steps of the FC fit per kernel size "
                               "(default: 400)")
    settings.add_argument("--seed", type=int, default=0,
                          help="seed of data subsets, training and FC "
                               "initialization (default: 0)")
    settings.add_argument("--output", default="runs/fit-remap", metavar="DIR",
                          help="output directory, created if missing "
                               "(default: runs/fit-remap)")
    settings.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_fit_remap)
    return parser


def _add_plot_parser(subparsers):
    parser = subparsers.add_parser(
        "plot-weights",
        help="draw weight histograms of Conv, Shift and Add layers",
        description=(
            "Draw histograms of Conv, Shift and Add weights: without sharing, "
            "with sharing and after remapping, as far as the source contains "
            "them. MODEL_OR_RUN is a kernels.npz from fit-remap, a .keras "
            "file (a ShiftAddAugModel or a plain model such as target.keras) "
            "or a run directory containing one. Without --layer, all layers "
            "are pooled after dividing each by its reference std."
        ),
    )
    parser.add_argument("source", metavar="MODEL_OR_RUN",
                        help="kernels.npz, .keras file or run directory")
    parser.add_argument("--layer", metavar="NAME",
                        help="plot this layer alone (default: all layers)")
    parser.add_argument("--output", default="weights.png", metavar="PNG",
                        help="PNG file to write (default: weights.png)")
    parser.set_defaults(handler=run_plot_weights)
    return parser


def run_fit_remap(args):
    """Train (or read) kernels, fit the remaps and write them; return 0."""
    from keras_shiftadd import hws

    ops = ("shift", "add") if args.op == "both" else (args.op,)
    os.makedirs(args.output, exist_ok=True)
    record = {}
    if args.kernels:
        if not os.path.isfile(args.kernels):
            raise ValueError(f"Kernel archive not found: {args.kernels}")
        kernels = hws.load_kernels(args.kernels)
        missing = [op for op in ("mult",) + ops if op not in kernels]
        if missing:
            raise ValueError(
                f"{args.kernels} has no kernels for {', '.join(missing)}; "
                "run fit-remap without --kernels to train them."
            )
        record["kernels"] = os.path.abspath(args.kernels)
    else:
        from keras_shiftadd import data as data_lib

        if args.data is None and args.dataset is None:
            raise ValueError(
                "fit-remap needs real training data: pass --data PATH or "
                "--dataset NAME, or --kernels NPZ to reuse trained kernels."
            )
        dataset = data_lib.load(data=args.data, dataset=args.dataset,
                                limit=args.limit, test_limit=args.test_limit,
                                seed=args.seed)
        kernels, accuracies = hws.train_kernel_sets(
            dataset, ops, model=args.model, epochs=args.epochs,
            shift_epochs=args.shift_epochs, batch_size=args.batch_size,
            image_size=args.image_size, learning_rate=args.lr, seed=args.seed,
            verbose=0 if args.quiet else "auto",
        )
        record.update(hws.describe_training(
            dataset, args.model, args.epochs, args.shift_epochs,
            args.image_size, args.seed, accuracies,
        ))
        hws.save_kernels(kernels, os.path.join(args.output, "kernels.npz"))

    for op in ops:
        spec = hws.fit_remap_from_kernels(op, kernels["mult"], kernels[op],
                                          steps=args.fit_steps, seed=args.seed)
        spec["fit"].update(record)
        path = os.path.join(args.output, hws.SHIPPED_FILES[op])
        hws.save_spec(spec, path)
        print(format_fit_summary(spec))
        print(f"Wrote {path}")
    with open(os.path.join(args.output, "fit.json"), "w", encoding="utf-8") as file:
        json.dump(record, file, indent=2)
    return 0


def format_fit_summary(spec):
    """Format a fitted spec's Laplace parameters and per-layer measures."""
    units = "x layer std" if spec.get("relative", True) else "weight units"
    lines = [f"{spec['op']} remap (mode {spec['mode']}, Laplace in {units}):"]
    for size, entry in sorted(spec["remaps"].items(), key=lambda i: int(i[0])):
        loss = entry.get("loss")
        if loss is None:
            loss_text = "identity FC (no layer of this size)"
        else:
            loss_text = (f"quantile loss {loss['identity_fc']:.4f} with the "
                         f"identity FC, {loss['fitted_fc']:.4f} fitted")
        lines.append(
            f"  kernel size {size}: Laplace loc {entry['loc']:+.4f}, scale "
            f"{entry['scale']:.4f}; {loss_text}"
        )
    lines.append("  excess kurtosis of W, of the MF target, of R(W) with the "
                 "identity FC and fitted; KS of R(W) to the fitted Laplace "
                 "(identity FC, fitted) and to the MF target:")
    for name, m in spec["fit"]["layers"].items():
        lines.append(
            f"  {name:<18} {m['kurtosis_mult']:+6.2f} {m['kurtosis_target']:+6.2f} "
            f"{m['kurtosis_remapped_identity_fc']:+6.2f} {m['kurtosis_remapped']:+6.2f}"
            f"   {m['ks_remapped_identity_fc_vs_laplace']:.3f} "
            f"{m['ks_remapped_vs_laplace']:.3f}   {m['ks_remapped_vs_target']:.3f}"
        )
    return "\n".join(lines)


def run_plot_weights(args):
    """Draw the weight histograms of `args.source`; return 0."""
    from keras_shiftadd import plots

    path = plots.plot_weights(args.source, args.output, layer=args.layer)
    print(f"Wrote {path}")
    return 0
