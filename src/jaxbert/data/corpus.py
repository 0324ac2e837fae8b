"""Read corpora into paragraphs of sentences; find, download and verify WikiText-2.

WikiText-2 is looked for, in order, in the folder given (`--data DIR`), in `$JAXBERT_DATA`, and in the cache
(`$JAXBERT_CACHE`, default `~/.cache/jaxbert`); only if none has it is `wikitext-2-v1.zip` downloaded once into
the cache, its SHA-1 checked before anything is unpacked.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from jaxbert.errors import JaxbertError

WIKITEXT2_URL = "https://d2l-data.s3-accelerate.amazonaws.com/wikitext-2-v1.zip"
WIKITEXT2_SHA1 = "3c914d17d80b1459be871a5039ac23e752a53cbe"
WIKITEXT2_FILES = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")


def cache_dir() -> Path:
    return Path(os.environ.get("JAXBERT_CACHE") or Path.home() / ".cache" / "jaxbert")


def _wikitext_folder(root: Path) -> Path | None:
    """The folder holding the three split files: `root` itself or its `wikitext-2/` child."""
    for candidate in (root, root / "wikitext-2"):
        if (candidate / WIKITEXT2_FILES[0]).is_file():
            return candidate
    return None


def locate_wikitext2(data: str | Path | None = None, *, url: str = WIKITEXT2_URL,
                     sha1: str = WIKITEXT2_SHA1) -> Path:
    """Return the folder with `wiki.{train,valid,test}.tokens`, downloading it only as a last resort."""
    explicit = data or os.environ.get("JAXBERT_DATA")
    if explicit:
        root = Path(explicit).expanduser()
        if not root.is_dir():
            raise JaxbertError(f"data folder {root} does not exist; pass the folder that holds wiki.train.tokens")
        folder = _wikitext_folder(root)
        if folder is None:
            raise JaxbertError(f"no wiki.train.tokens in {root} or {root / 'wikitext-2'}; pass the folder of the "
                               "unpacked wikitext-2-v1.zip, or leave --data out to download it")
        return folder
    return _wikitext_folder(cache_dir()) or download_wikitext2(cache_dir(), url=url, sha1=sha1)


def download_wikitext2(dest: Path, *, url: str = WIKITEXT2_URL, sha1: str = WIKITEXT2_SHA1) -> Path:
    """Download the archive, verify its SHA-1, unpack into `dest/wikitext-2`; leave nothing behind on failure."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "wikitext-2-v1.zip"
        try:
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as e:
            raise JaxbertError(f"cannot download WikiText-2 from {url} ({e}); "
                               "download wikitext-2-v1.zip yourself, unzip it and pass --data DIR") from None
        digest = hashlib.sha1(archive.read_bytes()).hexdigest()
        if digest != sha1:
            raise JaxbertError(f"downloaded {url} has SHA-1 {digest}, expected {sha1}; the file is corrupt or "
                               "not WikiText-2 v1: try again, or pass --data DIR with the unpacked archive")
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise JaxbertError(f"downloaded {url} is not a valid zip archive ({e})") from None
        unpacked = _wikitext_folder(Path(tmp))
        if unpacked is None:
            raise JaxbertError(f"archive from {url} holds no wikitext-2/wiki.train.tokens")
        target = dest / "wikitext-2"
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)  # same file system: the folder appears whole or not at all
    return target


def read_wiki_paragraphs(path: Path) -> list[list[str]]:
    """The book's `_read_wiki`: lower-cased lines with at least two sentences, split on ' . '.

    As in the book, the test runs on the raw line, so a single sentence ending in " . " passes it: such a
    paragraph yields no pair of its own but can supply random second sentences.

    Paragraph order is kept; shuffling is the example generator's job (it owns the random state).
    """
    path = Path(path)
    if not path.is_file():
        raise JaxbertError(f"corpus file {path} does not exist; check --data")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise JaxbertError(f"{path} is not UTF-8 text (byte {e.start}); give a UTF-8 WikiText file") from None
    if not any(line.strip() for line in lines):
        raise JaxbertError(f"corpus file {path} is empty; give a WikiText file with text in it")
    # `" . " in line` is the book's len(line.split(" . ")) >= 2, without splitting every line twice.
    return [line.strip().lower().split(" . ") for line in lines if " . " in line]


