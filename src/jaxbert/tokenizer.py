"""Tokenizers as Hugging Face `tokenizers.Tokenizer` objects, saved as `tokenizer.json` in every run.

The word-level tokenizer has the book's semantics (d2l 1.0 `Vocab`): whitespace-split lower-cased words,
the vocabulary is `<unk>`, the reserved tokens and every word seen at least `min_freq` times, sorted.
"""

import collections
import dataclasses
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from jaxbert.errors import JaxbertError

WORD_SPECIALS = ("<unk>", "<pad>", "<mask>", "<cls>", "<sep>")


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the five special tokens, whatever a tokenizer calls them."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


def build_word_vocab(sentences: list[list[str]], min_freq: int) -> list[str]:
    """d2l's `Vocab(sentences, min_freq, reserved_tokens=['<pad>', '<mask>', '<cls>', '<sep>'])` order."""
    counts = collections.Counter(token for sentence in sentences for token in sentence)
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


def load(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise JaxbertError(f"cannot read tokenizer {path} ({e}); is this a jaxbert run directory?") from None
