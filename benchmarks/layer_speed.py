"""Benchmark the gradient step of Conv2D, ShiftConv2D and AddConv2D.

Speed: each layer's forward and backward pass (gradients of
`sum(outputs * upstream)` with respect to the input and the kernel, where
`upstream` is a fixed random tensor) runs inside a `tf.function`. After
warm-up, the layers are timed in turns (Conv2D, ShiftConv2D, AddConv2D,
Conv2D, ...) so that load from other processes hits all of them alike. The
report gives the median per layer and its ratio to the Conv2D median from
the same process.

Memory: each (layer, batch) pair runs one forward and backward pass in a
fresh process and reports how much the peak resident set size (VmHWM in
/proc/self/status) grew. AddConv2D's growth is shown next to the size of the
whole (batch * positions, kh*kw*C, filters) difference tensor that a naive
adder convolution would hold, and next to its patch matrix and output.

Run from the repository root:

    python benchmarks/layer_speed.py [--repeats N] [--batch B] [--json PATH]
        [--skip-memory]

The memory part needs Linux, because it reads /proc/self/status.
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

# The gradient step uses tf.GradientTape and AddConv2D has a TensorFlow
# custom gradient, so the benchmark only makes sense on this backend.
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_shiftadd.layers.adder import AddConv2D  # noqa: E402
from keras_shiftadd.layers.shift import ShiftConv2D  # noqa: E402

HEIGHT = 16
WIDTH = 16
CHANNELS = 32
FILTERS = 64
KERNEL_SIZE = 3
FLOAT32_BYTES = 4
MIB = 2**20

LAYER_NAMES = ("Conv2D", "ShiftConv2D", "AddConv2D")
MEMORY_LAYER_NAMES = ("Conv2D", "AddConv2D")
DEFAULT_MEMORY_BATCHES = (64, 256)


def make_layer(name):
    """Create the layer called `name` with the benchmarked filters and kernel.

    All three layers have no bias, because AddConv2D has none by default and
    the comparison is about the convolution itself.
    """
    common = {"padding": "same", "use_bias": False}
    if name == "Conv2D":
        return keras.layers.Conv2D(FILTERS, KERNEL_SIZE, **common)
    if name == "ShiftConv2D":
        return ShiftConv2D(FILTERS, KERNEL_SIZE, **common)
    if name == "AddConv2D":
        return AddConv2D(FILTERS, KERNEL_SIZE, **common)
    raise ValueError(
        f"Invalid layer name {name!r}: expected one of {LAYER_NAMES}."
    )


def make_inputs(batch, seed=0):
    """Return the input and the fixed upstream gradient as float32 tensors."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((batch, HEIGHT, WIDTH, CHANNELS), np.float32)
    upstream = rng.standard_normal((batch, HEIGHT, WIDTH, FILTERS), np.float32)
    return tf.constant(inputs), tf.constant(upstream)


def make_gradient_step(layer, input_shape):
    """Build `layer` and return a tf.function computing one step's gradients.

    The function returns the loss `sum(layer(inputs) * upstream)` and its
    gradients with respect to `inputs` and `layer.kernel`. Returning the loss
    keeps the forward pass in the graph, because the gradients alone do not
    depend on it and graph optimization would prune it.
    """
    layer.build(input_shape)

    @tf.function
    def gradient_step(inputs, upstream):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            loss = tf.reduce_sum(outputs * upstream)
        return loss, tape.gradient(loss, [inputs, layer.kernel])

    return gradient_step


def run_step(gradient_step, inputs, upstream):
    """Run one gradient step and wait for its results.

    Copying the loss and the gradients to NumPy (about 2 MiB at batch 64)
    makes sure the step has finished, and costs every layer the same.
    """
    loss, gradients = gradient_step(inputs, upstream)
    loss.numpy()
    for gradient in gradients:
        gradient.numpy()


def time_layers(batch, repeats, warmup, steps_per_sample):
    """Time every layer's gradient step, interleaving the layers.

    Returns:
        A dict mapping each layer name to its list of `repeats` samples, in
        seconds per step. Each sample is the mean of `steps_per_sample`
        consecutive steps.
    """
    inputs, upstream = make_inputs(batch)
    steps = {
        name: make_gradient_step(make_layer(name), inputs.shape)
        for name in LAYER_NAMES
    }

    # The first call traces the function. The later warm-up calls let
    # TensorFlow and oneDNN settle their caches before timing starts.
    for name in LAYER_NAMES:
        for _ in range(warmup):
            run_step(steps[name], inputs, upstream)

    samples = {name: [] for name in LAYER_NAMES}
    for _ in range(repeats):
        for name in LAYER_NAMES:
            start = time.perf_counter()
            for _ in range(steps_per_sample):
                run_step(steps[name], inputs, upstream)
            elapsed = time.perf_counter() - start
            samples[name].append(elapsed / steps_per_sample)
    return samples


