"""Ablation of hybrid augmentation and weight sharing (the paper's Table 6).

Trains the five rows of Table 6 of the ShiftAddAug paper, and one variant,
on CIFAR-10 with one backbone, the same data subset, seed, epochs and
recipe, in one process:

- Mult baseline: the multiplicative network alone;
- Shift: the Shift network alone;
- Aug. with Shift: augmented, with Shift on the augmented channels too;
- Aug. hybrid, no HWS: augmented with multiplication, weights shared as is;
- Aug. hybrid + HWS: the same with heterogeneous weight sharing (the
  shipped Shift remap);
- Aug. hybrid + HWS, straight-through: the same remap with its gradient
  passed straight through, as the Add remap does (not a row of the paper).

It prints target test accuracy per row and writes the results as JSON after
every row, so an interrupted run continues where it stopped when started
again with the same `--json` path. Run from the repository root:

    python benchmarks/hws_ablation.py --model mobilenetv2-w0.35 \
        --image-size 64 --limit 10000 --epochs 8 \
        --json benchmarks/results/hws_ablation.json
"""

import argparse
import json
import os
import platform
import sys
import time

import keras
import tensorflow as tf

from keras_shiftadd import data, hws, training, zoo

# (row label, TrainConfig settings): the rows of Table 6 for a Shift target,
# then one variant of the last row.
ROWS = [
    ("Mult baseline", {"op": "mult", "augmentation": False}),
    ("Shift", {"op": "shift", "augmentation": False}),
    ("Aug. with Shift", {"op": "shift", "augmentation": True,
                         "augmented_op": "shift", "hws": False}),
    ("Aug. hybrid, no HWS", {"op": "shift", "augmentation": True,
                             "hws": False}),
    ("Aug. hybrid + HWS", {"op": "shift", "augmentation": True,
                           "hws": True}),
    ("Aug. hybrid + HWS, straight-through", {
        "op": "shift", "augmentation": True,
        "hws": {**hws.load_remap("shift"), "straight_through": True}}),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10",
                        help="CIFAR-10 image folders (default: %(default)s)")
    parser.add_argument("--model", default="mobilenetv2-w0.35",
                        choices=list(zoo.MODELS),
                        help="backbone (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=10000,
                        help="training images (default: %(default)s)")
    parser.add_argument("--test-limit", type=int, default=10000,
                        help="test images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="epochs per row (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="batch size (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=64,
                        help="network input side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for subset, augmentation and weights "
                             "(default: %(default)s)")
    parser.add_argument("--rows", default=None,
                        help="comma-separated row numbers to run, from 1 "
                             "(default: all six)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the results here after every row; rows "
                             "already in the file are not trained again")
    return parser.parse_args()


def load_finished(path, command_settings):
    """Return the rows of an earlier run of the same settings at `path`."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as file:
        record = json.load(file)
    if record.get("settings") != command_settings:
        sys.exit(
            f"{path} contains results of other settings ({record.get('settings')})."
            " Pass another --json path or delete the file."
        )
    return record["results"]


def write_record(path, record):
    """Write `record` as JSON through a temporary file, so no half file stays."""
    temporary = f"{path}.partial"
    with open(temporary, "w") as file:
        json.dump(record, file, indent=2)
    os.replace(temporary, path)


def main():
    args = parse_args()
    selected = range(1, len(ROWS) + 1)
    if args.rows:
        selected = [int(number) for number in args.rows.split(",")]
        if not all(1 <= number <= len(ROWS) for number in selected):
            sys.exit(f"--rows takes numbers from 1 to {len(ROWS)}; "
                     f"received {args.rows!r}.")

    settings = {key: getattr(args, key) for key in (
        "data", "model", "limit", "test_limit", "epochs", "batch_size",
        "image_size", "seed")}
    results = load_finished(args.json, settings)
    done = {result["row"] for result in results}

    dataset = data.load(data=args.data, limit=args.limit,
                        test_limit=args.test_limit, seed=args.seed)
    for number in selected:
        label, overrides = ROWS[number - 1]
        if label in done:
            print(f"{label}: already in {args.json}, skipped", flush=True)
            continue
        config = training.TrainConfig(
            model=args.model, epochs=args.epochs, batch_size=args.batch_size,
            image_size=args.image_size, seed=args.seed, verbose=2,
            **overrides,
        )
        start = time.perf_counter()
        result = training.train(dataset, config)
        result["wall_time_s"] = time.perf_counter() - start
        result["row"] = label
        results.append(result)
        print(f"{label}: {100 * result['test_accuracy']:.2f}% test accuracy",
              flush=True)
        if args.json:
            write_record(args.json, {
                "command": " ".join(["python"] + sys.argv),
                "settings": settings,
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "python": platform.python_version(),
                "results": results,
            })

    print()
    order = [label for label, _ in ROWS]
    results.sort(key=lambda result: order.index(result["row"]))
    for result in results:
        result["method"] = result["row"]
    print(training.format_table(results))


if __name__ == "__main__":
    main()
