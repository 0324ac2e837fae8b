"""XLA:CPU matmuls by operand and result dtype, at W1's shapes and at 2048^3:

    python benchmarks/xla_bf16_matmul.py


bfloat16 operands with a bfloat16 result (what `x @ w` gives), with a float32 result (`preferred_element_type`,
what jaxbert's `model.mixed_matmul` uses), that float32 result rounded back to bfloat16, and float32 throughout.
GFLOP/s, the median of 7 calls after one warm-up, all in one process.
"""

import statistics
import time

import jax
import jax.numpy as jnp

from machine import cpu_line

SHAPES = {"2048^3": (2048, 2048, 2048), "W1 MLM decoder (5120x128 @ 128x20256)": (5120, 128, 20256),
          "W1 FFN in (32768x128 @ 128x256)": (32768, 128, 256), "W1 FFN out (32768x256 @ 256x128)": (32768, 256, 128),
          "W1 attention projection (32768x128 @ 128x128)": (32768, 128, 128)}


def seconds(f, *args, repeats: int = 7) -> float:
    f(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    print(cpu_line())
    variants = {"bf16 -> bf16": lambda a, b: a @ b,
                "bf16 -> f32": lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32),
                "bf16 -> f32 -> bf16": lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)}
    print("\n| shape | " + " | ".join(variants) + " | f32 -> f32 |\n|---|" + "---|" * (len(variants) + 1))
    key = jax.random.key(0)
    for name, (m, k, n) in SHAPES.items():
        a, b = jax.random.normal(key, (m, k), jnp.bfloat16), jax.random.normal(key, (k, n), jnp.bfloat16)
        rates = [2 * m * k * n / seconds(jax.jit(f), a, b) / 1e9 for f in variants.values()]
        rates.append(2 * m * k * n / seconds(jax.jit(lambda x, y: x @ y), a.astype(jnp.float32),
                                             b.astype(jnp.float32)) / 1e9)
        print(f"| {name} | " + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
