"""Heterogeneous weight sharing (HWS): remap shared weights for Shift and Add.

A hybrid layer keeps one multiplicative kernel `W`, whose values look
Gaussian, while directly trained Shift kernels look like Gaussian weights
plus a narrow Laplacian and directly trained adder kernels look Laplacian.
The multiplication-free operator therefore reads `W` through a remap

    R(W) = ppf_laplace(cdf_gauss(FC(W)))

(equation 5 of "ShiftAddAug: Augment Multiplication-Free Tiny Neural
Network with Hybrid Computation"), and Shift convolves with `W + R(W)`
while adders use `R(W)` in place of `W`.

How this module computes `R` for one kernel:

1. Standardize with the kernel's own statistics: `z = (W - mean) / std`,
   with `std` floored so that constant and zero kernels stay finite.
2. `FC` acts on each spatial kernel, the `kh * kw` values of one pair of
   input and output channels (one value for 1x1 convolutions and dense
   layers): `FC(z) = z + tanh(z @ w1 + b1) @ w2 + b2`, hidden width 8 times
   the input. The skip connection makes an unfitted FC (`w2 = b2 = 0`) the
   identity. Fitting keeps `sum_j min(0, w1[i, j] * w2[j, i])` at or above
   `MONOTONE_MARGIN - 1` for every input `i`. Because tanh' lies in (0, 1],
   the derivative of output `i` by input `i` is then at least
   `MONOTONE_MARGIN > 0`. So each remapped value strictly increases with
   its own weight while the kernel statistics and the other weights stay
   fixed.
3. `u = FC(z)` is a standard score, so `cdf_gauss` is the standard normal
   CDF. The tail probability `q = min(p, 1 - p)` is computed as
   `erfc(|u| / sqrt(2)) / 2` and clipped to `[PROBABILITY_FLOOR, 1/2]`.
4. `ppf_laplace` with location `loc` and scale `scale`:
   `L = loc - scale * sign(u) * ln(2 q)`. For Shift (mode "bias", added to
   `W`) `loc` and `scale` are in units of the kernel's std, `R(W) = std *
   L`, so one fitted pair serves layers of any weight scale. For Add (mode
   "replace") they are weight values, `R(W) = L`, because directly trained
   adder weights end at a similar scale in every layer whatever the scale
   of the multiplicative weights (see `fit_remap_from_kernels`).

`fit_remap` fits `FC`, `loc` and `scale` on directly trained kernels; the
package ships fitted remaps for Shift and Add in `data_files/`.
"""

import copy
import importlib.resources
import json
import logging
import math

import keras
import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

# Tail probabilities below this are raised to it before the Laplace quantile,
# so |ppf_laplace| never exceeds loc + scale * ln(1 / (2 * floor)), about
# 15.4 scales, and no kernel produces an infinite value.
PROBABILITY_FLOOR = 1e-7

# Kernels are divided by their largest magnitude, floored at this value,
# before their statistics are taken, so that kernels near the float32 limits
# neither overflow nor vanish.
_MAGNITUDE_FLOOR = 1e-30

# Floor of the std of a kernel divided by its largest magnitude. Only
# (nearly) constant kernels reach it; they map to (nearly) themselves.
_RELATIVE_STD_FLOOR = 1e-7

# Floor of the std that standardizes a kernel for a remap whose Laplace is in
# weight units. Such a remap's output does not scale with the std, so its
# gradient grows as 1 / std. The floor keeps it finite for zero kernels.
_ABSOLUTE_STD_FLOOR = 1e-6

# The FC hidden layer is this many times wider than its input.
HIDDEN_FACTOR = 8

# Lower bound that fitting keeps on every diagonal entry of the FC's
# Jacobian, so that the FC, and with it R, is monotone in each weight.
MONOTONE_MARGIN = 0.1

# Remap modes: how the multiplication-free operator uses R(W).
MODES = ("bias", "replace")

# The mode each operator uses: Shift reads W + R(W), Add reads R(W).
# Add's remap passes gradients straight through (dR/dW taken as 1). Its
# exact derivative is about 0.8 * scale / std(W), 5 to 20 for the shipped
# remap, so an SGD step on W moved R(W) 25 to 400 times as far as AdderNet's
# adaptive gradient scaling intends. In a short check (AugAdd, small CNN,
# 3,000 CIFAR-10 images, 3 epochs, seeds 0 and 1) test accuracy was 25.7% and
# 23.5% with the exact derivative, 29.9% and 33.1% without a remap, and
# 32.6% and 35.3% with the straight-through one. For Shift the two
# gradients tied (34.3/36.3% exact, 32.6/36.9% straight-through, 35.4/36.0%
# without a remap), so Shift keeps the exact derivative.
OP_MODES = {"shift": "bias", "add": "replace"}
OP_STRAIGHT_THROUGH = {"shift": False, "add": True}

# Whether each operator's Laplace is relative to the layer's std (see
# `fit_remap_from_kernels` for why Shift's is and Add's is not).
OP_RELATIVE = {"shift": True, "add": False}

# Remap files shipped in keras_shiftadd/data_files/, one per operator.
SHIPPED_FILES = {"shift": "hws_shift.json", "add": "hws_add.json"}

