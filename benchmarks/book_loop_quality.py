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
from peers import d2l_torch  # noqa: E402
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
    from torch import nn

    if args.threads:
        torch.set_num_threads(args.threads)
    d2l = d2l_torch()
    cfg = config.preset("d2l-tiny")
    tok, train_set, _ = data.load_wikitext2(corpus.locate_wikitext2(args.data), cfg.data)
    vocab_size = tok.get_vocab_size()
    arrays = test_pairs(corpus.locate_wikitext2(args.data), cfg, tok)
    print(cpu_line())
    print(f"book loop: lr {args.lr}, batch {cfg.train.batch_size}, vocabulary {vocab_size}")
    print("| step | pairs seen | pairs/s (training only) | minutes at that rate | test MLM acc | test NSP acc |")
    print("|---|---|---|---|---|---|")

    torch.manual_seed(0)
    net = d2l.BERTModel(vocab_size, num_hiddens=128, ffn_num_hiddens=256, num_heads=2, num_blks=2, dropout=0.2)
    loss = nn.CrossEntropyLoss()
    first = {k: torch.from_numpy(v) for k, v in train_set.batch(0, 2).items()}
    net(first["input_ids"].long(), first["segment_ids"].long(), first["valid_lens"].float(),
        first["masked_positions"].long())  # materialises the lazy layers before Adam sees the parameters
    trainer = torch.optim.Adam(net.parameters(), lr=args.lr)
    trained = 0.0
    for step in range(1, args.steps + 1):
        batch = train_set.batch(step - 1, cfg.train.batch_size)
        started = time.perf_counter()
        t = {k: torch.from_numpy(v) for k, v in batch.items()}
        trainer.zero_grad()
        _, _, total = d2l._get_batch_loss_bert(
            net, loss, vocab_size, t["input_ids"].long(), t["segment_ids"].long(), t["valid_lens"].float(),
            t["masked_positions"].long(), t["masked_weights"].float(), t["masked_ids"].long(),
            t["nsp_labels"].long())
        total.backward()
        trainer.step()
        trained += time.perf_counter() - started
        if step in args.score_at:
            r = score(net, arrays)
            rate = step * cfg.train.batch_size / trained
            print(f"| {step} | {step * cfg.train.batch_size} | {rate:.1f} | {trained / 60:.1f} | "
                  f"{r['mlm_acc']:.4f} | {r['nsp_acc']:.4f} |", flush=True)
            record = {"step": step, "train_seconds": trained, "loss": float(total.detach()), **r}
            print(json.dumps(record), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
