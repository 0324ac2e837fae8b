"""`jaxbert prepare` at growing corpus sizes: wall time and peak memory (RSS) of each run.

    python benchmarks/prepare_scale.py --data ../shared/data [--millions 10 30 100] [--corpus zipf resampled]

Each corpus is generated here (never committed) in the plain-text format (one sentence per line, a blank line
between documents of 2-12 sentences) until it holds about N million whitespace words:

- `zipf` (the default): a long tail of distinct words, as real text has. Each sentence takes its length from
  a WikiText-2 training sentence drawn at random and ends in " ."; its words are ranks drawn from a Zipf
  distribution (`--zipf-exponent`, default 1.2) over `--zipf-ranks` ranks (default 5 million). The first
  ranks are WikiText-2's training words in frequency order (cased, `<unk>` and "." left out); every later rank
  is a made-up word spelt from its rank alone: 1-3 syllables (32 onsets x 8 vowels) ending in a consonant,
  different for every rank and from every WikiText-2 word, three in ten capitalised. The number of distinct
  words then grows with the corpus roughly as Heaps' law has it for English (hundreds of thousands at 10M
  words, millions at 100M); the table gives it for every corpus.
- `resampled` (the old corpus): whole WikiText-2 training sentences drawn at random, so every corpus holds at
  most WikiText-2's 33,000 distinct words, which flatters `prepare`'s tokenizing of each distinct word once.

Each `jaxbert prepare` (bert-base-uncased WordPiece vocabulary) runs in its own process under /usr/bin/time,
which reports its wall time (the whole process: start-up, imports, work) and peak RSS. With several corpus
kinds, each size is run for every kind in turn, so that their ratio is measured at the same moment.
"""

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import cpu_line

_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl dr fl fr gl gr kr pl pr sh st tr".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = "n r s l t m nd st".split()
_DOC_END, _PERIOD = 0, 1  # entry ids of "\n" (a blank line ends a document) and ".\n" (a sentence's end)


def made_up_words(count: int) -> np.ndarray:
    """`count` distinct lower-case letter strings (bytes), the i-th a function of i alone: syllables (onset +
    vowel, the onsets all consonants, so that the spelling parses back uniquely) and a final consonant, as
    the digits of i in bijective numeration (shortest words first), the digits scrambled within each length."""
    syllables = np.array([(o + v).encode() for o in _ONSETS for v in _VOWELS])
    finals = np.array([(o + v + c).encode() for o in _ONSETS for v in _VOWELS for c in _CODAS])
    s, f = len(syllables), len(finals)
    words, i, n_syllables = [], np.arange(count, dtype=np.int64), 1
    while len(i):
        block = f * s ** (n_syllables - 1)  # the words of n_syllables syllables
        here, i = i[i < block], i[i >= block] - block
        here = (here * 0x9E3779B1 + 12345) % block  # a bijection of the block (the multiplier is coprime to it)
        word = finals[here % f]
        here //= f
        for _ in range(n_syllables - 1):
            word = np.char.add(syllables[here % s], word)
            here //= s
        words.append(word)
        n_syllables += 1
    return np.concatenate(words)


class Vocabulary:
    """Byte strings of the corpus's entries, each with what follows it: "\\n" (document end), ".\\n"
    (sentence end), then rank r's word plus a space as entry r + 1 (r from 1)."""

    def __init__(self, words: list[bytes]):
        width = max(map(len, words)) + 1
        table = np.zeros((len(words) + 2, width), np.uint8)
        lengths = np.array([1, 2] + [len(w) + 1 for w in words], np.int64)
        table[:2, :2] = [[10, 0], [46, 10]]
        flat = np.frombuffer(np.array(words, f"S{width}").tobytes(), np.uint8).reshape(len(words), width)
        table[2:] = flat
        table[np.arange(2, len(words) + 2), lengths[2:] - 1] = 32
        self.blob = table[np.arange(width) < lengths[:, None]]
        self.lengths = lengths
        self.starts = np.cumsum(lengths) - lengths

    def text(self, entries: np.ndarray) -> bytes:
        span = self.lengths[entries]
        at = np.repeat(self.starts[entries] - (np.cumsum(span) - span), span) + np.arange(int(span.sum()))
        return self.blob[at].tobytes()


def zipf_vocabulary(wiki_words: list[str], ranks: int) -> list[bytes]:
    """Rank 1 to `ranks`: WikiText-2's words by frequency, then made-up words (three in ten capitalised)."""
    counts = collections.Counter(wiki_words)
    del counts["<unk>"], counts["."]
    top = [w.encode() for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))][:ranks]
    # Made-up words that happen to be English words (WikiText-2's, in any case) are skipped.
    made = made_up_words(ranks - len(top) + len(top))
    made = made[~np.isin(made, np.array(list({w.lower() for w in top})))][:ranks - len(top)]
    capital = (np.arange(len(made)) * 7919) % 10 < 3
    made[capital] = np.char.capitalize(made[capital])
    return top + made.tolist()


