"""Argument checks shared by the public API.

Each checker returns the value as the plain Python type the core reads, or raises an
`ACEError` naming the argument and what it expects. They are strict on purpose: a float
is never truncated to an int, a bool is not a number, None is not a default.
"""
import math
import numbers
import os

import numpy as np

from .errors import ACEError

# The C ABI takes sizes as int32; larger values would wrap or raise a bare OverflowError.
INT32_MAX = 2**31 - 1
# Seeds are uint64 in the core.
UINT64_MAX = 2**64 - 1
# Config floats are single precision in the core; beyond this they become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def require_int(name, value, lo=None, hi=None):
    """An integer (Python or NumPy, not bool, not float) with lo <= value <= hi."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ACEError(f"{name} must be an integer, got {type(value).__name__} {_show(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ACEError(f"{name} must be {_range(lo, hi)}, got {value}")
    return value


def require_float(name, value, lo=None, hi=None, *, positive=False):
    """A finite real number (int or float, not bool) with lo <= value <= hi, and > 0 if
    `positive`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ACEError(f"{name} must be a number, got {type(value).__name__} {_show(value)}")
    try:
        value = float(value)
    except OverflowError:           # an int beyond the float range
        value = math.inf
    if not math.isfinite(value):
        raise ACEError(f"{name} must be a finite number, got {value}")
    if positive and not value > 0:
        raise ACEError(f"{name} must be positive, got {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ACEError(f"{name} must be {_range(lo, hi)}, got {value}")
    return value


def require_choice(name, value, choices, what="one of"):
    """A string among `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ACEError(f"{name} must be {what} {', '.join(map(str, choices))}; got {_show(value)}")
    return value


def require_real_array(name, value):
    """A NumPy array of real numbers (integer or floating point; not bool, complex, str or
    object, which NumPy would otherwise convert or refuse with a bare error)."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError) as e:      # ragged nested lists and the like
        raise ACEError(f"{name} is not an array of numbers: {e}") from None
    if a.dtype.kind not in "fiu":
        raise ACEError(f"{name} has dtype {a.dtype}; expected real numbers (float32 preferred)")
    return a


def _range(lo, hi):
    lo, hi = (f"{v:g}" if isinstance(v, float) else v for v in (lo, hi))
    if lo is not None and hi is not None:
        return f"in [{lo}, {hi}]"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def require_path(name, value):
    """A file path (str, bytes or os.PathLike) as str or bytes."""
    try:
        return os.fspath(value)
    except TypeError:
        raise ACEError(f"{name} must be a file path (str or pathlib.Path), got {type(value).__name__}") from None
