"""Tests of power-of-two and fixed-point rounding against NumPy references."""

import re

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_shiftadd import quantizers

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32
FLOAT32_SUBNORMAL = float(np.float32(1e-45))


def float32_neighbours(value):
    """Return the float32 values just below and just above `value` (float64)."""
    nearest = np.float32(value)
    if float(nearest) < value:
        below, above = nearest, np.nextafter(nearest, np.float32(np.inf))
    else:
        below, above = np.nextafter(nearest, np.float32(-np.inf)), nearest
    assert float(below) < value < float(above)
    return float(below), float(above)


def reference_power_of_two(weights, weight_bits):
    """Round to sign(w) * 2**round(log2|w|), written independently in float64.

    float64 log2 of a float32 input is exact enough that no float32 value
    lands on the wrong side of a midpoint 2**(k + 1/2).
    """
    weights = np.asarray(weights, dtype=np.float64)
    min_shift = -(2 ** (weight_bits - 1) - 1)
    sign = np.where(weights < 0, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        exponent = np.round(np.log2(np.abs(weights)))
    exponent = np.clip(exponent, min_shift, 0)
    return sign * 2.0**exponent


def reference_fixed_point(x, bits, fraction_bits):
    step = 2.0**-fraction_bits
    low = -(2.0 ** (bits - 1)) * step
    high = (2.0 ** (bits - 1) - 1) * step
    return np.clip(np.round(np.asarray(x, np.float64) / step) * step, low, high)


def to_numpy(tensor):
    return ops.convert_to_numpy(tensor)


# Midpoints 2**(k + 1/2) in log2 space are irrational, so the float32 values
# on either side of one must round to 2**k and 2**(k + 1) respectively.
_MID_BELOW_HALF, _MID_ABOVE_HALF = float32_neighbours(2.0**-0.5)
_MID_BELOW_3_5, _MID_ABOVE_3_5 = float32_neighbours(2.0**-3.5)
_MID_BELOW_14_5, _MID_ABOVE_14_5 = float32_neighbours(2.0**-14.5)
_MID_BELOW_15_5, _MID_ABOVE_15_5 = float32_neighbours(2.0**-15.5)
_MID_BELOW_ONE_HALF, _MID_ABOVE_ONE_HALF = float32_neighbours(2.0**0.5)

POWER_OF_TWO_CASES = [
    # Zero and tiny magnitudes clip to the smallest shift, with a + sign.
    pytest.param(0.0, 5, 2.0**-15, id="zero"),
    pytest.param(-0.0, 5, 2.0**-15, id="negative_zero"),
    pytest.param(1e-30, 5, 2.0**-15, id="tiny_1e-30"),
    pytest.param(1e-6, 5, 2.0**-15, id="tiny_1e-6"),
    pytest.param(2.0**-20, 5, 2.0**-15, id="tiny_2^-20"),
    pytest.param(1e-6, 7, 2.0**-20, id="tiny_1e-6_7bits"),
    pytest.param(2.0**-20, 7, 2.0**-20, id="tiny_2^-20_7bits"),
    pytest.param(FLOAT32_TINY, 5, 2.0**-15, id="smallest_normal"),
    pytest.param(FLOAT32_SUBNORMAL, 5, 2.0**-15, id="subnormal"),
    pytest.param(-1e-6, 5, -(2.0**-15), id="negative_tiny"),
    # Exact powers of two stay unchanged inside the range.
    pytest.param(1.0, 5, 1.0, id="one"),
    pytest.param(0.5, 5, 0.5, id="half"),
    pytest.param(0.25, 5, 0.25, id="quarter"),
    pytest.param(-0.125, 5, -0.125, id="negative_eighth"),
    pytest.param(2.0**-15, 5, 2.0**-15, id="smallest_shift"),
    pytest.param(2.0**-16, 5, 2.0**-15, id="below_smallest_shift"),
    pytest.param(-(2.0**-16), 5, -(2.0**-15), id="negative_below_smallest"),
    # Nearest power in log2 space, not in linear space: 0.72 is nearer to
    # 0.5 than to 1, but log2(0.72) = -0.47 rounds to 0.
    pytest.param(0.72, 5, 1.0, id="point_seven_two"),
    pytest.param(0.75, 5, 1.0, id="three_quarters"),
    pytest.param(0.7, 5, 0.5, id="point_seven"),
    pytest.param(0.3, 5, 0.25, id="point_three"),
    pytest.param(-0.3, 5, -0.25, id="negative_point_three"),
    # The float32 values on either side of a midpoint 2**(k + 1/2).
    pytest.param(_MID_BELOW_HALF, 5, 0.5, id="below_2^-0.5"),
    pytest.param(_MID_ABOVE_HALF, 5, 1.0, id="above_2^-0.5"),
    pytest.param(-_MID_BELOW_HALF, 5, -0.5, id="negative_below_2^-0.5"),
    pytest.param(-_MID_ABOVE_HALF, 5, -1.0, id="negative_above_2^-0.5"),
    pytest.param(_MID_BELOW_3_5, 5, 2.0**-4, id="below_2^-3.5"),
    pytest.param(_MID_ABOVE_3_5, 5, 2.0**-3, id="above_2^-3.5"),
    pytest.param(_MID_BELOW_14_5, 5, 2.0**-15, id="below_2^-14.5"),
    pytest.param(_MID_ABOVE_14_5, 5, 2.0**-14, id="above_2^-14.5"),
    pytest.param(_MID_BELOW_15_5, 5, 2.0**-15, id="below_2^-15.5"),
    pytest.param(_MID_ABOVE_15_5, 5, 2.0**-15, id="above_2^-15.5"),
    pytest.param(_MID_BELOW_ONE_HALF, 5, 1.0, id="below_2^0.5"),
    pytest.param(_MID_ABOVE_ONE_HALF, 5, 1.0, id="above_2^0.5_clipped"),
    # Large magnitudes clip to the largest shift, 2**0.
    pytest.param(1.5, 5, 1.0, id="one_and_a_half"),
    pytest.param(5.0, 5, 1.0, id="five"),
    pytest.param(1e6, 5, 1.0, id="million"),
    pytest.param(-1e6, 5, -1.0, id="negative_million"),
    pytest.param(3e38, 5, 1.0, id="float32_3e38"),
    pytest.param(-3e38, 5, -1.0, id="float32_negative_3e38"),
    pytest.param(FLOAT32_MAX, 5, 1.0, id="float32_max"),
]


@pytest.mark.parametrize("value, weight_bits, expected", POWER_OF_TWO_CASES)
def test_power_of_two_table(value, weight_bits, expected):
    weights = np.full((3,), value, dtype=np.float32)

    rounded = to_numpy(quantizers.power_of_two(weights, weight_bits))

    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded, np.full((3,), expected, np.float32))
    np.testing.assert_array_equal(
        np.signbit(rounded), np.full((3,), expected < 0)
    )