def summarize_times(samples):
    """Return the median, minimum, maximum and ratio to Conv2D per layer.

    `ratio_to_conv2d` divides medians. `median_round_ratio_to_conv2d` is the
    median over rounds of the ratio within one round, which is less
    sensitive to load that changes slowly during the run.
    """
    conv_median = statistics.median(samples["Conv2D"])
    summary = {}
    for name, times in samples.items():
        round_ratios = [
            own / conv for own, conv in zip(times, samples["Conv2D"])
        ]
        summary[name] = {
            "median_ms": 1e3 * statistics.median(times),
            "min_ms": 1e3 * min(times),
            "max_ms": 1e3 * max(times),
            "ratio_to_conv2d": statistics.median(times) / conv_median,
            "median_round_ratio_to_conv2d": statistics.median(round_ratios),
            "samples_ms": [1e3 * t for t in times],
        }
    return summary


def read_status_kib(field):
    """Return a `kB` field of /proc/self/status, such as VmHWM, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"Field {field!r} not found in /proc/self/status.")


def reset_peak_rss():
    """Reset VmHWM to the current resident set size.

    Writing "5" to /proc/self/clear_refs does this on Linux 4.0 and later.
    Returns False where Linux rejects the write.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def measure_step_memory(name, batch):
    """Measure the peak RSS growth of one gradient step of layer `name`.

    Runs in a fresh process. Tracing happens before the first reading, so
    the growth covers the step itself plus one-time costs of its first run,
    such as graph optimization.
    """
    inputs, upstream = make_inputs(batch)
    gradient_step = make_gradient_step(make_layer(name), inputs.shape)
    gradient_step.get_concrete_function(inputs, upstream)

    peak_was_reset = reset_peak_rss()
    rss_before_kib = read_status_kib("VmRSS")
    peak_before_kib = read_status_kib("VmHWM")
    run_step(gradient_step, inputs, upstream)
    peak_after_kib = read_status_kib("VmHWM")

    # NOTE: without the reset, a peak left over from importing TensorFlow
    # can hide part of the step's growth, so the growth is a lower bound.
    return {
        "layer": name,
        "batch": batch,
        "peak_was_reset": peak_was_reset,
        "rss_before_mib": rss_before_kib / 1024,
        "peak_before_mib": peak_before_kib / 1024,
        "peak_after_mib": peak_after_kib / 1024,
        "growth_mib": (peak_after_kib - peak_before_kib) / 1024,
    }


def reference_sizes_mib(batch):
    """Return the sizes of AddConv2D's large tensors at `batch`, in MiB."""
    positions = batch * HEIGHT * WIDTH
    depth = KERNEL_SIZE * KERNEL_SIZE * CHANNELS
    return {
        "difference_tensor_mib": positions * depth * FILTERS * FLOAT32_BYTES / MIB,
        "patch_matrix_mib": positions * depth * FLOAT32_BYTES / MIB,
        "output_mib": positions * FILTERS * FLOAT32_BYTES / MIB,
    }


def measure_memory(batches):
    """Run `measure_step_memory` for each layer and batch in its own process."""
    context = multiprocessing.get_context("spawn")
    results = []
    for name in MEMORY_LAYER_NAMES:
        for batch in batches:
            # A new pool per measurement gives every measurement a fresh
            # process, so no allocation from an earlier one is reused.
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=context
            ) as pool:
                future = pool.submit(measure_step_memory, name, batch)
                try:
                    result = future.result()
                except concurrent.futures.BrokenExecutor as error:
                    raise RuntimeError(
                        f"Memory measurement of {name} at batch {batch} "
                        "failed because its worker process ended abruptly, "
                        "for example killed for running out of memory. Try "
                        "smaller --memory-batches."
                    ) from error
            result.update(reference_sizes_mib(batch))
            results.append(result)
    return results


