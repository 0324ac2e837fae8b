"""bert-base (or `--preset bert-large`) pretraining steps at sequence length 128: jaxbert against transformers
`BertForPreTraining`, each in a fresh process, on the same real batches.

    python benchmarks/base_train.py --data ../shared/data/wikitext-2 --vocab ../shared/data/bert-base-uncased
        [--preset bert-large] [--batch 8] [--device cuda]

The batches are WikiText-2 sentence pairs in bert-base-uncased's WordPiece (`jaxbert prepare`) with the bert-base
preset's data settings (max_len 128, 20 prediction slots, NSP). The table is peers.py's, per sequence; systems:
jaxbert in float32 and `model.dtype=bfloat16`, transformers eager and under autocast to bfloat16 (on `--device`), on
jaxbert's loss (peers.transformers_loss, tested in tests/test_peers.py).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import harness
from peers import arguments, compare, jaxbert_step, load_batches, step_flops, transformers_step, worker

SYSTEMS = ("jaxbert", "jaxbert-bf16", "transformers", "transformers-bf16")


def preset_name() -> str:
    """$BASE_PRESET (set by `--preset`, inherited by the workers), else bert-base."""
    return os.environ.get("BASE_PRESET", "bert-base")


def base_config(vocab_size: int, bf16: bool = False):
    from jaxbert import config

    return config.override(config.preset(preset_name()), [f"model.vocab_size={vocab_size}", "optim.warmup_steps=0"]
                           + (["model.dtype=bfloat16"] if bf16 else []))


def base_batches(data_dir: Path, vocab_dir: Path, rows: int, count: int) -> tuple[list[dict], int]:
    """The first `count` batches of WikiText-2's training split prepared in WordPiece, and the vocabulary size."""
    from jaxbert.data import batches

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "jaxbert.cli", "prepare", "--corpus", str(data_dir / "wiki.train.tokens"),
                        "--format", "wikitext", "--tokenizer", str(vocab_dir / "vocab.txt"), "--out", tmp + "/p"],
                       check=True, capture_output=True)
        tok, train_set, _ = batches.load(Path(tmp) / "p", base_config(0).data)
        return [train_set.batch(step, rows) for step in range(count)], tok.get_vocab_size()


def base_step(system: str, vocab_size: int):
    bf16 = system.endswith("bf16")
    if system.startswith("jaxbert"):
        return jaxbert_step(base_config(vocab_size, bf16))
    import torch
    import transformers

    torch.manual_seed(0)
    m = base_config(vocab_size).model
    model = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads, intermediate_size=m.intermediate_size)).train()
    return transformers_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01),
                             "bf16" if bf16 else "eager")


def main() -> None:
    ap = arguments(__doc__, SYSTEMS, steps=6, warmup=2)
    ap.add_argument("--vocab", type=Path, help="folder with the bert-base-uncased vocab.txt (required)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--preset", choices=("bert-base", "bert-large"), default=preset_name())
    args = ap.parse_args()
    os.environ["PEERS_DEVICE"], os.environ["BASE_PRESET"] = args.device, args.preset  # the workers inherit them
    if args.worker:
        return worker(base_step(args.worker, args.vocab_size), load_batches(args.batches))
    if args.data is None or args.vocab is None:
        ap.error("--data and --vocab are required")

    print(harness.machine())
    batches, vocab_size = base_batches(Path(args.data), args.vocab, args.batch, args.warmup + args.steps)
    flops = step_flops(base_config(vocab_size), args.batch)
    print(f"{args.preset}, T=128, batch {args.batch}: {flops:.3g} FLOP per step (XLA's count of jaxbert's float32 "
          "step)")
    compare(__file__, args.systems, batches, vocab_size, flops, args.warmup, "sequences")


if __name__ == "__main__":
    main()
