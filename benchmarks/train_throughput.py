"""Steady-state training throughput (sentence pairs/s) of a preset on WikiText-2.

    python benchmarks/train_throughput.py --data ../shared/data/wikitext-2 [--preset d2l-tiny] [--steps 30]

Each step is timed on its own (blocking on the result), the first `--warmup` steps (compilation) are left out,
and the median over the rest is reported with the CPU model and the JAX devices, as one Markdown table row.
"""

import argparse
import platform
import statistics
import subprocess
import time

import jax

from jaxbert import config, corpus, data, optim, train


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder with wiki.train.tokens (default $JAXBERT_DATA)")
    p.add_argument("--preset", default="d2l-tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()

    cfg = config.override(config.preset(args.preset), args.set)
    tok, train_set, _ = data.load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = train.init_state(cfg, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0))
    b = cfg.train.batch_size
    times = []
    for step in range(args.warmup + args.steps):
        batch = train_set.batch(step, b)
        t0 = time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(metrics)  # host-device sync: time the whole step
        times.append(time.perf_counter() - t0)
    steady = times[args.warmup:]
    rates = [b / t for t in steady]
    print("| preset | batch | max_len | median pairs/s | min-max pairs/s | median step s | devices | CPU |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.preset} | {b} | {cfg.data.max_len} | {statistics.median(rates):.1f} | "
          f"{min(rates):.1f}-{max(rates):.1f} | {statistics.median(steady):.3f} | {jax.devices()} | {cpu_model()} |")


if __name__ == "__main__":
    main()
