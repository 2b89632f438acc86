"""The `keras-shiftadd cost` subcommand."""

import argparse
import json
import os
import sys

from keras_shiftadd.argtypes import positive_int as _positive_int
from keras_shiftadd.cost.profile import OPERATORS


def add_parser(subparsers):
    """Add the `cost` subcommand to an argparse `subparsers` object."""
    parser = subparsers.add_parser(
        "cost",
        help="print the operations, energy and latency of a model",
        description=(
            "Count a zoo model's (or a saved .keras model's) parameters and "
            "Mult, Shift and Add operations under ShiftAddAug's Table 3 "
            "convention, and estimate its energy and latency on an "
            "Eyeriss-like 45 nm accelerator."
        ),
    )
    parser.add_argument(
        "--model", default="mobilenetv2-w0.35", metavar="NAME",
        help="zoo model name (see keras_shiftadd.zoo.MODELS) or a path to a "
             ".keras file (default: mobilenetv2-w0.35)",
    )

    parser.add_argument(
        "--op", default="mult", choices=OPERATORS,
        help="operator the model is converted to, with augment()'s rules "
             "(default: mult)",
    )

    parser.add_argument("--image-size", type=_positive_int, default=160,
                        metavar="PIXELS",
                        help="side of the square input in pixels for zoo "
                             "models (default: 160)")
    parser.add_argument("--classes", type=_positive_int, default=100,
                        help="number of classes for zoo models (default: 100)")

    parser.add_argument("--convention", default="paper",
                        choices=("paper", "full"),
                        help="'paper' counts MACs as ShiftAddAug's Table 3 "
                             "does; 'full' also counts BatchNormalization, "
                             "bias, merges and pooling (default: paper)")

    parser.add_argument("--layers", action="store_true",
                        help="also print the per-layer table")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object of totals instead of "
                             "the table")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw operations, energy and latency of the "
                             "model as Mult, Shift and Add to this image")

    parser.set_defaults(handler=run)
    return parser


def _load_model(args):
    from keras_shiftadd import zoo

    if args.model.endswith(".keras"):
        if not os.path.isfile(args.model):
            raise ValueError(
                f"Model file not found: {args.model}. Pass a zoo model name "
                "or an existing .keras file."
            )
        import keras

        import keras_shiftadd  # noqa: F401  (registers the custom layers)

        return keras.models.load_model(args.model, compile=False)
    shape = (args.image_size, args.image_size, 3)
    return zoo.build(args.model, shape, args.classes)


def run(args):
    """Run `keras-shiftadd cost`; return the exit status."""
    from keras_shiftadd.cost import counting, report

    try:
        model = _load_model(args)
    except ValueError as error:
        print(f"keras-shiftadd: error: {error}", file=sys.stderr)
        return 2

    cost = counting.count(model, convention=args.convention, op=args.op)
    if args.json:
        print(json.dumps(cost.totals(), sort_keys=True))
    else:
        if args.layers:
            print(report.format_layers(cost))
            print()
        print(report.format_table3([report.table3_row(model.name, args.op, cost)]))

    if args.plot:
        costs = {
            op: cost if op == args.op else counting.count(
                model, convention=args.convention, op=op
            )
            for op in OPERATORS
        }
        try:
            report.plot_comparison(costs, args.plot)
        except OSError as error:
            print(f"keras-shiftadd: error: cannot write {args.plot}: "
                  f"{error.strerror}", file=sys.stderr)
            return 2
        if not args.json:
            print(f"Wrote {args.plot}")
    return 0
