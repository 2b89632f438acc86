"""Weight-distribution plots of Conv, Shift and Add layers (PNG, matplotlib).

The figures follow ShiftAddAug's Figures 2 and 5: one column per operator
(Conv, Shift, Add) and one row per scenario, from these sources:

- a kernel archive written by `keras-shiftadd fit-remap` (`kernels.npz`,
  or the run directory that contains it). "Without sharing" shows the
  directly trained Mult, Shift and Add kernels. "With sharing" shows the
  Mult kernel that a hybrid layer would share. "After remapping" shows what
  Shift (`W + R(W)`) and Add (`R(W)`) read from it through the run's fitted
  remap, or the shipped one where the run has none;
- a saved `ShiftAddAugModel` (`.keras`): the shared kernels ("with
  sharing": the whole kernel multiplication reads and the target slice) and
  the target slice after its remap;
- for Shift, both remapped sources add a row with the remap bias `R(W)`
  alone, the narrow Laplace that Shift adds to the shared weights;
- any other saved Keras model, such as a `target.keras` from
  `keras-shiftadd train`: its Conv, Shift and Add kernels "without sharing".

For one layer the histograms show raw weight values. For a whole model each
layer's values are divided by a reference std before they are pooled: the
std of the layer's multiplicative (shared) kernel where there is one, else
the kernel's own std, so layers of different scale are comparable.
"""

import os

import numpy as np

from keras_shiftadd import hws

OPERATORS = ("Conv", "Shift", "Add")

# Scenario rows, in the order the figures show them.
WITHOUT_SHARING = "without sharing"
WITH_SHARING = "with sharing (shared weights)"
AFTER_REMAP = "after remapping (read by Shift / Add)"
REMAP_BIAS = "remap bias R(W)"


class WeightSet:
    """Weight samples to plot: `values[row][column]` is a list of arrays.

    `references[row][column]` contains, for each array, the std that divides
    it when layers are pooled.
    """

    def __init__(self, title):
        self.title = title
        self.values = {}
        self.references = {}
        self.layers = []

    def add(self, row, column, values, reference_std):
        values = np.asarray(values, dtype="float64").ravel()
        self.values.setdefault(row, {}).setdefault(column, []).append(values)
        self.references.setdefault(row, {}).setdefault(column, []).append(
            float(reference_std)
        )

    def rows(self):
        order = (WITHOUT_SHARING, WITH_SHARING, AFTER_REMAP, REMAP_BIAS)
        return [row for row in order if row in self.values]

    def pooled(self, row, column, standardize):
        arrays = self.values.get(row, {}).get(column)
        if not arrays:
            return None
        if not standardize:
            return np.concatenate(arrays)
        stds = self.references[row][column]
        return np.concatenate([a / s for a, s in zip(arrays, stds)])


def _std(values):
    return hws.numpy_statistics(values)[1]


# ---------------------------------------------------------------------------
# Sources


def _find_kernel_archive(path):
    if os.path.isdir(path):
        candidate = os.path.join(path, "kernels.npz")
        return candidate if os.path.isfile(candidate) else None
    return path if path.endswith(".npz") else None


