"""WikiText-2 into ready pretraining examples: jaxbert against the book's own code, each in a fresh process.

    pip install torch==2.13.0 pandas requests ipython matplotlib-inline && pip install --no-deps d2l==1.0.3
    python benchmarks/prepare_vs_d2l.py --data ../shared/data/wikitext-2 [--repeats 5] [--warm 2]

The book: `d2l.load_data_wiki` without its DataLoader, i.e. `_read_wiki` + `_WikiTextDataset(paragraphs, 64)`
(d2l 1.0.3, torch flavour), which yields every training example padded to max_len 64. jaxbert:
`data.load_wikitext2` with every example of both splits built from it (the same semantics; training builds rows
on demand, a batch at a time, so the whole set is built here to do the book's work) and, for the scalable path, the
bert-base-uncased `vocab.txt` loaded as a WordPiece tokenizer, `jaxbert prepare`, the instances and the first
batch of training.

As a user meets them: each pipeline runs in its own fresh Python process (this script with `--child`),
`--repeats` times, the pipelines taking turns (the order rotates every round). Per process it records
- work s: the first call, timed inside the child around the work alone (after the imports); for jaxbert it
  includes loading numba's compiled code from its cache (or compiling it, on the first use after an install);
- process s: the child's wall time as the parent sees it, from starting the interpreter through the imports
  to the end of that first call (the moment its result line arrives);
- warm s: `--warm` further calls in the same process (the old, in-process figure), their median.
The table gives medians over the processes and each median's ratio to the book's; "ratio per round" is the
range of book / jaxbert within each round (the same moment of this shared machine's load).

d2l's torch module imports torchvision at the top but these two functions never use it; PyPI's torchvision
does not load beside torch 2.13.0, so an empty stand-in module is put in its place before the import.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line

_START = time.perf_counter()  # the child's import clock starts here (the parent's at the process's start)

PIPELINES = {
    "d2l": "d2l 1.0.3 `_read_wiki` + `_WikiTextDataset`",
    "book": "jaxbert `data.load_wikitext2` + every example built (book semantics, train + held-out)",
    "wordpiece": "jaxbert `prepare` (bert-base-uncased WordPiece) + instances + first batch",
}


def _book_work(folder: Path):
    """(imports done, a function doing the work once and returning the number of training examples)."""
    if "torchvision" not in sys.modules:
        import types

        stand_in = types.ModuleType("torchvision")
        stand_in.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = stand_in, stand_in.transforms
    from d2l import torch as d2l

    return lambda: len(d2l._WikiTextDataset(d2l._read_wiki(str(folder)), 64))


def _ours_book_semantics(folder: Path):
    import numpy as np

    from jaxbert import config, data

    def work():
        _, train, held_out = data.load_wikitext2(folder, config.preset("d2l-tiny").data)
        for split in (train, held_out):  # rows are built on demand: build them all, as the book's code does
            split.take(np.arange(len(split)))
        return len(train)

    return work


def _ours_prepared(folder: Path):
    from jaxbert import config, data, prepare
    from jaxbert import tokenization

    def work():
        tok = tokenization.wordpiece_from_vocab(folder.parent / "bert-base-uncased" / "vocab.txt")
        with tempfile.TemporaryDirectory() as tmp:
            prepare.prepare([folder / "wiki.train.tokens"], Path(tmp) / "p", tok, eval_fraction=0.0)
            cfg = config.override(config.preset("bert-base"), ["data.max_len=64"]).data
            _, train, _ = data.load(Path(tmp) / "p", cfg)
            train.batch(0, 512)
            return len(train)

    return work


def child(name: str, folder: Path, warm: int) -> None:
    """Run one pipeline in this (fresh) process and print its timings as one JSON line."""
    work = {"d2l": _book_work, "book": _ours_book_semantics, "wordpiece": _ours_prepared}[name](folder)
    imported = time.perf_counter()
    examples = work()
    first = time.perf_counter() - imported
    # The first line tells the parent that the first call is done (its whole-process clock stops there).
    print(json.dumps({"examples": examples, "imports": imported - _START, "work": first}), flush=True)
    warm_times = []
    for _ in range(warm):
        t0 = time.perf_counter()
        work()
        warm_times.append(time.perf_counter() - t0)
    print(json.dumps({"warm": warm_times}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="folder with wiki.train.tokens")
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per pipeline")
    p.add_argument("--warm", type=int, default=2, help="further calls in each process, for the warm column")
    p.add_argument("--child", choices=PIPELINES, help=argparse.SUPPRESS)
    args = p.parse_args()
    folder = args.data.resolve()
    if args.child:
        return child(args.child, folder, args.warm)

    runs = {k: [] for k in PIPELINES}
    names = list(PIPELINES)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd = [sys.executable, __file__, "--child", name, "--data", str(folder), "--warm", str(args.warm)]
            t0 = time.perf_counter()
            with tempfile.TemporaryFile("w+") as err:  # a file, so that a chatty child cannot block on a pipe
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
                first_line = proc.stdout.readline()
                wall = time.perf_counter() - t0
                rest = proc.communicate()[0]
                if proc.returncode:
                    err.seek(0)
                    sys.exit(f"{name} failed:\n{err.read()}")
            result = json.loads(first_line) | json.loads(rest.strip().splitlines()[-1]) | {"process": wall}
            runs[name].append(result)
            print(f"round {r + 1} {name}: work {result['work']:.3f} s, process {wall:.3f} s, imports "
                  f"{result['imports']:.3f} s, warm {' '.join(f'{t:.3f}' for t in result['warm'])}",
                  file=sys.stderr, flush=True)

    def med(name, key):
        values = [t for run in runs[name] for t in (run[key] if key == "warm" else [run[key]])]
        return statistics.median(values) if values else float("nan")

    print(f"CPU: {cpu_line()}; {args.repeats} fresh processes per pipeline, {args.warm} warm calls in each\n")
    print("| pipeline | training examples | work s, fresh process (median, min-max) | ratio | ratio per round "
          "| process start to result s (median) | ratio | warm call s (median) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label in PIPELINES.items():
        work = [run["work"] for run in runs[name]]
        per_round = [b["work"] / o["work"] for b, o in zip(runs["d2l"], runs[name])]
        print(f"| {label} | {runs[name][-1]['examples']} | {med(name, 'work'):.3f} ({min(work):.2f}-{max(work):.2f}) | "
              f"{med('d2l', 'work') / med(name, 'work'):.1f}x | {min(per_round):.1f}-{max(per_round):.1f}x | "
              f"{med(name, 'process'):.2f} | {med('d2l', 'process') / med(name, 'process'):.1f}x | "
              + (f"{med(name, 'warm'):.3f} | {med('d2l', 'warm') / med(name, 'warm'):.1f}x |" if args.warm
                 else "- | - |"))
    imports = {name: statistics.median(run["imports"] for run in runs[name]) for name in PIPELINES}
    print("\nimports in the child (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in imports.items()))


if __name__ == "__main__":
    main()
