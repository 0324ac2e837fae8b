"""A counter-based hash: uniform draws from integer keys (SplitMix64), the same whatever the order, process or
machine that asks. Held-out splits (`prepare`) and masks (`masking`) are drawn with it.
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def splitmix64(x):
    """SplitMix64's output for state x (a uint64, or an array of them: one definition for both)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(*keys) -> np.ndarray:
    """Uniform [0, 1) floats from integer keys (arrays broadcast together), by chained SplitMix64: the top 53
    bits of splitmix(... splitmix(splitmix(0 ^ k1) ^ k2) ... ^ kn)."""
    x = np.zeros((), np.uint64)
    for k in keys:
        y = np.bitwise_xor(x, np.asarray(k).astype(np.uint64))
        # The compiled hash takes arrays or scalars (not 0-d arrays), and gives a scalar back as a Python int.
        x = np.asarray(splitmix64(y if y.ndim else y[()]), np.uint64)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
