"""WikiText-2 into ready pretraining examples: jaxbert against the book's own code, in one process.

    pip install torch==2.13.0 pandas requests ipython matplotlib-inline && pip install --no-deps d2l==1.0.3
    python benchmarks/prepare_vs_d2l.py --data ../shared/data/wikitext-2 [--repeats 3]

The book: `d2l.load_data_wiki` without its DataLoader, i.e. `_read_wiki` + `_WikiTextDataset(paragraphs, 64)`
(d2l 1.0.3, torch flavour), which yields every training example padded to max_len 64. jaxbert:
`data.load_wikitext2` (the same semantics, training and held-out sets) and, for the scalable path,
`jaxbert prepare` with a WordPiece vocabulary plus the instances and the first batch of training.
Each is timed `--repeats` times, alternating; the table gives medians and the ratio to the book's median, and
the first run of each on its own (for jaxbert it includes loading numba's compiled code from its cache, or
compiling it on the very first use after an install).
d2l's torch module imports torchvision at the top but these two functions never use it; PyPI's torchvision
does not load beside torch 2.13.0, so an empty stand-in module is put in its place before the import.
"""

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

from train_throughput import cpu_model

from jaxbert import config, data, prepare
from jaxbert import tokenizer as tokenizers


def book(folder: Path):
    if "torchvision" not in sys.modules:
        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stand_in, stand_in.transforms
    from d2l import torch as d2l

    paragraphs = d2l._read_wiki(str(folder))
    return len(d2l._WikiTextDataset(paragraphs, 64))


def ours_book_semantics(folder: Path):
    _, train, _ = data.load_wikitext2(folder, config.preset("d2l-tiny").data)
    return len(train)


def ours_prepared(folder: Path, tok):
    with tempfile.TemporaryDirectory() as tmp:
        prepare.prepare([folder / "wiki.train.tokens"], Path(tmp) / "p", tok, eval_fraction=0.0)
        cfg = config.override(config.preset("bert-base"), ["data.max_len=64"]).data
        _, train, _ = data.load(Path(tmp) / "p", cfg)
        train.batch(0, 512)
        return len(train)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="folder with wiki.train.tokens")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    vocab = args.data.parent / "bert-base-uncased" / "vocab.txt"
    tok = tokenizers.wordpiece_from_vocab(vocab)
    runs = {"d2l 1.0.3 `_read_wiki` + `_WikiTextDataset`": lambda: book(args.data),
            "jaxbert `data.load_wikitext2` (book semantics, train + held-out)": lambda: ours_book_semantics(args.data),
            "jaxbert `prepare` (bert-base-uncased WordPiece) + instances + first batch":
                lambda: ours_prepared(args.data, tok)}
    times, sizes = {k: [] for k in runs}, {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            sizes[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(next(iter(times.values())))
    print(f"CPU: {cpu_model()}, {args.repeats} repeats\n")
    print("| pipeline | training examples | first run s | median s | speed-up over d2l (medians) |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {sizes[name]} | {ts[0]:.2f} | {statistics.median(ts):.3f} | "
              f"{base / statistics.median(ts):.1f}x |")


if __name__ == "__main__":
    main()
