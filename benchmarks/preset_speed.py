"""Training speed of every preset: `jaxbert pretrain --dry-run` in a fresh process per preset, each step's time the
median of the few steps it times on real data (WikiText-2: the book's words for d2l-*, bert-base-uncased's
WordPiece for bert-*, prepared once here).

    python benchmarks/preset_speed.py --data ../shared/data/wikitext-2 --vocab ../shared/data/bert-base-uncased

The presets up to bert-mini train at their own batch; bert-small and bert-medium at 32 pairs, bert-base and
bert-large at 8 (their own 256 would take minutes a step on a laptop CPU); the table says which.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import harness

BATCH = {"bert-small": 32, "bert-medium": 32, "bert-base": 8, "bert-large": 8}  # else the preset's own


def dry_run(preset: str, data: Path, batch: int | None) -> tuple[float, float, str]:
    """(seconds per step, examples per second, parameters) printed by one fresh `pretrain --dry-run`."""
    args = ["-m", "jaxbert.cli", "pretrain", "--preset", preset, "--data", str(data), "--dry-run",
            "--set", "train.eval_batches=1"] + (["--set", f"train.batch_size={batch}"] if batch else [])
    out = harness.fresh(args)
    if out is None:
        sys.exit(f"{preset}: the dry run failed")
    step = re.search(r"one step: ([\d.]+) s, ([\d,]+) examples/s", out["stdout"])
    params = re.search(r"parameters: ([\d,]+)", out["stdout"])[1]
    return float(step[1]), float(step[2].replace(",", "")), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the WikiText-2 folder")
    parser.add_argument("--vocab", type=Path, required=True, help="bert-base-uncased's folder (vocab.txt)")
    parser.add_argument("--presets", nargs="+", default=["d2l-tiny", "d2l-tiny-fast", "bert-tiny-cpu", "bert-tiny",
                                                         "bert-mini", "bert-small", "bert-medium", "bert-base",
                                                         "bert-large"])
    args = parser.parse_args()
    print(harness.machine())
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "wikitext-wordpiece"
        if any(p.startswith("bert-") for p in args.presets):
            subprocess.run([sys.executable, "-m", "jaxbert.cli", "prepare", "--corpus",
                            str(args.data / "wiki.train.tokens"), "--tokenizer", str(args.vocab), "--out",
                            str(prepared)], check=True, stdout=subprocess.DEVNULL)
        harness.table("preset", "parameters", "batch", "s per step", "pairs/s")
        for preset in args.presets:
            batch = BATCH.get(preset)
            step_s, rate, params = dry_run(preset, prepared if preset.startswith("bert-") else args.data, batch)
            harness.row(preset, params, batch or "preset's", f"{step_s:.3f}", f"{rate:,.0f}")


if __name__ == "__main__":
    main()
