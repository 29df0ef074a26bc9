"""argparse ``type=`` converters that refuse what no protocol can use: NaN, infinities, zero or
negative counts, seeds outside 32 bits. argparse turns their error into one usage line, exit 2
(see :class:`dcbench.errors.ArgumentParser`), before any data is read."""

from __future__ import annotations

import argparse
import math

from dcbench.choices import MAX_INPUT_SIZE, MAX_SEED

FLOAT32_MAX = 3.4e38  # torch applies hyperparameters in float32: a larger value overflows there


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of float32 range")
    return v


def positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def nonneg_int(text: str) -> int:
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def seed(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {v}")
    return v


def input_size(text: str) -> int:
    """A network input size in pixels: the models need 32, and the fc6 width grows with the square."""
    v = _int(text)
    if not 32 <= v <= MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"must be in [32, {MAX_INPUT_SIZE}] pixels (the thesis: 224), got {v}")
    return v


def finite_float(text: str) -> float:
    return _float(text)


def positive_float(text: str) -> float:
    v = _float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {v}")
    return v


def nonneg_float(text: str) -> float:
    v = _float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def fraction(text: str) -> float:
    """A value in [0, 1) (momentum)."""
    v = _float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def unit_interval(text: str) -> float:
    """A value in (0, 1] (a crop's area fraction, a decay factor)."""
    v = _float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v
