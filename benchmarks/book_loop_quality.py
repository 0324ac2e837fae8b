"""The book's PyTorch loop, trained for given minutes and scored on `pretrain_quality.py`'s held-out pairs.

    python benchmarks/book_loop_quality.py --data ../shared/data/wikitext-2 --minutes 10 20 30

d2l 1.0.3's `BERTModel` (d2l-tiny: 2 blocks, 128 hidden, 256 FFN, 2 heads, dropout 0.2) with its
`_get_batch_loss_bert` and Adam at `--lr` (1e-3 is the book's loop as measured before), fed the book lane's batches
of 512 pairs (jaxbert's `data.objective=d2l` on WikiText-2's training split, digest-pinned to the book's
semantics). Each time its training time (scoring excluded) passes one of `--minutes`, it scores every full batch of
the `wiki.test` pairs `pretrain_quality.py` scores (the same word vocabulary, the same fixed masks) with dropout
off, and prints MLM and NSP accuracy with the steps and pairs/s so far.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from jaxbert import config
from jaxbert.data import corpus
from jaxbert.data.batches import load_wikitext2

import harness
from peers import d2l_trainer
from pretrain_quality import test_pairs


def score(net, arrays, batch_size: int = 512) -> dict:
    import torch

    net.eval()
    hits = preds = nsp_hits = 0.0
    n = len(arrays["nsp_labels"]) // batch_size * batch_size
    with torch.no_grad():
        for start in range(0, n, batch_size):
            t = {k: torch.from_numpy(v[start:start + batch_size]) for k, v in arrays.items()}
            _, mlm, nsp = net(t["input_ids"].long(), t["segment_ids"].long(), t["valid_lens"].float(),
                              t["masked_positions"].long())
            w = t["masked_weights"].float()
            hits += float(((mlm.argmax(-1) == t["masked_ids"].long()).float() * w).sum())
            preds += float(w.sum())
            nsp_hits += float((nsp.argmax(-1) == t["nsp_labels"].long()).sum())
    net.train()
    return {"pairs": n, "predictions": int(preds), "mlm_acc": hits / preds, "nsp_acc": nsp_hits / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="the WikiText-2 folder")
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 20, 30])
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    cfg = config.preset("d2l-tiny")
    folder = corpus.locate_wikitext2(args.data)
    tok, train_set, _ = load_wikitext2(folder, cfg.data)
    vocab_size = tok.get_vocab_size()
    arrays = test_pairs(folder, cfg, tok)
    print(harness.machine())
    print(f"book loop: lr {args.lr}, batch {cfg.train.batch_size}, vocabulary {vocab_size}")
    harness.table("minutes", "steps", "pairs/s (training only)", "test MLM acc", "test NSP acc")

    net, train_step = d2l_trainer(vocab_size, train_set.batch(0, 2), args.lr)
    marks, trained, step = sorted(args.minutes), 0.0, 0
    while marks:
        batch = train_set.batch(step, cfg.train.batch_size)
        started = time.perf_counter()
        total = train_step(batch)
        trained += time.perf_counter() - started
        step += 1
        if trained >= marks[0] * 60:
            r = score(net, arrays)
            harness.row(f"{marks.pop(0):g}", step, f"{step * cfg.train.batch_size / trained:.1f}",
                        f"{r['mlm_acc']:.4f}", f"{r['nsp_acc']:.4f}")
            print(json.dumps({"step": step, "train_seconds": trained, "loss": float(total), **r}), file=sys.stderr,
                  flush=True)


if __name__ == "__main__":
    main()
