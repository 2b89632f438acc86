"""Train the paper's methods (Base, NetAug, Shift, AugShift, Add, AugAdd) on CIFAR-10.

Every method gets the same data subset, seed, epochs and recipe, in one
process, and the script prints target test accuracy, parameters and epoch
time per method, then writes them as JSON. Run from the repository root:

    python benchmarks/methods_cifar10.py --limit 10000 --epochs 8 \
        --json benchmarks/results/methods_cifar10.json
"""

import argparse
import json
import platform
import sys
import time

import keras
import tensorflow as tf

from keras_shiftadd import METHODS, data, training


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets/cifar10",
                        help="CIFAR-10 image folders (default: %(default)s)")
    parser.add_argument("--model", default="small-cnn",
                        choices=["small-cnn", "mobilenetv2-w0.35"],
                        help="backbone (default: %(default)s)")
    parser.add_argument("--methods", default="base,netaug,shift,augshift,add,augadd",
                        help="comma-separated methods out of "
                             f"{','.join(METHODS)} (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=10000,
                        help="training images (default: %(default)s)")
    parser.add_argument("--test-limit", type=int, default=2000,
                        help="test images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="epochs per method (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="batch size (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="network input side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for subset, augmentation and weights "
                             "(default: %(default)s)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the results and the command line here")
    return parser.parse_args()


def main():
    args = parse_args()
    methods = [name.strip().lower() for name in args.methods.split(",")]
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        sys.exit(f"Unknown methods {unknown}; choose from {list(METHODS)}.")

    dataset = data.load(data=args.data, limit=args.limit,
                        test_limit=args.test_limit, seed=args.seed)
    results = []
    for name in methods:
        op, augmentation = METHODS[name]
        config = training.TrainConfig(
            model=args.model, op=op, augmentation=augmentation,
            epochs=args.epochs, batch_size=args.batch_size,
            image_size=args.image_size, seed=args.seed, verbose=2,
        )
        start = time.perf_counter()
        result = training.train(dataset, config)
        result["wall_time_s"] = time.perf_counter() - start
        results.append(result)
        print(f"{result['method']}: {100 * result['test_accuracy']:.2f}% "
              f"test accuracy", flush=True)

    print()
    print(training.format_table(results))
    if args.json:
        record = {
            "command": " ".join(["python"] + sys.argv),
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
            "results": results,
        }
        with open(args.json, "w") as file:
            json.dump(record, file, indent=2)


if __name__ == "__main__":
    main()
