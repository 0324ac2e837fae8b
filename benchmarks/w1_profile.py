"""Where W1's step time goes: the jitted train step against variants that each remove one part, in one process.

    python benchmarks/w1_profile.py --data ../shared/data/wikitext-2 [--steps 10]

W1 is d2l-tiny (vocabulary from WikiText-2, batch 512, max_len 64, 10 prediction slots, Adam). Each variant is
timed as a median over `--steps` steps after two warm-up steps; the ratio to the full step is the part's share.
XLA's FLOP count of each variant is printed beside it (XLA counts a loop's body once, so the fused MLM layer's
scan leaves most of that layer out of the count). The optimizer update and host-side batch building are
timed on their own.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxbert import config
from jaxbert.data import corpus
from jaxbert.data.batches import load_wikitext2
from jaxbert.training import optim, train

import harness


def variants(capacity: int) -> list[tuple[str, list[str], dict]]:
    """(name, config overrides, `make_steps` options): the full step, then one part removed or changed."""
    return [("full step (as `jaxbert pretrain` runs it: MLM layer fused, 512 pieces a chunk)", [], {}),
            ("the plain MLM output layer (whole logits)", ["train.mlm_chunk=0"], {}),
            ("fused MLM layer, 256 pieces a chunk", ["train.mlm_chunk=256"], {}),
            ("fused MLM layer, 1024 pieces a chunk", ["train.mlm_chunk=1024"], {}),
            (f"MLM head on the real predictions, packed into {capacity} rows", [], {"mlm_capacity": capacity}),
            ("no dropout", ["model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"], {}),
            ("dropout bits from the rbg generator instead of threefry", [], {"rng_impl": "rbg"}),
            ("MLM output layer cut to 128 words", ["model.vocab_size=128"], {}),
            ("bfloat16 compute", ["model.dtype=bfloat16"], {})]


def step_variant(cfg, batches: list[dict], steps: int, rng_impl: str | None = None,
                 mlm_capacity: int | None = None) -> tuple[float, float]:
    """(median seconds, XLA FLOPs) of `cfg`'s train step; token ids are cut to its vocabulary."""
    v = cfg.model.vocab_size
    batches = [dict(b, input_ids=b["input_ids"] % v, masked_ids=b["masked_ids"] % v) for b in batches]
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = train.init_state(cfg, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0, impl=rng_impl), mlm_capacity=mlm_capacity,
                                     mlm_chunk=cfg.train.mlm_chunk)
    cost = train_step.lower(state, batches[0]).cost_analysis()
    box, i = [state], [0]

    def one():
        box[0], metrics = train_step(box[0], batches[i[0] % len(batches)])
        i[0] += 1
        jax.block_until_ready(metrics)

    return (harness.median_seconds(one, steps, warmup=2),
            float((cost[0] if isinstance(cost, list) else cost)["flops"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with wiki.train.tokens (default $JAXBERT_DATA)")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    print(harness.machine())
    cfg = config.preset("d2l-tiny")
    tok, train_set, _ = load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    batches = [train_set.batch(step, cfg.train.batch_size) for step in range(4)]
    weights = np.concatenate([b["masked_weights"] for b in batches])
    print(f"vocabulary {cfg.model.vocab_size}; real prediction slots: {weights.mean():.1%} of {weights.size}")

    harness.table("variant", "median step (s)", "vs full", "XLA GFLOP")
    full = None
    for name, overrides, options in variants(train.pack_capacity(train_set, cfg.train.batch_size)):
        seconds, flops = step_variant(config.override(cfg, overrides), batches, args.steps, **options)
        full = full or seconds
        harness.row(name, f"{seconds:.3f}", f"{seconds / full:.2f}", f"{flops / 1e9:.1f}")

    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    _, state = train.init_state(cfg, tx)
    update = jax.jit(lambda p, o: optax.apply_updates(p, tx.update(jax.tree.map(jnp.ones_like, p), o, p)[0]))
    parts = {"optimizer update alone (Adam)": lambda: jax.block_until_ready(update(state.params, state.opt_state)),
             "host: build one batch of 512": lambda: train_set.batch(int(np.random.default_rng().integers(10_000)),
                                                                     512)}
    for name, fn in parts.items():
        seconds = harness.median_seconds(fn, args.steps, warmup=2)
        harness.row(name, f"{seconds:.3f}", f"{seconds / full:.2f}", "")


if __name__ == "__main__":
    main()