SPEC_FORMAT_VERSION = 1

# The Laplace scale of unit variance: an unfitted remap keeps the std.
UNIT_VARIANCE_SCALE = 1.0 / math.sqrt(2.0)


# ---------------------------------------------------------------------------
# The remap itself


def spatial_size(kernel_shape):
    """Return the values per spatial kernel of a kernel of `kernel_shape`.

    Convolution kernels `(kh, kw, in, out)` have `kh * kw`; dense kernels
    `(in, out)` and smaller shapes have 1.
    """
    if len(kernel_shape) <= 2:
        return 1
    return int(np.prod(kernel_shape[:-2]))


def kernel_statistics(kernel):
    """Return `(mean, std)` of a float32 tensor, safe for extreme values.

    The std is floored at `_RELATIVE_STD_FLOOR` times the largest magnitude,
    so it is positive for constant and zero kernels. Gradients flow through
    both statistics.
    """
    magnitude = ops.stop_gradient(
        ops.maximum(ops.max(ops.abs(kernel)), _MAGNITUDE_FLOOR)
    )
    scaled = kernel / magnitude
    mean = ops.mean(scaled)
    variance = ops.mean(ops.square(scaled - mean))
    # The floor is applied to the variance so that sqrt never receives 0,
    # where its gradient is infinite.
    std = ops.sqrt(ops.maximum(variance, _RELATIVE_STD_FLOOR**2))
    return mean * magnitude, std * magnitude


def standard_laplace_of_gauss(u):
    """Map standard normal scores to standard Laplace quantiles.

    Returns `-sign(u) * ln(2 q)` with `q = erfc(|u| / sqrt(2)) / 2` clipped
    to `[PROBABILITY_FLOOR, 1/2]`: the Laplace(0, 1) quantile of the normal
    CDF of `u`. Each sign has its own branch so that the gradient at `u = 0`
    is the true slope, sqrt(2 / pi), and no branch produces inf or NaN.
    """
    upper = ops.clip(ops.erfc(u / math.sqrt(2.0)), 2 * PROBABILITY_FLOOR, 1.0)
    lower = ops.clip(ops.erfc(-u / math.sqrt(2.0)), 2 * PROBABILITY_FLOOR, 1.0)
    return ops.where(u >= 0, -ops.log(upper), ops.log(lower))


def _check_fc(fc, name):
    """Return the FC parameters as float32 arrays, or raise ValueError."""
    try:
        arrays = {key: np.asarray(fc[key], dtype="float32")
                  for key in ("w1", "b1", "w2", "b2")}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"Invalid `fc` for remap '{name}': expected a dict of arrays w1 "
            f"(k, h), b1 (h,), w2 (h, k) and b2 (k,). Error: {error}"
        ) from None
    w1, b1, w2, b2 = arrays["w1"], arrays["b1"], arrays["w2"], arrays["b2"]
    if w1.ndim != 2 or w2.shape != w1.shape[::-1] or b1.shape != w1.shape[1:] \
            or b2.shape != w1.shape[:1]:
        raise ValueError(
            f"Invalid `fc` shapes for remap '{name}': expected w1 (k, h), "
            f"b1 (h,), w2 (h, k), b2 (k,). Received: w1 {w1.shape}, b1 "
            f"{b1.shape}, w2 {w2.shape}, b2 {b2.shape}"
        )
    if not all(np.all(np.isfinite(a)) for a in arrays.values()):
        raise ValueError(f"Invalid `fc` for remap '{name}': it contains NaN or inf.")
    return arrays


def identity_fc(size):
    """Return FC parameters of input `size` that compute the identity."""
    hidden = HIDDEN_FACTOR * size
    return {
        "w1": np.zeros((size, hidden), "float32"),
        "b1": np.zeros((hidden,), "float32"),
        "w2": np.zeros((hidden, size), "float32"),
        "b2": np.zeros((size,), "float32"),
    }


def apply_fc(z, fc):
    """Apply `FC(z) = z + tanh(z @ w1 + b1) @ w2 + b2` to each spatial kernel.

    `z` has a kernel's shape. The input size `k` of `fc` must equal the
    kernel's spatial size, or be 1 so that FC acts on each value alone.
    """
    size = fc["w1"].shape[0]
    shape = ops.shape(z)
    if size == 1:
        vectors = ops.reshape(z, (-1, 1))
    else:
        # (kh, kw, in, out) -> (in * out, kh * kw), spatial values row-major.
        vectors = ops.transpose(ops.reshape(z, (size, -1)))
    hidden = ops.tanh(ops.matmul(vectors, fc["w1"]) + fc["b1"])
    vectors = vectors + ops.matmul(hidden, fc["w2"]) + fc["b2"]
    if size == 1:
        return ops.reshape(vectors, shape)
    return ops.reshape(ops.transpose(vectors), shape)


