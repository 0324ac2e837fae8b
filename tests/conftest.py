"""Shared fixtures: the real data folder, a slice of WikiText-2, a small WikiText-format corpus, tiny configs."""

import math
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Many tests compile the same tiny programs (in this process and in the CLI subprocesses, which inherit the
# environment): XLA's persistent cache compiles each once per suite, which saves about a third of the run on
# 2 cores. Keyed by the program, JAX version and flags, so a stale entry is never used; `make clean` removes it.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# On a GPU, this process and the CLI subprocesses share the device: none may take JAX's default 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The parity tests hold jaxbert to float32 references (transformers, the written-out forms): GPUs would otherwise
# run float32 matmuls as TF32 and TPUs as bf16 passes, which their tolerances do not allow. A no-op on CPUs.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# A config small enough to train in seconds on 2 CPU cores (the d2l-tiny architecture, shrunk).
TINY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_attention_heads=2",
        "data.max_len=32", "data.min_freq=2", "train.batch_size=16", "train.log_every=2", "train.eval_every=4",
        "train.eval_batches=1", "train.checkpoint_every=4", "optim.learning_rate=3e-3"]


# `$JAXBERT_DATA` if set (CI points it at ../shared/data), else the shared folder beside the repo; read at
# import, before the fixture below clears the variable for each test.
DATA_ROOT = Path(os.environ.get("JAXBERT_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    folder = DATA_ROOT / "wikitext-2" if (DATA_ROOT / "wikitext-2").is_dir() else DATA_ROOT
    if not (folder / "wiki.train.tokens").is_file():
        pytest.fail(f"WikiText-2 not found in {folder}; set JAXBERT_DATA to the shared data folder")
    return folder


@pytest.fixture(scope="session")
def wikitext_slice(wikitext_dir, tmp_path_factory) -> Path:
    """The first 3,000 lines of the real training split and 600 of the validation split."""
    out = tmp_path_factory.mktemp("wikitext-slice")
    for name, lines in (("wiki.train.tokens", 3000), ("wiki.valid.tokens", 600)):
        with open(wikitext_dir / name, encoding="utf-8") as f:
            head = [next(f) for _ in range(lines)]
        (out / name).write_text("".join(head), encoding="utf-8")
    return out


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch, tmp_path):
    """Tests pass data folders explicitly; nothing may fall back to a real download or the user's cache."""
    monkeypatch.delenv("JAXBERT_DATA", raising=False)
    monkeypatch.setenv("JAXBERT_CACHE", str(tmp_path / "cache"))


def plausible_summary(line: str, vocab_size: int) -> dict:
    """The losses of a summary line `MLM loss X[, NSP|SOP loss Y]`, asserted finite and near chance or below:
    MLM under ln V + 1 (a random model's cross-entropy is about ln V), the pair task under ln 2 + 0.3."""
    m = re.fullmatch(r"MLM loss (\S+)(?:, (NSP|SOP) loss (\S+))?", line)
    assert m, line
    losses = {"mlm": float(m[1])} | ({m[2].lower(): float(m[3])} if m[2] else {})  # 'nan' parses, fails below
    assert 0 < losses["mlm"] < math.log(vocab_size) + 1, (line, vocab_size)
    assert all(0 < v < math.log(2) + 0.3 for k, v in losses.items() if k != "mlm"), line
    return losses


@pytest.fixture(scope="session")
def tiny_run(wikitext_slice, tmp_path_factory) -> Path:
    """A TINY run of 2 steps, shared read-only by the fine-tuning tests (a starting point, not a good model)."""
    from jaxbert import config
    from jaxbert.training import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    train.run(config.override(config.preset("d2l-tiny"), TINY + ["train.steps=2"]), out, data_dir=wikitext_slice)
    return out