def _clipping_cases():
    cases = []
    for weight_bits in range(2, 7):
        min_shift = -(2 ** (weight_bits - 1) - 1)
        smallest = 2.0**min_shift
        rows = [
            ("far_below", 2.0 ** (min_shift - 3), smallest),
            ("at_min", smallest, smallest),
            ("above_min", 2.0 ** (min_shift + 1), 2.0 ** (min_shift + 1)),
            ("negative_far_below", -(2.0 ** (min_shift - 3)), -smallest),
            ("zero", 0.0, smallest),
            ("at_max", 1.0, 1.0),
            ("above_max", 8.0, 1.0),
            ("negative_above_max", -8.0, -1.0),
        ]
        for name, value, expected in rows:
            cases.append(
                pytest.param(
                    weight_bits, value, expected, id=f"{weight_bits}bits_{name}"
                )
            )
    return cases


@pytest.mark.parametrize("weight_bits, value, expected", _clipping_cases())
def test_power_of_two_clips_both_ends(weight_bits, value, expected):
    min_shift, max_shift = quantizers.shift_range(weight_bits)
    assert min_shift == -(2 ** (weight_bits - 1) - 1)
    assert max_shift == 0

    rounded = to_numpy(quantizers.power_of_two(np.float32([value]), weight_bits))

    np.testing.assert_array_equal(rounded, np.float32([expected]))