@keras.saving.register_keras_serializable(package="keras_shiftadd")
class KernelRemap(keras.layers.Layer):
    """Remap a multiplicative kernel to the one a Shift or adder operator reads.

    Computes `R(W) = ppf_laplace(cdf_gauss(FC(W)))` as the module docstring
    describes. The FC parameters are constants of the layer's config, not
    variables: the remap is frozen, has no weights, and gradients flow
    through it to the kernel it is applied to.

    Args:
        mode: `"bias"`: `call` returns `W + R(W)` (Shift). `"replace"`:
            `call` returns `R(W)` (Add). Defaults to `"replace"`.
        loc: Laplace location, in units of the kernel's std when `relative`.
            Defaults to `0`.
        scale: Laplace scale, > 0, in units of the kernel's std when
            `relative`. Defaults to `1 / sqrt(2)`, which with `relative`
            gives the Laplace with the kernel's variance.
        fc: Dict of arrays `w1 (k, 8k)`, `b1 (8k,)`, `w2 (8k, k)`, `b2 (k,)`,
            or `None` for the identity on single values. `k` must be 1 or
            the spatial size of every kernel the layer remaps.
        relative: Whether `loc` and `scale` are in units of the kernel's std
            (and, in "replace" mode, `loc` counts from the kernel mean). With
            `False` they are weight values: `R(W) = loc + scale * L` with
            `L` the standard Laplace quantile. Defaults to `True`.
        straight_through: Whether gradients pass through the remap as
            through the identity, instead of through its derivative. The
            forward output is the same. Defaults to `False`.

    Input shape:
        A kernel of any shape, e.g. `(kh, kw, in, out)` or `(in, out)`.

    Output shape:
        Same as the input.
    """

    def __init__(self, mode="replace", loc=0.0, scale=UNIT_VARIANCE_SCALE,
                 fc=None, relative=True, straight_through=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(
                f"Invalid `mode` for remap '{self.name}': expected one of "
                f"{MODES}. Received: mode={mode!r}"
            )
        loc, scale = float(loc), float(scale)
        if not math.isfinite(loc) or not (math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"Invalid Laplace parameters for remap '{self.name}': expected "
                f"a finite `loc` and a finite `scale` > 0. Received: "
                f"loc={loc}, scale={scale}"
            )
        self.mode = mode
        self.loc = loc
        self.scale = scale
        self.relative = bool(relative)
        self.straight_through = bool(straight_through)
        self.fc = _check_fc(fc if fc is not None else identity_fc(1), self.name)
        self.fc_size = int(self.fc["w1"].shape[0])
        # No variables to create.
        self.built = True

    def _check_kernel(self, kernel):
        size = spatial_size(tuple(kernel.shape))
        if self.fc_size not in (1, size):
            raise ValueError(
                f"Remap '{self.name}' has an FC for spatial kernels of "
                f"{self.fc_size} values, but the kernel of shape "
                f"{tuple(kernel.shape)} has {size} per spatial kernel. Use a "
                "remap fitted for this kernel size or one with FC input size 1."
            )

    def remap(self, kernel):
        """Return `R(W)` for `kernel`, in the kernel's dtype."""
        self._check_kernel(kernel)
        kernel = ops.convert_to_tensor(kernel)
        dtype = kernel.dtype
        weights = ops.cast(kernel, "float32")
        mean, std = kernel_statistics(weights)
        if not self.relative:
            std = ops.maximum(std, _ABSOLUTE_STD_FLOOR)
        z = (weights - mean) / std
        u = apply_fc(z, self.fc)
        remapped = self.loc + self.scale * standard_laplace_of_gauss(u)
        if self.relative:
            remapped = std * remapped
            if self.mode == "replace":
                remapped = remapped + mean
        return ops.cast(remapped, dtype)

    def call(self, kernel):
        remapped = self.remap(kernel)
        outputs = kernel + remapped if self.mode == "bias" else remapped
        if self.straight_through:
            # kernel - stop_gradient(kernel) is exactly zero, so the output
            # equals the remap bit for bit, and its derivative is 1.
            return ops.stop_gradient(outputs) + (kernel - ops.stop_gradient(kernel))
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "loc": self.loc,
                "scale": self.scale,
                "fc": {key: value.tolist() for key, value in self.fc.items()},
                "relative": self.relative,
                "straight_through": self.straight_through,
            }
        )
        return config


# ---------------------------------------------------------------------------
# Remap specs: the fitted parameters of one operator, for every kernel size


def _check_spec(spec, op=None):
    """Return a validated deep copy of a remap spec, or raise ValueError."""
    if not isinstance(spec, dict) or "remaps" not in spec or "mode" not in spec:
        raise ValueError(
            "Invalid HWS remap spec: expected a dict with keys 'op', 'mode' "
            "and 'remaps' (as returned by `fit_remap` or `load_remap`). "
            f"Received: {type(spec).__name__}"
        )
    spec = copy.deepcopy(spec)
    if spec["mode"] not in MODES:
        raise ValueError(
            f"Invalid HWS remap spec: mode {spec['mode']!r} is not one of {MODES}."
        )
    if op is not None and spec.get("op") not in (None, op):
        raise ValueError(
            f"The HWS remap spec was fitted for op={spec.get('op')!r} and "
            f"cannot be used with op={op!r}. Pass hws=True to use the shipped "
            f"remap for {op!r}, or a spec fitted for it."
        )
    if op is not None and OP_MODES.get(op) != spec["mode"]:
        raise ValueError(
            f"Invalid HWS remap spec for op={op!r}: mode {spec['mode']!r}, "
            f"but op={op!r} needs mode {OP_MODES.get(op)!r}."
        )
    remaps = {}
    for size, entry in spec["remaps"].items():
        # Builds and validates the remap; the result is discarded.
        KernelRemap(mode=spec["mode"], loc=entry["loc"], scale=entry["scale"],
                    fc=entry["fc"], relative=spec.get("relative", True),
                    name=f"hws_check_{size}")
        remaps[str(int(size))] = entry
    if "1" not in remaps:
        raise ValueError(
            "Invalid HWS remap spec: it has no remap for kernel size 1, which "
            f"serves kernels of any other size. Sizes present: {sorted(remaps)}"
        )
    spec["remaps"] = remaps
    return spec


