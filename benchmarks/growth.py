"""How a training step's time grows with the batch, the sequence length and the vocabulary: jaxbert against
transformers eager (the fastest float32 peer of `peers.py` on most machines), each shape in fresh processes.

    python benchmarks/growth.py --data ../shared/data/wikitext-2 [--steps 5] [--warmup 3]

The model is d2l-tiny's (2 layers, 128 hidden, 256 FFN, 2 heads, dropout 0.2, untied decoder, Adam) at each
shape. The rows are the book's WikiText-2 pairs built at max_len T, with its round(0.15 T) prediction slots and its
20,256-word vocabulary; the 30,522 rows run the same ids through a decoder of BERT's WordPiece width (a step's
cost depends on the shapes only). Per shape and system: the median step after `--warmup`, and pairs/s.
"""

import argparse
import pickle
import statistics
import sys
import tempfile
from pathlib import Path

import harness
from peers import jaxbert_step, load_batches, transformers_model, transformers_step

# (batch, max_len, vocabulary): W1 first, then one of the three changed at a time.
SHAPES = [(512, 64, 20256), (128, 64, 20256), (1024, 64, 20256), (256, 128, 20256), (64, 512, 20256),
          (512, 64, 30522)]
SYSTEMS = ("jaxbert", "transformers")


def step_for(system: str, batch: int, max_len: int, vocab: int):
    if system == "jaxbert":
        from jaxbert import config

        return jaxbert_step(config.override(config.preset("d2l-tiny"), [
            f"model.vocab_size={vocab}", f"data.max_len={max_len}", f"train.batch_size={batch}"]))
    import torch

    model = transformers_model(vocab, max_len)
    return transformers_step(model, torch.optim.Adam(model.parameters(), lr=1e-4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="folder with wiki.train.tokens")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)  # system batch max_len vocab
    ap.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        system, *shape = args.worker
        step = step_for(system, *map(int, shape))
        times, _ = harness.timed(lambda b: float(step(b)), load_batches(args.batches))
        print(f'{{"times": {times}}}')
        return

    from jaxbert import config
    from jaxbert.data import corpus
    from jaxbert.data.batches import load_wikitext2

    print(harness.machine())
    folder = corpus.locate_wikitext2(args.data)
    harness.table("batch", "max_len", "vocabulary", *(f"{s} step (s)" for s in SYSTEMS),
                  *(f"{s} pairs/s" for s in SYSTEMS), "jaxbert / transformers speed")
    sets = {}
    for batch, max_len, vocab in SHAPES:
        if max_len not in sets:
            cfg = config.override(config.preset("d2l-tiny"), [f"data.max_len={max_len}"])
            sets[max_len] = load_wikitext2(folder, cfg.data)[1]
        batches = [sets[max_len].batch(i, batch) for i in range(args.warmup + args.steps)]
        steps = {}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "batches.pickle"
            path.write_bytes(pickle.dumps(batches))
            for system in SYSTEMS:
                r = harness.fresh([__file__, "--worker", system, str(batch), str(max_len), str(vocab),
                                   "--batches", str(path)])
                steps[system] = statistics.median(r["times"][args.warmup:]) if r else float("nan")
        harness.row(batch, max_len, vocab, *(f"{steps[s]:.3f}" for s in SYSTEMS),
                    *(f"{batch / steps[s]:.1f}" for s in SYSTEMS),
                    f"{steps['transformers'] / steps['jaxbert']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
