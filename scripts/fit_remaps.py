"""Fit the HWS remaps that ship in keras_shiftadd/data_files/.

The script trains the small CNN of keras_shiftadd.zoo directly on a
CIFAR-10 subset with keras_shiftadd.hws.train_kernel_sets: Mult from
scratch, Shift fine-tuned from the Mult weights and Add from scratch. It
fits the Shift and Add remaps on their kernels with
keras_shiftadd.hws.fit_remap_from_kernels. It writes hws_shift.json,
hws_add.json and hws_kernels.npz, the kernels of the fit, which the tests
and `plot-weights` read.

Run from the repository root; it reads CIFAR-10 image folders from
../shared/datasets/cifar10 unless --data names another folder. Training and
fitting took about 3.5 minutes on a shared 2-core x86 CPU.

    python scripts/fit_remaps.py
"""

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_shiftadd import data, hws  # noqa: E402
from keras_shiftadd.hws_command import format_fit_summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10"
OUTPUT = ROOT / "keras_shiftadd" / "data_files"

# Training settings of the shipped remaps.
SETTINGS = {
    "model": "small-cnn",
    "limit": 5000,
    "test_limit": 1000,
    "epochs": 6,
    "shift_epochs": 3,
    "image_size": 32,
    "seed": 0,
    "fit_steps": 400,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), metavar="PATH",
                        help=f"CIFAR-10 image folders (default: {DEFAULT_DATA})")
    parser.add_argument("--output", default=str(OUTPUT), metavar="DIR",
                        help=f"where to write the files (default: {OUTPUT})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    dataset = data.load(data=args.data, limit=SETTINGS["limit"],
                        test_limit=SETTINGS["test_limit"], seed=SETTINGS["seed"])
    kernels, accuracies = hws.train_kernel_sets(
        dataset, ("shift", "add"), model=SETTINGS["model"],
        epochs=SETTINGS["epochs"], shift_epochs=SETTINGS["shift_epochs"],
        image_size=SETTINGS["image_size"], seed=SETTINGS["seed"], verbose=2,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    hws.save_kernels(kernels, output / "hws_kernels.npz")
    record = hws.describe_training(
        dataset, SETTINGS["model"], SETTINGS["epochs"], SETTINGS["shift_epochs"],
        SETTINGS["image_size"], SETTINGS["seed"], accuracies,
    )
    record["script"] = "scripts/fit_remaps.py"
    for op in ("shift", "add"):
        spec = hws.fit_remap_from_kernels(op, kernels["mult"], kernels[op],
                                          steps=SETTINGS["fit_steps"],
                                          seed=SETTINGS["seed"])
        spec["fit"].update(record)
        hws.save_spec(spec, output / hws.SHIPPED_FILES[op])
        print(format_fit_summary(spec))
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
