"""bert-base pretraining steps at sequence length 128 on this CPU: jaxbert against transformers
`BertForPreTraining`, each in a fresh process, on the same real batches.

    python benchmarks/base_train.py --data ../shared/data/wikitext-2 --vocab ../shared/data/bert-base-uncased

The batches are WikiText-2 sentence pairs in bert-base-uncased's WordPiece (`jaxbert prepare`), built by
jaxbert's data path with the bert-base preset's data settings (max_len 128, 20 prediction slots, NSP). Per
system: the first step (compilation included), the median of the steady steps, sequences/s, peak RSS, and the
model FLOP rate (XLA's count of jaxbert's float32 step, for every system) as a share of the matmul peaks
measured in the same run (MFU).
Systems: jaxbert in float32 and `model.dtype=bfloat16`; transformers eager, and under CPU autocast to bfloat16,
with jaxbert's loss (the same code as benchmarks/peers.py, tested in tests/test_peers.py).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from peers import load_batches, matmul_peaks, run_workers, step_flops, timed, transformers_loss

SYSTEMS = ("jaxbert", "jaxbert-bf16", "transformers", "transformers-bf16")


def base_config(vocab_size: int, bf16: bool = False):
    from jaxbert import config

    return config.override(config.preset("bert-base"), [f"model.vocab_size={vocab_size}", "optim.warmup_steps=0"]
                           + (["model.dtype=bfloat16"] if bf16 else []))


def write_batches(data_dir: Path, vocab_dir: Path, rows: int, count: int, out: Path) -> int:
    from jaxbert import data

    prepared = out.parent / "prepared"  # `jaxbert prepare`: WikiText-2's training split in WordPiece
    subprocess.run([sys.executable, "-m", "jaxbert.cli", "prepare", "--corpus", str(data_dir / "wiki.train.tokens"),
                    "--format", "wikitext", "--tokenizer", str(vocab_dir / "vocab.txt"), "--out", str(prepared)],
                   check=True, capture_output=True)
    tok, train_set, _ = data.load(prepared, base_config(0).data)
    batches = [train_set.batch(step, rows) for step in range(count)]
    np.savez(out, **{f"{k}_{i}": v for i, b in enumerate(batches) for k, v in b.items()})
    return tok.get_vocab_size()


def run_jaxbert(batches, vocab_size: int, bf16: bool):
    import jax

    from jaxbert import optim, train

    cfg = base_config(vocab_size, bf16)
    tx = optim.optimizer(cfg.optim, cfg.train.steps)
    graphdef, state = train.init_state(cfg, tx)
    train_step, _ = train.make_steps(graphdef, tx, jax.random.key(0))
    box = [state]

    def step(batch):
        box[0], metrics = train_step(box[0], batch)
        return metrics["loss"]

    return timed(step, batches)


def run_transformers(batches, vocab_size: int, bf16: bool):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForPreTraining(transformers.BertConfig(vocab_size=vocab_size)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)

    def step(batch):
        t = {k: torch.from_numpy(v) for k, v in batch.items()}
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = transformers_loss(model, t)
        loss.backward()
        opt.step()
        return loss.detach()

    return timed(step, batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="folder with wiki.train.tokens (required)")
    ap.add_argument("--vocab", type=Path, help="folder with the bert-base-uncased vocab.txt (required)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--steps", type=int, default=6, help="steady steps timed after the warmup")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--batches", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        batches = load_batches(args.batches)
        run = run_jaxbert if args.worker.startswith("jaxbert") else run_transformers
        result = run(batches, args.vocab_size, args.worker.endswith("bf16"))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.data is None or args.vocab is None:
        ap.error("--data and --vocab are required")

    from machine import cpu_line

    print(cpu_line())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base.npz"
        vocab_size = write_batches(args.data, args.vocab, args.batch, args.warmup + args.steps, path)
        flops = step_flops(base_config(vocab_size), args.batch)
        peaks = matmul_peaks()
        print("matmul peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        print(f"bert-base, T=128, batch {args.batch}: {flops:.3g} FLOP per step (XLA's count of jaxbert's float32 "
              "step)")
        results = run_workers(__file__, args.systems, path, vocab_size)
    fp32_peak = max(v for k, v in peaks.items() if k.endswith("float32"))
    bf16_peak = max(v for k, v in peaks.items() if k.endswith("bfloat16"))
    print("\n| system | sequences/s | median step (s) | first step (s) | peak RSS (MB) | GFLOP/s | MFU vs fp32 peak | "
          "MFU vs bf16 peak | first loss |\n|---|---|---|---|---|---|---|---|---|")
    for system, r in results.items():
        step = statistics.median(r["times"][args.warmup:])
        rate = flops / step / 1e9
        print(f"| {system} | {args.batch / step:.2f} | {step:.3f} | {r['times'][0]:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{rate:.0f} | {100 * rate / fp32_peak:.0f}% | {100 * rate / bf16_peak:.0f}% | {r['first_loss']:.3f} |")


if __name__ == "__main__":
    main()