# --- Any corpus: documents of sentences, streamed file by file -------------------------------------------

FORMATS = ("auto", "wikitext", "text", "jsonl", "imdb")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by white space.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def expand(patterns: list[str]) -> list[Path]:
    """Files matching each pattern (a path or a glob), in order; a pattern that matches nothing is an error."""
    from jaxbert.data import imdb

    files = []
    for pattern in patterns:
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if m.is_file() or imdb.is_imdb(m)]  # IMDb's aclImdb/ folder is one corpus
        if not matches:
            raise JaxbertError(f"--corpus {pattern!r} matches no file; check the path or the glob")
        files += matches
    return files


def split_sentences(text: str) -> list[str]:
    """A simple rule-based splitter: break after . ! ? followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _lines(path: Path):
    """(line without newline, byte offset) of a UTF-8 file, streamed; invalid UTF-8 names file and offset."""
    offset, any_text = 0, False
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JaxbertError(f"{path} is not valid UTF-8 at byte {offset + e.start}; "
                                   "convert it to UTF-8 (e.g. iconv) and run again") from None
            any_text = any_text or bool(line.strip())
            yield line.rstrip("\r\n"), offset
            offset += len(raw)
    if not any_text:
        raise JaxbertError(f"corpus file {path} is empty; remove it from --corpus or give it text")


def _format_of(path: Path, fmt: str) -> str:
    from jaxbert.data import imdb

    if fmt != "auto":
        return fmt
    if imdb.is_imdb(path):
        return "imdb"
    return {".tokens": "wikitext", ".jsonl": "jsonl", ".json": "jsonl"}.get(path.suffix, "text")


_WIKITEXT_JOINS = re.compile(r" @([-,.])@ ")
_UNK = re.compile(r"(?:^|(?<= ))<unk>(?: |$)")


def unmark_wikitext(line: str) -> str:
    """A WikiText line as text: `1 @,@ 000` -> `1,000`, `well @-@ known` -> `well-known`, and its `<unk>`
    placeholders (words outside WikiText's vocabulary) left out. They are about 8% of WordPiece pieces, easy
    targets that inflate MLM accuracy and spend the budget; the book's word-level lane (`read_wiki_paragraphs`)
    keeps them, as the book does."""
    return _UNK.sub("", _WIKITEXT_JOINS.sub(r"\1", line)).strip()


def iter_documents(path: Path, fmt: str = "auto", *, text_field: str = "text", split: bool = False):
    """Yield the documents of one file, each a list of sentence strings (empty documents are skipped).

    wikitext: an article per top-level heading (` = Title = `), sentences split on ' . ' as the book does,
    its markers undone (`unmark_wikitext`);
    text: documents separated by blank lines, one sentence per line (or split into sentences if `split`);
    jsonl: one JSON object per line, the document in `text_field`, split into sentences;
    imdb: IMDb's archive or aclImdb/ folder, a document per unlabelled or training review (never a test
    review), split into sentences (imdb.py).
    """
    fmt = _format_of(Path(path), fmt)
    if fmt == "imdb":
        from jaxbert.data import imdb

        for review in imdb.pretraining_text(path):
            doc = [s for para in review.split("\n") for s in split_sentences(para)]
            if doc:
                yield doc
        return
    if fmt == "jsonl":
        for line, offset in _lines(path):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_field]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise JaxbertError(f"{path}, byte {offset}: not a JSON object with a {text_field!r} field ({e}); "
                                   "fix the line or pass --text-field") from None
            doc = [s for para in str(text).split("\n") for s in split_sentences(para)]
            if doc:
                yield doc
        return
    doc: list[str] = []
    for line, _ in _lines(path):
        stripped = line.strip()
        if fmt == "wikitext":
            if stripped.startswith("= ") and stripped.endswith(" =") and not stripped.startswith("= ="):
                if doc:
                    yield doc
                doc = []
            elif stripped and not stripped.startswith("="):
                text = unmark_wikitext(stripped)
                parts = text.split(" . ") if text else []  # the book's sentence split; keep each sentence's period
                doc += [s for s in (p.strip() + " ." for p in parts[:-1]) if s != "."] + parts[-1:]
        elif not stripped:
            if doc:
                yield doc
            doc = []
        else:
            doc += split_sentences(stripped) if split else [stripped]
    if doc:
        yield doc
