"""Power-of-two and fixed-point rounding with straight-through gradients."""

import numpy as np
from keras import ops
from keras.backend import standardize_dtype

# Magnitudes below this are treated as this value before taking log2, so that
# zero weights never produce -inf or NaN. It is far below 2**-63, the smallest
# power of two a 7-bit weight can hold, so it never changes a rounded value.
_LOG2_FLOOR = 1e-30

# The widest weight format: its smallest shift, 2**-63, is still a normal
# float32. TensorFlow flushes float32 subnormals (below 2**-126) to zero, so
# 8 bits would round zero weights to 0 instead of +2**-127.
_MAX_WEIGHT_BITS = 7

# The smallest float32 above sqrt(2). A float32 r is below sqrt(2) exactly when
# r < _SQRT2_ABOVE_FLOAT32, so comparisons with this constant times powers of
# two decide round(log2 r) exactly.
_SQRT2_ABOVE_FLOAT32 = float(
    np.nextafter(np.float32(np.sqrt(2.0)), np.float32(2.0))
)


def shift_range(weight_bits):
    """Return the (min, max) shift exponent that `weight_bits` can encode.

    One bit stores the sign and the remaining `weight_bits - 1` bits store a
    non-positive shift, so 5 bits give exponents -15..0.
    """
    if (
        not isinstance(weight_bits, int)
        or not 2 <= weight_bits <= _MAX_WEIGHT_BITS
    ):
        raise ValueError(
            "Invalid `weight_bits`: expected an integer in "
            f"[2, {_MAX_WEIGHT_BITS}] (one sign bit and at least one shift "
            "bit, and a smallest shift that float32 holds as a normal number). "
            f"Received: weight_bits={weight_bits}"
        )
    return -(2 ** (weight_bits - 1) - 1), 0


def check_fixed_point(bits, fraction_bits):
    """Validate a signed fixed-point format of `bits` total bits."""
    if not isinstance(bits, int) or bits < 2:
        raise ValueError(
            "Invalid `activation_bits`: expected an integer >= 2. "
            f"Received: activation_bits={bits}"
        )
    if not isinstance(fraction_bits, int) or not 0 <= fraction_bits < bits:
        raise ValueError(
            "Invalid `activation_fraction_bits`: expected an integer in "
            f"[0, activation_bits - 1] = [0, {bits - 1}]. "
            f"Received: activation_fraction_bits={fraction_bits}"
        )


def power_of_two(weights, weight_bits=5):
    """Round `weights` to `sign(w) * 2**P` with P clipped to the shift range.

    `P = round(log2|w|)`, clipped to the exponents `weight_bits` allows
    (DeepShift-Q rounding). Zero counts as positive, so every weight maps to
    one of the `2**weight_bits` codes and zero becomes `+2**min_shift`.
    No gradient is defined here; see `round_power_of_two`.

    NOTE: TensorFlow on CPU reads float32 subnormals (below 2**-126) as
    zero, so a negative subnormal weight becomes `+2**min_shift` here,
    while `shift_codes` gives it the sign -1.
    """
    min_shift, max_shift = shift_range(weight_bits)
    weights = ops.convert_to_tensor(weights)
    sign = ops.where(weights < 0, -1.0, 1.0)
    magnitude = ops.maximum(ops.abs(weights), _LOG2_FLOOR)
    shift = _nearest_shift(magnitude, min_shift, max_shift)
    scale = ops.cast(ops.power(2.0, shift), weights.dtype)
    return ops.cast(sign, weights.dtype) * scale


def _nearest_shift(magnitude, min_shift, max_shift):
    """Compute `round(log2(magnitude))` clipped to `[min_shift, max_shift]`.

    `ops.log2` is accurate to a few ulps only (TensorFlow's vectorized log
    and its scalar log differ), so a magnitude next to a midpoint
    `2**(k + 1/2)` could round either way. The estimate is corrected by
    comparing the magnitude with the midpoints on either side of it, which
    are exact products of a power of two and the float just above sqrt(2).
    """
    if standardize_dtype(magnitude.dtype) == "float64":
        # float64(sqrt(2)) is itself the smallest float64 above sqrt(2).
        sqrt2_above = float(np.sqrt(2.0))
    else:
        # float16 and bfloat16 widen to float32 exactly.
        magnitude = ops.cast(magnitude, "float32")
        sqrt2_above = _SQRT2_ABOVE_FLOAT32
    shift = ops.clip(ops.round(ops.log2(magnitude)), min_shift, max_shift)
    upper_midpoint = sqrt2_above * ops.power(2.0, shift)
    lower_midpoint = 0.5 * upper_midpoint
    shift = shift + ops.cast(magnitude >= upper_midpoint, shift.dtype)
    shift = shift - ops.cast(magnitude < lower_midpoint, shift.dtype)
    return ops.clip(shift, min_shift, max_shift)


def round_power_of_two(weights, weight_bits=5):
    """Power-of-two rounding with a straight-through gradient.

    The forward value is `power_of_two(weights)`; the gradient passes to the
    latent float weights unchanged, as in DeepShift-Q.
    """
    weights = ops.convert_to_tensor(weights)
    rounded = power_of_two(weights, weight_bits)
    return weights + ops.stop_gradient(rounded - weights)


def fixed_point(x, bits=16, fraction_bits=8):
    """Round `x` to signed fixed point with `fraction_bits` fractional bits.

    Values are rounded to the nearest multiple of `2**-fraction_bits` and
    saturated to the two's-complement range of `bits` bits, so the default
    16-bit format with 8 fractional bits covers [-128, 128 - 2**-8].
    """
    check_fixed_point(bits, fraction_bits)
    x = ops.convert_to_tensor(x)
    scale = float(2**fraction_bits)
    low = -(2.0 ** (bits - 1)) / scale
    high = (2.0 ** (bits - 1) - 1.0) / scale
    return ops.clip(ops.round(x * scale) / scale, low, high)


def round_fixed_point(x, bits=16, fraction_bits=8):
    """Fixed-point rounding with a straight-through gradient."""
    x = ops.convert_to_tensor(x)
    return x + ops.stop_gradient(fixed_point(x, bits, fraction_bits) - x)


def shift_codes(weights, weight_bits=5):
    """Return the integer sign (+1/-1) and shift exponent of each weight.

    NumPy in and out, for export: `weight == sign * 2.0**shift` after
    `power_of_two` rounding.
    """
    min_shift, max_shift = shift_range(weight_bits)
    weights = np.asarray(weights, dtype=np.float64)
    sign = np.where(weights < 0, -1, 1).astype(np.int8)
    magnitude = np.maximum(np.abs(weights), _LOG2_FLOOR)
    shift = np.clip(np.round(np.log2(magnitude)), min_shift, max_shift)
    return sign, shift.astype(np.int8)


def numpy_power_of_two(weights, weight_bits=5):
    """NumPy reference of `power_of_two`, used by tests and export."""
    sign, shift = shift_codes(weights, weight_bits)
    return sign * np.power(2.0, shift)


def numpy_fixed_point(x, bits=16, fraction_bits=8):
    """NumPy reference of `fixed_point`."""
    check_fixed_point(bits, fraction_bits)
    scale = float(2**fraction_bits)
    low = -(2.0 ** (bits - 1)) / scale
    high = (2.0 ** (bits - 1) - 1.0) / scale
    return np.clip(np.round(np.asarray(x, np.float64) * scale) / scale, low, high)

