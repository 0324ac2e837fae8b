"""`jaxbert prepare` at growing corpus sizes: wall time and peak memory (RSS) of each run.

    python benchmarks/prepare_scale.py --data ../shared/data [--millions 10 30 100]

Each corpus is generated here in the plain-text format (one sentence per line, documents of 2-12 sentences) until
it holds about N million words with a long tail of distinct words, as real text has. Sentence lengths are
WikiText-2 training sentences' drawn at random; the words are ranks drawn from a Zipf distribution
(`--zipf-exponent`, 1.2) over `--zipf-ranks` ranks (5 million): first WikiText-2's training words in frequency
order, then made-up words of 1-3 syllables spelt from their rank alone (none a WikiText-2 word, three in ten
capitalised). Distinct words grow with the corpus roughly as Heaps' law has it for English; the table gives them.
Each `jaxbert prepare` (bert-base-uncased WordPiece) runs in its own fresh process: its wall time (start-up and
imports included) and peak RSS.
"""

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

import harness

_ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl dr fl fr gl gr kr pl pr sh st tr".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = "n r s l t m nd st".split()
_DOC_END, _PERIOD = 0, 1  # the entry ids of "\n" and ".\n" in `zipf_pieces`


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


def zipf_pieces(wiki_words: list[str], ranks: int) -> np.ndarray:
    """The corpus's pieces of text by entry id: "\n" (a blank line ends a document), ".\n" (a sentence's end),
    then the word of rank r and a space as entry r + 1: WikiText-2's words by frequency, then made-up words (three
    in ten capitalised)."""
    counts = collections.Counter(wiki_words)
    del counts["<unk>"], counts["."]
    top = [w.encode() for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))][:ranks]
    # Made-up words that happen to be English words (WikiText-2's, in any case) are skipped.
    made = made_up_words(ranks - len(top) + len(top))
    made = made[~np.isin(made, np.array(list({w.lower() for w in top})))][:ranks - len(top)]
    capital = (np.arange(len(made)) * 7919) % 10 < 3
    made[capital] = np.char.capitalize(made[capital])
    return np.array([b"\n", b".\n"] + [w + b" " for w in top + made.tolist()], dtype=object)


def generate_zipf(path: Path, words: int, pieces: np.ndarray, cdf: np.ndarray, lengths: np.ndarray,
                  rng: np.random.Generator) -> tuple[int, int]:
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
            f.write(b"".join(pieces[entries]))
            written += int(sentence_words.sum()) + len(sentence_words)
    return written, int(seen.sum()) + 1  # and "."


def prepare(corpus: Path, vocab_txt: Path, out: Path) -> tuple[int, dict]:
    """`jaxbert prepare` of `corpus` in a fresh process: the WordPiece tokens it wrote, and its wall time and RSS."""
    r = harness.fresh(["-m", "jaxbert.cli", "prepare", "--corpus", str(corpus), "--tokenizer", str(vocab_txt),
                       "--out", str(out)])
    if r is None:
        sys.exit("prepare failed")
    tokens = sum(int(x.split()[-2]) for x in r["stdout"].splitlines() if x.split()[:1] in (["train:"], ["eval:"]))
    return tokens, r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="the shared data folder (wikitext-2/, bert-base-uncased/)")
    p.add_argument("--millions", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--zipf-exponent", type=float, default=1.2)
    p.add_argument("--zipf-ranks", type=int, default=5_000_000)
    args = p.parse_args()
    lines = (args.data / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").splitlines()
    lines = [line for line in lines if not line.strip().startswith("=")]
    lengths = np.array([s.strip().count(" ") + 2 for line in lines for s in line.split(" . ") if len(s.split()) > 3])
    pieces = zipf_pieces([w for line in lines for w in line.split()], args.zipf_ranks)
    weights = np.arange(1, args.zipf_ranks + 1, dtype=np.float64) ** -args.zipf_exponent
    cdf = np.cumsum(weights) / weights.sum()
    rng = np.random.default_rng(0)
    print(f"{harness.machine()}; Zipf exponent {args.zipf_exponent:g} over {args.zipf_ranks:,} ranks")
    harness.table("words (M)", "distinct words", "corpus MB", "WordPiece tokens (M)", "wall s", "tokens/s (M)",
                  "words/s (M)", "peak RSS MB")
    for millions in args.millions:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            written, distinct = generate_zipf(corpus, millions * 1_000_000, pieces, cdf, lengths, rng)
            tokens, r = prepare(corpus, args.data / "bert-base-uncased" / "vocab.txt", Path(tmp) / "p")
            harness.row(millions, f"{distinct:,}", f"{corpus.stat().st_size / 1e6:.0f}", f"{tokens / 1e6:.1f}",
                        f"{r['wall_s']:.1f}", f"{tokens / r['wall_s'] / 1e6:.2f}", f"{written / r['wall_s'] / 1e6:.2f}",
                        f"{r['peak_rss_mb']:.0f}")


if __name__ == "__main__":
    main()
