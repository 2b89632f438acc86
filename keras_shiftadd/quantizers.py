"""Power-of-two and fixed-point rounding with straight-through gradients."""

import numpy as np
from keras import ops

# Magnitudes below this are treated as this value before taking log2, so that
# zero weights never produce -inf or NaN. It is far below 2**-15, the smallest
# power of two a 5-bit weight can hold, so it never changes a rounded value.
_LOG2_FLOOR = 1e-30


def shift_range(weight_bits):
    """Return the (min, max) shift exponent that `weight_bits` can encode.

    One bit holds the sign and the remaining `weight_bits - 1` bits hold a
    non-positive shift, so 5 bits give exponents -15..0.
    """
    if not isinstance(weight_bits, int) or weight_bits < 2:
        raise ValueError(
            "Invalid `weight_bits`: expected an integer >= 2 (one sign bit "
            f"and at least one shift bit). Received: weight_bits={weight_bits}"
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
    """
    min_shift, max_shift = shift_range(weight_bits)
    weights = ops.convert_to_tensor(weights)
    sign = ops.where(weights < 0, -1.0, 1.0)
    magnitude = ops.maximum(ops.abs(weights), _LOG2_FLOOR)
    shift = ops.clip(ops.round(ops.log2(magnitude)), min_shift, max_shift)
    return ops.cast(sign, weights.dtype) * ops.power(2.0, shift)


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

