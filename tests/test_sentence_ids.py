"""Tokenizing each distinct word once gives exactly the ids of tokenizing the sentences."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from jaxbert.data import sentence_ids, tokenization

from conftest import DATA_ROOT

TRICKY = [
    "Hello, World! It's a  double  space and a trailing one ",
    "",
    "   ",
    "Café CAFÉ café naïve Ångström İstanbul ΟΔΟΣ",
    "中文字符 mixed with 日本語 and 한국어",
    "tab\tinside, nbsp\u00a0inside, ideographic\u3000space, zero\u200bwidth",
    "control\x00chars\x07here and a lone \x1f unit separator",
    "emoji 🤗🚀 and symbols © ™ ½ — “quotes”",
    "a" * 150 + " very-long-word " + "x" * 101,
    "@-@ @,@ @.@ = = Heading = = <unk>",
]


def wikitext_lines(n):
    lines = (DATA_ROOT / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines[:n]]


def reference(tok, sentences, dtype):
    encodings = tok.encode_batch_fast(sentences, add_special_tokens=False)
    return (np.array([i for e in encodings for i in e.ids], dtype),
            np.array([len(e.ids) for e in encodings], np.int64))


def tokenizers_to_check():
    uncased = tokenization.wordpiece_from_vocab(DATA_ROOT / "bert-base-uncased" / "vocab.txt")
    text = wikitext_lines(3000) + TRICKY
    cased = tokenization.train_wordpiece(text, 2000, lowercase=False)
    words = tokenization.word_tokenizer(tokenization.build_word_vocab((s.lower().split() for s in text), 3))
    return {"bert-base-uncased": uncased, "trained cased WordPiece": cased, "word level": words}


@pytest.fixture(scope="module")
def toks():
    return tokenizers_to_check()


@pytest.mark.parametrize("name", ["bert-base-uncased", "trained cased WordPiece", "word level"])
def test_distinct_words_give_the_sentences_ids(toks, name):
    tok = toks[name]
    assert sentence_ids.splits_at_spaces(tok)
    sentences = wikitext_lines(6000) + TRICKY
    dtype = np.uint16 if tok.get_vocab_size() <= 2 ** 16 else np.uint32
    ids, lengths = sentence_ids.encode(tok, sentences, dtype)
    want_ids, want_lengths = reference(tok, sentences, dtype)
    assert ids.dtype == dtype
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_array_equal(ids, want_ids)
    assert len(ids) > 100_000


def test_other_tokenizers_and_newlines_take_the_sentence_route(toks):
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert not sentence_ids.splits_at_spaces(byte_level)  # spaces belong to its tokens
    tok = toks["bert-base-uncased"]
    sentences = ["one line\nand another", "plain"]
    ids, lengths = sentence_ids.encode(tok, sentences, np.uint16)
    want_ids, want_lengths = reference(tok, sentences, np.uint16)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(lengths, want_lengths)


def test_many_distinct_words_grow_the_table(toks):
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzéß"))
    sentences = [" ".join("".join(rng.choice(letters, rng.integers(1, 12))) for _ in range(rng.integers(0, 20)))
                 for _ in range(8000)]
    tok = toks["bert-base-uncased"]
    ids, lengths = sentence_ids.encode(tok, sentences, np.uint16)
    want_ids, want_lengths = reference(tok, sentences, np.uint16)
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_array_equal(ids, want_ids)
