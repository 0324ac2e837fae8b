"""IMDb's Large Movie Review Dataset (Maas et al. 2011) as users download it: `aclImdb_v1.tar.gz`, read as packed,
or the `aclImdb/` folder it unpacks to (or a folder holding that).

    aclImdb/train/{pos,neg}/ID_RATING.txt   12,500 labelled reviews each: fine-tuning's training set
    aclImdb/test/{pos,neg}/ID_RATING.txt    12,500 each: the reported split, never pretrained on
    aclImdb/train/unsup/ID_0.txt            50,000 unlabelled reviews: pretraining text with train/{pos,neg}

A review is one line of HTML-ish text whose paragraphs are separated by `<br />` tags; they become line breaks.
Reviews are returned in a fixed order (split, then class, then the numeric id), whichever form was given.
"""

import re
import tarfile
from pathlib import Path

from jaxbert.errors import JaxbertError

LABELS = ("neg", "pos")  # a label's id is its index: 1 = positive
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_BREAK = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


def is_imdb(path: Path) -> bool:
    """Whether `path` is the archive, its `aclImdb/` folder or a folder holding that."""
    path = Path(path)
    return (path.is_file() and path.name.endswith((".tar.gz", ".tgz"))) or _folder(path) is not None


def _folder(path: Path) -> Path | None:
    for candidate in (path, path / "aclImdb"):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir() and candidate.name == "aclImdb":
            return candidate
    return None


def clean(text: str) -> str:
    """A review's text with its `<br />` breaks as line breaks."""
    return "\n".join(part.strip() for part in _BREAK.split(text.strip()) if part.strip())


def reviews(path: Path, parts: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], list[str]]:
    """The cleaned reviews of each (split, class) in `parts`, e.g. (("train", "pos"), ("train", "unsup")),
    in id order."""
    path = Path(path)
    found: dict[tuple[str, str], list[tuple[int, str]]] = {part: [] for part in parts}
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    m = _MEMBER.search(member.name)
                    if m and member.isfile() and (m[1], m[2]) in found:
                        raw = archive.extractfile(member).read()
                        found[m[1], m[2]].append((int(m[3]), _decode(raw, f"{path}:{member.name}")))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise JaxbertError(f"{path} is not a readable .tar.gz archive ({e}); give aclImdb_v1.tar.gz or the "
                               "aclImdb/ folder it unpacks to") from None
    else:
        folder = _folder(path)
        if folder is None:
            raise JaxbertError(f"{path} is neither aclImdb_v1.tar.gz nor an aclImdb/ folder (with train/ and test/); "
                               "give the IMDb archive or the folder it unpacks to")
        for split, label in parts:
            for file in (folder / split / label).glob("*.txt"):
                m = _MEMBER.search(file.as_posix())
                if m:
                    found[split, label].append((int(m[3]), _decode(file.read_bytes(), str(file))))
    out = {}
    for part, items in found.items():
        if not items:
            raise JaxbertError(f"{path} holds no aclImdb/{part[0]}/{part[1]}/ reviews; give the complete IMDb "
                               "archive or folder")
        out[part] = [clean(text) for _, text in sorted(items)]
    return out


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JaxbertError(f"{where} is not UTF-8 (byte {e.start}); give the IMDb files as released") from None


def pretraining_text(path: Path) -> list[str]:
    """Every review pretraining may read: the 50,000 unlabelled and the 25,000 training reviews (never the
    test reviews), one per list item, paragraphs on their own lines."""
    parts = reviews(path, (("train", "unsup"), ("train", "neg"), ("train", "pos")))
    return [r for part in parts.values() for r in part]