@pytest.mark.parametrize("weight_bits", [2, 3, 4, 5, 6, 7])
def test_power_of_two_extremes_stay_finite(weight_bits):
    extremes = np.float32(
        [
            0.0,
            -0.0,
            3e38,
            -3e38,
            FLOAT32_MAX,
            -FLOAT32_MAX,
            FLOAT32_TINY,
            -FLOAT32_TINY,
            FLOAT32_SUBNORMAL,
            -FLOAT32_SUBNORMAL,
            1e-30,
            -1e-30,
        ]
    )
    min_shift, _ = quantizers.shift_range(weight_bits)

    rounded = to_numpy(quantizers.power_of_two(extremes, weight_bits))
    exponents = np.log2(np.abs(rounded.astype(np.float64)))

    assert np.all(np.isfinite(rounded))
    assert np.all(rounded != 0)
    np.testing.assert_array_equal(exponents, np.round(exponents))
    assert np.all(exponents >= min_shift)
    assert np.all(exponents <= 0)
    # TensorFlow reads float32 subnormals as zero on CPU, so the sign of
    # -FLOAT32_SUBNORMAL (index 9) is not checked.
    signs = np.sign(rounded)
    np.testing.assert_array_equal(signs[:9], [1, 1, 1, -1, 1, -1, 1, -1, 1])
    np.testing.assert_array_equal(signs[10:], [1, -1])


def _near_midpoint_weights(seed, count=4000):
    """Return random float32 weights plus the float32 neighbours of midpoints."""
    rng = np.random.default_rng(seed)
    exponents = rng.integers(-20, 4, count) + 0.5
    midpoints = (2.0**exponents).astype(np.float32)
    weights = np.concatenate(
        [
            midpoints,
            np.nextafter(midpoints, np.float32(0)),
            np.nextafter(midpoints, np.float32(np.inf)),
            rng.standard_normal(count).astype(np.float32),
            (rng.standard_normal(count) * 1e-3).astype(np.float32),
        ]
    )
    signs = np.where(rng.random(weights.size) < 0.5, -1.0, 1.0)
    return (weights * signs).astype(np.float32)


@pytest.mark.parametrize("weight_bits", [2, 3, 4, 5, 6, 7])
def test_power_of_two_matches_reference(weight_bits):
    weights = _near_midpoint_weights(seed=weight_bits)
    expected = reference_power_of_two(weights, weight_bits)

    rounded = to_numpy(quantizers.power_of_two(weights, weight_bits))
    numpy_rounded = quantizers.numpy_power_of_two(weights, weight_bits)

    np.testing.assert_array_equal(rounded, expected.astype(np.float32))
    np.testing.assert_array_equal(numpy_rounded, expected)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_power_of_two_keeps_dtype(dtype):
    weights = _near_midpoint_weights(seed=11, count=500).astype(dtype)
    expected = reference_power_of_two(weights, 5).astype(dtype)

    rounded = to_numpy(quantizers.power_of_two(weights, 5))

    assert rounded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(rounded, expected)


def test_power_of_two_is_position_independent():
    # A weight must round the same wherever it sits in the tensor, although
    # TensorFlow computes logarithms of vector lanes and of leftover scalars
    # with different code.
    weight = np.float32(_MID_BELOW_HALF)
    for size in (1, 3, 8, 17, 64):
        rounded = to_numpy(quantizers.power_of_two(np.full(size, weight), 5))
        np.testing.assert_array_equal(rounded, np.full(size, 0.5, np.float32))


@pytest.mark.parametrize("weight_bits", [2, 5, 7])
def test_round_power_of_two_straight_through(weight_bits):
    weights = tf.Variable(_near_midpoint_weights(seed=3, count=50))
    upstream = np.random.default_rng(4).standard_normal(weights.shape)

    with tf.GradientTape(persistent=True) as tape:
        rounded = quantizers.round_power_of_two(weights, weight_bits)
        total = tf.reduce_sum(rounded)
        weighted = tf.reduce_sum(rounded * tf.constant(upstream, tf.float32))
    ones_gradient = tape.gradient(total, weights)
    upstream_gradient = tape.gradient(weighted, weights)

    expected = reference_power_of_two(weights.numpy(), weight_bits)
    np.testing.assert_array_equal(to_numpy(rounded), expected.astype(np.float32))
    np.testing.assert_array_equal(
        to_numpy(ones_gradient), np.ones(weights.shape, np.float32)
    )
    np.testing.assert_allclose(
        to_numpy(upstream_gradient), upstream.astype(np.float32), rtol=1e-6
    )


