"""Compare our cost model with ShiftAddAug's Table 3.

For the five Table 3 backbones at 160x160 with 100 classes (CIFAR-100) and
each operator (Mult, Shift, Add), print our parameters, Mult, Shift and Add
counts, energy and latency next to Table 3's, with the relative difference.
Then print the energy saving and speed-up of Shift over Mult.

Usage, from the repository root (about half a minute on 2 CPU cores):

    python benchmarks/table3_costs.py --json benchmarks/results/table3_costs.json
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_shiftadd import cost, zoo  # noqa: E402

# Table 3 of "ShiftAddAug: Augment Multiplication-Free Tiny Neural Network
# with Hybrid Computation" (under review), CIFAR-100 at 160x160: per
# backbone and operator (params M, Mult M, Shift M, Add M, energy mJ,
# latency ms).
PAPER_TABLE3 = {
    "mobilenetv2-w0.35": {
        "mult": (0.52, 29.72, 0, 29.72, 2.345, 0.73),
        "shift": (0.52, 0, 29.72, 29.72, 0.74, 0.246),
        "add": (0.52, 4.52, 0, 56.88, 1.091, 0.753),
    },
    "mobilenetv3-w0.35": {
        "mult": (0.96, 18.35, 0, 18.35, 1.726, 0.485),
        "shift": (0.96, 0, 18.35, 18.35, 0.536, 0.16),
        "add": (0.96, 3.5, 0, 34.34, 0.699, 0.512),
    },
    "mcunet-in3": {
        "mult": (0.59, 65.72, 0, 65.72, 4.28, 1.682),
        "shift": (0.59, 0, 65.72, 65.72, 1.323, 0.545),
        "add": (0.59, 20.91, 0, 113.09, 2.345, 1.72),
    },
    "proxylessnas-w0.35": {
        "mult": (0.63, 34.56, 0, 34.56, 2.471, 0.883),
        "shift": (0.63, 0, 34.56, 34.56, 0.774, 0.294),
        "add": (0.63, 8.81, 0, 61.97, 1.281, 0.881),
    },
    "mobilenetv2-tiny": {
        "mult": (0.35, 27.31, 0, 27.31, 2.161, 0.67),
        "shift": (0.35, 0, 27.31, 27.31, 0.697, 0.228),
        "add": (0.35, 4.43, 0, 52.09, 0.999, 0.693),
    },
}
COLUMNS = ("params_m", "mult_m", "shift_m", "add_m", "energy_mj", "latency_ms")


def measure(name, op, image_size, classes):
    """Return our Table 3 columns for backbone `name` converted to `op`."""
    model = zoo.build(name, (image_size, image_size, 3), classes)
    result = cost.count(model, op=op)
    return {
        "params_m": result.params / 1e6,
        "mult_m": result.mult / 1e6,
        "shift_m": result.shift / 1e6,
        "add_m": result.add / 1e6,
        "energy_mj": result.energy_mj,
        "latency_ms": result.latency_ms,
    }


def _percent(value):
    return "-" if value != value else f"{100 * value:+.1f}%"  # NaN check


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=160,
                        help="input side in pixels (default: 160)")
    parser.add_argument("--classes", type=int, default=100,
                        help="number of classes (default: 100)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every number to this JSON file")
    args = parser.parse_args(argv)

    records = []
    rows = []
    for name in zoo.TABLE3_MODELS:
        for op in ("mult", "shift", "add"):
            print(f"Counting {name} as {op}...", file=sys.stderr, flush=True)
            ours = measure(name, op, args.image_size, args.classes)
            paper = dict(zip(COLUMNS, PAPER_TABLE3[name][op]))
            difference = {
                column: cost.relative_difference(ours[column], paper[column])
                for column in COLUMNS
            }
            records.append({"model": name, "op": op, "ours": ours,
                            "paper": paper, "relative_difference": difference})
            cells = [name, op]
            for column in COLUMNS:
                cells.append(f"{ours[column]:.3f} / {paper[column]:g} "
                             f"({_percent(difference[column])})")
            rows.append(tuple(cells))

    header = ("Model", "Op", "Params M", "Mult M", "Shift M", "Add M",
              "Energy mJ", "Latency ms")
    print("Ours / paper (relative difference)")
    print(cost.format_table3(rows, header=header))

    print()
    ratio_rows = []
    ratios = []
    for name in zoo.TABLE3_MODELS:
        by_op = {r["op"]: r for r in records if r["model"] == name}
        mult, shift = by_op["mult"], by_op["shift"]
        saving = 1 - shift["ours"]["energy_mj"] / mult["ours"]["energy_mj"]
        paper_saving = 1 - shift["paper"]["energy_mj"] / mult["paper"]["energy_mj"]
        speedup = mult["ours"]["latency_ms"] / shift["ours"]["latency_ms"]
        paper_speedup = mult["paper"]["latency_ms"] / shift["paper"]["latency_ms"]
        ratios.append({
            "model": name,
            "shift_energy_saving": saving,
            "paper_shift_energy_saving": paper_saving,
            "shift_speedup": speedup,
            "paper_shift_speedup": paper_speedup,
        })
        ratio_rows.append((
            name, "shift",
            f"{100 * saving:.2f}%", f"{100 * paper_saving:.2f}%",
            f"{100 * (saving - paper_saving):+.2f}",
            f"{speedup:.2f}x", f"{paper_speedup:.2f}x",
            _percent(speedup / paper_speedup - 1),
        ))
    print(cost.format_table3(ratio_rows, header=(
        "Model", "Op", "Energy saving", "Paper", "Points", "Speed-up",
        "Paper", "Relative",
    )))

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as file:
            json.dump({
                "image_size": args.image_size,
                "classes": args.classes,
                "profile": cost.EYERISS_45NM.name,
                "rows": records,
                "shift_vs_mult": ratios,
            }, file, indent=2)
        print(f"\nWrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
