"""W1's seven dropouts (4 on hidden states of 512 x 64 x 128, 3 on attention probabilities of 512 x 2 x 64 x 64)
with nnx.Dropout against jaxbert's 16-bit Dropout, alternated in one process: `python benchmarks/dropout_bits.py`."""

import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbert.model import Dropout
from machine import cpu_line


def seconds(make, repeats: int = 7) -> float:
    hidden, probs = jnp.ones((512, 64, 128)), jnp.ones((512, 2, 64, 64))
    dropout = make(0.2)

    @jax.jit
    def seven(key, hidden, probs):
        rngs = nnx.Rngs(dropout=key)
        return (sum(dropout(hidden, deterministic=False, rngs=rngs).sum() for _ in range(4))
                + sum(dropout(probs, deterministic=False, rngs=rngs).sum() for _ in range(3)))

    seven(jax.random.key(0), hidden, probs).block_until_ready()
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        seven(jax.random.key(i), hidden, probs).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(cpu_line())
    for _ in range(2):
        print(f"nnx.Dropout {seconds(nnx.Dropout):.3f} s, jaxbert Dropout {seconds(Dropout):.3f} s "
              "(median of 7, seven dropouts of W1)")


if __name__ == "__main__":
    main()
