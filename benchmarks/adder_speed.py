"""Benchmark adder convolution implementations against Conv2D on the CPU.

Speed: one forward and backward pass (the loss `sum(outputs * upstream)` and
its gradients with respect to the input and the kernel) of each
implementation, at two shapes:

- "3x3": batch 64, 16x16x32 input, 64 filters of 3x3, "same" padding;
- "1x1": batch 128, 8x8x96 input, 32 filters of 1x1 (a pointwise layer of
  MobileNetV2-w0.35).

The implementations run in turns within each round (Conv2D, then each adder
path), so load from other processes hits all of them alike, and the report
gives each one's median over rounds of its time divided by Conv2D's time in
the same round:

- Conv2D: `keras.layers.Conv2D`, the reference;
- native: `adder_conv2d(..., implementation="native")`, the compiled kernels
  of `keras_shiftadd.kernels`;
- tensorflow: `adder_conv2d(..., implementation="tensorflow")`, patch
  extraction plus a chunked broadcast-and-reduce;
- tensorflow+XLA: the same inside `tf.function(jit_compile=True)`;
- broadcast (TF): `tf.image.extract_patches` and one broadcast of the whole
  (positions, depth, filters) difference, with TensorFlow's autodiff;
- unfold (torch) and cdist (torch): where PyTorch is installed, the
  unfold-and-broadcast formulation of the AdderNet reference code and
  `torch.cdist(p=1)` on unfolded patches, both with autograd.

The three plain formulations (broadcast, unfold, cdist) differentiate
|x - w| exactly (sign gradients), while ours use AdderNet's gradients; the
amount of arithmetic is the same.

Memory: each (implementation, shape) pair runs its first step (after
tracing) in a fresh process and reports the growth of its peak resident set
size (VmHWM), next to the layer's output size. The growth includes the
outputs and gradients themselves (for the 3x3 shape: 4 MiB of output and
2 MiB of input gradient) and one-time costs such as XLA's compilation.

End-to-end (`--end-to-end`): trains AugAdd MobileNetV2-w0.35 on CIFAR-10 at
32x32 for two epochs with the TensorFlow adder, then with the native one, in
one process, and reports the second epoch's time of each.

Run from the repository root:

    python benchmarks/adder_speed.py --json benchmarks/results/adder_speed.json
    python benchmarks/adder_speed.py --end-to-end --limit 2560 \
        --json benchmarks/results/adder_end_to_end.json
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layer_speed import read_cpu_model, read_status_kib, reset_peak_rss  # noqa: E402

from keras_shiftadd import kernels  # noqa: E402
from keras_shiftadd.layers.adder import adder_conv2d  # noqa: E402

MIB = 2**20

# name: (batch, height, width, channels, filters, kernel size, padding)
SHAPES = {
    "3x3": (64, 16, 16, 32, 64, 3, "same"),
    "1x1": (128, 8, 8, 96, 32, 1, "valid"),
}
TF_PATHS = ("Conv2D", "native", "tensorflow", "tensorflow+XLA", "broadcast (TF)")
TORCH_PATHS = ("unfold (torch)", "cdist (torch)")


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_arrays(shape_name, seed=0):
    """Return input, kernel and upstream gradient as float32 NumPy arrays."""
    batch, height, width, channels, filters, size, padding = SHAPES[shape_name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, height, width, channels)).astype("float32")
    kernel = 0.5 * rng.standard_normal((size, size, channels, filters))
    out_height = height if padding == "same" else height - size + 1
    out_width = width if padding == "same" else width - size + 1
    upstream = rng.standard_normal((batch, out_height, out_width, filters))
    return x, kernel.astype("float32"), upstream.astype("float32")


def make_tf_step(path, shape_name):
    """Return a callable running one forward and backward pass of `path`."""
    _, _, _, _, filters, size, padding = SHAPES[shape_name]
    x, kernel_value, upstream = make_arrays(shape_name)
    x, upstream = tf.constant(x), tf.constant(upstream)
    kernel = tf.Variable(kernel_value)

    if path == "Conv2D":
        def forward(inputs):
            return tf.nn.conv2d(inputs, kernel, 1, padding.upper())
    elif path in ("native", "tensorflow", "tensorflow+XLA"):
        implementation = "native" if path == "native" else "tensorflow"

        def forward(inputs):
            return adder_conv2d(inputs, kernel, padding=padding,
                                implementation=implementation)
    elif path == "broadcast (TF)":
        def forward(inputs):
            patches = tf.image.extract_patches(
                inputs, [1, size, size, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                padding.upper(),
            )
            rows = tf.reshape(patches, [-1, size * size * x.shape[-1]])
            # extract_patches orders the depth (u, v, c), as the kernel does.
            matrix = tf.reshape(kernel, [-1, filters])
            distance = -tf.reduce_sum(
                tf.abs(rows[:, :, None] - matrix[None]), axis=1
            )
            return tf.reshape(distance, upstream.shape)
    else:
        raise ValueError(f"Invalid path {path!r}: expected one of {TF_PATHS}.")

    @tf.function(jit_compile=path == "tensorflow+XLA")
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(forward(inputs) * upstream)
        return loss, tape.gradient(loss, [inputs, kernel])

    def run():
        loss, gradients = step(x)
        loss.numpy()
        for gradient in gradients:
            gradient.numpy()

    # Tracing without running, so a memory measurement can start after it.
    run.trace = lambda: step.get_concrete_function(x)
    return run


def make_torch_step(path, shape_name):
    """Return a callable running one forward and backward pass in PyTorch."""
    import torch
    import torch.nn.functional as functional

    batch, height, width, channels, filters, size, padding = SHAPES[shape_name]
    x_value, kernel_value, upstream_value = make_arrays(shape_name)
    x = torch.from_numpy(x_value).permute(0, 3, 1, 2).contiguous().requires_grad_()
    # (F, C * kh * kw), the unfold order of the depth.
    weight = torch.from_numpy(
        kernel_value.transpose(3, 2, 0, 1).reshape(filters, -1).copy()
    ).requires_grad_()
    upstream = torch.from_numpy(upstream_value)
    pad = size // 2 if padding == "same" else 0

    def run():
        x.grad = None
        weight.grad = None
        columns = functional.unfold(x, size, padding=pad)  # (B, D, L)
        if path == "unfold (torch)":
            difference = columns[:, None, :, :] - weight[None, :, :, None]
            outputs = -difference.abs().sum(dim=2)  # (B, F, L)
            outputs = outputs.transpose(1, 2)
        elif path == "cdist (torch)":
            rows = columns.transpose(1, 2)  # (B, L, D)
            outputs = -torch.cdist(rows, weight[None].expand(batch, -1, -1), p=1)
        else:
            raise ValueError(
                f"Invalid path {path!r}: expected one of {TORCH_PATHS}."
            )
        loss = (outputs.reshape(upstream.shape) * upstream).sum()
        loss.backward()

    return run


def make_step(path, shape_name):
    if path in TORCH_PATHS:
        return make_torch_step(path, shape_name)
    return make_tf_step(path, shape_name)


def time_paths(shape_name, paths, rounds, warmup):
    """Time every path in turns; return {path: [seconds per round]}."""
    steps = {path: make_step(path, shape_name) for path in paths}
    for path in paths:
        for _ in range(warmup):
            steps[path]()

    samples = {path: [] for path in paths}
    for _ in range(rounds):
        for path in paths:
            start = time.perf_counter()
            steps[path]()
            samples[path].append(time.perf_counter() - start)
    return samples


def summarize(samples):
    """Return median time and median per-round ratio to Conv2D per path."""
    summary = {}
    for path, times in samples.items():
        ratios = [own / conv for own, conv in zip(times, samples["Conv2D"])]
        summary[path] = {
            "median_ms": 1e3 * statistics.median(times),
            "ratio_to_conv2d": statistics.median(ratios),
            "samples_ms": [1e3 * t for t in times],
        }
    return summary


def measure_memory_worker(path, shape_name):
    """Run one step of `path` in this (fresh) process; return peak growth."""
    step = make_step(path, shape_name)
    # The first step is measured, after tracing: later steps reuse memory
    # that TensorFlow's and PyTorch's allocators keep, so they would hide
    # it. The growth includes the step's outputs and gradients and one-time
    # costs such as XLA compilation.
    if hasattr(step, "trace"):
        step.trace()
    reset_peak_rss()
    before = read_status_kib("VmHWM")
    step()
    return (read_status_kib("VmHWM") - before) / 1024


def measure_memory(shape_name, paths):
    context = multiprocessing.get_context("spawn")
    growth = {}
    for path in paths:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=context
        ) as pool:
            try:
                growth[path] = pool.submit(
                    measure_memory_worker, path, shape_name
                ).result()
            except concurrent.futures.BrokenExecutor:
                # Killed, most likely for memory; report instead of failing.
                growth[path] = None
    return growth


def output_mib(shape_name):
    _, _, upstream = make_arrays(shape_name)
    return upstream.nbytes / MIB


def format_table(shape_name, summary, growth):
    batch, height, width, channels, filters, size, padding = SHAPES[shape_name]
    lines = [
        f"{shape_name}: batch {batch}, {height}x{width}x{channels} -> "
        f"{filters} filters {size}x{size} ({padding}); output "
        f"{output_mib(shape_name):.1f} MiB",
        f"{'path':<16}{'median (ms)':>12}{'x Conv2D':>10}{'peak growth (MiB)':>19}",
    ]
    for path, row in summary.items():
        memory = growth.get(path)
        memory_text = "-" if memory is None else f"{memory:.1f}"
        lines.append(
            f"{path:<16}{row['median_ms']:>12.1f}"
            f"{row['ratio_to_conv2d']:>10.2f}{memory_text:>19}"
        )
    return "\n".join(lines)


def run_end_to_end(args):
    """Train AugAdd MobileNetV2 with each adder implementation; return rows."""
    from keras_shiftadd import data, training

    dataset = data.load(data=args.data, limit=args.limit, test_limit=512,
                        seed=0)
    rows = []
    for implementation in ("tensorflow", "auto"):
        # The setting is read when the model's functions are traced, so it
        # applies to this model only.
        os.environ["KERAS_SHIFTADD_ADDER"] = implementation
        config = training.TrainConfig(
            model="mobilenetv2-w0.35", op="add", augmentation=True,
            epochs=2, batch_size=128, image_size=32, seed=0, verbose=2,
            recalibration_batches=0,
        )
        result = training.train(dataset, config)
        rows.append({
            "implementation": "native" if implementation == "auto" else
            implementation,
            "epoch_times_s": result["epoch_times_s"],
            "second_epoch_s": result["epoch_times_s"][-1],
            "train_images": result["train_images"],
        })
        print(f"AugAdd MobileNetV2-w0.35, {implementation}: epoch times "
              f"{[round(t, 1) for t in result['epoch_times_s']]} s", flush=True)
    os.environ.pop("KERAS_SHIFTADD_ADDER")
    speedup = rows[0]["second_epoch_s"] / rows[1]["second_epoch_s"]
    print(f"Native adder: {speedup:.2f}x faster epochs than TensorFlow's.")
    return {"rows": rows, "speedup": speedup}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9,
                        help="timed rounds per shape (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps per path first (default: %(default)s)")
    parser.add_argument("--shapes", default="3x3,1x1",
                        help="comma-separated shapes out of "
                             f"{','.join(SHAPES)} (default: %(default)s)")
    parser.add_argument("--skip-memory", action="store_true",
                        help="do not measure peak memory")
    parser.add_argument("--end-to-end", action="store_true",
                        help="time AugAdd MobileNetV2 epochs instead")
    parser.add_argument("--data", default="../shared/datasets/cifar10",
                        help="CIFAR-10 for --end-to-end (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=2560,
                        help="training images for --end-to-end "
                             "(default: %(default)s)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the results and the command line here")
    args = parser.parse_args(argv)
    for name in args.shapes.split(","):
        if name not in SHAPES:
            parser.error(f"invalid shape {name!r}: expected one of {list(SHAPES)}")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    record = {
        "command": " ".join(["python"] + sys.argv),
        "cpu": read_cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    # Build (or load) the native kernels before timing anything.
    kernels.load(required=True)

    if args.end_to_end:
        record["end_to_end"] = run_end_to_end(args)
    else:
        paths = list(TF_PATHS)
        if torch_available():
            import torch

            record["torch"] = torch.__version__
            paths += list(TORCH_PATHS)
        else:
            print("PyTorch is not installed: skipping the torch paths.")
        record["shapes"] = {}
        for shape_name in args.shapes.split(","):
            samples = time_paths(shape_name, paths, args.rounds, args.warmup)
            summary = summarize(samples)
            growth = {} if args.skip_memory else measure_memory(shape_name, paths)
            print(format_table(shape_name, summary, growth), end="\n\n",
                  flush=True)
            record["shapes"][shape_name] = {
                "shape": SHAPES[shape_name],
                "output_mib": output_mib(shape_name),
                "timing": summary,
                "peak_growth_mib": growth,
            }

    if args.json:
        with open(args.json, "w") as file:
            json.dump(record, file, indent=2)


if __name__ == "__main__":
    main()
