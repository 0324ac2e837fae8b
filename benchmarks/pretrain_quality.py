"""Held-out quality of pretraining runs on WikiText-2's test split, as the issue measures it.

    python benchmarks/pretrain_quality.py --data ../shared/data/wikitext-2 RUN_DIR [RUN_DIR ...]

Every sentence pair of `wiki.test.tokens` that the book's example builder makes (consecutive sentences of a
paragraph or a random negative, 15% of the words masked 80/10/10, pairs over max_len dropped) with the run's own
word-level tokenizer and max_len, masked with a fixed seed, whatever objective the run trained on; all of them
are scored with dropout off. MLM accuracy is over every real prediction (not a mean of batch means); NSP accuracy
over every pair. The same pairs serve every run that shares a tokenizer, so runs compare side by side, and
`book_loop_quality.py` scores the book's PyTorch loop on them.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jaxbert import data, losses, wikitext  # noqa: E402
from jaxbert.encode import restore_run  # noqa: E402
from machine import cpu_line  # noqa: E402


def test_pairs(folder: Path, cfg, tok):
    # The book's pairs at the book's masking, whatever the run trained on (an MLM-only run is scored on the
    # same pairs as an NSP run; its NSP head is untrained and scores about chance).
    book = dataclasses.replace(cfg.data, objective="d2l", mask_prob=0.15, max_predictions=0, whole_word_masking=False,
                               dynamic_masking=False, seed=0)
    words = wikitext.read_words(folder / "wiki.test.tokens")
    tokens = data.word_ids(words.types, tok, tok.get_vocab())[words.word_types]
    test = data._instance_set(tokens, words.sentence_lengths, words.paragraph_lengths, tok, book, stream=2,
                              name=str(folder / "wiki.test.tokens"))
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
        metrics = losses.pretraining_metrics(mlm_logits, nsp_logits, b, with_nsp=True)
        return hits.sum(), w.sum(), (nsp_logits.argmax(-1) == b["nsp_labels"]).sum(), metrics["mlm_loss"] * w.sum()

    n = len(arrays["nsp_labels"])
    totals = np.zeros(4)
    for start in range(0, n - n % batch_size, batch_size):  # full batches: one compiled shape
        b = {k: jnp.asarray(v[start:start + batch_size]) for k, v in arrays.items()}
        totals += np.array([float(x) for x in counts(params, b)])
    pairs = n - n % batch_size
    return {"run": str(run_dir), "step": step, "pairs": pairs, "predictions": int(totals[1]),
            "mlm_acc": totals[0] / totals[1], "mlm_loss": totals[3] / totals[1], "nsp_acc": totals[2] / pairs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data", required=True, type=Path, help="the WikiText-2 folder (with wiki.test.tokens)")
    args = p.parse_args()
    print(cpu_line())
    print("| run | step | test pairs | MLM acc | MLM loss | NSP acc |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        r = score(run, args.data)
        print(f"| {run} | {r['step']} | {r['pairs']} | {r['mlm_acc']:.4f} | {r['mlm_loss']:.3f} | {r['nsp_acc']:.4f} |")
        print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
