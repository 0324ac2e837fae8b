"""The book's PyTorch loop, trained and scored on the same held-out pairs as `pretrain_quality.py`.

    python benchmarks/book_loop_quality.py --data ../shared/data/wikitext-2 --steps 810 --score-at 270 540 810

d2l 1.0.3's `BERTModel` (d2l-tiny: 2 blocks, 128 hidden, 256 FFN, 2 heads, dropout 0.2) with its
`_get_batch_loss_bert` and Adam at `--lr` (the issue measured the book's loop at 1e-3), fed the book lane's
batches of 512 pairs (jaxbert's `data.objective=d2l` on WikiText-2's training split, digest-pinned to the book's
semantics). At each `--score-at` step it scores every full batch of `wiki.test` pairs that `pretrain_quality.py`
scores (the same word vocabulary, the same fixed masks) with dropout off, and prints MLM and NSP accuracy with
the pairs/s measured so far, so a step count converts to the minutes the book's loop needs on this machine.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jaxbert import config, corpus, data  # noqa: E402
from machine import cpu_line  # noqa: E402
from peers import d2l_trainer  # noqa: E402
from pretrain_quality import test_pairs  # noqa: E402


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="the WikiText-2 folder")
    p.add_argument("--steps", type=int, default=810)
    p.add_argument("--score-at", type=int, nargs="+", default=[270, 540, 810])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config.preset("d2l-tiny")
    folder = corpus.locate_wikitext2(args.data)
    tok, train_set, _ = data.load_wikitext2(folder, cfg.data)
    vocab_size = tok.get_vocab_size()
    arrays = test_pairs(folder, cfg, tok)
    print(cpu_line())
    print(f"book loop: lr {args.lr}, batch {cfg.train.batch_size}, vocabulary {vocab_size}")
    print("| step | pairs seen | pairs/s (training only) | minutes at that rate | test MLM acc | test NSP acc |")
    print("|---|---|---|---|---|---|")

    net, train_step = d2l_trainer(vocab_size, train_set.batch(0, 2), args.lr)
    trained = 0.0
    for step in range(1, args.steps + 1):
        batch = train_set.batch(step - 1, cfg.train.batch_size)
        started = time.perf_counter()
        total = train_step(batch)
        trained += time.perf_counter() - started
        if step in args.score_at:
            r = score(net, arrays)
            rate = step * cfg.train.batch_size / trained
            print(f"| {step} | {step * cfg.train.batch_size} | {rate:.1f} | {trained / 60:.1f} | "
                  f"{r['mlm_acc']:.4f} | {r['nsp_acc']:.4f} |", flush=True)
            record = {"step": step, "train_seconds": trained, "loss": float(total), **r}
            print(json.dumps(record), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
