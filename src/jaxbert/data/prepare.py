"""`jaxbert prepare`: corpus files to tokenized arrays on disk that training memory-maps.

    jaxbert prepare --corpus 'data/*.txt' --tokenizer vocab.txt --out prepared/ [--eval-corpus held.txt]

    PREP_DIR/manifest.json                tokenizer fingerprint, sources, options, counts, seed
    PREP_DIR/tokenizer.json
    PREP_DIR/{train,eval}/tokens.bin      every token id, document after document (uint16, or uint32 if V > 65536)
    PREP_DIR/{train,eval}/sentence_lengths.bin     (S,) uint32
    PREP_DIR/{train,eval}/document_sentences.bin   (D,) uint32

Documents stream through in chunks, so memory stays flat whatever the corpus size; each chunk is tokenized
by `sentence_ids.encode` (each distinct word once, on all cores). Everything is written into a temporary
folder beside the target and renamed at the end: an interrupted prepare leaves nothing that looks complete.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from jaxbert.data import corpus, hashing, sentence_ids, tokenization
from jaxbert.errors import JaxbertError

MANIFEST = "manifest.json"
FORMAT = "jaxbert-prepared/1"
SPLITS = ("train", "eval")


class _SplitWriter:
    """Appends one split's three arrays to their files."""

    def __init__(self, folder: Path, dtype):
        folder.mkdir(parents=True)
        self.dtype = dtype
        self.files = {name: open(folder / f"{name}.bin", "wb")
                      for name in ("tokens", "sentence_lengths", "document_sentences")}
        self.counts = {"documents": 0, "sentences": 0, "tokens": 0, "single_sentence_documents": 0}

    def write(self, ids: np.ndarray, lengths: np.ndarray, doc_sizes: list[int]) -> None:
        """Append sentences (their ids one after another, tokens per sentence) of documents of `doc_sizes`
        sentences."""
        lengths = lengths.astype(np.uint32)
        # Sentences that tokenize to nothing are dropped, and documents left empty with them.
        doc_of = np.repeat(np.arange(len(doc_sizes)), doc_sizes)
        kept = np.bincount(doc_of[lengths > 0], minlength=len(doc_sizes)).astype(np.uint32)
        kept = kept[kept > 0]
        self.files["tokens"].write(ids.tobytes())
        self.files["sentence_lengths"].write(lengths[lengths > 0].tobytes())
        self.files["document_sentences"].write(kept.tobytes())
        self.counts["documents"] += len(kept)
        self.counts["sentences"] += int((lengths > 0).sum())
        self.counts["tokens"] += len(ids)
        self.counts["single_sentence_documents"] += int((kept == 1).sum())

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        return self.counts


def prepare(files: list[Path], out: Path, tok: Tokenizer, *, fmt: str = "auto", eval_files: list[Path] = (),
            eval_fraction: float = 0.01, text_field: str = "text", split_sentences: bool = False, seed: int = 0,
            chunk_sentences: int = 100_000, overwrite: bool = False) -> dict:
    """Tokenize `files` into `out`; held-out documents come from `eval_files`, or else a hashed
    `eval_fraction` of the documents. Returns the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (overwrite and is_prepared(out)):
        hint = " or pass --overwrite to replace the prepared data there" if is_prepared(out) else ""
        raise JaxbertError(f"{out} is not empty; choose a new --out{hint}")
    if not 0.0 <= eval_fraction < 1.0:
        raise JaxbertError(f"--eval-fraction {eval_fraction} must lie in [0, 1)")
    tokenization.special_ids(tok)  # a tokenizer without its special tokens cannot make examples
    dtype = np.uint16 if tok.get_vocab_size() <= 2 ** 16 else np.uint32
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        writers = {s: _SplitWriter(tmp / s, dtype) for s in SPLITS}
        empty_docs = _stream(files, writers, tok, fmt=fmt, text_field=text_field, split=split_sentences,
                             chunk=chunk_sentences, route=lambda i: "eval" if not eval_files and
                             hashing.hash_uniform(seed, i) < eval_fraction else "train")
        if eval_files:
            _stream(eval_files, {"train": writers["eval"]}, tok, fmt=fmt, text_field=text_field,
                    split=split_sentences, chunk=chunk_sentences, route=lambda i: "train")
        counts = {s: w.close() for s, w in writers.items()}
        if counts["train"]["sentences"] == 0:
            raise JaxbertError(f"{', '.join(map(str, files))} hold no sentences after tokenization; "
                               "check --format and the files")
        manifest = {
            "format": FORMAT, "tokenizer_fingerprint": tokenization.fingerprint(tok),
            "vocab_size": tok.get_vocab_size(), "token_dtype": np.dtype(dtype).name,
            "sources": [str(f) for f in files], "eval_sources": [str(f) for f in eval_files],
            "options": {"format": fmt, "text_field": text_field, "split_sentences": split_sentences,
                        "eval_fraction": 0.0 if eval_files else eval_fraction, "seed": seed},
            "counts": counts, "empty_documents_skipped": empty_docs,
        }
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _stream(files, writers, tok, *, fmt, text_field, split, chunk, route) -> int:
    """Tokenize documents chunk by chunk into the writer that `route(document index)` names."""
    pending = {s: ([], []) for s in writers}  # split -> (sentences, sentences per document)
    empty, index = 0, 0
    bar = tqdm(unit=" documents", dynamic_ncols=True, desc="tokenizing", disable=None)  # on a terminal only

    def flush(split_name):
        sentences, sizes = pending[split_name]
        if sentences:
            writers[split_name].write(*sentence_ids.encode(tok, sentences, writers[split_name].dtype), sizes)
        pending[split_name] = ([], [])

    for n, path in enumerate(files, 1):
        bar.set_postfix_str(f"file {n} of {len(files)}: {Path(path).name}")
        for doc in corpus.iter_documents(path, fmt, text_field=text_field, split=split):
            if not doc:
                empty += 1
                continue
            target = route(index)
            index += 1
            bar.update()
            pending[target][0].extend(doc)
            pending[target][1].append(len(doc))
            if len(pending[target][0]) >= chunk:
                flush(target)
    for s in writers:
        flush(s)
    bar.close()
    return empty


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise JaxbertError(f"cannot read {path} ({e}); run `jaxbert prepare` again") from None
    if manifest.get("format") != FORMAT:
        raise JaxbertError(f"{path} is format {manifest.get('format')!r}, expected {FORMAT!r}; prepare again")
    return manifest


def is_prepared(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def open_split(folder: Path, split: str, manifest: dict):
    """(tokens, sentence_lengths, document_sentences) of a split, memory-mapped (read-only)."""
    base = Path(folder) / split
    counts = manifest["counts"][split]
    if counts["tokens"] == 0:
        return None
    return (np.memmap(base / "tokens.bin", dtype=manifest["token_dtype"], mode="r", shape=(counts["tokens"],)),
            np.fromfile(base / "sentence_lengths.bin", dtype=np.uint32).astype(np.int64),
            np.fromfile(base / "document_sentences.bin", dtype=np.uint32).astype(np.int64))