def load_remap(op):
    """Load the remap spec shipped with the package for `op`.

    Args:
        op: `"shift"` or `"add"`.

    Returns:
        A dict with keys `op`, `mode`, `remaps` (kernel size as a string to
        `{"loc", "scale", "fc"}`) and `fit` (how it was fitted).
    """
    if op not in SHIPPED_FILES:
        raise ValueError(
            f"No HWS remap ships for op={op!r}: remaps exist for "
            f"{sorted(SHIPPED_FILES)}."
        )
    resource = importlib.resources.files("keras_shiftadd").joinpath(
        "data_files", SHIPPED_FILES[op]
    )
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"The shipped HWS remap {SHIPPED_FILES[op]} is missing from "
            "keras_shiftadd/data_files. Reinstall the package, or run "
            "scripts/fit_remaps.py to produce it."
        ) from None
    return _check_spec(json.loads(text), op)


def resolve_hws(hws, op):
    """Return the remap spec that `hws` selects for `op`, or `None` for none.

    `hws` is `True` (the shipped remap for Shift and Add, none for `"mult"`),
    `False` or `None` (no remap) or a spec dict.
    """
    if hws is None or hws is False:
        return None
    if op not in OP_MODES:
        return None
    if hws is True:
        return load_remap(op)
    if isinstance(hws, dict):
        return _check_spec(hws, op)
    raise ValueError(
        "Invalid `hws`: expected 'auto', True, False or a remap spec dict (from "
        f"`keras_shiftadd.hws.fit_remap` or `load_remap`). Received: hws={hws!r}"
    )


def remap_for_kernel(spec, kernel_shape, name=None):
    """Build the `KernelRemap` of `spec` for a kernel of `kernel_shape`.

    Uses the FC fitted for the kernel's spatial size, else the one for size
    1 applied to each value alone.
    """
    size = spatial_size(tuple(kernel_shape))
    entry = spec["remaps"].get(str(size), spec["remaps"]["1"])
    # Specs written before `straight_through` existed get the operator's
    # default through their mode.
    straight_through = spec.get("straight_through", spec["mode"] == "replace")
    return KernelRemap(mode=spec["mode"], loc=entry["loc"], scale=entry["scale"],
                       fc=entry["fc"], relative=spec.get("relative", True),
                       straight_through=straight_through, name=name)


def numpy_remap(kernel, mode, loc, scale, fc, relative=True):
    """NumPy reference of `KernelRemap.remap`, in float64, for tests and plots."""
    from scipy import stats

    weights = np.asarray(kernel, dtype="float64")
    magnitude = max(float(np.max(np.abs(weights))), _MAGNITUDE_FLOOR)
    scaled = weights / magnitude
    mean = scaled.mean()
    std = math.sqrt(max(float(np.mean((scaled - mean) ** 2)), _RELATIVE_STD_FLOOR**2))
    mean, std = mean * magnitude, std * magnitude
    if not relative:
        std = max(std, _ABSOLUTE_STD_FLOOR)
    z = (weights - mean) / std
    size = np.asarray(fc["w1"]).shape[0]
    vectors = z.reshape(-1, 1) if size == 1 else z.reshape(size, -1).T
    hidden = np.tanh(vectors @ np.asarray(fc["w1"], "float64") + fc["b1"])
    vectors = vectors + hidden @ np.asarray(fc["w2"], "float64") + fc["b2"]
    u = vectors.reshape(z.shape) if size == 1 else vectors.T.reshape(z.shape)
    tail = np.clip(stats.norm.sf(np.abs(u)), PROBABILITY_FLOOR, 0.5)
    laplace = loc - scale * np.sign(u) * np.log(2 * tail)
    if not relative:
        return laplace
    return std * laplace + (mean if mode == "replace" else 0.0)


# ---------------------------------------------------------------------------
# Distribution measures


def excess_kurtosis(values):
    """Return the excess kurtosis of `values`: 0 for Gaussian, 3 for Laplace."""
    values = np.asarray(values, dtype="float64").ravel()
    deviation = values - values.mean()
    variance = np.mean(deviation**2)
    if variance == 0:
        return 0.0
    return float(np.mean(deviation**4) / variance**2 - 3.0)


