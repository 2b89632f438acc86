"""Text tables and charts of `ModelCost`s."""

from keras_shiftadd.cost.counting import count


def _millions(value):
    return f"{value / 1e6:.2f}"


def _shape(shape):
    return "x".join(str(d) for d in shape) if shape else "-"


def format_layers(cost):
    """Return a per-layer table of `cost` followed by its totals."""
    header = ("Layer", "Type", "Op", "Output", "MACs", "Mult", "Shift", "Add",
              "Params", "Energy uJ", "Cycles")
    rows = []
    for layer in cost.layers:
        rows.append((
            layer.name,
            layer.class_name,
            layer.op or "-",
            _shape(layer.output_shape),
            f"{layer.macs:,}",
            f"{layer.mult:,}",
            f"{layer.shift:,}",
            f"{layer.add:,}",
            f"{layer.params:,}",
            f"{layer.energy * 1e-6:.3f}",
            f"{layer.cycles:,.0f}",
        ))
    widths = [max(len(str(row[i])) for row in rows + [header])
              for i in range(len(header))]
    right = {4, 5, 6, 7, 8, 9, 10}

    def line(row):
        cells = [
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule] + [line(row) for row in rows] + [rule]

    precision = ", ".join(
        f"{operation} {fmt} {n / 1e6:.2f}M"
        for operation, formats in cost.ops_by_precision.items()
        for fmt, n in sorted(formats.items())
    )
    breakdown = ", ".join(
        f"{part} {value * 1e-9:.3f}"
        for part, value in cost.energy_breakdown_pj.items()
    )
    lines += [
        f"Model: {cost.name} ({cost.convention} convention, profile "
        f"{cost.profile.name})",
        f"MACs: {cost.macs / 1e6:.2f}M  Mult: {cost.mult / 1e6:.2f}M  "
        f"Shift: {cost.shift / 1e6:.2f}M  Add: {cost.add / 1e6:.2f}M",
        f"Operations by precision: {precision or 'none'}",
        f"Parameters: {cost.params / 1e6:.3f}M  Weights: "
        f"{cost.weight_bytes / 1024:.1f} KiB  Peak activations: "
        f"{cost.peak_activation_bytes / 1024:.1f} KiB",
        f"Energy: {cost.energy_mj:.3f} mJ ({breakdown})  Latency: "
        f"{cost.latency_ms:.3f} ms",
    ]
    notes = [f"{layer.name}: {layer.note}" for layer in cost.layers if layer.note]
    if notes:
        lines.append("Not counted: " + "; ".join(notes))
    return "\n".join(lines)


def summary(model, convention="paper", profile=None, op=None, print_fn=print):
    """Print the per-layer costs and totals of `model`; return the `ModelCost`.

    Args:
        model: See `count`.
        convention: `"paper"` or `"full"`. Defaults to `"paper"`.
        profile: A `HardwareProfile`. Defaults to `EYERISS_45NM`.
        op: Operator to convert a plain model to, see `count`.
        print_fn: Called with the table text. Defaults to `print`.
    """
    cost = count(model, convention=convention, profile=profile, op=op)
    print_fn(format_layers(cost))
    return cost


TABLE3_HEADER = ("Model", "Op", "Params (M)", "Mult (M)", "Shift (M)",
                 "Add (M)", "Energy (mJ)", "Latency (ms)")


def table3_row(label, op, cost):
    """Return the Table 3 columns of `cost` as strings."""
    return (
        label,
        op,
        _millions(cost.params),
        _millions(cost.mult),
        _millions(cost.shift),
        _millions(cost.add),
        f"{cost.energy_mj:.3f}",
        f"{cost.latency_ms:.3f}",
    )


def format_table3(rows, header=TABLE3_HEADER):
    """Return `rows` (tuples of strings) as an aligned text table."""
    widths = [max(len(str(row[i])) for row in list(rows) + [header])
              for i in range(len(header))]

    def line(row):
        cells = [str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
                 for i, (cell, width) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * len(line(header))]
                     + [line(row) for row in rows])


def plot_comparison(costs, path, title=None):
    """Draw operation counts, energy and latency per operator to a PNG file.

    Args:
        costs: `{op: ModelCost}`, for example for `"mult"`, `"shift"` and
            `"add"`.
        path: Output file; its extension selects the image format.
        title: Figure title. Defaults to the first model's name.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(costs)
    figure, (ops_axis, energy_axis, latency_axis) = plt.subplots(
        1, 3, figsize=(13, 4.2)
    )

    positions = np.arange(len(labels))
    width = 0.27
    for offset, operation in zip((-width, 0.0, width), ("mult", "shift", "add")):
        values = [getattr(costs[label], operation) / 1e6 for label in labels]
        ops_axis.bar(positions + offset, values, width, label=operation.capitalize())
    ops_axis.set_xticks(positions, [label.capitalize() for label in labels])
    ops_axis.set_ylabel("Operations (millions)")
    ops_axis.set_title("Operations")
    ops_axis.legend()

    parts = ("compute", "register_file", "array", "buffer", "dram")
    bottom = np.zeros(len(labels))
    for part in parts:
        values = np.array([
            costs[label].energy_breakdown_pj.get(part, 0.0) * 1e-9
            for label in labels
        ])
        energy_axis.bar(positions, values, 0.6, bottom=bottom,
                        label=part.replace("_", " "))
        bottom += values
    energy_axis.set_xticks(positions, [label.capitalize() for label in labels])
    energy_axis.set_ylabel("Energy (mJ)")
    energy_axis.set_title("Energy per inference")
    energy_axis.legend(fontsize="small")

    latency_axis.bar(positions, [costs[label].latency_ms for label in labels],
                     0.6, color="tab:gray")
    latency_axis.set_xticks(positions, [label.capitalize() for label in labels])
    latency_axis.set_ylabel("Latency (ms)")
    latency_axis.set_title("Latency per inference")

    first = next(iter(costs.values()))
    figure.suptitle(title or f"{first.name} ({first.profile.name})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
