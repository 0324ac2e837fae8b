"""Where a run lives: a local folder or a Google Cloud Storage bucket (`gs://`), behind one path type (etils.epath).

A pretraining run directory may be a bucket path, so that every host of a pod reads and writes the same run:

    jaxbert pretrain --preset bert-base --data corpus/ --out gs://my-bucket/runs/base

Local paths are made absolute here, once, so that a run's files do not depend on the working directory of
whichever process opens them. Bucket objects are written whole (an upload is all or nothing), local files
through a temporary name and `os.replace`, so a killed process never leaves half a file behind.
"""

import importlib.util
import os
from pathlib import Path

REMOTE = ("gs://",)  # what has been tested (against a GCS emulator); epath speaks s3:// too, untested here


def path(p: "str | os.PathLike") -> "epath.Path":  # noqa: F821
    """A run path, local (made absolute) or remote; the `type=` of every run-directory argument."""
    from etils import epath  # 70 ms of imports: paid where a run is opened, not by `jaxbert --help`

    text = os.fspath(p)
    if text.startswith(REMOTE):
        if importlib.util.find_spec("gcsfs") is None:
            raise ValueError(f"{text}: a gs:// run directory needs gcsfs; pip install 'jaxbert[gcs]'")
        return epath.Path(text)
    if "://" in text:
        raise ValueError(f"{text}: only local paths and {', '.join(REMOTE)} buckets are supported")
    return epath.Path(Path(text).absolute())


def is_remote(p: "str | os.PathLike") -> bool:
    return os.fspath(p).startswith(REMOTE)


def write_atomic(p: "str | os.PathLike", data: str | bytes) -> None:
    """Replace `p` with `data` all at once: a process killed meanwhile leaves the old file or the new one,
    never half of one (the files a resumed run reads are rewritten while it runs)."""
    p = path(p)
    if is_remote(p):  # an object upload is atomic already, and buckets have no rename
        p.write_bytes(data) if isinstance(data, bytes) else p.write_text(data)
        return
    tmp = Path(p).with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(p))


def remove(p: "str | os.PathLike") -> None:
    """Delete a file or a folder with everything in it; nothing if it is not there."""
    p = path(p)
    if p.is_dir():
        p.rmtree()
    elif p.exists():
        p.unlink()
