"""`jaxbert prepare` at growing corpus sizes: wall time and peak memory (RSS) of each run.

    python benchmarks/prepare_scale.py --data ../shared/data [--millions 10 30 100]

Each corpus is generated here (never committed): documents of 2-12 sentences drawn at random from
WikiText-2's training sentences, in the plain-text format (one sentence per line, a blank line between
documents), until it holds about N million whitespace words. Each `jaxbert prepare` (bert-base-uncased
WordPiece vocabulary) runs in its own process under /usr/bin/time, which reports its peak RSS.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from train_throughput import cpu_model


def generate(path: Path, words: int, sentences: list[str], rng: np.random.Generator) -> None:
    lengths = np.array([s.count(" ") + 1 for s in sentences])
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < words:
            picks = rng.integers(0, len(sentences), (1000, 12))
            sizes = rng.integers(2, 13, 1000)
            for row, size in zip(picks, sizes):
                f.write("\n".join(sentences[i] for i in row[:size]) + "\n\n")
                written += int(lengths[row[:size]].sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="the shared data folder (wikitext-2/, bert-base-uncased/)")
    p.add_argument("--millions", type=int, nargs="+", default=[10, 30, 100])
    args = p.parse_args()
    lines = (args.data / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").splitlines()
    sentences = [s.strip() + " ." for line in lines if not line.strip().startswith("=")
                 for s in line.split(" . ") if len(s.split()) > 3]
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_model()}\n")
    print("| words (M) | corpus MB | WordPiece tokens (M) | wall s | tokens/s (M) | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for millions in args.millions:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            generate(corpus, millions * 1_000_000, sentences, rng)
            out = Path(tmp) / "prepared"
            cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "jaxbert.cli", "prepare",
                   "--corpus", str(corpus), "--tokenizer", str(args.data / "bert-base-uncased" / "vocab.txt"),
                   "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
            tokens = sum(int(x.split()[-2]) for x in proc.stdout.splitlines() if x.split()[0] in ("train:", "eval:"))
            print(f"| {millions} | {corpus.stat().st_size / 1e6:.0f} | {tokens / 1e6:.1f} | {float(wall):.1f} | "
                  f"{tokens / float(wall) / 1e6:.2f} | {int(rss_kb) / 1024:.0f} |", flush=True)


if __name__ == "__main__":
    main()
