"""What a run directory holds, and the rules for starting, resuming or overwriting one.

    RUN_DIR/config.json      the full Config
    RUN_DIR/tokenizer.json   the tokenizer (Hugging Face `tokenizers` format)
    RUN_DIR/data.json        where the training data was read and its fingerprint (`data.fingerprint`)
    RUN_DIR/checkpoints/     orbax checkpoints, one folder per saved step
    RUN_DIR/metrics.jsonl    one JSON object per logged step (train) or evaluation (eval)
    RUN_DIR/loss.png         the MLM and NSP loss curves
    RUN_DIR/tensorboard/     the same scalars as TensorBoard event files (`tensorboard --logdir RUN_DIR`)
"""

import json
import os
from pathlib import Path

from jaxbert import storage
from jaxbert.errors import JaxbertError
from jaxbert.storage import write_atomic  # noqa: F401  (config and report write through rundir's rules)

CONFIG, TOKENIZER, DATA, CHECKPOINTS, METRICS, PLOT = "config.json", "tokenizer.json", "data.json", "checkpoints", \
    "metrics.jsonl", "loss.png"
TENSORBOARD = "tensorboard"
FINETUNED = "finetune.json"  # what `jaxbert finetune` writes: a fine-tuned model, not a pretraining run
RUN_FILES = (CONFIG, TOKENIZER, DATA, CHECKPOINTS, METRICS, PLOT, TENSORBOARD)


def latest_step(run_dir: Path) -> int | None:
    """The newest complete checkpoint step, or None. Orbax finishes a step locally by renaming it from a
    temporary name, on a bucket by writing a commit marker into it; its own listing knows both."""
    from orbax.checkpoint.path import step as steps  # orbax loads jax: only where a checkpoint is wanted

    return max(steps.checkpoint_steps(storage.path(run_dir) / CHECKPOINTS), default=None)


def claim(run_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Make `run_dir` ready and hold its lock (`release` lets go); True if an existing run is to be resumed.
    Refuses to clobber anything, and refuses a directory another process is writing."""
    run_dir = storage.path(run_dir)
    if resume and overwrite:
        raise JaxbertError("--resume and --overwrite contradict each other; pass one")
    if not run_dir.exists():
        if resume:
            raise JaxbertError(f"--resume: {run_dir} does not exist; drop --resume to start a new run")
        run_dir.mkdir(parents=True)
        lock(run_dir)
        return False
    if not run_dir.is_dir():
        raise JaxbertError(f"{run_dir} is a file, not a directory; choose another --out")
    lock(run_dir)
    try:
        return _check(run_dir, resume=resume, overwrite=overwrite)
    except BaseException:
        release(run_dir)
        raise


def _check(run_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    contents = list(run_dir.iterdir())
    is_run = (run_dir / CONFIG).is_file()
    if contents and not is_run:
        raise JaxbertError(f"{run_dir} is not empty and holds no jaxbert run; choose a new or empty --out")
    if resume:
        if not is_run:
            raise JaxbertError(f"--resume: {run_dir} holds no run to resume; drop --resume to start one")
        if latest_step(run_dir) is None:
            raise JaxbertError(f"--resume: {run_dir} was interrupted before its first checkpoint; "
                               "start it again with --overwrite")
        return True
    if is_run:
        if not overwrite:
            raise JaxbertError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                               "replace it, or choose another --out")
        for name in RUN_FILES:
            storage.remove(run_dir / name)
    return False


_LOCKS: dict[str, int] = {}  # run directory -> the open descriptor whose flock this process holds


def lock(run_dir: Path) -> None:
    """An exclusive flock on the directory itself (no file is added to it), held until `release` or the
    process ends: a second process writing the same run (two `--resume`s, say) is refused at once. A bucket
    has no locks: there, keeping to one writer is the user's part (docs/scaling.md)."""
    import fcntl

    run_dir = storage.path(run_dir)
    if storage.is_remote(run_dir):
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JaxbertError(f"another process is writing {run_dir}; wait for it to finish (or stop it), or choose "
                           "another --out") from None
    _LOCKS[os.fspath(run_dir)] = fd


def release(run_dir: Path) -> None:
    fd = _LOCKS.pop(os.fspath(storage.path(run_dir)), None)
    if fd is not None:
        os.close(fd)


def refuse_empty(run_dir: Path) -> None:
    """An empty directory is what a run killed before its first file leaves (or a fresh one): say so."""
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        raise JaxbertError(f"{run_dir} is empty: nothing was written there (a run stopped before its first file "
                           "leaves this); pass a finished run's directory, or run jaxbert into this one")


def require_run(run_dir: Path) -> Path:
    """For readers of a finished run (encode, export): a clear error if `run_dir` is not one."""
    run_dir = storage.path(run_dir)
    refuse_empty(run_dir)
    if not (run_dir / CONFIG).is_file() or not (run_dir / TOKENIZER).is_file():
        raise JaxbertError(f"{run_dir} is not a jaxbert run directory (no {CONFIG} and {TOKENIZER}); "
                           "pass the --out of a `jaxbert pretrain` run")
    if (run_dir / FINETUNED).is_file():
        try:
            source = json.loads((run_dir / FINETUNED).read_text()).get("init")
        except (OSError, ValueError, AttributeError):
            source = None
        hint = f"pass the run it was fine-tuned from ({source})" if source else "pass a `jaxbert pretrain` run"
        raise JaxbertError(f"{run_dir} is a fine-tuned model ({FINETUNED}), not a pretraining run; {hint}, or use "
                           f"`jaxbert predict` / `jaxbert export` on it")
    if latest_step(run_dir) is None:
        raise JaxbertError(f"{run_dir} has no checkpoint yet; let `jaxbert pretrain` reach its first one")
    return run_dir


def record_data(run_dir: Path, source: str, fingerprint: str) -> None:
    write_atomic(storage.path(run_dir) / DATA, json.dumps({"source": str(source), "fingerprint": fingerprint}, indent=2) + "\n")


def recorded_data(run_dir: Path) -> dict | None:
    """`{"source", "fingerprint"}` of the run's training data; None for a run that has not trained yet (an
    imported checkpoint) or one made before runs recorded it."""
    path = storage.path(run_dir) / DATA
    return json.loads(path.read_text()) if path.is_file() else None