def fit_laplace(values):
    """Return the maximum-likelihood Laplace `(loc, scale)` of `values`.

    The location is the median and the scale the mean absolute deviation
    from it; the scale is floored at 1e-12 so that it stays positive.
    """
    values = np.asarray(values, dtype="float64").ravel()
    loc = float(np.median(values))
    scale = float(np.mean(np.abs(values - loc)))
    return loc, max(scale, 1e-12)


def laplace_ks_distance(values, loc, scale):
    """Return the Kolmogorov-Smirnov distance of `values` to Laplace(loc, scale)."""
    from scipy import stats

    values = np.asarray(values, dtype="float64").ravel()
    return float(stats.kstest(values, stats.laplace(loc=loc, scale=scale).cdf).statistic)


def two_sample_ks_distance(first, second):
    """Return the two-sample Kolmogorov-Smirnov distance of two samples."""
    from scipy import stats

    first = np.asarray(first, dtype="float64").ravel()
    second = np.asarray(second, dtype="float64").ravel()
    return float(stats.ks_2samp(first, second).statistic)


def numpy_statistics(kernel):
    """NumPy version of `kernel_statistics`: `(mean, std)` in float64."""
    weights = np.asarray(kernel, dtype="float64")
    magnitude = max(float(np.max(np.abs(weights))), _MAGNITUDE_FLOOR)
    scaled = weights / magnitude
    mean = scaled.mean()
    std = math.sqrt(max(float(np.mean((scaled - mean) ** 2)), _RELATIVE_STD_FLOOR**2))
    return mean * magnitude, std * magnitude


# ---------------------------------------------------------------------------
# Fitting


def remap_target(mode, relative, mult_kernel, mf_kernel):
    """Return the values `R(mult_kernel)` should follow, in the remap's units.

    For `"replace"` (Add) these are the directly trained kernel's values.
    For `"bias"` (Shift) they are the change `W_shift - W_mult` made by
    fine-tuning the Mult kernel into a Shift kernel: the Laplace component
    that a Shift kernel adds to a multiplicative one. With `relative`, they are divided by
    the Mult kernel's std and, for "replace", counted from its mean.
    """
    mult_kernel = np.asarray(mult_kernel, dtype="float64")
    mf_kernel = np.asarray(mf_kernel, dtype="float64")
    mean, std = numpy_statistics(mult_kernel)
    values = mf_kernel - mult_kernel if mode == "bias" else mf_kernel
    if not relative:
        return values
    if mode == "replace":
        values = values - mean
    return values / std


def remapped_in_units(remap, mult_kernel):
    """Return `R(mult_kernel)` in the units of `remap_target`, as float64."""
    remapped = ops.convert_to_numpy(
        remap.remap(np.asarray(mult_kernel, "float32"))
    ).astype("float64")
    if not remap.relative:
        return remapped
    mean, std = numpy_statistics(mult_kernel)
    if remap.mode == "replace":
        remapped = remapped - mean
    return remapped / std


def standard_laplace_quantiles(count):
    """Return the Laplace(0, 1) quantiles at plotting positions (i + 1/2) / count."""
    p = (np.arange(count) + 0.5) / count
    return -np.sign(p - 0.5) * np.log(1.0 - 2.0 * np.abs(p - 0.5))


def _kernel_vectors(z, size):
    """Return a standardized kernel as (spatial kernels, size) float32 rows."""
    if size == 1:
        return z.reshape(-1, 1).astype("float32")
    return z.reshape(size, -1).T.astype("float32")


def monotone_slack(fc):
    """Return `1 + sum_j min(0, w1[i, j] * w2[j, i])` for each FC input `i`.

    It bounds the derivative of output `i` by input `i` from below, because
    the derivative of tanh lies in (0, 1].
    """
    products = np.asarray(fc["w1"]) * np.asarray(fc["w2"]).T
    return 1.0 + np.minimum(products, 0.0).sum(axis=1)


def _project_monotone(w1, w2):
    """Shrink the `w2` entries that lower a diagonal slope below the margin."""
    first, second = w1.numpy(), w2.numpy()
    products = first * second.T
    negative = np.minimum(products, 0.0).sum(axis=1)
    limit = -(1.0 - MONOTONE_MARGIN)
    factor = np.where(negative < limit, limit / np.minimum(negative, -1e-30), 1.0)
    shrink = np.where(products.T < 0, factor[None, :], 1.0)
    if np.any(shrink < 1.0):
        w2.assign(second * shrink)


