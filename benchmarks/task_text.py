"""Write the unlabelled training text of GLUE-lite's four tasks as one pretraining corpus (jaxbert's text format).

    python benchmarks/task_text.py --data ../shared/data/glue --out runs/glue-train.txt

Only the train.tsv files are read, and only their sentences: no label and nothing from a dev set reaches the
corpus. This is task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining"): the encoder sees
the kind of text the tasks hold (film reviews, news, textbook sentences) before it is fine-tuned on a few
thousand labelled examples of it. In the text format a blank line ends a document: an MRPC or RTE pair is one
document of two sentences, and single sentences (SST-2, CoLA) are grouped `--group` at a time, in file order,
so that MLM instances pack several of them into a window.
"""

import argparse
from pathlib import Path

from jaxbert import glue, tasks


def documents(data: Path, group: int):
    for name, folder in glue.FOLDERS.items():
        pairs = tasks.get(name).read(data / folder / "train.tsv")
        if pairs.text_b is not None:
            yield from ([a, b] for a, b in zip(pairs.text_a, pairs.text_b))
        else:
            yield from (pairs.text_a[i:i + group] for i in range(0, len(pairs.text_a), group))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the GLUE folder (SST-2, MRPC, RTE, CoLA)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--group", type=int, default=8, help="single sentences per document")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"task_text.py: error: {args.out} exists; choose another --out")
    docs = sentences = 0
    with open(args.out, "w", encoding="utf-8") as f:
        for doc in documents(args.data, args.group):
            doc = [" ".join(s.split()) for s in doc if s.strip()]
            if doc:
                f.write("\n".join(doc) + "\n\n")
                docs, sentences = docs + 1, sentences + len(doc)
    print(f"{sentences} sentences in {docs} documents written to {args.out}")


if __name__ == "__main__":
    main()