FIXED_POINT_CASES = [
    # Default format: 16 bits, 8 fraction bits, step 1/256, [-128, 128 - 1/256].
    pytest.param(16, 8, 0.0, 0.0, id="zero"),
    pytest.param(16, 8, 1 / 256, 1 / 256, id="one_step"),
    pytest.param(16, 8, 0.3 / 256, 0.0, id="below_half_step"),
    pytest.param(16, 8, 0.7 / 256, 1 / 256, id="above_half_step"),
    pytest.param(16, 8, -0.7 / 256, -1 / 256, id="negative_above_half_step"),
    pytest.param(16, 8, 1.49 / 256, 1 / 256, id="round_down"),
    pytest.param(16, 8, 1.51 / 256, 2 / 256, id="round_up"),
    # Exact ties round to even, as tf.round and np.round do.
    pytest.param(16, 8, 1.5 / 256, 2 / 256, id="tie_to_even_up"),
    pytest.param(16, 8, 2.5 / 256, 2 / 256, id="tie_to_even_down"),
    pytest.param(16, 8, 3.14159, 804 / 256, id="pi"),
    pytest.param(16, 8, 127.99, 32765 / 256, id="near_max"),
    pytest.param(16, 8, 128 - 1 / 256, 128 - 1 / 256, id="max"),
    pytest.param(16, 8, 127.999, 128 - 1 / 256, id="rounds_past_max"),
    pytest.param(16, 8, 128.0, 128 - 1 / 256, id="saturate_128"),
    pytest.param(16, 8, 1e6, 128 - 1 / 256, id="saturate_million"),
    pytest.param(16, 8, 3e38, 128 - 1 / 256, id="saturate_3e38"),
    pytest.param(16, 8, -128.0, -128.0, id="min"),
    pytest.param(16, 8, -128.001, -128.0, id="below_min"),
    pytest.param(16, 8, -1e6, -128.0, id="saturate_negative_million"),
    pytest.param(16, 8, -3e38, -128.0, id="saturate_negative_3e38"),
    # Other formats.
    pytest.param(8, 4, 0.03, 0.0, id="8bits_below_half_step"),
    pytest.param(8, 4, 0.04, 1 / 16, id="8bits_above_half_step"),
    pytest.param(8, 4, 7.99, 8 - 1 / 16, id="8bits_saturate_high"),
    pytest.param(8, 4, -9.0, -8.0, id="8bits_saturate_low"),
    pytest.param(4, 0, 2.4, 2.0, id="integer_round_down"),
    pytest.param(4, 0, -2.6, -3.0, id="integer_negative_round"),
    pytest.param(4, 0, 7.6, 7.0, id="integer_saturate_high"),
    pytest.param(4, 0, -8.6, -8.0, id="integer_saturate_low"),
    pytest.param(2, 1, 0.3, 0.5, id="2bits_round_up"),
    pytest.param(2, 1, 0.9, 0.5, id="2bits_saturate_high"),
    pytest.param(2, 1, -0.9, -1.0, id="2bits_saturate_low"),
]


@pytest.mark.parametrize("bits, fraction_bits, value, expected", FIXED_POINT_CASES)
def test_fixed_point_table(bits, fraction_bits, value, expected):
    inputs = np.float32([value, value])

    rounded = to_numpy(quantizers.fixed_point(inputs, bits, fraction_bits))

    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded, np.float32([expected, expected]))
    assert np.all(np.isfinite(rounded))


@pytest.mark.parametrize(
    "bits, fraction_bits", [(16, 8), (8, 4), (12, 6), (4, 0), (2, 1)]
)
def test_fixed_point_step_and_range(bits, fraction_bits):
    step = 2.0**-fraction_bits
    low = -(2.0 ** (bits - 1)) * step
    high = (2.0 ** (bits - 1) - 1) * step
    # Four inputs per step, none of them on a level or on a tie.
    inputs = np.arange(low - 4.0, high + 4.0, step / 4) + step / 8
    inputs = inputs.astype(np.float32)
    inside = (inputs >= low) & (inputs <= high)

    rounded = to_numpy(quantizers.fixed_point(inputs, bits, fraction_bits))
    levels = np.unique(rounded)

    assert levels[0] == low
    assert levels[-1] == high
    np.testing.assert_array_equal(np.diff(levels), np.full(levels.size - 1, step))
    assert np.all(np.abs(rounded - inputs)[inside] < step / 2)
    assert np.all(rounded[inputs < low] == low)
    assert np.all(rounded[inputs > high] == high)