def _fit_fc(vectors, size, steps, learning_rate, seed):
    """Fit the FC by quantile matching; return its parameters and final loss.

    `vectors[i]` are the standardized spatial kernels of layer `i`. For each
    layer the loss compares the sorted values of
    `ppf_laplace(cdf_gauss(FC(z)))` for Laplace(0, 1) with the Laplace(0, 1)
    quantiles at the same plotting positions, by mean squared difference.
    That is the squared 2-Wasserstein distance between the remapped values
    and the fitted Laplace, in units of its scale, and the fit minimizes its
    mean over layers. `loc` and `scale` only shift and scale both sides, so
    the fit does not depend on them.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    hidden = HIDDEN_FACTOR * size
    w1 = tf.Variable(rng.normal(0.0, 1.0 / math.sqrt(size), (size, hidden))
                     .astype("float32"), name="fc_w1")
    b1 = tf.Variable(np.zeros(hidden, "float32"), name="fc_b1")
    # A zero output layer starts the FC at the identity.
    w2 = tf.Variable(np.zeros((hidden, size), "float32"), name="fc_w2")
    b2 = tf.Variable(np.zeros(size, "float32"), name="fc_b2")
    variables = [w1, b1, w2, b2]
    inputs = [tf.constant(v) for v in vectors]
    quantiles = [tf.constant(standard_laplace_quantiles(v.size).astype("float32"))
                 for v in vectors]
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)

    @tf.function(autograph=False)
    def loss_and_gradients():
        with tf.GradientTape() as tape:
            losses = []
            for x, target in zip(inputs, quantiles):
                u = x + tf.tanh(x @ w1 + b1) @ w2 + b2
                remapped = tf.sort(tf.reshape(standard_laplace_of_gauss(u), [-1]))
                losses.append(tf.reduce_mean(tf.square(remapped - target)))
            loss = tf.add_n(losses) / len(losses)
        return loss, tape.gradient(loss, variables)

    initial_loss = loss = float(loss_and_gradients()[0])
    for step in range(steps):
        loss, gradients = loss_and_gradients()
        optimizer.apply_gradients(zip(gradients, variables))
        _project_monotone(w1, w2)
        if step % 100 == 0 or step == steps - 1:
            logger.info("FC size %d, step %d: quantile loss %.5f", size, step,
                        float(loss))
    loss = float(loss_and_gradients()[0])
    fc = {"w1": w1.numpy(), "b1": b1.numpy(), "w2": w2.numpy(), "b2": b2.numpy()}
    return fc, {"identity_fc": initial_loss, "fitted_fc": loss}


def _layer_metrics(mult_kernel, mf_kernel, remap):
    """Return distribution measures of one layer's remap (see `fit_remap`)."""
    mean, std = numpy_statistics(mult_kernel)
    standardized = (np.asarray(mult_kernel, "float64") - mean) / std
    target = remap_target(remap.mode, remap.relative, mult_kernel, mf_kernel)
    remapped = remapped_in_units(remap, mult_kernel)
    identity = KernelRemap(mode=remap.mode, loc=remap.loc, scale=remap.scale,
                           relative=remap.relative)
    unfitted = remapped_in_units(identity, mult_kernel)
    metrics = {
        "values": int(standardized.size),
        "kurtosis_mult": excess_kurtosis(standardized),
        "kurtosis_target": excess_kurtosis(target),
        "kurtosis_remapped": excess_kurtosis(remapped),
        "kurtosis_remapped_identity_fc": excess_kurtosis(unfitted),
        "ks_mult_vs_gauss": _gauss_ks_distance(standardized),
        "ks_remapped_vs_laplace": laplace_ks_distance(remapped, remap.loc, remap.scale),
        "ks_remapped_identity_fc_vs_laplace": laplace_ks_distance(
            unfitted, remap.loc, remap.scale
        ),
        "ks_target_vs_laplace": laplace_ks_distance(target, remap.loc, remap.scale),
        "ks_remapped_vs_target": two_sample_ks_distance(remapped, target),
    }
    if remap.mode == "bias":
        # The latent kernel Shift reads, W + R(W), against the fine-tuned one.
        read = ops.convert_to_numpy(remap(np.asarray(mult_kernel, "float32")))
        metrics["ks_shift_read_vs_shift"] = two_sample_ks_distance(read, mf_kernel)
        metrics["ks_mult_vs_shift"] = two_sample_ks_distance(mult_kernel, mf_kernel)
    return metrics


def _gauss_ks_distance(standardized):
    from scipy import stats

    return float(stats.kstest(np.ravel(standardized), stats.norm.cdf).statistic)


