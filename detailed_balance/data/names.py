"""Name arrays without fixed-width copies.

numpy's ``array.astype(str)`` makes a fixed-width unicode array (``<U{longest}``): every element
takes 4 bytes per character of the *longest* name, so one 100 kB state name turned an array of
a few hundred pair or count-row names into hundreds of MB (issue 11, item 6). `as_names` gives
the same strings as an object array of Python `str` (each name stored once, shared) and is
what every layer uses to turn names read from a frame, an xarray coordinate or a fit file
into strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _one(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_to_str = np.frompyfunc(_one, 1, 1)


def as_names(values: Any) -> np.ndarray:
    """`values` (array-like of names, any shape) as an object array of `str`.

    Strings are kept as they are (no copy of the text); bytes are decoded as UTF-8; anything
    else goes through `str`. Never builds a fixed-width ``<U…`` intermediate.
    """
    if hasattr(values, "dims"):  # xarray
        values = values.values
    elif hasattr(values, "to_numpy"):  # pandas (string dtypes included)
        values = values.to_numpy(dtype=object)
    array = values if isinstance(values, np.ndarray) else np.array(values, dtype=object)
    if array.dtype != object:
        array = array.astype(object)
    if array.size == 0:
        return array
    return np.asarray(_to_str(array), dtype=object).reshape(array.shape)
