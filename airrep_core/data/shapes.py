"""One shape check for the named 2-D tables of the core (label losses, teacher scores, step
labels, classification scores)."""

from __future__ import annotations

import numpy as np


def check_shape(table: str, array: np.ndarray, axes: str, expected: tuple[int, ...]) -> None:
    """Raise ``ValueError`` naming ``table`` unless ``array.shape == expected``.

    Args:
        table: what the array is, e.g. ``"split 3 losses"``.
        array: the array to check (any dtype).
        axes: the axis names, e.g. ``"(n_subsets, n_targets)"``.
        expected: the expected shape, one size per name in ``axes``.
    """
    if array.shape != expected:
        raise ValueError(f"{table} have shape {array.shape}, expected {axes} = {expected}")