def fit_remap_from_kernels(op, mult_kernels, mf_kernels, steps=400,
                           learning_rate=0.01, seed=0):
    """Fit the HWS remap of `op` on kernels of directly trained models.

    Args:
        op: `"shift"` or `"add"`.
        mult_kernels: Dict of layer name to the kernel of a directly trained
            multiplicative model.
        mf_kernels: Dict of layer name to the kernel of the same layer in a
            directly trained `op` model of the same architecture: for Shift,
            fine-tuned from the Mult model (so the two kernels pair up), for
            Add, trained from scratch. Only layers in both dicts are used.
        steps: Adam steps of the FC fit per kernel size. Defaults to `400`.
        learning_rate: Adam learning rate. Defaults to `0.01`.
        seed: Seed of the FC initialization. Defaults to `0`.

    Returns:
        A remap spec dict: `op`, `mode`, `relative`, `remaps` (kernel size
        as a string to `{"loc", "scale", "fc", "layers", "loss"}`) and
        `fit`, which contains per-layer distribution measures.

    Per kernel size, `loc` and `scale` are the maximum-likelihood Laplace
    fit (median, mean absolute deviation) of the pooled `remap_target`
    values: the MF weight distribution. Shift's are relative to each layer's
    std, because the change fine-tuning makes scales with the weights. Add's
    are weight values, because adder weights are compared with activations
    directly. In the shipped fit (small CNN, CIFAR-10) the adder kernels'
    std was 1.3 to 1.9 in every layer while the Mult kernels' std ranged
    from 0.05 to 0.22. The FC is then fitted with `loc` and `scale` fixed, by
    quantile matching against that Laplace (see `_fit_fc`): it corrects the
    Mult kernels' departure from a Gaussian, which short trainings from a
    uniform initialization leave far from Gaussian.
    """
    if op not in OP_MODES:
        raise ValueError(
            f"Invalid `op`: HWS remaps exist for {sorted(OP_MODES)}. "
            f"Received: op={op!r}"
        )
    mode, relative = OP_MODES[op], OP_RELATIVE[op]
    names = [name for name in mult_kernels if name in mf_kernels]
    if not names:
        raise ValueError(
            "No layer appears in both `mult_kernels` and `mf_kernels`; pass "
            "kernels of the same architecture keyed by layer name."
        )
    groups = {}
    for name in names:
        mult, mf = np.asarray(mult_kernels[name]), np.asarray(mf_kernels[name])
        if mult.shape != mf.shape:
            raise ValueError(
                f"Layer '{name}' has a Mult kernel of shape {mult.shape} but "
                f"an {op} kernel of shape {mf.shape}; the models must have the "
                "same architecture."
            )
        groups.setdefault(spatial_size(mult.shape), []).append(name)

    def target(name):
        return remap_target(mode, relative, mult_kernels[name], mf_kernels[name])

    remaps, layer_metrics = {}, {}
    for size, group in sorted(groups.items()):
        vectors = []
        for name in group:
            mean, std = numpy_statistics(mult_kernels[name])
            z = (np.asarray(mult_kernels[name], "float64") - mean) / std
            vectors.append(_kernel_vectors(z, size))
        loc, scale = fit_laplace(np.concatenate([target(n).ravel() for n in group]))
        fc, loss = _fit_fc(vectors, size, steps, learning_rate, seed)
        remaps[str(size)] = {
            "loc": loc,
            "scale": scale,
            "fc": {key: value.tolist() for key, value in fc.items()},
            "layers": list(group),
            "loss": loss,
        }
        remap = KernelRemap(mode=mode, loc=loc, scale=scale, fc=fc,
                            relative=relative)
        for name in group:
            layer_metrics[name] = _layer_metrics(
                mult_kernels[name], mf_kernels[name], remap
            )

    if "1" not in remaps:
        # Kernels of other sizes fall back to size 1: give them the plain
        # distribution map with the Laplace fitted over all layers.
        loc, scale = fit_laplace(np.concatenate([target(n).ravel() for n in names]))
        remaps["1"] = {"loc": loc, "scale": scale,
                       "fc": {k: v.tolist() for k, v in identity_fc(1).items()},
                       "layers": [], "loss": None}
    return {
        "format_version": SPEC_FORMAT_VERSION,
        "op": op,
        "mode": mode,
        "relative": relative,
        "remaps": remaps,
        "fit": {"steps": steps, "learning_rate": learning_rate, "seed": seed,
                "layers": layer_metrics},
    }


# ---------------------------------------------------------------------------
# Direct training of the models whose kernels the fit uses


def _train_direct(dataset, config, initial=None):
    """Train `config.op` alone (no augmentation); return the ShiftAddAugModel.

    `initial`, a model of the same architecture, gives the starting weights.
    """
    from keras_shiftadd import data as data_lib
    from keras_shiftadd import training, zoo
    from keras_shiftadd.model import augment

    training.check_config(config)
    keras.utils.set_random_seed(config.seed)
    shape = (config.image_size, config.image_size, dataset.image_shape[-1])
    base = zoo.build(config.model, shape, dataset.num_classes)
    model = augment(base, op=config.op, augmentation=False, hws=False)
    if initial is not None:
        for name, layer in model.hybrid.hybrid_layers.items():
            if layer.weights:
                layer.set_weights(initial.hybrid.hybrid_layers[name].get_weights())

    train_data = data_lib.make_pipeline(
        dataset.x_train, dataset.y_train, config.image_size, config.batch_size,
        training=True, num_classes=dataset.num_classes, seed=config.seed,
        one_hot=True, **data_lib.default_augmentation(dataset),
    )
    test_data = data_lib.make_pipeline(
        dataset.x_test, dataset.y_test, config.image_size, config.batch_size,
        training=False, num_classes=dataset.num_classes, one_hot=True,
    )
    steps_per_epoch = math.ceil(len(dataset.x_train) / config.batch_size)
    training.compile_for_training(model, config, steps_per_epoch)
    logger.info("training %s directly for %d epochs%s", config.op, config.epochs,
                " from the Mult weights" if initial is not None else "")
    model.fit(train_data, epochs=config.epochs, verbose=config.verbose)
    _, accuracy = model.evaluate(test_data, verbose=0)
    logger.info("%s test accuracy %.4f", config.op, accuracy)
    return model, float(accuracy)


def _kernels(model, mf_only):
    """Return layer name -> kernel of `model`'s hybrid layers, as float32.

    With `mf_only`, only layers whose target operator is not "mult".
    """
    return {
        name: layer.kernel.numpy().astype("float32")
        for name, layer in model.hybrid.hybrid_layers.items()
        if hasattr(layer, "kernel") and not (mf_only and layer.op == "mult")
    }


