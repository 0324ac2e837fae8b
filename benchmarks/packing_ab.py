"""W1 with the MLM head on every slot against packed to the real predictions (`make_steps(mlm_capacity=K)`),
alternating 3 steps of each five times in one process: `python benchmarks/packing_ab.py --data DIR`."""

import argparse
import statistics
import time

import jax

from jaxbert import config, corpus, data, optim, train
from machine import cpu_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", help="folder with wiki.train.tokens (default $JAXBERT_DATA)")
    args = ap.parse_args()
    print(cpu_line())
    cfg = config.preset("d2l-tiny")
    tok, train_set, _ = data.load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    cfg = config.override(cfg, [f"model.vocab_size={tok.get_vocab_size()}"])
    batches = [train_set.batch(s, cfg.train.batch_size) for s in range(16)]
    tx = optim.optimizer(cfg.optim, 100)
    runs = {}
    for name, capacity in (("every slot", None), ("packed", train.capacity_for(batches))):
        graphdef, state = train.init_state(cfg, tx)
        step, _ = train.make_steps(graphdef, tx, jax.random.key(0), mlm_capacity=capacity)
        state, metrics = step(state, batches[0])
        jax.block_until_ready(metrics)
        runs[name] = [step, state, []]
    for r in range(5):
        for run in runs.values():
            for i in range(3):
                start = time.perf_counter()
                run[1], metrics = run[0](run[1], batches[(3 * r + i) % 16])
                jax.block_until_ready(metrics)
                run[2].append(time.perf_counter() - start)
    for name, (_, _, times) in runs.items():
        print(f"{name}: median step {statistics.median(times):.3f} s over {len(times)} steps")


if __name__ == "__main__":
    main()
