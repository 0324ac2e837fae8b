"""How long GLUE-lite's examples are in tokens, for a run's tokenizer: what `glue.SETTINGS`' windows are cut to.

    python benchmarks/glue_lengths.py --data ../shared/data/glue --tokenizer RUN_DIR/tokenizer.json [...]

Per task and split: token counts with the specials (p50/p90/p99), the share that fits the task's GLUE-lite
max_len whole, and the share of tokens that are the unknown token. Tokenizer only: it takes seconds.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jaxbert import glue, tasks, tokenization  # noqa: E402
from machine import cpu_line  # noqa: E402


def lengths(tok, data: tasks.TextPairs) -> tuple[np.ndarray, float]:
    """(tokens per example with the specials, share of all tokens that are unknown)."""
    inputs = list(zip(data.text_a, data.text_b)) if data.text_b is not None else data.text_a
    encs = tok.encode_batch(inputs)
    unk = tok.token_to_id("[UNK]") if tok.token_to_id("[UNK]") is not None else tok.token_to_id("<unk>")
    n = np.array([len(e.ids) for e in encs])
    unknown = sum(e.ids.count(unk) for e in encs)
    return n, unknown / n.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding SST-2/, MRPC/, RTE/, CoLA/")
    parser.add_argument("--tokenizer", type=Path, nargs="+", required=True, help="tokenizer.json or vocab.txt")
    args = parser.parse_args()
    print(cpu_line())
    print("| tokenizer | task | split | p50 | p90 | p99 | fits max_len | unknown tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.tokenizer:
        tok = tokenization.load_any(path)
        tok.no_truncation()
        tok.no_padding()
        for name, folder in glue.FOLDERS.items():
            max_len = glue.SETTINGS[name].max_len
            for split in ("train", "dev"):
                n, unk = lengths(tok, tasks.get(name).read(args.data / folder / f"{split}.tsv"))
                p50, p90, p99 = np.percentile(n, [50, 90, 99]).astype(int)
                print(f"| {path.name} | {folder} | {split} | {p50} | {p90} | {p99} | "
                      f"{(n <= max_len).mean():.1%} of {max_len} | {unk:.1%} |")


if __name__ == "__main__":
    main()