def generate_zipf(path: Path, words: int, vocab: Vocabulary, cdf: np.ndarray, lengths: np.ndarray,
                  rng: np.random.Generator) -> int:
    """Write the corpus; return its number of words and of distinct words."""
    seen = np.zeros(len(cdf) + 1, bool)
    written = 0
    with open(path, "wb") as f:
        while written < words:
            docs = rng.integers(2, 13, 20_000)  # sentences per document
            sentence_words = lengths[rng.integers(0, len(lengths), int(docs.sum()))] - 1  # before the " ."
            # Up to the document that reaches `words` (each sentence's words and its ".").
            per_doc = np.add.reduceat(sentence_words + 1, np.cumsum(docs) - docs)
            kept = int(np.searchsorted(np.cumsum(per_doc), words - written)) + 1
            docs, sentence_words = docs[:kept], sentence_words[:int(docs[:kept].sum())]
            ranks = np.minimum(np.searchsorted(cdf, rng.random(int(sentence_words.sum())), side="right"),
                               len(cdf) - 1) + 1
            seen[ranks] = True
            entries = np.insert(ranks + 1, np.cumsum(sentence_words), _PERIOD)
            entries = np.insert(entries, np.cumsum(np.add.reduceat(sentence_words + 1, np.cumsum(docs) - docs)),
                                _DOC_END)
            f.write(vocab.text(entries))
            written += int(sentence_words.sum()) + len(sentence_words)
    return written, int(seen.sum()) + 1  # and "."


def generate_resampled(path: Path, words: int, sentences: list[str], rng: np.random.Generator) -> int:
    """Write the corpus (WikiText-2 sentences drawn at random); return its number of words and of distinct
    words."""
    lengths = np.array([s.count(" ") + 1 for s in sentences])
    seen = np.zeros(len(sentences), bool)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < words:
            picks = rng.integers(0, len(sentences), (1000, 12))
            sizes = rng.integers(2, 13, 1000)
            for row, size in zip(picks, sizes):
                f.write("\n".join(sentences[i] for i in row[:size]) + "\n\n")
                written += int(lengths[row[:size]].sum())
                seen[row[:size]] = True
    return written, len({w for i in np.flatnonzero(seen) for w in sentences[i].split()})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="the shared data folder (wikitext-2/, bert-base-uncased/)")
    p.add_argument("--millions", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--corpus", nargs="+", choices=("zipf", "resampled"), default=["zipf"],
                   help="corpus kinds, each run at every size (default: zipf)")
    p.add_argument("--zipf-exponent", type=float, default=1.2)
    p.add_argument("--zipf-ranks", type=int, default=5_000_000)
    args = p.parse_args()
    lines = (args.data / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").splitlines()
    lines = [line for line in lines if not line.strip().startswith("=")]
    sentences = [s.strip() + " ." for line in lines for s in line.split(" . ") if len(s.split()) > 3]
    if "zipf" in args.corpus:
        vocab = Vocabulary(zipf_vocabulary([w for line in lines for w in line.split()], args.zipf_ranks))
        weights = np.arange(1, args.zipf_ranks + 1, dtype=np.float64) ** -args.zipf_exponent
        cdf = np.cumsum(weights) / weights.sum()
        lengths = np.array([s.count(" ") + 1 for s in sentences])
    rngs = {kind: np.random.default_rng(0) for kind in args.corpus}
    print(f"CPU: {cpu_line()}\n")
    print("| corpus | words (M) | distinct words | corpus MB | WordPiece tokens (M) | wall s | tokens/s (M) "
          "| words/s (M) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for millions in args.millions:
        for kind in args.corpus:
            with tempfile.TemporaryDirectory() as tmp:
                corpus = Path(tmp) / "corpus.txt"
                if kind == "zipf":
                    written, distinct = generate_zipf(corpus, millions * 1_000_000, vocab, cdf, lengths, rngs[kind])
                    label = f"zipf {args.zipf_exponent:g} over {args.zipf_ranks / 1e6:g}M ranks"
                else:
                    written, distinct = generate_resampled(corpus, millions * 1_000_000, sentences, rngs[kind])
                    label = "resampled WikiText-2 sentences"
                out = Path(tmp) / "prepared"
                cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "jaxbert.cli", "prepare",
                       "--corpus", str(corpus), "--tokenizer", str(args.data / "bert-base-uncased" / "vocab.txt"),
                       "--out", str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(f"prepare failed:\n{proc.stderr}")
                wall, rss_kb = proc.stderr.strip().splitlines()[-1].split()
                tokens = sum(int(x.split()[-2]) for x in proc.stdout.splitlines()
                             if x.split() and x.split()[0] in ("train:", "eval:"))
                print(f"| {label} | {millions} | {distinct:,} | {corpus.stat().st_size / 1e6:.0f} | "
                      f"{tokens / 1e6:.1f} | {float(wall):.1f} | {tokens / float(wall) / 1e6:.2f} | "
                      f"{written / float(wall) / 1e6:.2f} | {int(rss_kb) / 1024:.0f} |", flush=True)


if __name__ == "__main__":
    main()
