"""The compiled WikiText pass gives exactly the book's paragraphs, sentences and words (the string route)."""

import numpy as np
import pytest

from jaxbert.data import corpus, wikitext
from jaxbert.errors import JaxbertError

from conftest import DATA_ROOT


def reference(path):
    return wikitext._from_paragraphs(corpus.read_wiki_paragraphs(path))


def assert_same(got: wikitext.Words, want: wikitext.Words):
    assert [got.types[i] for i in got.word_types] == [want.types[i] for i in want.word_types]
    np.testing.assert_array_equal(got.sentence_lengths, want.sentence_lengths)
    np.testing.assert_array_equal(got.paragraph_lengths, want.paragraph_lengths)
    assert got.word_counts() == want.word_counts()
    assert got.word_types.dtype == want.word_types.dtype == np.int32


@pytest.mark.parametrize("name", ["wiki.train.tokens", "wiki.valid.tokens"])
def test_wikitext2_equals_the_string_route(name):
    path = DATA_ROOT / "wikitext-2" / name
    raw = path.read_bytes()
    got = wikitext.read_words(path)
    assert not any(c in raw for c in wikitext._OTHER_SPACE)  # so the compiled pass, not the fallback, ran...
    assert wikitext._from_scans(np.frombuffer(raw, np.uint8), [(0, wikitext._scan(np.frombuffer(raw, np.uint8)))])
    assert_same(got, reference(path))  # ...and agrees with the strings
    assert len(got.word_types) > 100_000


EDGE_CASES = [
    # separators: overlapping runs, at the stripped line's ends, several spaces, empty sentences
    " a . . b . . . c . . . . d \n",
    " . starts with a separator . x \n",
    "ends with one . \n no separator here\n",
    " two  spaces .  . and  more   . x\n",
    " .  . \n . \n",
    # case: ASCII, accented letters spelled two ways, a sign that lowers to ASCII (Kelvin), final sigma
    " The THE the . Éclair éCLAIR ÉCLAIR . \u212a k K . ΟΔΟΣ οδος\n",
    # words longer than nine bytes, and ones that share a prefix
    " internationalization internationalisation internationalization . abcdefghij abcdefghik\n",
    # no final newline
    " last . line",
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_equal_the_string_route(tmp_path, text):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" = Heading = \n" + text, encoding="utf-8")
    raw = path.read_bytes()
    buf = np.frombuffer(raw if raw.endswith(b"\n") else raw + b"\n", np.uint8)
    assert wikitext._from_scans(buf, [(0, wikitext._scan(buf))]) is not None  # the compiled pass takes it
    assert_same(wikitext.read_words(path), reference(path))


@pytest.mark.parametrize("text", [" a\tb . c \n", " a . b\r\n c . d\r\n", " a\u00a0b . c \n", " \u2003 . x y \n"])
def test_other_white_space_takes_the_string_route(tmp_path, text):
    """Tabs, carriage returns and Unicode spaces split words for str.split(); the result is still the book's."""
    path = tmp_path / "wiki.train.tokens"
    path.write_bytes(text.encode())
    assert_same(wikitext.read_words(path), reference(path))


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_pieces_and_a_growing_table_give_the_same_words(tmp_path, monkeypatch, threads):
    """Many distinct words (so the hash table doubles), split into 1-4 pieces scanned apart and merged."""
    rng = np.random.default_rng(threads)
    vocab = np.array(["".join(rng.choice(list("abcdeéÉxyzQ"), rng.integers(1, 14))) for _ in range(60_000)])
    lines = []
    for _ in range(10_000):
        sentences = [" ".join(rng.choice(vocab, rng.integers(1, 12))) for _ in range(rng.integers(1, 5))]
        lines.append(" " + " . ".join(sentences) + " \n")
    path = tmp_path / "wiki.train.tokens"
    path.write_text("".join(lines), encoding="utf-8")
    monkeypatch.setattr(wikitext, "_THREADS", threads)
    got = wikitext.read_words(path)
    assert len(set(got.types)) > 1 << 15  # more than half of the first table's 2**16 slots
    assert_same(got, reference(path))


@pytest.mark.parametrize("read", [wikitext.read_words, corpus.read_wiki_paragraphs])
def test_bad_files_give_one_clear_error(tmp_path, read):
    path = tmp_path / "wiki.train.tokens"
    with pytest.raises(JaxbertError, match="does not exist"):
        read(path)
    path.write_text("\n \n")
    with pytest.raises(JaxbertError, match="is empty"):
        read(path)
    path.write_bytes(b"ok . ok \xff\xfe . x\n")
    with pytest.raises(JaxbertError, match="not UTF-8 text \\(byte 8\\)"):
        read(path)
