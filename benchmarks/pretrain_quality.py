"""Held-out quality of pretraining runs: every sentence pair of WikiText-2's test split, scored with dropout off.

    python benchmarks/pretrain_quality.py --data ../shared/data/wikitext-2 RUN_DIR [RUN_DIR ...]

The pairs are those the book's example builder makes from `wiki.test.tokens` (consecutive sentences of a paragraph
or a random negative, 15% of the words masked 80/10/10, pairs over max_len dropped), with the run's own word-level
tokenizer and max_len and a fixed seed, whatever objective or masking the run trained with. MLM accuracy is over
every real prediction (not a mean of batch means), NSP accuracy over every pair. Runs that share a tokenizer are
scored on the same pairs, and `book_loop_quality.py` scores the book's PyTorch loop on them too.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbert.data import batches, wikitext
from jaxbert.encode import restore_run
from jaxbert.model import losses

import harness


def test_pairs(folder: Path, cfg, tok) -> dict:
    """Every book pair of `wiki.test.tokens` as arrays, masked as the book masks (seed 0)."""
    book = dataclasses.replace(cfg.data, objective="d2l", mask_prob=0.15, max_predictions=0,
                               whole_word_masking=False, dynamic_masking=False, seed=0)
    words = wikitext.read_words(Path(folder) / "wiki.test.tokens")
    tokens = batches.word_ids(words.types, tok, tok.get_vocab())[words.word_types]
    test = batches._instance_set(tokens, words.sentence_lengths, words.paragraph_lengths, tok, book, stream=2,
                                 name=str(Path(folder) / "wiki.test.tokens"))
    return test.take(np.arange(len(test)))


def score(run_dir: Path, folder: Path, batch_size: int = 512) -> dict:
    cfg, tok, model, step = restore_run(run_dir)
    arrays = test_pairs(folder, cfg, tok)
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit
    def counts(params, b):
        _, mlm_logits, nsp_logits = nnx.merge(graphdef, params)(
            b["input_ids"], b["segment_ids"], b["valid_lens"], b["masked_positions"], deterministic=True)
        w = b["masked_weights"]
        hits = (mlm_logits.argmax(-1) == b["masked_ids"]) * w
        mlm_loss = losses.mlm_metrics(mlm_logits, b["masked_ids"], w)["mlm_loss"]
        return hits.sum(), w.sum(), (nsp_logits.argmax(-1) == b["nsp_labels"]).sum(), mlm_loss * w.sum()

    n = len(arrays["nsp_labels"]) // batch_size * batch_size  # full batches: one compiled shape
    totals = np.zeros(4)
    for start in range(0, n, batch_size):
        b = {k: jnp.asarray(v[start:start + batch_size]) for k, v in arrays.items()}
        totals += np.array([float(x) for x in counts(params, b)])
    return {"run": str(run_dir), "step": step, "pairs": n, "predictions": int(totals[1]),
            "mlm_acc": totals[0] / totals[1], "mlm_loss": totals[3] / totals[1], "nsp_acc": totals[2] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", required=True, type=Path, help="the WikiText-2 folder (with wiki.test.tokens)")
    args = ap.parse_args()
    print(harness.machine())
    harness.table("run", "step", "test pairs", "MLM acc", "MLM loss", "NSP acc")
    for run in args.runs:
        r = score(run, args.data)
        harness.row(run, r["step"], r["pairs"], f"{r['mlm_acc']:.4f}", f"{r['mlm_loss']:.3f}", f"{r['nsp_acc']:.4f}")
        print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
