"""Where W1's step time goes: the jitted train step against variants that each remove one part, in one process.

    python benchmarks/w1_profile.py --data ../shared/data/wikitext-2 [--steps 10]

W1 is d2l-tiny (vocabulary from WikiText-2, batch 512, max_len 64, 10 prediction slots, Adam). Each variant is
timed as a median over `--steps` steps after two warm-up steps; the difference to the full step is the part's
cost. XLA's FLOP count of each variant is printed beside it. Host-side batch building (`InstanceSet.batch`) is
timed on its own, as is the optimizer update.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbert import config, corpus, data, optim, train
from machine import cpu_line


def median_time(fn, steps: int) -> float:
    for _ in range(2):
        jax.block_until_ready(fn())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_variant(flags: list[str], vocab_size: int, batches: list[dict], steps: int,
                 rng_impl: str | None = None, capacity: int | None = None) -> tuple[float, float]:
    cfg = config.override(config.preset("d2l-tiny"), [f"model.vocab_size={vocab_size}", *flags])
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = train.init_state(cfg, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0, impl=rng_impl), mlm_capacity=capacity)
    cost = train_step.lower(state, batches[0]).cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    box, i = [state], [0]

    def one():
        box[0], metrics = train_step(box[0], batches[i[0] % len(batches)])
        i[0] += 1
        return metrics["loss"]

    return median_time(one, steps), flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with wiki.train.tokens (default $JAXBERT_DATA)")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    print(cpu_line())
    cfg = config.preset("d2l-tiny")
    tok, train_set, _ = data.load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    v = tok.get_vocab_size()
    batches = [train_set.batch(step, cfg.train.batch_size) for step in range(4)]
    weights = np.concatenate([b["masked_weights"] for b in batches])
    print(f"vocabulary {v}; real prediction slots: {weights.mean():.1%} of {weights.size}")

    host = median_time(lambda: train_set.batch(int(np.random.default_rng().integers(10_000)), 512), args.steps)
    capacity = train.pack_capacity(train_set, cfg.train.batch_size)
    rows = [("full step, MLM head on every slot (as `jaxbert pretrain` runs it)", []),
            (f"MLM head on the real predictions, packed into {capacity} rows", "packed"),
            ("no dropout", ["model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"]),
            ("dropout bits from the rbg generator instead of threefry", "rbg"),
            ("MLM output layer cut to 128 words", None),
            ("bfloat16 compute", ["model.dtype=bfloat16"])]
    print("\n| variant | median step (s) | vs full | XLA GFLOP |\n|---|---|---|---|")
    full = None
    for name, flags in rows:
        if flags == "packed":
            seconds, flops = step_variant([], v, batches, args.steps, capacity=capacity)
        elif flags == "rbg":
            seconds, flops = step_variant([], v, batches, args.steps, rng_impl="rbg")
        elif flags is None:  # the same step with a 128-word vocabulary: what the V-wide output layer costs
            small = [dict(b, masked_ids=b["masked_ids"] % 128, input_ids=b["input_ids"] % 128) for b in batches]
            seconds, flops = step_variant([], 128, small, args.steps)
        else:
            seconds, flops = step_variant(flags, v, batches, args.steps)
        full = full or seconds
        print(f"| {name} | {seconds:.3f} | {seconds / full:.2f} | {flops / 1e9:.1f} |", flush=True)

    # The optimizer update alone (Adam over every parameter), and host batch building.
    cfg_v = config.override(cfg, [f"model.vocab_size={v}"])
    tx = optim.optimizer(cfg_v.optim, cfg_v.train.steps)
    _, state = train.init_state(cfg_v, tx)
    update = jax.jit(lambda p, o: optax.apply_updates(p, tx.update(jax.tree.map(jnp.ones_like, p), o, p)[0]))
    adam = median_time(lambda: update(state.params, state.opt_state), args.steps)
    print(f"| optimizer update alone (Adam) | {adam:.3f} | {adam / full:.2f} | |")
    print(f"| host: build one batch of 512 (numpy/numba) | {host:.3f} | {host / full:.2f} | |")

    # Does building the next batch overlap the running step? JAX dispatches a step and returns at once, so a
    # loop that syncs only at the end builds batch k+1 while step k runs (as `train.run` does between log points).
    graphdef, state = train.init_state(cfg_v, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0))
    state, _ = train_step(state, batches[0])
    loops = {"batches built in the loop": (lambda k: train_set.batch(k, 512), []),
             "batches built beforehand": (lambda k: batches[k % len(batches)], [])}
    for _ in range(3):  # alternated, medians: the two differ by little against the machine's noise
        for get, per_step in loops.values():
            start = time.perf_counter()
            for k in range(args.steps):
                state, metrics = train_step(state, get(k))
            jax.block_until_ready(metrics)
            per_step.append((time.perf_counter() - start) / args.steps)
    for name, (_, per_step) in loops.items():
        t = statistics.median(per_step)
        print(f"| loops of {args.steps} steps (median of 3), {name} | {t:.3f} | {t / full:.2f} | |", flush=True)


if __name__ == "__main__":
    main()