@pytest.mark.parametrize(
    "bits, fraction_bits", [(16, 8), (8, 4), (12, 6), (4, 0)]
)
def test_fixed_point_matches_reference(bits, fraction_bits):
    rng = np.random.default_rng(bits)
    scale = 2.0 ** (bits - fraction_bits - 1)
    inputs = (rng.standard_normal(5000) * scale).astype(np.float32)
    inputs[:4] = [3e38, -3e38, 0.0, -0.0]
    expected = reference_fixed_point(inputs, bits, fraction_bits)

    rounded = to_numpy(quantizers.fixed_point(inputs, bits, fraction_bits))
    numpy_rounded = quantizers.numpy_fixed_point(inputs, bits, fraction_bits)

    np.testing.assert_array_equal(rounded, expected.astype(np.float32))
    np.testing.assert_array_equal(numpy_rounded, expected)


def test_round_fixed_point_straight_through():
    # Saturated inputs pass the gradient too: the estimator is the identity.
    values = np.float32([-1e6, -200.0, -0.3, 0.0, 0.001, 1.7, 127.999, 300.0])
    inputs = tf.Variable(values)
    upstream = np.float32([1.0, -2.0, 3.0, 0.5, -1.5, 2.5, 4.0, -3.0])

    with tf.GradientTape(persistent=True) as tape:
        rounded = quantizers.round_fixed_point(inputs)
        total = tf.reduce_sum(rounded)
        weighted = tf.reduce_sum(rounded * upstream)
    ones_gradient = tape.gradient(total, inputs)
    upstream_gradient = tape.gradient(weighted, inputs)

    np.testing.assert_array_equal(
        to_numpy(rounded), reference_fixed_point(values, 16, 8).astype(np.float32)
    )
    np.testing.assert_array_equal(to_numpy(ones_gradient), np.ones(8, np.float32))
    np.testing.assert_array_equal(to_numpy(upstream_gradient), upstream)


@pytest.mark.parametrize("weight_bits", [2, 3, 4, 5, 6, 7])
def test_shift_codes_round_trip(weight_bits):
    weights = _near_midpoint_weights(seed=20 + weight_bits, count=500)
    weights[:3] = [0.0, -0.0, 3e38]
    min_shift, max_shift = quantizers.shift_range(weight_bits)

    sign, shift = quantizers.shift_codes(weights, weight_bits)
    decoded = sign * 2.0 ** shift.astype(np.float64)

    assert sign.dtype == np.int8
    assert shift.dtype == np.int8
    assert set(np.unique(sign)) <= {-1, 1}
    assert shift.min() >= min_shift
    assert shift.max() <= max_shift
    np.testing.assert_array_equal(decoded, reference_power_of_two(weights, weight_bits))
    np.testing.assert_array_equal(
        decoded.astype(np.float32),
        to_numpy(quantizers.power_of_two(weights, weight_bits)),
    )
    np.testing.assert_array_equal(sign[:3], [1, 1, 1])


@pytest.mark.parametrize("weight_bits", [0, 1, 8, 16, -5, 5.0, 2.5, "5", None])
def test_invalid_weight_bits_raise(weight_bits):
    message = re.escape(f"weight_bits={weight_bits}")

    with pytest.raises(ValueError, match=message):
        quantizers.shift_range(weight_bits)
    with pytest.raises(ValueError, match=message):
        quantizers.power_of_two(np.float32([0.5]), weight_bits)
    with pytest.raises(ValueError, match=message):
        quantizers.shift_codes(np.float32([0.5]), weight_bits)


@pytest.mark.parametrize(
    "bits, fraction_bits, fragment",
    [
        pytest.param(1, 0, "activation_bits=1", id="one_bit"),
        pytest.param(0, 0, "activation_bits=0", id="zero_bits"),
        pytest.param(8.0, 4, "activation_bits=8.0", id="float_bits"),
        pytest.param(16, 16, "activation_fraction_bits=16", id="fraction_equals_bits"),
        pytest.param(16, -1, "activation_fraction_bits=-1", id="negative_fraction"),
        pytest.param(16, 2.5, "activation_fraction_bits=2.5", id="float_fraction"),
    ],
)
def test_invalid_fixed_point_format_raises(bits, fraction_bits, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        quantizers.check_fixed_point(bits, fraction_bits)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        quantizers.fixed_point(np.float32([0.5]), bits, fraction_bits)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        quantizers.numpy_fixed_point(np.float32([0.5]), bits, fraction_bits)
