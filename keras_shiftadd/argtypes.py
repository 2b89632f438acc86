"""Argument types shared by the keras-shiftadd subcommands."""

import argparse


def positive_int(text):
    """Parse an integer >= 1 for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a positive integer"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid value {text}: expected a positive integer"
        )
    return value


def non_negative_int(text):
    """Parse an integer >= 0 for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected an integer >= 0"
        )
    return value


def multiple(text):
    """Parse a width or expand multiple, a number >= 1, for argparse."""
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text}: expected a number >= 1"
        )
    return value


def non_negative(text):
    """Parse a number >= 0 for argparse."""
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text}: expected a number >= 0"
        )
    return value


def fraction(text):
    """Parse a number in [0, 1] for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a number in [0, 1]"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid value {text}: expected a number in [0, 1]"
        )
    return value
