"""W1's MLM output layer alone (5,120 rows x 128 -> 20,256 words, weighted softmax cross-entropy, forward and
backward): the plain form jaxbert runs against a chunked form that never holds the whole logit array
(custom VJP, rows in chunks, logits recomputed in the backward pass). `python benchmarks/mlm_layer.py [chunk ...]`

Median of 5 calls after a warm-up, alternated in one process; the relative error of the gradients against the
plain form is printed beside each.
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp

from machine import cpu_line

N, D, V = 5120, 128, 20256


def plain(h, w, b, y, wt):
    logp = jax.nn.log_softmax(h @ w + b)
    return -(jnp.take_along_axis(logp, y[:, None], 1)[:, 0] * wt).sum() / wt.sum()


def chunked(c: int):
    @jax.custom_vjp
    def ce(h, w, b, y, wt):
        return fwd(h, w, b, y, wt)[0]

    def fwd(h, w, b, y, wt):
        lse = jax.lax.map(lambda x: jax.nn.logsumexp(x @ w + b, axis=-1), h.reshape(N // c, c, D)).reshape(N)
        target = jnp.einsum("nd,dn->n", h, w[:, y]) + b[y]
        return ((lse - target) * wt).sum() / wt.sum(), (h, w, b, y, wt, lse)

    def bwd(res, g):
        h, w, b, y, wt, lse = res
        coef = g * wt / wt.sum()

        def step(carry, xs):
            dw, db = carry
            x, lse_c, co, y_c = xs
            p = jnp.exp(x @ w + b - lse_c[:, None]) * co[:, None]
            p = p.at[jnp.arange(c), y_c].add(-co)
            return (dw + x.T @ p, db + p.sum(0)), p @ w.T

        chunks = (h.reshape(N // c, c, D), lse.reshape(N // c, c), coef.reshape(N // c, c), y.reshape(N // c, c))
        (dw, db), dh = jax.lax.scan(step, (jnp.zeros_like(w), jnp.zeros_like(b)), chunks)
        return dh.reshape(N, D), dw, db, None, None

    ce.defvjp(fwd, bwd)
    return ce


def main() -> None:
    print(cpu_line())
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    h, w, b = jax.random.normal(k1, (N, D)) * 0.5, jax.random.normal(k2, (D, V)) * 0.02, jnp.zeros(V)
    y = jax.random.randint(k3, (N,), 0, V)
    wt = (jax.random.uniform(k3, (N,)) < 0.7).astype(jnp.float32)
    forms = {"plain (as jaxbert runs it)": plain} | {f"chunks of {c} rows": chunked(c)
                                                      for c in map(int, sys.argv[1:] or ["256", "1024"])}
    grads = {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))) for name, f in forms.items()}
    ref = grads["plain (as jaxbert runs it)"](h, w, b, y, wt)
    times = {name: [] for name in grads}
    for _ in range(5):
        for name, g in grads.items():
            jax.block_until_ready(g(h, w, b, y, wt))
            start = time.perf_counter()
            jax.block_until_ready(g(h, w, b, y, wt))
            times[name].append(time.perf_counter() - start)
    print("\n| form | median (s) | GFLOP/s (3 matmuls) | gradient rel. error |\n|---|---|---|---|")
    for name, g in grads.items():
        _, (dh, dw, _) = g(h, w, b, y, wt)
        err = max(float(jnp.abs(dh - ref[1][0]).max() / jnp.abs(ref[1][0]).max()),
                  float(jnp.abs(dw - ref[1][1]).max() / jnp.abs(ref[1][1]).max()))
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {6 * N * D * V / t / 1e9:.0f} | {err:.1e} |")


if __name__ == "__main__":
    main()