def train_kernel_sets(dataset, ops_to_fit=("shift", "add"), model="small-cnn",
                      epochs=6, shift_epochs=3, batch_size=64, image_size=32,
                      learning_rate=0.05, seed=0, verbose=0):
    """Train directly a Mult model and the `ops_to_fit` models; return kernels.

    The Mult model trains from scratch. Shift fine-tunes the trained Mult
    weights for `shift_epochs` (DeepShift's and ShiftAddAug's recipe), so each
    Shift kernel pairs with the Mult kernel it came from. Add trains from
    scratch for `epochs`, as AdderNet models do. All runs use
    `training.compile_for_training` (SGD, cosine schedule, label smoothing).

    Returns:
        `(kernels, accuracies)`: `kernels[op]` maps layer names to kernels
        (for Shift and Add only the layers that operator computes), and
        `accuracies[op]` is that model's test accuracy.
    """
    from keras_shiftadd import training

    def config(op, epoch_count):
        return training.TrainConfig(
            model=model, op=op, augmentation=False, epochs=epoch_count,
            batch_size=batch_size, learning_rate=learning_rate,
            image_size=image_size, seed=seed, verbose=verbose,
        )

    mult, accuracy = _train_direct(dataset, config("mult", epochs))
    kernels, accuracies = {"mult": _kernels(mult, False)}, {"mult": accuracy}
    for op in ops_to_fit:
        if op not in OP_MODES:
            raise ValueError(
                f"Invalid op {op!r} to fit: HWS remaps exist for {sorted(OP_MODES)}."
            )
        if op == "shift":
            trained, accuracy = _train_direct(dataset, config("shift", shift_epochs),
                                              initial=mult)
        else:
            trained, accuracy = _train_direct(dataset, config(op, epochs))
        kernels[op] = _kernels(trained, True)
        accuracies[op] = accuracy
    return kernels, accuracies


def fit_remap(op, dataset, model="small-cnn", epochs=6, shift_epochs=3,
              batch_size=64, image_size=32, learning_rate=0.05, seed=0,
              fit_steps=400, verbose=0):
    """Train Mult and `op` models directly on `dataset` and fit `op`'s remap.

    This is `train_kernel_sets` followed by `fit_remap_from_kernels`; see
    both for the arguments. Training one Mult model and fitting several
    operators from it is cheaper with those two functions directly.

    The FC fit minimizes, per kernel size, the squared distance between the
    sorted remapped Mult values and the quantiles of the Laplace fitted to
    the MF weights (quantile matching, the squared 2-Wasserstein distance in
    one dimension). Independently trained models have no weight-to-weight
    correspondence, because their channels come out in different orders.
    Quantile matching compares distributions without pairing weights. It
    needs no binning or density estimate, as a KL divergence would, and it
    weighs the tails, where Gaussian and Laplace differ most.

    Returns:
        `(spec, kernels, accuracies)`: the remap spec (see
        `fit_remap_from_kernels`), the kernels it was fitted on and the test
        accuracies of the trained models.
    """
    kernels, accuracies = train_kernel_sets(
        dataset, (op,), model=model, epochs=epochs, shift_epochs=shift_epochs,
        batch_size=batch_size, image_size=image_size,
        learning_rate=learning_rate, seed=seed, verbose=verbose,
    )
    spec = fit_remap_from_kernels(op, kernels["mult"], kernels[op],
                                  steps=fit_steps, seed=seed)
    spec["fit"].update(describe_training(dataset, model, epochs, shift_epochs,
                                         image_size, seed, accuracies))
    return spec, kernels, accuracies


def describe_training(dataset, model, epochs, shift_epochs, image_size, seed,
                      accuracies):
    """Return the provenance record stored in a fitted spec's `fit` entry."""
    return {
        "data": dataset.name,
        "train_images": int(len(dataset.x_train)),
        "test_images": int(len(dataset.x_test)),
        "model": model,
        "epochs": epochs,
        "shift_epochs": shift_epochs,
        "image_size": image_size,
        "training_seed": seed,
        "test_accuracy": accuracies,
    }


def save_spec(spec, path):
    """Write a remap spec as JSON, floats at float32 precision."""

    def shorten(value):
        if isinstance(value, float):
            return float(f"{value:.9g}")
        if isinstance(value, dict):
            return {k: shorten(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [shorten(v) for v in value]
        return value

    with open(path, "w", encoding="utf-8") as file:
        json.dump(shorten(spec), file, indent=1)
        file.write("\n")


def save_kernels(kernels, path):
    """Write `{op: {layer: kernel}}` to a compressed .npz as `op/layer` arrays."""
    arrays = {f"{op}/{name}": kernel for op, layers in kernels.items()
              for name, kernel in layers.items()}
    np.savez_compressed(path, **arrays)


def load_kernels(path):
    """Read kernels written by `save_kernels` as `{op: {layer: kernel}}`."""
    kernels = {}
    with np.load(path) as archive:
        for key in archive.files:
            op, _, name = key.partition("/")
            kernels.setdefault(op, {})[name] = archive[key]
    return kernels
