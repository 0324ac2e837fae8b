"""Why model.py flattens dense layers to 2-D and losses.py avoids argmax: both choices, side by side.

    python benchmarks/xla_cpu_layouts.py

Times (median of 7, after compilation) the gradient of a dense layer applied to a (B, T, D) array directly and
after flattening it to (B*T, D), at the d2l-tiny shapes (encoder FFN and MLM decoder), and MLM accuracy by
argmax against max-and-gather. Prints a Markdown table with the ratios and the CPU model.
"""

import statistics
import time

import jax
import jax.numpy as jnp

from train_throughput import cpu_model


def median_time(f, *args, n=7):
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def dense_grads(shape, d_out):
    k = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(k[0], shape)
    w = jax.random.normal(k[1], (shape[-1], d_out)) * 0.02
    as_3d = jax.jit(jax.grad(lambda w, x: jnp.tanh(x @ w).sum(), argnums=(0, 1)))
    as_2d = jax.jit(jax.grad(lambda w, x: jnp.tanh(x.reshape(-1, x.shape[-1]) @ w).sum(), argnums=(0, 1)))
    return median_time(as_3d, w, x), median_time(as_2d, w, x)


def accuracy(shape):
    logits = jax.random.normal(jax.random.key(0), shape)
    labels = jax.random.randint(jax.random.key(1), shape[:-1], 0, shape[-1])
    by_argmax = jax.jit(lambda lg: (lg.argmax(-1) == labels).mean())
    by_max = jax.jit(lambda lg: (jnp.take_along_axis(lg, labels[..., None], -1)[..., 0] >= lg.max(-1)).mean())
    return median_time(by_argmax, logits), median_time(by_max, logits)


def main():
    rows = [("FFN dense grad, (512, 64, 128) @ (128, 256)", "3-D", "2-D", *dense_grads((512, 64, 128), 256)),
            ("MLM decoder grad, (512, 10, 128) @ (128, 20256)", "3-D", "2-D", *dense_grads((512, 10, 128), 20256)),
            ("MLM accuracy over (512, 10, 20256) logits", "argmax", "max + gather", *accuracy((512, 10, 20256)))]
    print(f"CPU: {cpu_model()}, devices {jax.devices()}, jax {jax.__version__}\n")
    print("| operation | before | after | before s | after s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, a, b, ta, tb in rows:
        print(f"| {name} | {a} | {b} | {ta:.4f} | {tb:.4f} | {ta / tb:.2f}x |")


if __name__ == "__main__":
    main()
