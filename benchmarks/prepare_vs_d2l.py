"""WikiText-2 into ready pretraining examples: jaxbert against the book's own code, each in a fresh process.

    python benchmarks/prepare_vs_d2l.py --data ../shared/data/wikitext-2 [--repeats 5] [--warm 2]

The book: d2l 1.0.3's `_read_wiki` + `_WikiTextDataset(paragraphs, 64)` (`load_data_wiki` without its
DataLoader), which yields every training example padded to max_len 64. jaxbert: `batches.load_wikitext2` with every
example of both splits built (the book's semantics; training builds rows a batch at a time) and, for the scalable
path, `jaxbert prepare` with the bert-base-uncased WordPiece `vocab.txt` (next to the WikiText-2 folder), the
instances and the first batch of training.

Each pipeline runs `--repeats` times in its own fresh process, the pipelines taking turns (the order rotates every
round). Per process: work s, the first call timed around the work alone (after the imports; for jaxbert it
includes loading numba's compiled code); process s, from starting the interpreter to the end of that first call;
warm s, `--warm` further calls in the same process. The table gives medians over the processes and each one's
ratio to the book's; "per round" is the range of book / jaxbert within each round.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

PIPELINES = {
    "d2l": "d2l 1.0.3 `_read_wiki` + `_WikiTextDataset`",
    "book": "jaxbert `batches.load_wikitext2` + every example built (book semantics, train + held-out)",
    "wordpiece": "jaxbert `prepare` (bert-base-uncased WordPiece) + instances + first batch",
}


def book_work(folder: Path):
    """The book's code: its imports done, a function doing the work once and returning the training examples."""
    from peers import d2l_torch

    d2l = d2l_torch()
    return lambda: len(d2l._WikiTextDataset(d2l._read_wiki(str(folder)), 64))


def ours_book_semantics(folder: Path):
    import numpy as np

    from jaxbert import config
    from jaxbert.data import batches

    def work():
        _, train, held_out = batches.load_wikitext2(folder, config.preset("d2l-tiny").data)
        for split in (train, held_out):  # rows are built on demand: build them all, as the book's code does
            split.take(np.arange(len(split)))
        return len(train)

    return work


def ours_prepared(folder: Path):
    from jaxbert import config
    from jaxbert.data import batches, prepare, tokenization

    def work():
        tok = tokenization.wordpiece_from_vocab(folder.parent / "bert-base-uncased" / "vocab.txt")
        with tempfile.TemporaryDirectory() as tmp:
            prepare.prepare([folder / "wiki.train.tokens"], Path(tmp) / "p", tok, eval_fraction=0.0)
            cfg = config.override(config.preset("bert-base"), ["data.max_len=64"]).data
            _, train, _ = batches.load(Path(tmp) / "p", cfg)
            train.batch(0, 512)
            return len(train)

    return work


def child(name: str, folder: Path, warm: int) -> None:
    """Run one pipeline in this fresh process; its first JSON line marks the end of the first call."""
    work = {"d2l": book_work, "book": ours_book_semantics, "wordpiece": ours_prepared}[name](folder)
    start = time.perf_counter()  # the imports are done
    examples = work()
    print(json.dumps({"examples": examples, "work": time.perf_counter() - start}), flush=True)
    print(json.dumps({"warm": harness.timed(lambda _: work(), range(warm))[0]}), flush=True)


def rounds(folder: Path, repeats: int, warm: int) -> dict[str, list[dict]]:
    """Each pipeline's fresh processes, the pipelines taking turns in a rotating order."""
    runs, names = {k: [] for k in PIPELINES}, list(PIPELINES)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            result = harness.fresh([__file__, "--child", name, "--data", str(folder), "--warm", str(warm)])
            if result is None:
                sys.exit(f"{name} failed")
            runs[name].append(result)
            print(f"round {r + 1} {name}: work {result['work']:.3f} s, process {result['first_line_s']:.3f} s, "
                  f"warm {' '.join(f'{t:.3f}' for t in result['warm'])}", file=sys.stderr, flush=True)
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="folder with wiki.train.tokens")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per pipeline")
    p.add_argument("--warm", type=int, default=2, help="further calls in each process, for the warm column")
    p.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.data.resolve(), args.warm)

    print(f"{harness.machine()}; {args.repeats} fresh processes per pipeline, {args.warm} warm calls in each")
    runs = rounds(args.data.resolve(), args.repeats, args.warm)

    def med(name, key):
        values = [t for run in runs[name] for t in (run[key] if key == "warm" else [run[key]])]
        return statistics.median(values) if values else float("nan")

    def ratio(name, key):
        return f"{med('d2l', key) / med(name, key):.1f}x"

    harness.table("pipeline", "training examples", "work s (median, min-max)", "ratio", "per round",
                  "process s (median)", "ratio", "warm call s (median)", "ratio")
    for name, label in PIPELINES.items():
        work = [run["work"] for run in runs[name]]
        per_round = [b["work"] / o["work"] for b, o in zip(runs["d2l"], runs[name])]
        harness.row(label, runs[name][-1]["examples"], f"{med(name, 'work'):.3f} ({min(work):.2f}-{max(work):.2f})",
                    ratio(name, "work"), f"{min(per_round):.1f}-{max(per_round):.1f}x",
                    f"{med(name, 'first_line_s'):.2f}", ratio(name, "first_line_s"), f"{med(name, 'warm'):.3f}",
                    ratio(name, "warm"))


if __name__ == "__main__":
    main()