def read_cpu_model():
    """Return the first "model name" in /proc/cpuinfo, or None if missing."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def format_time_table(summary, batch):
    lines = [
        f"Gradient step (forward + backward), batch {batch}, "
        f"{HEIGHT}x{WIDTH}x{CHANNELS} input, {FILTERS} filters, "
        f"{KERNEL_SIZE}x{KERNEL_SIZE}, padding 'same'",
        f"{'layer':<12} {'median ms':>10} {'min ms':>9} {'max ms':>9} "
        f"{'x Conv2D':>9} {'x Conv2D per round':>19}",
    ]
    for name in LAYER_NAMES:
        row = summary[name]
        lines.append(
            f"{name:<12} {row['median_ms']:>10.2f} {row['min_ms']:>9.2f} "
            f"{row['max_ms']:>9.2f} {row['ratio_to_conv2d']:>9.2f} "
            f"{row['median_round_ratio_to_conv2d']:>19.2f}"
        )
    return "\n".join(lines)


def format_memory_table(results):
    lines = [
        "Peak RSS growth of one gradient step (fresh process per row)",
        f"{'layer':<10} {'batch':>5} {'growth MiB':>11} "
        f"{'difference MiB':>15} {'patches MiB':>12} {'output MiB':>11}",
    ]
    for row in results:
        # Conv2D has no difference tensor, and its patch and output sizes
        # are the same as AddConv2D's, so its row shows only the growth.
        if row["layer"] == "AddConv2D":
            sizes = (
                f"{row['difference_tensor_mib']:>15.1f} "
                f"{row['patch_matrix_mib']:>12.1f} {row['output_mib']:>11.1f}"
            )
        else:
            sizes = f"{'-':>15} {'-':>12} {'-':>11}"
        lines.append(
            f"{row['layer']:<10} {row['batch']:>5} "
            f"{row['growth_mib']:>11.1f} {sizes}"
        )
    if not all(row["peak_was_reset"] for row in results):
        lines.append(
            "Linux rejected the VmHWM reset through /proc/self/clear_refs, "
            "so each growth is a lower bound."
        )
    lines.extend(describe_adder_scaling(results))
    return "\n".join(lines)


def describe_adder_scaling(results):
    """Compare AddConv2D's growth between its smallest and largest batch.

    Returns a list of lines, empty when fewer than two batches were measured.
    """
    adder_rows = sorted(
        (row for row in results if row["layer"] == "AddConv2D"),
        key=lambda row: row["batch"],
    )
    if len(adder_rows) < 2 or adder_rows[0]["batch"] == adder_rows[-1]["batch"]:
        return []
    small, large = adder_rows[0], adder_rows[-1]
    growth_step = large["growth_mib"] - small["growth_mib"]
    patch_step = large["patch_matrix_mib"] - small["patch_matrix_mib"]
    difference_step = (
        large["difference_tensor_mib"] - small["difference_tensor_mib"]
    )
    return [
        f"AddConv2D from batch {small['batch']} to {large['batch']}: growth "
        f"+{growth_step:.1f} MiB, that is {growth_step / patch_step:.1f} times "
        f"the patch matrix's increase (+{patch_step:.1f} MiB) and "
        f"{growth_step / difference_step:.3f} times the difference tensor's "
        f"(+{difference_step:.1f} MiB)."
    ]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Time the gradient step of Conv2D, ShiftConv2D and AddConv2D and "
            "measure the peak memory of AddConv2D and Conv2D."
        )
    )
    parser.add_argument(
        "--repeats", type=int, default=15,
        help="timed samples per layer; the report gives their median (default: 15)",
    )
    parser.add_argument(
        "--batch", type=int, default=64,
        help="batch size of the timing part (default: 64)",
    )
    parser.add_argument(
        "--steps-per-sample", type=int, default=3,
        help="gradient steps averaged into one timed sample (default: 3)",
    )
    parser.add_argument(
        "--warmup", type=int, default=3,
        help="untimed gradient steps per layer before timing (default: 3)",
    )
    parser.add_argument(
        "--memory-batches", type=int, nargs="+",
        default=list(DEFAULT_MEMORY_BATCHES),
        help="batch sizes of the memory part (default: 64 256)",
    )
    parser.add_argument(
        "--skip-memory", action="store_true",
        help="skip the memory part, which starts one process per layer and batch",
    )
    parser.add_argument(
        "--json", metavar="PATH",
        help="also write every number, the command line and versions to this JSON file",
    )
    args = parser.parse_args(argv)

    positive_options = {
        "--repeats": args.repeats,
        "--batch": args.batch,
        "--steps-per-sample": args.steps_per_sample,
    }
    positive_options.update(
        {"--memory-batches": batch for batch in args.memory_batches}
    )
    for option, value in positive_options.items():
        if value < 1:
            parser.error(f"{option} must be a positive integer, got {value}.")
    if args.warmup < 1:
        parser.error(
            f"--warmup must be at least 1 so that tracing is not timed, got {args.warmup}."
        )
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    samples = time_layers(
        args.batch, args.repeats, args.warmup, args.steps_per_sample
    )
    summary = summarize_times(samples)
    print(format_time_table(summary, args.batch))

    memory = None
    if not args.skip_memory:
        memory = measure_memory(args.memory_batches)
        print()
        print(format_memory_table(memory))

    if args.json:
        record = {
            "command": [sys.executable, *sys.argv],
            "settings": {
                "batch": args.batch,
                "height": HEIGHT,
                "width": WIDTH,
                "channels": CHANNELS,
                "filters": FILTERS,
                "kernel_size": KERNEL_SIZE,
                "padding": "same",
                "use_bias": False,
                "repeats": args.repeats,
                "steps_per_sample": args.steps_per_sample,
                "warmup": args.warmup,
                "memory_batches": args.memory_batches,
            },
            "environment": {
                "keras": keras.__version__,
                "tensorflow": tf.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "cpu_model": read_cpu_model(),
            },
            "time": summary,
            "memory": memory,
        }
        directory = os.path.dirname(args.json)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as output:
            json.dump(record, output, indent=2)
            output.write("\n")


if __name__ == "__main__":
    main()