def _find_model_file(path):
    if os.path.isdir(path):
        for name in ("model.keras", "augmented.keras", "target.keras"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        return None
    return path if path.endswith(".keras") else None


def _load_specs(directory):
    """Return op -> remap spec: the run's own fitted files, else the shipped."""
    import json

    specs = {}
    for op, name in hws.SHIPPED_FILES.items():
        candidate = os.path.join(directory, name) if directory else None
        if candidate and os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as file:
                specs[op] = hws.resolve_hws(json.load(file), op)
        else:
            specs[op] = hws.load_remap(op)
    return specs


def _check_layer(layer, names, source):
    if layer is not None and layer not in names:
        raise ValueError(
            f"Layer {layer!r} not found in {source}. Layers with kernels: "
            f"{', '.join(sorted(names))}."
        )


def weights_from_kernel_archive(path, layer=None):
    """Collect a `WeightSet` from a `fit-remap` kernel archive."""
    from keras import ops

    kernels = hws.load_kernels(path)
    if "mult" not in kernels:
        raise ValueError(
            f"{path} contains no Mult kernels ('mult/...' arrays). Pass a "
            "kernels.npz written by `keras-shiftadd fit-remap`."
        )
    mult = kernels["mult"]
    _check_layer(layer, mult, path)
    names = [layer] if layer else list(mult)
    specs = _load_specs(os.path.dirname(os.path.abspath(path)))
    weights = WeightSet(f"{os.path.basename(path)}: "
                        + (f"layer {layer}" if layer else f"{len(names)} layers"))
    weights.layers = names
    for name in names:
        shared = mult[name]
        reference = _std(shared)
        weights.add(WITHOUT_SHARING, "Conv", shared, reference)
        weights.add(WITH_SHARING, "Conv", shared, reference)
        for op, column in (("shift", "Shift"), ("add", "Add")):
            if name not in kernels.get(op, {}):
                continue
            weights.add(WITHOUT_SHARING, column, kernels[op][name], reference)
            weights.add(WITH_SHARING, column, shared, reference)
            remap = hws.remap_for_kernel(specs[op], shared.shape)
            read = ops.convert_to_numpy(remap(shared.astype("float32")))
            weights.add(AFTER_REMAP, column, read, reference)
            if remap.mode == "bias":
                weights.add(REMAP_BIAS, column, read - shared, reference)
    return weights


def _operator_of(layer):
    """Return "Conv", "Shift", "Add" or None for a layer of a plain model."""
    import keras

    from keras_shiftadd.layers import adder, shift

    if isinstance(layer, (shift.ShiftConv2D, shift.ShiftDepthwiseConv2D,
                          shift.ShiftDense)):
        return "Shift"
    if isinstance(layer, (adder.AddConv2D, adder.AddDense)):
        return "Add"
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return "Conv"
    return None


def weights_from_model(model, layer=None, title=None):
    """Collect a `WeightSet` from a ShiftAddAugModel or a plain Keras model."""
    from keras import ops

    from keras_shiftadd.layers.hybrid import (
        HybridConv2D,
        HybridDense,
        HybridDepthwiseConv2D,
    )
    from keras_shiftadd.model import ShiftAddAugModel

    title = title or model.name
    if isinstance(model, ShiftAddAugModel):
        layers = {name: hybrid for name, hybrid in model.hybrid.hybrid_layers.items()
                  if isinstance(hybrid, (HybridConv2D, HybridDense,
                                         HybridDepthwiseConv2D))}
        _check_layer(layer, layers, f"model '{model.name}'")
        names = [layer] if layer else list(layers)
        weights = WeightSet(f"{title}: " + (f"layer {layer}" if layer
                                            else f"{len(names)} layers"))
        weights.layers = names
        for name in names:
            hybrid = layers[name]
            kernel = hybrid.kernel.numpy()
            reference = _std(kernel)
            weights.add(WITH_SHARING, "Conv", kernel, reference)
            if hybrid.op == "mult":
                continue
            column = "Shift" if hybrid.op == "shift" else "Add"
            target = ops.convert_to_numpy(hybrid.target_kernel())
            weights.add(WITH_SHARING, column, target, reference)
            if hybrid.remap is not None:
                read = ops.convert_to_numpy(hybrid.mf_kernel(target))
                weights.add(AFTER_REMAP, column, read, reference)
                if hybrid.remap.mode == "bias":
                    weights.add(REMAP_BIAS, column, read - target, reference)
        return weights

    layers = {item.name: item for item in model.layers
              if _operator_of(item) is not None}
    _check_layer(layer, layers, f"model '{model.name}'")
    names = [layer] if layer else list(layers)
    weights = WeightSet(f"{title}: " + (f"layer {layer}" if layer
                                        else f"{len(names)} layers"))
    weights.layers = names
    for name in names:
        kernel = layers[name].kernel.numpy()
        weights.add(WITHOUT_SHARING, _operator_of(layers[name]), kernel,
                    _std(kernel))
    return weights


def collect_weights(source, layer=None):
    """Collect the `WeightSet` of a kernel archive, a .keras file or a run folder.

    Raises:
        ValueError: `source` is not one of these, or `layer` is not in it.
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise ValueError(
            f"Model or run not found: {source}. Pass a .keras file, a "
            "kernels.npz archive, or a run directory containing one."
        )
    archive = _find_kernel_archive(source)
    if archive is not None:
        return weights_from_kernel_archive(archive, layer)
    model_file = _find_model_file(source)
    if model_file is None:
        raise ValueError(
            f"Found no weights to plot in {source}: expected a .keras file, "
            "a kernels.npz archive, or a directory containing kernels.npz, "
            "model.keras, augmented.keras or target.keras."
        )
    import keras

    # Importing keras_shiftadd (this package) registered its layers and
    # ShiftAddAugModel for deserialization.
    model = keras.saving.load_model(model_file, compile=False)
    return weights_from_model(model, layer, title=os.path.basename(model_file))


# ---------------------------------------------------------------------------
# Drawing


def plot_weight_set(weights, path, bins=100):
    """Draw the histograms of a `WeightSet` into a PNG at `path`.

    Each panel states the excess kurtosis of its values (0 for a Gaussian, 3
    for a Laplace).

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = weights.rows()
    if not rows:
        raise ValueError(f"No weights to plot for {weights.title}.")
    columns = [c for c in OPERATORS
               if any(c in weights.values.get(row, {}) for row in rows)]
    standardize = len(weights.layers) > 1
    figure, axes = plt.subplots(
        len(rows), len(columns), figsize=(3.6 * len(columns), 2.8 * len(rows)),
        squeeze=False,
    )
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            axis = axes[i][j]
            values = weights.pooled(row, column, standardize)
            if values is None:
                axis.axis("off")
                continue
            # Clip the view to the central 99.9% so one outlier does not
            # squeeze the histogram; the kurtosis uses every value.
            low, high = np.quantile(values, [0.0005, 0.9995])
            if not high > low:
                low, high = low - 1.0, high + 1.0
            axis.hist(values, bins=bins, range=(low, high), density=True,
                      color="C0" if row in (WITHOUT_SHARING, WITH_SHARING) else "C1")
            axis.set_title(f"{column}: {row}", fontsize=9)
            axis.text(0.98, 0.95,
                      f"excess kurtosis {hws.excess_kurtosis(values):.2f}\n"
                      f"{values.size:,} values",
                      transform=axis.transAxes, ha="right", va="top",
                      fontsize=8)
            axis.set_yticks([])
            if i == len(rows) - 1 or weights.pooled(rows[-1], column, False) is None:
                axis.set_xlabel("weight / layer std" if standardize else "weight")
    figure.suptitle(weights.title, fontsize=10)
    figure.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_weights(source, path, layer=None):
    """Plot the weight histograms of `source` (see the module docstring) to `path`."""
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"Invalid output path {path}: expected a .png file.")
    return plot_weight_set(collect_weights(source, layer), path)
