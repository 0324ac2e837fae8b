"""Tokenizers as Hugging Face `tokenizers.Tokenizer` objects, saved as `tokenizer.json` in every run.

Two kinds behind one interface (`encode`, `encode_batch`, `token_to_id`, `special_ids`, `word_starts`):
- word-level, the book's semantics (d2l 1.0 `Vocab`): whitespace-split lower-cased words; the vocabulary is
  `<unk>`, the reserved tokens and every word seen at least `min_freq` times, sorted;
- WordPiece, BERT's: trained on a corpus or read from a `vocab.txt`, with BERT's normaliser and
  pre-tokenizer and the special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]`.
"""

import collections
import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from jaxbert import storage
from jaxbert.errors import JaxbertError

WORD_SPECIALS = ("<unk>", "<pad>", "<mask>", "<cls>", "<sep>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the five special tokens, whatever a tokenizer calls them."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def build_word_vocab(sentences: Iterable[list[str]], min_freq: int) -> list[str]:
    """d2l's `Vocab(sentences, min_freq, reserved_tokens=['<pad>', '<mask>', '<cls>', '<sep>'])` order."""
    return word_vocab(collections.Counter(token for sentence in sentences for token in sentence), min_freq)


def word_vocab(counts: Mapping[str, int], min_freq: int) -> list[str]:
    """`build_word_vocab` from the words' counts."""
    return sorted(set(WORD_SPECIALS) | {token for token, n in counts.items() if n >= min_freq})


def word_tokenizer(vocab: list[str]) -> Tokenizer:
    """A word-level tokenizer whose `encode(a, b)` yields `<cls> a <sep> b <sep>` with segment ids."""
    missing = [t for t in WORD_SPECIALS if t not in vocab]
    if missing:
        raise JaxbertError(f"vocabulary lacks the special tokens {missing}; add them to the vocabulary")
    token_to_id = {token: i for i, token in enumerate(vocab)}
    tok = Tokenizer(models.WordLevel(token_to_id, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    cls, sep = ("<cls>", token_to_id["<cls>"]), ("<sep>", token_to_id["<sep>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<cls> $A <sep>", pair="<cls> $A <sep> $B:1 <sep>:1", special_tokens=[cls, sep])
    return tok


def _bert_pipeline(tok: Tokenizer, lowercase: bool, strip_accents: bool | None) -> Tokenizer:
    # strip_accents=None follows `lowercase`, as BERT's uncased tokenizer does.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _bert_post_processor(tok: Tokenizer) -> Tokenizer:
    missing = [t for t in BERT_SPECIALS if tok.token_to_id(t) is None]
    if missing:
        raise JaxbertError(f"WordPiece vocabulary lacks the special tokens {missing}; add them to vocab.txt")
    cls, sep = ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep])
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int, *, lowercase: bool = True,
                    strip_accents: bool | None = None) -> Tokenizer:
    """Learn a WordPiece vocabulary of `vocab_size` entries (specials first: [PAD]=0 ... [MASK]=4)."""
    if vocab_size < len(BERT_SPECIALS) + 1:
        raise JaxbertError(f"--vocab-size {vocab_size} is too small; use at least a few thousand")
    tok = _bert_pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase, strip_accents)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(BERT_SPECIALS),
                                        continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(texts, trainer)  # Rust, all cores
    return _bert_post_processor(tok)


def wordpiece_from_vocab(vocab_path: Path, *, lowercase: bool = True, strip_accents: bool | None = None) -> Tokenizer:
    """A BERT tokenizer over an existing `vocab.txt` (one token per line, the id is the line number)."""
    vocab_path = Path(vocab_path)
    try:
        lines = vocab_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JaxbertError(f"cannot read vocabulary {vocab_path} ({e}); give a UTF-8 vocab.txt") from None
    if not lines:
        raise JaxbertError(f"vocabulary {vocab_path} is empty; give a vocab.txt with one token per line")
    vocab = {token: i for i, token in enumerate(lines)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    return _bert_post_processor(_bert_pipeline(tok, lowercase, strip_accents))


def save_vocab(tok: Tokenizer, path: Path) -> None:
    """`vocab.txt`: the tokens in id order."""
    by_id = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    Path(path).write_text("".join(token + "\n" for token, _ in by_id), encoding="utf-8")


def load_any(path: Path) -> Tokenizer:
    """A `tokenizer.json`, a `vocab.txt`, or a folder holding either (tokenizer.json preferred)."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (path / name).is_file():
                return load_any(path / name)
        raise JaxbertError(f"{path} holds neither tokenizer.json nor vocab.txt; pass a tokenizer file")
    if not path.is_file():
        raise JaxbertError(f"tokenizer {path} does not exist; pass a tokenizer.json or vocab.txt")
    tok = wordpiece_from_vocab(path) if path.suffix == ".txt" else load(path)
    special_ids(tok)  # fails clearly if a special token is missing
    return tok


def fingerprint(tok: Tokenizer) -> str:
    """SHA-256 of the tokenizer's full JSON: equal fingerprints tokenize identically."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


def word_starts(tok: Tokenizer) -> np.ndarray:
    """(V,) bool: True where a token begins a word (WordPiece continuations start with '##')."""
    starts = np.ones(tok.get_vocab_size(), dtype=bool)
    if isinstance(tok.model, models.WordPiece):
        for token, i in tok.get_vocab().items():
            starts[i] = not token.startswith(tok.model.continuing_subword_prefix)
    return starts


def special_ids(tok: Tokenizer) -> SpecialIds:
    """Look the specials up under the word-level names (`<cls>`) or BERT's (`[CLS]`)."""
    ids = {}
    for name in ("pad", "unk", "cls", "sep", "mask"):
        found = [tok.token_to_id(t) for t in (f"<{name}>", f"[{name.upper()}]")]
        found = [i for i in found if i is not None]
        if not found:
            raise JaxbertError(f"tokenizer has no <{name}> or [{name.upper()}] token; add it to the vocabulary")
        ids[name] = found[0]
    return SpecialIds(**ids)


def save(tok: Tokenizer, path: Path) -> None:
    """`tokenizer.json`, locally or in a bucket (the `tokenizers` library writes local files only)."""
    storage.write_atomic(path, tok.to_str(pretty=True))


def load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_str(storage.path(path).read_text())
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise JaxbertError(f"cannot read tokenizer {path} ({e}); is this a jaxbert run directory?") from None
